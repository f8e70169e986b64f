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
    """One training run (a round's fit)."""

    epochs: int = 60
    patience: int = 10
    batch_size: int = 8
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    warm_start: bool = True
    validation_fraction: float = 0.2
    min_validation_images: int = 1
    loss: str = "ce+tversky"  # "ce", "tversky", "dice", "ce+tversky", "ce+dice"
    class_weighting: str = "median_frequency"  # or "none"
    tversky_alpha: float = 0.3
    tversky_beta: float = 0.7
    border_weight: bool = False
    border_w0: float = 10.0
    border_sigma: float = 5.0
    augment: bool = True
    seed: int = 0
    scheduler: str = "none"  # "none", "cosine", "plateau"
    precision: str = "auto"  # "auto" (bf16 autocast on CUDA, fp32 elsewhere), "fp32", "bf16"
    device: str = "auto"  # "auto", "cpu", "cuda", "mps"
    num_threads: int = 0  # 0: leave torch's default


@dataclass
class AcquisitionConfig:
    """How the unlabelled pool is scored and which images are proposed."""

    strategy: str = "bald"  # random, entropy, bald, kl, js, margin, variation_ratio
    passes: int = 8
    k: int = 2
    subset: int | None = None  # score a random subset of this many pool images (None: all)
    reduction: str = "mean"  # mean over all pixels, "foreground", "class_weighted"
    diversity: str = "none"  # "none", "power", "feature"
    power_beta: float = 1.0
    batch_size: int = 16
    seed: int = 0


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

    data: str = "sample"
    strategies: tuple[str, ...] = ("random", "entropy", "bald", "kl", "js")
    seeds: int = 5
    k: int = 2
    initial_fraction: float = 0.1
    test_fraction: float = 0.2
    rounds: int | None = None
    until_fraction: float | None = 0.5
    passes: int = 8
    preset: str = "cpu"
    sample_n: int = 60
    sample_seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    acquisition: AcquisitionConfig = field(default_factory=AcquisitionConfig)


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
