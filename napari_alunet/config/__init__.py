"""Configuration dataclasses for every part of the active-learning loop.

Everything a run depends on lives in one of these plain dataclasses, so a run can be written to
JSON next to its results (:func:`to_dict`, :func:`save_config`) and rebuilt from it
(:func:`from_dict`). Widgets edit a config and build it when the user presses Start; the CLI
builds one from its arguments.

This package imports nothing heavy (no torch, no Qt). ``TrainConfig`` lives in
:mod:`.training`, ``AcquisitionConfig`` and the lists of strategies and maps in
:mod:`.acquisition`; every name is imported from ``napari_alunet.config``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from napari_alunet.config.acquisition import (
    COLD_STARTS,
    DEFAULT_MC_PASSES,
    DIVERSITY,
    MAP_NAMES,
    ORACLE_STRATEGIES,
    REGION_COSTS,
    REVIEW_MAPS,
    STRATEGIES,
    STRATEGY_MAPS,
    UNITS,
    AcquisitionConfig,
)
from napari_alunet.config.seeds import MAX_SEED
from napari_alunet.config.training import (
    LEGACY_RECIPE,
    TRAIN_SCHEDULERS,
    TrainConfig,
    steps_per_pass,
)

__all__ = [
    "AcquisitionConfig",
    "COLD_STARTS",
    "ClassSpec",
    "DEFAULT_CLASS_COLOURS",
    "DEFAULT_CLASS_NAMES",
    "DEFAULT_MC_PASSES",
    "DIVERSITY",
    "DataConfig",
    "ExperimentConfig",
    "LEGACY_RECIPE",
    "MAP_NAMES",
    "MAX_SEED",
    "MODEL_PRESETS",
    "ModelConfig",
    "ORACLE_STRATEGIES",
    "REGION_COSTS",
    "REVIEW_MAPS",
    "RoundSettings",
    "STRATEGIES",
    "STRATEGY_MAPS",
    "TRAIN_SCHEDULERS",
    "TrainConfig",
    "UNITS",
    "UNKNOWN_LABEL",
    "from_dict",
    "model_preset",
    "save_config",
    "steps_per_pass",
    "to_dict",
]

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
