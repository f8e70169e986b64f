"""The starter model: a network trained on synthetic blastocysts only, shipped in the package,
so that the first round of a project does not start from nothing.

The most expensive moment of the loop is the first: with no model, the researcher draws every
mask from scratch (MONAI Label and Cellpose ship pretrained models for this reason). A project
whose round has no model of its own yet starts from the starter model when it fits (same
architecture and classes, ``TrainConfig.starter`` on):

* round 0 with labels fine-tunes it instead of a random initialisation;
* a project with no labels at all gets the starter's predictions for its first queued images
  (the cold start), so Review shows proposals to correct from the very first image.

The checkpoint is ``napari_alunet/models/starter_<preset>.pt`` (weights in float16, loaded
with the safe loader); ``starter_<preset>.json`` beside it records how it was trained
(``scripts/train_starter.py``: command, generator version, configuration, time). A package
without the file simply has no starter: every function here then returns None.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from napari_alunet.config import ModelConfig, model_preset

#: Where the shipped starter checkpoints live (inside the package).
STARTER_DIR = Path(__file__).parent / "models"


def starter_path(preset: str = "cpu") -> Path:
    """The starter checkpoint of a model preset (the file may not exist)."""
    return STARTER_DIR / f"starter_{preset}.pt"


def starter_record(preset: str = "cpu") -> dict[str, Any] | None:
    """How the starter of ``preset`` was trained (its JSON record), or None without one."""
    path = starter_path(preset).with_suffix(".json")
    return json.loads(path.read_text()) if path.is_file() else None


def starter_for(model_config: ModelConfig, class_names: Any) -> Path | None:
    """The starter checkpoint that fits a project's architecture and classes, or None.

    Only an exact fit is used: a starter for the ``cpu`` preset serves a project with the
    ``cpu`` preset's architecture and the default five classes; anything else starts from a
    random initialisation as before.
    """
    for preset in ("cpu", "gpu", "tiny"):
        path = starter_path(preset)
        if not path.is_file():
            continue
        record = starter_record(preset) or {}
        names = record.get("class_names")
        if model_preset(preset, n_classes=model_config.n_classes) == model_config and (
                names is None or list(names) == list(class_names)):
            return path
    return None


def load_starter(model_config: ModelConfig, class_names: Any) -> Any:
    """The starter network for this architecture and these classes (float32, eval mode), or
    None when none fits; a damaged file raises ``CheckpointError`` with what to do."""
    from napari_alunet.training.checkpoint import load_checkpoint

    path = starter_for(model_config, class_names)
    if path is None:
        return None
    model, _meta = load_checkpoint(path, expected_model_config=model_config,
                                   expected_class_names=list(class_names))
    return model.float()


__all__ = ["STARTER_DIR", "load_starter", "starter_for", "starter_path", "starter_record"]
