"""Configuration dataclasses for every part of the active-learning loop.

Everything a run depends on lives in one of these plain dataclasses, so a run can be written to
JSON next to its results (:func:`to_dict`, :func:`save_config`) and rebuilt from it
(:func:`from_dict`). Widgets edit a config and build it when the user presses Start; the CLI
builds one from its arguments.

This module imports nothing heavy (no torch, no Qt).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

#: Class names in label-index order. Index 0 is background so that napari's Labels layer shows it
#: as transparent and a fresh, empty label image means "all background".
DEFAULT_CLASS_NAMES: tuple[str, ...] = ("background", "ICM", "TE", "ZP", "BL")

#: Display colours (RGB, 0-255) per class, matching the public blastocyst colour-mask palette so
#: that an exported colour mask looks like the data set's own.
DEFAULT_CLASS_COLOURS: tuple[tuple[int, int, int], ...] = (
    (0, 0, 0),  # background
    (51, 221, 255),  # ICM
    (250, 50, 83),  # TE
    (61, 245, 61),  # ZP
    (255, 245, 61),  # BL
)

#: The label value of a pixel nobody has reviewed (a partial label, region-level review): not
#: background, not any class. Training and metrics ignore it; mask files keep it; the Labels
#: layer shows it as unlabelled. A project therefore has at most 255 classes.
UNKNOWN_LABEL: int = 255


@dataclass
class ClassSpec:
    """Names and display colours of the segmentation classes (index 0 is background)."""

    names: tuple[str, ...] = DEFAULT_CLASS_NAMES
    colours: tuple[tuple[int, int, int], ...] = DEFAULT_CLASS_COLOURS

    def __post_init__(self) -> None:
        self.names = tuple(self.names)
        self.colours = tuple(tuple(int(v) for v in c) for c in self.colours)  # type: ignore[misc]
        if len(self.names) != len(self.colours):
            raise ValueError(
                f"{len(self.names)} class names but {len(self.colours)} colours: give one colour "
                "per class"
            )
        if len(self.names) < 2:
            raise ValueError("at least two classes are needed (background and one object class)")
        if len(self.names) > UNKNOWN_LABEL:
            raise ValueError(f"at most {UNKNOWN_LABEL} classes: the label value {UNKNOWN_LABEL} "
                             "marks unreviewed pixels")

    @property
    def n_classes(self) -> int:
        return len(self.names)


@dataclass
class ModelConfig:
    """Bayesian (MC-dropout) U-Net architecture.

    Attributes
    ----------
    base_width : channels of the first encoder block; block ``i`` has ``base_width * 2**i``.
    depth : number of poolings (the ``gpu`` preset, depth 4, gives widths 64-1024).
    dropout : dropout probability used for MC sampling.
    dropout_placement : ``"encoder"`` (after each encoder pooling, as in the Active Bayesian
        U-Net paper), ``"all"`` (after every block) or ``"decoder"`` (decoder blocks only).
    in_channels, n_classes : input channels (1 for grayscale) and output classes.
    input_size : side of the square model input in pixels (images are letter-boxed to it).
    """

    base_width: int = 16
    depth: int = 4
    dropout: float = 0.3
    dropout_placement: str = "encoder"
    in_channels: int = 1
    n_classes: int = 5
    input_size: int = 128

    def __post_init__(self) -> None:
        if self.dropout_placement not in ("encoder", "all", "decoder"):
            raise ValueError(
                f"dropout_placement must be 'encoder', 'all' or 'decoder', not "
                f"{self.dropout_placement!r}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.input_size % (2**self.depth):
            raise ValueError(
                f"input_size {self.input_size} must be divisible by 2**depth = {2**self.depth}"
            )


#: Named model presets. ``gpu`` is the reference size of the paper (~31 M parameters);
#: ``cpu`` trains a round in minutes on two cores.
MODEL_PRESETS: dict[str, ModelConfig] = {
    "gpu": ModelConfig(base_width=64, depth=4, dropout=0.3, input_size=256),
    "cpu": ModelConfig(base_width=16, depth=4, dropout=0.3, input_size=128),
    # For tests: runs in seconds on 32x32 images.
    "tiny": ModelConfig(base_width=8, depth=2, dropout=0.3, input_size=32),
}


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


#: Every per-pixel uncertainty map :mod:`napari_alunet.uncertainty` computes.
MAP_NAMES: tuple[str, ...] = ("entropy", "bald", "kl", "js", "margin", "variation_ratio")

#: Strategy name -> the uncertainty map (:mod:`napari_alunet.uncertainty`) its score reduces;
#: the one list of strategies (acquisition.py, the CLI and the widgets import it).
STRATEGY_MAPS: dict[str, str | None] = {
    "random": None,
    "entropy": "entropy",
    "bald": "bald",
    "kl": "kl",
    "js": "js",
    "margin": "margin",
    "variation_ratio": "variation_ratio",
}
#: The strategies a user can choose (CLI, GUI, experiment arms).
STRATEGIES: tuple[str, ...] = tuple(STRATEGY_MAPS)
#: The uncertainty maps cached with every queued image for the Review panel (the strategy's own
#: map is added when it is another one).
REVIEW_MAPS: tuple[str, ...] = ("entropy", "bald", "kl", "js")
#: MC-dropout passes per image unless a config says otherwise.
DEFAULT_MC_PASSES: int = 8
#: How k are taken from the scores (see :func:`napari_alunet.acquisition.rank`).
DIVERSITY: tuple[str, ...] = ("none", "power", "feature", "softrank", "softmax", "badge")
#: Strategies that need ground truth of the unlabelled pool: benchmark controls only.
ORACLE_STRATEGIES: tuple[str, ...] = ("oracle_error",)
#: Cold starts for the first queue of a pool without labels.
COLD_STARTS: tuple[str, ...] = ("random", "typical")
#: What acquisition takes (whole images or regions) and a region's optional cost estimate.
UNITS: tuple[str, ...] = ("image", "region")
REGION_COSTS: tuple[str, ...] = ("none", "boundary")
#: Seeds are handed to numpy and torch, which take 0 .. 2**63 - 1 (``round_seed`` multiplies
#: by 1000 and adds the round).
MAX_SEED: int = 2**53


def _check_seed(seed: Any) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed must be a whole number in [0, {MAX_SEED}], got {seed!r}")


@dataclass
class AcquisitionConfig:
    """How the unlabelled pool is scored and which images are proposed.

    Every field is checked when the config is made (options, widgets, stored settings), so a
    bad value is one clear error naming the option before anything is saved.
    """

    strategy: str = "bald"  # one of STRATEGIES
    passes: int = DEFAULT_MC_PASSES
    k: int = 2
    subset: int | None = None  # score a random subset of this many pool images (None: all)
    reduction: str = "mean"  # mean over all pixels, "foreground", "class_weighted"
    # How k images are taken from the scores. Stochastic batches by default: top-k of
    # per-image scores picks near-duplicates and loses to random at small budgets (Kirsch et
    # al. 2021); "none" is plain top-k, "badge" the uncertainty + diversity hybrid.
    diversity: str = "power"  # none, power, softrank, softmax, feature, badge
    power_beta: float | None = None  # None: set from the scores' dynamic range
    batch_size: int = 16
    seed: int = 0
    cold_start: str = "typical"  # the first queue of a project without labels: typical, random
    # What is acquired: whole images, or regions (square tiles of the model's input) ranked
    # across the pool; with "region" k counts regions and the reviewer labels only inside them.
    unit: str = "image"  # image, region
    region_size: int = 32  # side of a region tile in model-input pixels
    # "boundary": divide a region's score by its estimated correction cost (CEREALS-style:
    # 1 + the predicted class boundaries per pixel, scaled), favouring cheap-to-fix regions.
    region_cost: str = "none"  # none, boundary

    def __post_init__(self) -> None:
        choices = {"strategy": (*STRATEGY_MAPS, *ORACLE_STRATEGIES), "diversity": DIVERSITY,
                   "cold_start": COLD_STARTS, "unit": UNITS, "region_cost": REGION_COSTS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, not "
                                 f"{getattr(self, name)!r}")
        for name, low in (("passes", 1), ("k", 1), ("batch_size", 1), ("region_size", 4)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be a whole number >= {low}, got {value!r}")
        if self.subset is not None and (not isinstance(self.subset, int) or self.subset < 1):
            raise ValueError(f"subset must be None (score the whole pool) or a whole number "
                             f">= 1, got {self.subset!r}")
        if self.power_beta is not None and not float(self.power_beta) >= 0:
            raise ValueError(f"power_beta must be >= 0 (inf: top-k) or None (from the scores' "
                             f"range), got {self.power_beta!r}")
        if self.reduction not in ("mean", "foreground", "class_weighted"):
            raise ValueError(f"reduction must be one of mean, foreground, class_weighted, not "
                             f"{self.reduction!r}")
        _check_seed(self.seed)


@dataclass
class DataConfig:
    """How a pool is split when imported."""

    test_fraction: float = 0.2
    initial_fraction: float = 0.1
    seed: int = 0
    input_size: int = 256

    def __post_init__(self) -> None:
        for name in ("test_fraction", "initial_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {value}")


@dataclass
class ExperimentConfig:
    """An oracle-replay experiment comparing strategies over several seeds."""

    data: str = "sample"  # "sample", "redundant" (the benchmark pool) or a folder
    strategies: tuple[str, ...] = ("random", "entropy", "bald", "kl", "js")
    seeds: int = 5
    first_seed: int = 0  # seeds first_seed .. first_seed + seeds - 1 (split a run over processes)
    k: int = 2
    initial_fraction: float = 0.1
    test_fraction: float = 0.2
    rounds: int | None = None
    until_fraction: float | None = 0.5
    passes: int = DEFAULT_MC_PASSES
    preset: str = "cpu"
    sample_n: int = 60
    sample_seed: int = 0
    test_per_mode: int = 4  # data="redundant": fresh test embryos per mode
    rare_mode_p: float = 0.06  # data="redundant": share of embryos of each of the 5 rare modes
    # The full-data baseline trains this many times the budget of an active fit on the same
    # number of images (at most max_steps), with early stopping on its validation split, so
    # that its best step is not its last: "95 % of full" must not be 95 % of an undertrained
    # model.
    full_steps_factor: float = 3.0
    # Train that baseline at all (False reruns only some arms of a run that has it).
    full_baseline: bool = True
    # Annotation cost in clicks (experiment/cost.py): an error region or drawn region smaller
    # than min_click_area pixels costs nothing; a drawn outline costs one click per
    # vertex_spacing pixels of boundary.
    min_click_area: int = 16
    vertex_spacing: float = 10.0
    # Region arms (``strategy@region``): tile side in model-input pixels, and the pixels they
    # review per round as a multiple of what k whole images cover (1.0: the same budget as the
    # image arms, so curves on the reviewed-pixels axis cover the same range).
    region_size: int = 16
    region_budget: float = 1.0
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    acquisition: AcquisitionConfig = field(default_factory=AcquisitionConfig)


@dataclass
class RoundSettings:
    """Everything a round depends on; saved with the round so a resume uses the same."""

    model: ModelConfig = field(default_factory=lambda: model_preset("cpu"))
    train: TrainConfig = field(default_factory=TrainConfig)
    acquisition: AcquisitionConfig = field(default_factory=AcquisitionConfig)

    @classmethod
    def preset(cls, name: str, **train_overrides: Any) -> RoundSettings:
        return cls(model=model_preset(name), train=TrainConfig(**train_overrides))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RoundSettings:
        return cls(model=from_dict(ModelConfig, data["model"]),
                   train=from_dict(TrainConfig, data["train"]),
                   acquisition=from_dict(AcquisitionConfig, data["acquisition"]))


T = TypeVar("T")


def to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a (nested) config dataclass."""
    return dataclasses.asdict(config)


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Rebuild a config dataclass from :func:`to_dict` output.

    Unknown keys raise ``ValueError`` naming them, so a typo in a config file is not silently
    ignored.
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    retired = _RETIRED_FIELDS.get(cls.__name__, ())
    data = {k: v for k, v in data.items() if k not in retired}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s): {', '.join(unknown)}")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        ftype = fields[name].type
        sub = _NESTED.get(ftype if isinstance(ftype, str) else getattr(ftype, "__name__", ""))
        if sub is not None and isinstance(value, dict):
            value = from_dict(sub, value)
        elif isinstance(value, list):
            value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        kwargs[name] = value
    return cls(**kwargs)


