"""Update the round's model while the review goes on (the Review panel's Update model).

MONAI Label's Next / Submit / Update loop: after correcting a few images the researcher wants
the model to learn from them *now*, so that the rest of the queue comes with better proposals,
without ending the round. :func:`update_model` is that step::

    labels committed so far -> fit, warm-started from the round's model (same recipe and
    settings) -> test Dice of the new model -> new predictions and maps for the images still
    queued -> the new model becomes the round's model

It runs in a worker while the reviewer keeps committing: the labelled images are read once at
the start (commits made during the fit count for the next update), and nothing of the project
changes until the fit is done, so Stop leaves the round exactly as it was. The queue keeps its
images (they were chosen by the round's scores); the round's scores and test metrics stay those
of the model that ranked the pool (the learning curve measures that model), and every update is
recorded in the round's config under ``updates`` with its own labelled count and test Dice.
The next round warm-starts from the newest model.

Each update is a new file (``models/round_NNN_update<k>.pt``); the round's record is switched to
it in one database update, so a crash leaves the round on its old model (the one that ranked
the pool is never overwritten). A fit that fails the recipe's health check is not used: the
round keeps its model and the result says why.
"""

from __future__ import annotations

import os
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

from napari_alunet import active
from napari_alunet.config import to_dict
from napari_alunet.events import StageEvent
from napari_alunet.pools import ProjectPool
from napari_alunet.round_models import load_round_model
from napari_alunet.store import Project, RoundRecord, RoundStatus


@dataclass
class ModelUpdate:
    """What :func:`update_model` did.

    ``test_dice_before`` / ``test_dice_after`` are the mean test Dice of the round's model
    before and after (NaN without a test pool); ``refreshed`` the queued images whose
    prediction and maps were recomputed; ``cancelled`` True when it was stopped (nothing
    changed then).
    """

    round_idx: int
    n_labelled: int
    test_dice_before: float
    test_dice_after: float
    refreshed: list[int] = field(default_factory=list)
    seconds: float = 0.0
    cancelled: bool = False
    fit: dict[str, Any] = field(default_factory=dict)
    kept: bool = True  # False: the new fit collapsed and the round kept its model


def labelled_for_model(record: RoundRecord) -> int:
    """How many labelled images the round's current model was trained on."""
    updates = (record.config or {}).get("updates") or []
    return int(updates[-1]["n_labelled"]) if updates else int(record.n_labelled or 0)


def update_model(project: Project, *, device: Any = None) -> Generator[Any, None, ModelUpdate]:
    """Retrain the current round's model on every label committed so far (see the module).

    Yields the engine's progress events and :class:`StageEvent` s.

    Raises
    ------
    ValueError
        no round is in review, or no label was committed since its model was trained.
    """
    from napari_alunet.fileio import TEMP_PREFIX, sha256_file
    from napari_alunet.training.device import resolve_device

    start = time.perf_counter()
    current = project.current_round()
    if current is None or current.status != RoundStatus.QUEUED or not current.checkpoint:
        raise ValueError("no round is in review: train a round first; Update model then "
                         "retrains its model on the images you have corrected")
    idx, settings = current.idx, current.settings
    pool = ProjectPool(project, settings.model.input_size)
    n_labelled = len(pool.labelled_ids())
    if n_labelled <= labelled_for_model(current):
        raise ValueError(f"nothing new to learn: the model of round {idx} was trained on all "
                         f"{n_labelled} labelled image(s); commit a corrected image first")
    torch_device = resolve_device(device or settings.train.device)
    model = load_round_model(project, current, settings)  # warm start: the round's model
    n_classes = settings.model.n_classes
    precision = settings.train.precision
    before = _current_test_dice(project, current)  # recorded: no second evaluation
    yield StageEvent(idx, "update", f"updating round {idx}'s model on {n_labelled} labelled "
                     "image(s); keep reviewing meanwhile")
    number = len((current.config or {}).get("updates") or []) + 1
    own = project.checkpoint_path(idx)
    target = own.with_name(f"{own.stem}_update{number}{own.suffix}")
    draft = target.with_name(f"{TEMP_PREFIX}{target.name}")
    try:
        trained = yield from active.train(
            pool, model, settings.train, round_idx=idx, n_classes=n_classes,
            checkpoint_path=draft, checkpoint_meta={
                "round": idx, "class_names": list(project.classes.names),
                "update": number},
            device=torch_device)
        if trained.cancelled:
            draft.unlink(missing_ok=True)
            return ModelUpdate(idx, n_labelled, before, before, [],
                               time.perf_counter() - start, cancelled=True)
        if not trained.healthy:
            # A collapsed fit must not replace a working model (nor seed the next round).
            draft.unlink(missing_ok=True)
            yield StageEvent(idx, "update", "the updated model failed the health check "
                             f"(Dice {trained.labelled_dice:.2f} on its own labels): the round "
                             "keeps its model; check the labels or label more images")
            return ModelUpdate(idx, n_labelled, before, before, [],
                               time.perf_counter() - start, fit=trained.record(settings.train),
                               kept=False)
        after = _test_dice(pool, model, n_classes, torch_device, precision)
        yield StageEvent(idx, "update", "predicting the images still queued with the new model")
        pending = project.queue(idx)
        predicted = yield from active.predict_for_review(
            pool, model, pending, settings.acquisition, device=torch_device, precision=precision)
    except BaseException:
        draft.unlink(missing_ok=True)
        raise
    # Everything is computed: the new model gets its own file, the round's record switches to
    # it in one update (a crash before leaves the round on its old model), then the caches.
    os.replace(draft, target)
    fit = trained.record(settings.train)
    entry = {"n_labelled": n_labelled, "replaced_version": current.model_version,
             "replaced_checkpoint": current.checkpoint,
             "model_version": sha256_file(target)[:16], "test_mean_dice": _json_float(after),
             "test_mean_dice_before": _json_float(before), "fit": fit,
             "seconds": round(time.perf_counter() - start, 2)}
    record = {**(current.config or to_dict(settings))}
    record["updates"] = [*(record.get("updates") or []), entry]
    project.update_round(idx, checkpoint=str(target.relative_to(project.path)),
                         model_version=entry["model_version"], config=record)
    still_pending = set(project.queue(idx))  # images committed during the update are done
    refreshed = []
    for image_id in pending:
        if image_id not in still_pending:
            continue
        old = project.read_review(idx, image_id, maps=False)
        project.write_review(idx, image_id, predicted.predictions[image_id],
                             predicted.maps[image_id], old.region if old is not None else None)
        refreshed.append(image_id)
    return ModelUpdate(idx, n_labelled, before, after, refreshed,
                       time.perf_counter() - start, False, fit)


def _current_test_dice(project: Project, record: RoundRecord) -> float:
    """The test Dice recorded for the round's current model: its last update's, else the
    round's own evaluation (NaN without a test pool)."""
    updates = (record.config or {}).get("updates") or []
    if updates:
        value = updates[-1].get("test_mean_dice")
        return float("nan") if value is None else float(value)
    for row in project.metrics("test"):
        if row["round_idx"] == record.idx and row["name"] == "mean_dice":
            return float(row["value"])
    return float("nan")


def _test_dice(pool: ProjectPool, model: Any, n_classes: int, device: Any,
               precision: str) -> float:
    metrics = active.evaluate(pool, model, n_classes=n_classes, device=device,
                              precision=precision)
    return float(metrics.get("mean_dice", float("nan")))


def _json_float(value: float) -> float | None:
    return None if value != value else round(float(value), 4)


__all__ = ["ModelUpdate", "labelled_for_model", "update_model"]
