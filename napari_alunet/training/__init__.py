"""Training: the one engine (:mod:`.engine`), its schedule, losses, metrics, augmentation,
checkpoints, and the device rules (:mod:`.device`) inference shares.

``fit`` is a generator of :class:`StepEvent` / :class:`EvalEvent` returning a
:class:`FitResult`; :mod:`.recipe` wraps it with the validation rule and the health check.
See ``docs/ARCHITECTURE.md`` for the contract and ``docs/TRAINING.md`` for the recipe.
"""

from napari_alunet.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from napari_alunet.training.device import resolve_device
from napari_alunet.training.engine import (
    EvalEvent,
    FitResult,
    StepEvent,
    fit,
    reset_parameters,
)

__all__ = [
    "CheckpointError",
    "EvalEvent",
    "FitResult",
    "StepEvent",
    "fit",
    "load_checkpoint",
    "reset_parameters",
    "resolve_device",
    "save_checkpoint",
]