#: Fields that configs written by earlier versions may hold and that no longer mean anything;
#: dropped when read, so an old project's rounds and experiments still load.
_RETIRED_FIELDS: dict[str, tuple[str, ...]] = {
    # 0.1: "at least this many validation images" (always >= 1); replaced by the rule around
    # ``validation_min_images``.
    "TrainConfig": ("min_validation_images",),
}

_NESTED: dict[str, type] = {
    "ModelConfig": ModelConfig,
    "TrainConfig": TrainConfig,
    "AcquisitionConfig": AcquisitionConfig,
    "DataConfig": DataConfig,
    "ClassSpec": ClassSpec,
}


def model_preset(name: str, **overrides: Any) -> ModelConfig:
    """A copy of a named :data:`MODEL_PRESETS` entry with fields overridden."""
    try:
        base = MODEL_PRESETS[name]
    except KeyError:
        raise ValueError(
            f"unknown model preset {name!r}; choose one of {', '.join(MODEL_PRESETS)}"
        ) from None
    return dataclasses.replace(base, **overrides)


def save_config(config: Any, path: str | os.PathLike[str]) -> Path:
    """Write a config as indented JSON, atomically (temporary file + rename)."""
    from napari_alunet.fileio import atomic_write_bytes

    text = json.dumps(to_dict(config), indent=2, sort_keys=True) + "\n"
    return atomic_write_bytes(Path(path), text.encode())
