"""TrainConfig: the few-labels recipe of one fit, and its budget rules."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from napari_alunet.config.seeds import _check_seed


@dataclass
class TrainConfig:
    """One fit: the few-labels recipe (see ``docs/TRAINING.md``).

    The budget is counted in optimiser steps, not epochs, so that a round on 4 labelled images
    trains as long as one on 40: ``steps`` (0: automatic, ``min_steps + steps_per_image * n``
    training images, at most ``max_steps``). ``epochs > 0`` instead counts the budget in passes
    over the training images with one partition of them per pass, the recipe before 0.2, kept
    for comparisons (``benchmarks/few_labels.py``'s baseline arm).

    Learning rate: linear warm-up over ``warmup_fraction`` of the budget, then cosine decay to
    ``min_lr_fraction`` of ``learning_rate`` (``scheduler="warmup_cosine"``). An exponential
    moving average of the weights (``ema_decay``; 0 turns it off) is what gets evaluated, used as
    the semi-supervised teacher and saved.

    Model selection: a validation split is held out of the labelled images, and early stopping /
    best-weights selection run on it, only when it holds at least ``validation_min_images``
    images; below that the fit uses every labelled image, trains the whole budget and keeps the
    final (EMA) weights. ``patience`` counts evaluations (every ``eval_every`` steps; 0: auto)
    without improvement.

    Semi-supervised (``semi_supervised``): FixMatch-style consistency on unlabelled images of the
    same pool; the EMA teacher labels a weakly augmented view, pixels it is at least
    ``confidence_threshold`` sure of are targets for the student on a strongly augmented view,
    weighted by ``unlabelled_weight``. At most ``max_unlabelled_images`` unlabelled images take
    part (a seeded random subset), ``unlabelled_batch_size`` per step.

    Health check: after the fit, the mean foreground Dice on the labelled images themselves must
    reach ``health_min_dice``; otherwise the fit restarts from a fresh initialisation, at most
    ``health_retries`` times, and the best attempt is kept.

    Domain randomisation (``domain_randomisation``, off by default): strong photometric
    perturbations of every training batch (gamma, illumination field, focus, texture grain,
    relief direction, noise; :mod:`napari_alunet.training.domain`) and a stronger elastic
    deformation, for a model trained on synthetic images that must work on real ones.

    Starter model (``starter``, on by default): a round with no model of its own to resume or
    warm-start from begins from the shipped synthetic-only starter model when one fits the
    architecture and classes (:mod:`napari_alunet.starter`), and a project without labels gets
    its predictions for the first queued images.
    """

    steps: int = 0
    min_steps: int = 400
    steps_per_image: int = 10
    max_steps: int = 4000
    epochs: int = 0
    patience: int = 10
    eval_every: int = 0
    batch_size: int = 8
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    scheduler: str = "warmup_cosine"  # "warmup_cosine", "cosine", "none", "plateau"
    warmup_fraction: float = 0.05
    min_lr_fraction: float = 0.02
    ema_decay: float = 0.99
    warm_start: bool = True
    validation_fraction: float = 0.2
    validation_min_images: int = 8
    semi_supervised: bool = True
    unlabelled_weight: float = 1.0
    confidence_threshold: float = 0.9
    unlabelled_batch_size: int = 4
    max_unlabelled_images: int = 512
    health_min_dice: float = 0.6
    health_retries: int = 2
    loss: str = "ce+tversky"  # "ce", "tversky", "dice", "ce+tversky", "ce+dice"
    class_weighting: str = "median_frequency"  # or "none"
    tversky_alpha: float = 0.3
    tversky_beta: float = 0.7
    border_weight: bool = False
    border_w0: float = 10.0
    border_sigma: float = 5.0
    augment: bool = True
    domain_randomisation: bool = False  # strong photometric perturbations (synthetic teacher)
    starter: bool = True  # a round with no model of its own starts from the starter model
    seed: int = 0
    precision: str = "auto"  # "auto" (bf16 autocast on CUDA, fp32 elsewhere), "fp32", "bf16"
    device: str = "auto"  # "auto", "cpu", "cuda", "mps"
    num_threads: int = 0  # 0: leave torch's default

    def __post_init__(self) -> None:
        for name in ("steps", "epochs", "patience", "eval_every", "health_retries"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("min_steps", "max_steps", "batch_size", "unlabelled_batch_size",
                     "max_unlabelled_images", "validation_min_images"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not (self.learning_rate >= 0 and self.learning_rate < float("inf")):
            raise ValueError(
                f"learning_rate must be a finite number >= 0, got {self.learning_rate}")
        for name in ("ema_decay", "warmup_fraction", "validation_fraction"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if not 0.0 < self.confidence_threshold <= 1.0:
            raise ValueError(
                f"confidence_threshold must be in (0, 1], got {self.confidence_threshold}")
        if self.scheduler not in TRAIN_SCHEDULERS:
            raise ValueError(f"unknown scheduler {self.scheduler!r}: use "
                             f"{', '.join(repr(s) for s in TRAIN_SCHEDULERS)}")
        _check_seed(self.seed)

    @property
    def budget_in_epochs(self) -> bool:
        """The budget counts passes (``epochs``) rather than optimiser steps."""
        return self.epochs > 0 and self.steps == 0

    def planned_steps(self, n_train: int) -> int:
        """Optimiser steps of a fit on ``n_train`` training images (the budget).

        ``steps`` when set; with ``epochs`` set, ``epochs`` passes of ``ceil(n / batch)``
        batches; otherwise ``min_steps + steps_per_image * n_train``, at most ``max_steps``:
        a floor that does not shrink with the labelled set (4 images get as many updates as
        the first 30) plus a term that grows with it.
        """
        if self.steps > 0:
            return int(self.steps)
        if self.budget_in_epochs:
            return int(self.epochs) * steps_per_pass(n_train, self.batch_size)
        return int(min(self.max_steps, self.min_steps + self.steps_per_image * max(0, n_train)))


#: Learning-rate schedules :func:`napari_alunet.training.engine.fit` knows.
TRAIN_SCHEDULERS: tuple[str, ...] = ("warmup_cosine", "cosine", "none", "plateau")


def steps_per_pass(n_train: int, batch_size: int) -> int:
    """Batches in one pass over ``n_train`` images (a lone last image joins the one before)."""
    if n_train <= 0:
        return 1
    full, rest = divmod(n_train, batch_size)
    return max(1, full + (1 if rest > 1 or (rest == 1 and full == 0) else 0))


#: The recipe before 0.2, as one set of TrainConfig changes: 60 epochs, patience 10 epochs on a
#: validation split of at least one image, constant learning rate, no EMA, no unlabelled
#: images, no health check. Only for comparisons (``benchmarks/few_labels.py``).
LEGACY_RECIPE: dict[str, Any] = {
    "epochs": 60, "patience": 10, "learning_rate": 1e-3, "scheduler": "none", "ema_decay": 0.0,
    "validation_min_images": 1, "semi_supervised": False, "health_min_dice": 0.0,
    "health_retries": 0,
}
