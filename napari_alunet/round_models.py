"""A round's model: loading it (only when its architecture and classes fit), predicting with it
after the fact (the Review panel's previous-vs-current), and looking inside it (feature maps).
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any

import numpy as np

from napari_alunet import active
from napari_alunet.config import RoundSettings
from napari_alunet.events import WorkProgress
from napari_alunet.pools import ProjectPool
from napari_alunet.store import Project, RoundRecord, RoundStatus

__all__ = ["feature_maps", "load_if_compatible", "load_round_model", "previous_model",
           "previous_round", "round_prediction"]


def model_file(project: Project, record: RoundRecord) -> Path:
    """The file of a round's current model: the one its record points to (an Update model
    gives the round a new file and keeps the one that ranked the pool), else the round's own
    checkpoint path."""
    if record.checkpoint:
        return project.path / record.checkpoint
    return project.checkpoint_path(record.idx)


def load_round_model(project: Project, current: RoundRecord, settings: RoundSettings) -> Any:
    from napari_alunet.training.checkpoint import load_checkpoint

    model, _meta = load_checkpoint(model_file(project, current),
                                   expected_model_config=settings.model,
                                   expected_class_names=list(project.classes.names))
    return model


def feature_maps(project: Project, round_idx: int, image_id: int,
                 block: str) -> Generator[Any, None, tuple[Any, Any]]:
    """The activations of ``block`` of round ``round_idx``'s model for one image ("Inside the
    model"): ``((channels, h, w) float32, the image's Letterbox)``. Yields WorkProgress."""
    from napari_alunet.data.dataset import prepare_image
    from napari_alunet.model.features import block_activations

    yield WorkProgress(0, 2, f"loading the model of round {round_idx}")
    current = project.round(round_idx)
    settings = current.settings
    model = load_round_model(project, current, settings)
    yield WorkProgress(1, 2, f"computing {block}")
    canvas, box = prepare_image(project.read_image(image_id), settings.model.input_size)
    return block_activations(model, canvas[None, None], block), box


def round_prediction(project: Project, round_idx: int, image_id: int, *,
                     device: Any = None) -> Generator[Any, None, np.ndarray]:
    """The review prediction of round ``round_idx``'s model for one image, (h, w) uint8 at
    the image's original size: the same seeded MC pass a queued image gets, so the Review
    panel can show how an earlier round saw the image ("previous vs current").

    The round's cached review is used when it holds the image; otherwise its model runs now.
    ``ValueError`` when that round has no model (abandoned before training, or not trained).
    """
    from napari_alunet.training.device import resolve_device

    cached = project.read_review(round_idx, image_id, maps=False)
    if cached is not None and cached.prediction is not None:
        return cached.prediction
    rnd = project.round(round_idx)
    if not rnd.checkpoint or not model_file(project, rnd).is_file():
        raise ValueError(f"round {round_idx} has no model to predict with")
    settings = rnd.settings
    yield WorkProgress(0, 1, f"predicting with the model of round {round_idx}")
    model = load_round_model(project, rnd, settings)
    predicted = yield from active.predict_for_review(
        ProjectPool(project, settings.model.input_size), model, [int(image_id)],
        settings.acquisition, keep_maps=(),
        device=resolve_device(device or settings.train.device),
        precision=settings.train.precision)
    return predicted.predictions[int(image_id)]


def previous_model(project: Project, idx: int, settings: RoundSettings) -> Any:
    for previous in range(idx - 1, -1, -1):
        record = project.round(previous)
        path = model_file(project, record)
        # An abandoned round's model (a diverged fit, a typo's settings) never seeds another.
        if path.is_file() and record.status != RoundStatus.ABANDONED:
            return load_if_compatible(project, path, settings)
    return None


def load_if_compatible(project: Project, path: Any, settings: RoundSettings) -> Any:
    """The model in ``path``, or None if there is none or its architecture/classes differ."""
    from napari_alunet.training.checkpoint import CheckpointError, load_checkpoint

    if not path.is_file():
        return None
    try:
        return load_checkpoint(path, expected_model_config=settings.model,
                               expected_class_names=list(project.classes.names))[0]
    except CheckpointError:
        return None  # the architecture changed (or the file is damaged): start afresh


def previous_round(project: Project, round_idx: int | None,
                   rounds: list[RoundRecord] | None = None) -> int | None:
    """The newest round before ``round_idx`` whose model can predict (trained, not abandoned),
    or None. ``rounds``: the project's rounds when the caller has read them already."""
    if round_idx is None:
        return None
    for rnd in reversed(rounds if rounds is not None else project.rounds()):
        if rnd.idx < round_idx and rnd.checkpoint and rnd.status != RoundStatus.ABANDONED:
            return int(rnd.idx)
    return None
