"""One active-learning round on a project, as a resumable generator of typed events.

A round reads like the algorithm::

    train (warm start or from scratch) -> evaluate on the fixed test pool -> score the
    unlabelled pool -> queue the top-k for review            (run_round)
    receive labels (human correction or oracle) -> commit   (commit_review / oracle_commit)

The round's status in the store records how far it got (``started`` -> ``trained`` ->
``evaluated`` -> ``queued`` -> ``complete``) and every stage is saved before the next starts, so
an interruption loses at most the stage in progress and calling :func:`run_round` again continues
from there. The CLI, the napari widgets and the tests all drain the same generator.

Under torchrun (``alunet round --nproc N``) every rank runs the round: training is data-parallel
and scoring sharded, while rank 0 alone writes the store (:func:`_on_primary`) and the others
read the state it wrote after each write.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

from napari_alunet import active, distributed
from napari_alunet.config import (  # noqa: F401 (RoundSettings re-exported)
    UNKNOWN_LABEL,
    AcquisitionConfig,
    RoundSettings,
    to_dict,
)
from napari_alunet.events import StageEvent, WorkProgress  # noqa: F401 (re-exported)
from napari_alunet.pools import ProjectPool
from napari_alunet.review import (  # noqa: F401 (re-exported: the round's review half)
    ReviewItem,
    commit_review,
    model_version,
    oracle_commit,
    review_item,
)
from napari_alunet.round_models import (  # noqa: F401 (re-exported)
    feature_maps,
    load_if_compatible,
    load_round_model,
    previous_model,
    previous_round,
    round_prediction,
)
from napari_alunet.store import Project, RoundRecord, RoundStatus


@dataclass
class RoundReport:
    round_idx: int
    status: RoundStatus
    n_labelled: int
    test_metrics: dict[str, float]
    queue: list[int]
    seconds: dict[str, float] = field(default_factory=dict)
    fit: Any = None


def run_round(
    project: Project, settings: RoundSettings | None = None, *, device: Any = None,
    stop_after: str | None = None,
) -> Generator[Any, None, RoundReport]:
    """Run (or resume) the current round up to a queue of images for review.

    If the newest round is already queued (its review is done or abandoned), it is marked
    complete and a new round starts with ``settings``. A round that stopped part-way is resumed
    with the settings it was started with.

    ``stop_after`` ('trained' or 'evaluated') ends the call once the round reaches that status
    (``alunet train`` trains and evaluates without scoring).

    Yields :class:`StageEvent` and the engine's and scorer's own progress events.
    """
    from napari_alunet.training.device import resolve_device

    current = project.current_round()
    left = project.queue(current.idx) if current is not None else []
    distributed.barrier()  # every rank has read the state above before rank 0 changes it
    if current is not None and current.status == RoundStatus.QUEUED:
        if left:
            # Said, not silent: these images go back to the pool unreviewed (they may be
            # queued again by the next round's scores).
            yield StageEvent(current.idx, "queue", f"round {current.idx} ends with {len(left)} "
                             "queued image(s) not reviewed: they return to the unlabelled pool")
        done = current.idx
        _on_primary(lambda: project.update_round(done, status=RoundStatus.COMPLETE,
                                                 finished_at=_now()))
        current = project.round(current.idx)
    if current is None or current.status in FINISHED:
        settings = settings or RoundSettings()
        new_settings = settings
        _on_primary(lambda: project.start_round(config=to_dict(new_settings)))
        current = project.current_round()
        assert current is not None
    else:
        stored = current.settings
        differences = settings_differences(stored, settings) if settings is not None else []
        if differences:
            yield StageEvent(current.idx, "resume", (
                f"resuming round {current.idx} ({current.status}) with the settings it was "
                f"started with, not the ones given ({'; '.join(differences[:6])}); to use "
                "the new ones, restart the round ('alunet round --restart', or Restart round "
                "in napari)"))
        settings = stored
    idx = current.idx
    torch_device = resolve_device(device or settings.train.device)
    seconds: dict[str, float] = {}
    fit_result = None
    model = None

    if current.status == RoundStatus.STARTED:
        if not project.images("labelled"):
            method = settings.acquisition.cold_start
            yield StageEvent(idx, "queue", f"no labelled images yet: queueing {method} images "
                             "to label first")
            return (yield from _cold_start(project, current, settings, torch_device))
        yield StageEvent(idx, "train", f"training round {idx} on {torch_device}")
        start = time.perf_counter()
        model, fit_result = yield from _train(project, current, settings, torch_device)
        seconds["train"] = time.perf_counter() - start
        if fit_result.cancelled:
            # The stage did not finish: the round stays 'started' and is retrained on resume.
            return RoundReport(idx, RoundStatus.STARTED, current.n_labelled or 0, {}, [], seconds,
                               fit_result)
        checkpoint = project.checkpoint_path(idx)
        # The round's record says how its model was chosen and whether it passed the health
        # check (the settings stay as they were; "fit" is what happened).
        record = {**(current.config or to_dict(settings)),
                  "fit": fit_result.record(settings.train)}
        _on_primary(lambda: project.update_round(
            idx, status=RoundStatus.TRAINED, checkpoint=str(checkpoint.relative_to(project.path)),
            model_version=_file_hash(checkpoint), config=record))
        current = project.round(idx)

    if stop_after == current.status:
        return _report(project, current, seconds, fit_result)
    if model is None:
        model = load_round_model(project, current, settings)

    if current.status == RoundStatus.TRAINED:
        yield StageEvent(idx, "evaluate", "evaluating on the test pool")
        start = time.perf_counter()

        def evaluate_and_record() -> None:  # on rank 0 only: every rank has the same model
            metrics = _evaluate(project, model, settings, torch_device)
            if metrics:
                project.record_metrics(idx, "test", metrics)
            project.update_round(idx, status=RoundStatus.EVALUATED)

        _on_primary(evaluate_and_record)
        seconds["evaluate"] = time.perf_counter() - start
        current = project.round(idx)
        if stop_after == "evaluated":
            return _report(project, current, seconds, fit_result)

    if current.status == RoundStatus.EVALUATED:
        yield StageEvent(idx, "score",
                         f"scoring the unlabelled pool ({settings.acquisition.strategy})")
        start = time.perf_counter()
        yield from score_and_queue(project, current, model, settings, torch_device)
        seconds["score"] = time.perf_counter() - start
        _on_primary(lambda: project.update_round(idx, status=RoundStatus.QUEUED))
        current = project.round(idx)

    yield StageEvent(idx, "done", f"round {idx}: {len(project.queue(idx))} image(s) queued")
    return _report(project, current, seconds, fit_result)


#: Round statuses after which the next run starts a new round.
FINISHED = (RoundStatus.COMPLETE, RoundStatus.ABANDONED)


def settings_differences(stored: RoundSettings, given: RoundSettings) -> list[str]:
    """``'train.steps: 0 -> 50'`` for every setting that differs (the fit record excluded)."""
    def flat(d: Any, prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in d.items():
            if isinstance(value, dict):
                out.update(flat(value, f"{prefix}{key}."))
            else:
                out[f"{prefix}{key}"] = value
        return out

    a = flat({k: v for k, v in to_dict(stored).items() if k != "fit"})
    b = flat({k: v for k, v in to_dict(given).items() if k != "fit"})
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k)]


def restart_round(project: Project, *, drop_queue: bool = False) -> RoundRecord:
    """Abandon the current round so that the next run starts a new one with new settings.

    The way out of a round stuck on its stored settings (a typo saved with it, a fit that
    diverged). The round is kept in the history with status 'abandoned' (its checkpoint is
    never used to warm-start a later round); labels are untouched. A round whose review queue
    still has images is only abandoned with ``drop_queue`` (they return to the pool), so a
    queue is never dropped without being asked for.

    Raises
    ------
    ValueError
        no round, or the round is already finished (nothing to restart).
    ProjectError
        the queue still has images and ``drop_queue`` is False.
    """
    from napari_alunet.store import ProjectError

    current = project.current_round()
    if current is None:
        raise ValueError("this project has no round yet: there is nothing to restart")
    if current.status in FINISHED:
        raise ValueError(f"round {current.idx} is {current.status}: the next round starts "
                         "with the settings you give it, there is nothing to restart")
    pending = project.queue(current.idx)
    if pending and not drop_queue:
        raise ProjectError(
            f"round {current.idx} has {len(pending)} image(s) waiting for review; review them "
            "first, or restart with --drop-queue (napari: confirm the dialog) to return them to "
            "the unlabelled pool")
    project.abandon_round(current.idx)
    return project.round(current.idx)


def _on_primary(write: Callable[[], Any]) -> None:
    """Run a store write on rank 0 only (one process: just run it); with several ranks, every
    rank waits for it, so that all of them read the same state afterwards."""
    if distributed.is_primary():
        write()
    distributed.barrier()


def _report(project: Project, current: RoundRecord, seconds: dict[str, float],
            fit_result: Any) -> RoundReport:
    test = {r["name"]: r["value"] for r in project.metrics("test") if r["round_idx"] == current.idx}
    return RoundReport(current.idx, current.status, current.n_labelled or 0, test,
                       project.queue(current.idx), seconds, fit_result)


# -- stages -----------------------------------------------------------------------------------
def _train(project: Project, current: RoundRecord, settings: RoundSettings, device: Any):
    """Fit the round's model (:func:`napari_alunet.active.train`).

    A round whose training was stopped or killed resumes from the weights it saved; otherwise
    it warm-starts from the newest earlier round, or starts from the seed's initial weights.
    Returns the model and the :class:`~napari_alunet.training.recipe.TrainedModel`.
    """
    model = load_if_compatible(project, project.checkpoint_path(current.idx), settings)
    init = "resumed"
    if model is None and settings.train.warm_start and current.idx > 0:
        model, init = previous_model(project, current.idx, settings), "warm start"
    if model is None and settings.train.starter and \
            previous_round(project, current.idx) is None:
        # Only a project's first model starts from the starter: with warm start off, a
        # later round means "from scratch".
        model, init = (yield from _starter(project, current.idx, settings)), "starter"
        if model is not None:
            yield StageEvent(current.idx, "train", "starting from the starter model (trained "
                             "on synthetic blastocysts only); turn it off with --no-starter "
                             "(napari: Train, uncheck 'start from the starter model')")
    if model is None:
        model, init = active.fresh_model(settings.model, settings.train.seed), "fresh"
    trained = yield from active.train(
        _pool(project, settings), model, settings.train, round_idx=current.idx,
        n_classes=settings.model.n_classes, checkpoint_path=project.checkpoint_path(current.idx),
        checkpoint_meta={"round": current.idx, "class_names": list(project.classes.names)},
        device=device,
    )
    trained.init = init
    return model, trained


def _pool(project: Project, settings: RoundSettings) -> ProjectPool:
    return ProjectPool(project, settings.model.input_size)


def _evaluate(project: Project, model: Any, settings: RoundSettings,
              device: Any) -> dict[str, float]:
    metrics = active.evaluate(_pool(project, settings), model,
                              n_classes=settings.model.n_classes, device=device,
                              precision=settings.train.precision)
    if metrics:
        metrics["n_labelled"] = float(len(project.images("labelled")))
    return metrics


def score_and_queue(project: Project, current: RoundRecord, model: Any,
                    settings: RoundSettings, device: Any) -> Generator[Any, None, Any]:
    """Acquire images with ``model`` (:func:`napari_alunet.active.acquire`), store the scores,
    cache what the reviewer is shown, queue them.

    Returns the :class:`~napari_alunet.active.Acquired` (None when the pool is empty).
    Re-scoring a queued round with another strategy replaces its pending queue; committed
    images stay committed.
    """
    acq = settings.acquisition
    pool = _pool(project, settings)
    if not pool.unlabelled_ids() and not (acq.unit == "region" and pool.partial_ids()):
        if distributed.is_primary():
            project.set_queue(current.idx, [])
        return None
    acquired = yield from active.acquire(pool, model, acq, k=acq.k, round_idx=current.idx,
                                         device=device, precision=settings.train.precision)
    if not distributed.is_primary():
        return acquired  # a torchrun rank > 0 helped score; rank 0 writes
    project.save_scores(current.idx, model_version(project, current.idx), acq.strategy,
                        acquired.scores)
    for image_id in acquired.ids:
        project.write_review(current.idx, image_id, acquired.predictions[image_id],
                             acquired.maps[image_id], acquired.regions.get(image_id))
    project.set_queue(current.idx, acquired.ids)
    return acquired


def rescore(project: Project, acquisition: AcquisitionConfig, *,
            device: Any = None) -> Generator[Any, None, Any]:
    """Score the pool again with the current round's model and another acquisition setting.

    The round's pending queue is replaced (committed images stay committed) and the new
    acquisition settings are saved with the round. Returns the scorer's result.
    """
    from napari_alunet.training.device import resolve_device

    current = project.current_round()
    if current is None or not current.status.has_model:
        raise ValueError("no evaluated model in this project yet: run a round (Train, or "
                         "'alunet train') before scoring")
    settings = current.settings
    settings.acquisition = acquisition
    model = load_round_model(project, current, settings)
    result = yield from score_and_queue(project, current, model, settings,
                                        resolve_device(device or settings.train.device))
    if not distributed.is_primary():
        return result
    # Only the acquisition changes: the rest of the record (the fit) stays as it was.
    record = {**(current.config or to_dict(settings)), "acquisition": to_dict(acquisition)}
    project.update_round(current.idx, status=RoundStatus.QUEUED, config=record)
    return result


def queue_images(project: Project, image_ids: Sequence[int], *,
                 device: Any = None) -> Generator[Any, None, list[int]]:
    """Add the user's own picks to the current round's review queue, after the images queued
    already, each with the round model's prediction and uncertainty maps computed now (the
    image browser's "add to queue": review an image the strategy did not choose).

    Only unlabelled images can be added (a labelled image is edited by showing it; a test
    image is never trained on). Returns the ids added (those already pending are skipped).
    """
    from napari_alunet.training.device import resolve_device

    current = project.current_round()
    if current is None or current.status != RoundStatus.QUEUED or not current.checkpoint:
        raise ValueError("no round is in review: train a round first, then add images to its "
                         "queue")
    pending = project.queue(current.idx)
    records = [project.image(int(i)) for i in dict.fromkeys(image_ids)]  # one read per id
    wrong = [r.name for r in records if r.pool != "unlabelled"]
    if wrong:
        raise ValueError(f"only unlabelled images can be queued for review; not "
                         f"{', '.join(wrong[:5])}{' ...' if len(wrong) > 5 else ''} (labelled "
                         "images are edited by showing them; test images are never trained on)")
    new = [r.id for r in records if r.id not in pending]
    if not new:
        return []
    settings = current.settings
    model = load_round_model(project, current, settings)
    predicted = yield from active.predict_for_review(
        _pool(project, settings), model, new, settings.acquisition,
        device=resolve_device(device or settings.train.device),
        precision=settings.train.precision)
    # The cache first, then the queue: an interruption leaves at most an unused cache file.
    for image_id in new:
        project.write_review(current.idx, image_id, predicted.predictions[image_id],
                             predicted.maps[image_id])
    project.set_queue(current.idx, pending + new)
    return new


def _cold_start(project: Project, current: RoundRecord, settings: RoundSettings,
                device: Any) -> Generator[Any, None, RoundReport]:
    """Queue the first images of a project without labels (:func:`napari_alunet.active
    .cold_start`): the most typical image of each of ``k`` clusters, or random ones."""
    acq = settings.acquisition
    starter = None
    if settings.train.starter:
        starter = yield from _starter(project, current.idx, settings)
    model = starter
    if model is None and acq.cold_start == "typical":
        model = active.fresh_model(settings.model, settings.train.seed)
    pool = _pool(project, settings)
    chosen = yield from active.cold_start(
        pool, k=acq.k, method=acq.cold_start,
        seed=active.round_seed(acq.seed, current.idx), model=model,
        batch_size=acq.batch_size, device=device, precision=settings.train.precision)
    proposals = None
    if starter is not None and chosen:
        # The researcher corrects the starter's masks instead of drawing from nothing.
        yield StageEvent(current.idx, "queue", "predicting the first images with the starter "
                         "model, to correct rather than draw")
        proposals = yield from active.predict_for_review(
            pool, starter, chosen, acq, device=device, precision=settings.train.precision)

    def queue_chosen() -> None:
        if proposals is not None:
            for image_id in chosen:
                project.write_review(current.idx, image_id, proposals.predictions[image_id],
                                     proposals.maps[image_id])
        project.set_queue(current.idx, chosen)
        project.update_round(current.idx, status=RoundStatus.QUEUED)

    _on_primary(queue_chosen)
    return RoundReport(current.idx, RoundStatus.QUEUED, 0, {}, chosen)


def _starter(project: Project, idx: int, settings: RoundSettings) -> Generator[Any, None, Any]:
    """The starter model that fits, or None; a damaged one is reported and skipped (the round
    then starts as it would without one) rather than failing the round."""
    from napari_alunet.starter import load_starter
    from napari_alunet.training.checkpoint import CheckpointError

    try:
        return load_starter(settings.model, project.classes.names)
    except (CheckpointError, OSError, ValueError) as exc:
        yield StageEvent(idx, "train", f"the starter model could not be used ({exc}); "
                         "starting without it (reinstall napari-alunet to repair it)")
        return None


def _file_hash(path: Any) -> str:
    from napari_alunet.fileio import sha256_file

    return sha256_file(path)[:16]


def _now() -> str:
    from napari_alunet.store.records import now_iso

    return now_iso()


__all__ = [
    "ReviewItem", "RoundReport", "RoundSettings", "StageEvent", "commit_review",
    "load_round_model", "model_version", "oracle_commit", "queue_images", "rescore",
    "restart_round",
    "review_item", "run_round", "score_and_queue", "settings_differences",
]
