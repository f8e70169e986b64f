"""Training: the one engine (:mod:`.engine`), losses, metrics, augmentation, checkpoints.

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
    evaluate,
    fit,
    lr_range_test,
    predict_labels,
    predict_probabilities,
    reset_parameters,
)

__all__ = [
    "CheckpointError",
    "EvalEvent",
    "FitResult",
    "StepEvent",
    "evaluate",
    "fit",
    "load_checkpoint",
    "lr_range_test",
    "predict_labels",
    "predict_probabilities",
    "reset_parameters",
    "resolve_device",
    "save_checkpoint",
]
