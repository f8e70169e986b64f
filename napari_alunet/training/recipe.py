"""The few-labels training recipe around :func:`~napari_alunet.training.engine.fit`.

Every fit of the product goes through here (``alunet train``, ``alunet round``, the Train and
Rounds widgets through :mod:`napari_alunet.loop`, ``alunet experiment``):

1. :func:`plan_fit` decides which labelled images train and which validate, and which
   unlabelled images feed the semi-supervised term. A validation split is held out only when
   it would hold at least ``TrainConfig.validation_min_images`` images; below that the model
   is chosen by nothing better than noise (one image's Dice decides), so every labelled image
   trains and the final EMA weights are kept.
2. :func:`train_model` fits and then checks the model on its own labelled images: a fit whose
   labelled Dice stays under ``health_min_dice`` collapsed (a class painted over everything,
   or nothing but background) and is retried from a fresh initialisation, up to
   ``health_retries`` times; the best attempt is kept and the record says what happened.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_alunet.config import TrainConfig
from napari_alunet.events import HealthEvent  # noqa: F401 (re-exported)


@dataclass
class FitPlan:
    """Which images a fit uses (ids in the caller's numbering) and by which rule.

    ``selection`` is ``"validation"`` or ``"final"``; ``rule`` says why, in words.
    """

    train_ids: list[int]
    val_ids: list[int]
    unlabelled_ids: list[int]
    selection: str
    rule: str
    steps: int


def plan_fit(labelled_ids: Sequence[int], unlabelled_ids: Sequence[int], config: TrainConfig,
             *, seed: int, unlabelled_seed: int = 0) -> FitPlan:
    """Split the labelled images and pick the unlabelled ones for one fit.

    Parameters
    ----------
    labelled_ids : images with labels.
    unlabelled_ids : candidate images without labels for the semi-supervised term; the caller
        passes only images of the training pool (never the test pool).
    config : ``validation_fraction``, ``validation_min_images``, ``semi_supervised``,
        ``max_unlabelled_images``.
    seed : the validation split hashes ``(seed, id)`` (an image keeps its side as the labelled
        set grows).
    unlabelled_seed : with ``seed``, draws the unlabelled subset when the pool has more than
        ``max_unlabelled_images`` (a round passes its index, so rounds cover different images).
    """
    from napari_alunet.data.dataset import validation_split

    labelled = sorted(int(i) for i in labelled_ids)
    train_ids, val_ids = validation_split(labelled, config.validation_fraction, seed)
    if val_ids and len(val_ids) >= config.validation_min_images:
        selection = "validation"
        rule = (f"{len(val_ids)} validation image(s) >= {config.validation_min_images}: best "
                "weights on validation, early stopping")
    else:
        selection = "final"
        rule = (f"a validation split would hold {len(val_ids)} image(s) < "
                f"{config.validation_min_images}: all {len(labelled)} labelled image(s) train "
                "for the whole budget, final EMA weights kept")
        train_ids, val_ids = labelled, []
    unlabelled: list[int] = []
    if config.semi_supervised:
        pool = sorted(set(int(i) for i in unlabelled_ids) - set(labelled))
        if len(pool) > config.max_unlabelled_images:
            rng = np.random.default_rng([seed, unlabelled_seed, 104729])
            pool = sorted(int(i) for i in rng.choice(pool, config.max_unlabelled_images,
                                                     replace=False))
        unlabelled = pool
    return FitPlan(train_ids, val_ids, unlabelled, selection, rule,
                   config.planned_steps(len(train_ids)))


@dataclass
class TrainedModel:
    """What :func:`train_model` returns: the kept attempt's fit, the plan and the health check.

    ``attempt_dice`` holds every attempt's labelled Dice; ``healthy`` is False when no attempt
    reached the floor (the best one is kept, and the round says so).
    """

    fit: Any
    plan: FitPlan
    labelled_dice: float
    healthy: bool
    attempt_dice: list[float] = field(default_factory=list)
    kept_attempt: int = 0
    init: str = ""  # where the weights came from: resumed, warm start, starter, fresh

    @property
    def cancelled(self) -> bool:
        return bool(self.fit.cancelled)

    def record(self, config: TrainConfig) -> dict[str, Any]:
        """A JSON-ready summary for the round's record, the checkpoint and rounds.csv."""
        fit = self.fit
        return {
            "selection": self.plan.selection, "rule": self.plan.rule,
            "steps_planned": int(fit.steps_planned), "steps_run": int(fit.steps_run),
            "passes": round(float(fit.passes), 2), "best_step": int(fit.best_step),
            "stopped_early": bool(fit.stopped_early),
            "best_val_dice": None if math.isnan(fit.best_val_dice) else float(fit.best_val_dice),
            "n_train": len(self.plan.train_ids), "n_val": len(self.plan.val_ids),
            "semi_supervised": bool(config.semi_supervised),
            "n_unlabelled": int(fit.n_unlabelled),
            "labelled_dice": None if math.isnan(self.labelled_dice) else float(self.labelled_dice),
            "healthy": bool(self.healthy), "attempts": len(self.attempt_dice),
            "attempt_dice": [None if math.isnan(d) else round(float(d), 4)
                             for d in self.attempt_dice],
            "kept_attempt": int(self.kept_attempt), "seconds": round(float(fit.seconds), 2),
            "init": self.init,
        }


def retry_seed(seed: int, attempt: int) -> int:
    """Initialisation and training seed of retry ``attempt`` (0 is the first try)."""
    return int(seed) + 1_000_003 * int(attempt)


def train_model(
    model: Any,
    plan: FitPlan,
    load: Callable[[Sequence[int], bool], tuple[np.ndarray, np.ndarray | None]],
    config: TrainConfig,
    *,
    n_classes: int,
    checkpoint_path: Any = None,
    checkpoint_meta: dict[str, Any] | None = None,
    device: Any = None,
) -> Generator[Any, None, TrainedModel]:
    """Fit ``model`` in place by ``plan``, check its health, retry a collapsed fit.

    Parameters
    ----------
    model : fresh or warm-started; retries re-initialise it in place.
    plan : from :func:`plan_fit`.
    load : ``load(ids, with_labels)`` -> ((n, 1, S, S) float32 images, (n, S, S) labels or None).
    config : the recipe (``health_min_dice``, ``health_retries`` and what ``fit`` reads).
    n_classes, checkpoint_path, checkpoint_meta, device : as for ``fit``; the plan's record is
        added to the checkpoint's metadata.

    Yields
    ------
    The engine's StepEvent / EvalEvent, and a :class:`HealthEvent` per failed check.
    """
    from napari_alunet import distributed
    from napari_alunet.inference import evaluate
    from napari_alunet.training.checkpoint import save_fit_checkpoint
    from napari_alunet.training.engine import fit, reset_parameters

    x_train, y_train = load(plan.train_ids, True)
    x_val, y_val = load(plan.val_ids, True) if plan.val_ids else (None, None)
    x_unl = load(plan.unlabelled_ids, False)[0] if plan.unlabelled_ids else None
    y_all: np.ndarray | None  # load's labels are typed optional
    if plan.val_ids:
        x_all = np.concatenate([x_train, x_val])
        y_all = np.concatenate([y_train, y_val])
    else:
        x_all, y_all = x_train, y_train
    meta = dict(checkpoint_meta or {})
    meta.setdefault("selection", plan.selection)
    meta.setdefault("n_unlabelled", len(plan.unlabelled_ids))

    floor = float(config.health_min_dice)
    attempts = 1 + (int(config.health_retries) if floor > 0 else 0)
    best: tuple[float, int, dict[str, Any], Any] | None = None
    dices: list[float] = []
    result = None
    for attempt in range(attempts):
        attempt_config = config
        if attempt > 0:
            attempt_config = dataclasses.replace(config, seed=retry_seed(config.seed, attempt))
            reset_parameters(model, seed=attempt_config.seed)
        result = yield from fit(
            model, x_train, y_train, x_val, y_val, attempt_config, n_classes=n_classes,
            unlabelled_images=x_unl, checkpoint_path=checkpoint_path, checkpoint_meta=meta,
            device=device,
        )
        if result.cancelled:
            return TrainedModel(result, plan, math.nan, False, dices, attempt)
        dice = evaluate(model, x_all, y_all, n_classes=n_classes, device=device,
                        precision=config.precision)["mean_dice"]
        if distributed.active():  # rank 0's figure decides a retry on every rank
            dice = distributed.broadcast(dice)
        dices.append(dice)
        score = dice if not math.isnan(dice) else -math.inf
        if best is None or score > best[0]:
            state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            best = (score, attempt, state, result)
        if floor <= 0 or score >= floor:
            break
        retrying = attempt + 1 < attempts
        yield HealthEvent(
            attempt + 1, attempts, dice, floor, retrying,
            f"the fit collapsed: Dice {dice:.2f} on its own labelled images (< {floor:.2f}); "
            + ("retrying from a fresh initialisation" if retrying else
               "no retries left: keeping the best attempt; label more images or check the "
               "labels"))
    assert best is not None and result is not None
    score, kept, state, kept_result = best
    if kept != len(dices) - 1:
        # A later attempt was worse: put the best one back, and in the checkpoint.
        model.load_state_dict(state)
        if checkpoint_path is not None and distributed.is_primary():
            kept_result.checkpoint_path = save_fit_checkpoint(
                checkpoint_path, model, meta, kept_result.best_step, kept_result.metric,
                "val_dice" if plan.val_ids else "train_loss")
        distributed.barrier()  # the other ranks go on once rank 0 has written it
    healthy = floor <= 0 or score >= floor
    return TrainedModel(kept_result, plan, dices[kept], healthy, dices, kept)


__all__ = ["FitPlan", "HealthEvent", "TrainedModel", "plan_fit", "retry_seed", "train_model"]
