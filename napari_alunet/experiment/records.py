"""What an experiment writes and reads back: ``rounds.csv`` (append-only, fsynced per row) and
``config.json`` (the resolved configuration, versions and splits; compared on resume)."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_alunet.config import ExperimentConfig, from_dict, model_preset, to_dict
from napari_alunet.experiment.pool import Pool, Splits
from napari_alunet.experiment.report import FULL

CONFIG_FILE = "config.json"
ROUNDS_FILE = "rounds.csv"
SUMMARY_FILE = "summary.csv"
RESUME_MODEL = "resume_model.pt"

#: config.json keys that may change between a run and its resume (they do not change what is
#: computed, only where or how fast).
RESUMABLE_DIFFERENCES = ("experiment.train.device", "experiment.train.num_threads",
                         "experiment.acquisition.batch_size")


def round_columns(class_names: Sequence[str], modes: Sequence[str] = ()) -> list[str]:
    """The columns of rounds.csv, in order (``modes``: the pool's embryo modes, if any)."""
    return [
        "strategy", "seed", "round", "n_labelled", "n_train_pool", "fraction", "mean_dice",
        *[f"dice_{n}" for n in class_names], *[f"dice_mode_{m}" for m in modes],
        *(["worst_mode_dice"] if modes else []),
        "mean_iou", "pixel_accuracy", "ece", "n_train",
        "n_val", "n_unlabelled", "selection", "init", "steps", "passes", "best_step",
        "stopped_early", "best_val_dice", "labelled_dice", "attempts", "train_seconds",
        "score_seconds", "n_scored", "acquired_ids", "correction_pixels",
        "scratch_pixels", "correction_clicks", "scratch_clicks",
        "cumulative_correction_pixels", "cumulative_scratch_pixels",
        "cumulative_correction_clicks", "cumulative_scratch_clicks",
        "reviewed_pixels", "cumulative_reviewed_pixels", "acquired_regions",
    ]


# -- configuration file ---------------------------------------------------------------------------
def make_config(*, preset: str = "cpu", train: dict[str, Any] | None = None,
                device: str | None = None, subset: int | None = None, warm_start: bool = True,
                threads: int | None = None, diversity: str = "power",
                power_beta: float | None = None, input_size: int | None = None,
                **fields: Any) -> ExperimentConfig:
    """An :class:`ExperimentConfig` with the model of ``preset`` and consistent sub-configs.

    ``train`` holds TrainConfig fields to change (``steps``, ``epochs``, ``patience``,
    ``learning_rate``, ``semi_supervised``, ...). ``threads`` sets ``train.num_threads``
    (torch intra-op threads for the whole experiment; 0 leaves torch's default). ``diversity`` /
    ``power_beta`` go to the acquisition config: the diversity of strategies named without a
    ``+diversity`` suffix (:func:`split_strategy`). ``fields`` are ExperimentConfig fields
    (``strategies``, ``seeds``, ``k``, ...). The acquisition config gets the experiment's ``k``
    and ``passes`` so the saved config does not hold two different values of either.
    """
    model = model_preset(preset) if input_size is None else model_preset(
        preset, input_size=int(input_size))
    config = ExperimentConfig(preset=preset, model=model, **fields)
    train_changes: dict[str, Any] = {"warm_start": warm_start, **(train or {})}
    if device is not None:
        train_changes["device"] = device
    if threads is not None:
        train_changes["num_threads"] = threads
    config.train = dataclasses.replace(config.train, **train_changes)
    config.acquisition = dataclasses.replace(config.acquisition, k=config.k,
                                             passes=config.passes, subset=subset,
                                             diversity=diversity, power_beta=power_beta)
    config.strategies = tuple(config.strategies)
    if config.data not in ("sample", "redundant"):
        config.data = str(Path(config.data).expanduser().resolve())
    return config


@dataclasses.dataclass(frozen=True)
class Arm:
    """One arm of an experiment, parsed from its name.

    Grammar: ``[typical:]strategy[+diversity][@unit][#replicate]``.

    * ``strategy``: an acquisition strategy, or ``oracle_error`` (the upper-bound control: its
      score is the true error of the review prediction, and it takes k by the same batch rule
      as the other arms, so it differs from them by its score alone);
    * ``+diversity``: how k images are taken (``power``, ``softrank``, ``softmax``,
      ``feature``, ``badge``, ``none``); default the experiment's ``--diversity``;
    * ``typical:``: the initial labelled set is the typicality cold start instead of the
      seed's random initial set;
    * ``#2``: a replicate with another acquisition seed (``random#2`` is the A/A control: its
      spread against ``random`` is the null spread of the whole harness);
    * ``@region``: region-level acquisition (:mod:`napari_alunet.regions`): each round takes
      canvas tiles across the pool instead of whole images and the oracle labels only inside
      them (``random@region`` is its control); ``@image`` is the default.
    """

    name: str
    strategy: str
    diversity: str
    initial: str = "random"
    replicate: int = 1
    unit: str = "image"


def parse_arm(name: str, default_diversity: str = "power") -> Arm:
    """The :class:`Arm` named ``name``; ValueError naming the part that is wrong."""
    from napari_alunet.acquisition import DIVERSITY, strategy_map
    from napari_alunet.active import ORACLE_STRATEGIES

    rest, initial = name, "random"
    if ":" in rest:
        initial, _, rest = rest.partition(":")
        if initial != "typical":
            raise ValueError(f"unknown initial set {initial!r} in {name!r}; only 'typical:'")
    rest, hash_, replicate_text = rest.partition("#")
    replicate = 1
    if hash_:
        if not replicate_text.isdigit() or int(replicate_text) < 1:
            raise ValueError(f"{name!r}: the replicate after '#' must be a number >= 1")
        replicate = int(replicate_text)
    rest, at, unit = rest.partition("@")
    if not at:
        unit = "image"
    elif unit not in ("image", "region"):
        raise ValueError(f"{name!r}: the unit after '@' must be 'image' or 'region'")
    strategy, plus, diversity = rest.partition("+")
    if not plus:
        diversity = "none" if strategy == "random" else default_diversity
    if strategy not in ORACLE_STRATEGIES:
        strategy_map(strategy)
    if diversity not in DIVERSITY:
        raise ValueError(f"unknown diversity {diversity!r} in {name!r}; choose one of "
                         f"{', '.join(DIVERSITY)}")
    if strategy == "random" and diversity != "none":
        raise ValueError(f"{name!r}: random acquisition takes no diversity")
    if strategy in ORACLE_STRATEGIES and diversity in ("feature", "badge"):
        raise ValueError(f"{name!r}: the oracle takes k by its scores (none, power, softrank, "
                         "softmax), not by model features")
    if unit == "region" and (strategy in ORACLE_STRATEGIES or diversity in ("feature", "badge")):
        raise ValueError(f"{name!r}: regions are taken by an uncertainty map or at random, "
                         "with diversity none, power, softrank or softmax")
    return Arm(name, strategy, diversity, initial, replicate, unit)


def split_strategy(name: str, default_diversity: str = "none") -> tuple[str, str]:
    """``(strategy, diversity)`` of an arm name (see :func:`parse_arm`)."""
    arm = parse_arm(name, default_diversity)
    return arm.strategy, arm.diversity


def check_config(config: ExperimentConfig) -> None:
    if not config.strategies:
        raise ValueError("give at least one strategy")
    if len(set(config.strategies)) != len(config.strategies):
        raise ValueError(f"strategies repeat: {' '.join(config.strategies)}")
    for s in config.strategies:
        if s == FULL:
            raise ValueError(f"'{FULL}' is the name of the full-data baseline, not a strategy")
        parse_arm(s, config.acquisition.diversity)
    if config.seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {config.seeds}")
    if not 0.0 <= config.rare_mode_p <= 0.2:
        raise ValueError(f"rare_mode_p must be in [0, 0.2] (5 rare modes), got "
                         f"{config.rare_mode_p}")
    if not 1.0 <= config.full_steps_factor <= 20.0:
        raise ValueError(f"full_steps_factor must be in [1, 20], got {config.full_steps_factor}")
    if config.first_seed < 0:
        raise ValueError(f"first_seed must be >= 0, got {config.first_seed}")
    if config.k < 1:
        raise ValueError(f"k must be >= 1, got {config.k}")
    if config.passes < 1:
        raise ValueError(f"passes must be >= 1, got {config.passes}")
    if config.rounds is not None and config.rounds < 0:
        raise ValueError(f"rounds must be >= 0, got {config.rounds}")
    if config.until_fraction is not None and not 0 < config.until_fraction <= 1:
        raise ValueError(f"until_fraction must be in (0, 1], got {config.until_fraction}")
    for name in ("initial_fraction", "test_fraction"):
        value = getattr(config, name)
        if not 0 <= value < 1:
            raise ValueError(f"{name} must be in [0, 1), got {value}")
    if config.test_fraction == 0 and config.data != "redundant":
        raise ValueError("test_fraction must be > 0: the curves are measured on the test pool")
    if any(parse_arm(s).unit == "region" for s in config.strategies):
        from napari_alunet.regions import check_region_settings

        check_region_settings("region", config.region_size, "none", config.model.input_size)
        if not config.region_budget > 0:
            raise ValueError(f"region_budget must be > 0, got {config.region_budget}")


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    if isinstance(d, tuple):
        d = [list(v) if isinstance(v, tuple) else v for v in d]
    return {prefix[:-1]: d}


def config_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Human-readable ``key: old -> new`` lines for the resumable parts of two config.json."""
    a = _flatten(json.loads(json.dumps({k: old.get(k) for k in _COMPARED})))
    b = _flatten(json.loads(json.dumps({k: new.get(k) for k in _COMPARED})))
    # A setting added to the config classes after the experiment was saved is absent from the
    # old file; at its default value it cannot have changed anything, so it is no difference.
    defaults = _flatten(json.loads(json.dumps({"experiment": to_dict(ExperimentConfig())})))
    lines = []
    for key in sorted(set(a) | set(b)):
        if key in RESUMABLE_DIFFERENCES:
            continue
        if key not in a and key in defaults and b.get(key) == defaults[key]:
            continue
        if a.get(key, "<absent>") != b.get(key, "<absent>"):
            lines.append(f"{key}: {_short(a.get(key, '<absent>'))} -> "
                         f"{_short(b.get(key, '<absent>'))}")
    return lines


def _short(value: Any, limit: int = 80) -> str:
    # A changed folder lists every image name: say how it changed without printing them all.
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 5] + " ...]"


#: The parts of config.json that define the experiment's results.
_COMPARED = ("experiment", "sample_shape", "generator_version", "pool")


def config_record(config: ExperimentConfig, pool: Pool, splits: Splits,
                   sample_shape: tuple[int, int] | None, device: str,
                   command: str | None) -> dict[str, Any]:
    import torch

    from napari_alunet import __version__

    generator_version = None
    if config.data in ("sample", "redundant"):
        from napari_alunet.data.synthetic import GENERATOR_VERSION

        generator_version = GENERATOR_VERSION
    return {
        "experiment": to_dict(config),
        "sample_shape": list(sample_shape) if sample_shape is not None else None,
        "generator_version": generator_version,
        "pool": {
            "n_images": len(pool), "names": pool.names, "skipped": pool.skipped,
            "class_names": list(pool.class_names), "test_ids": splits.test,
            "modes": pool.modes,
            "initial_ids": {str(s): v for s, v in splits.initial.items()},
        },
        "versions": {
            "napari_alunet": __version__, "torch": torch.__version__,
            "numpy": np.__version__, "python": sys.version.split()[0],
        },
        "device": device,
        "command": command,
        "sessions": [{"started": _now(), "device": device, "command": command}],
    }


def load_experiment_config(out: str | os.PathLike[str]) -> tuple[ExperimentConfig, dict[str, Any]]:
    """The ExperimentConfig (and the whole record) saved in ``out/config.json``."""
    record = json.loads((Path(out) / CONFIG_FILE).read_text())
    experiment = dict(record["experiment"])
    for key, cls in (("model", "ModelConfig"), ("train", "TrainConfig"),
                     ("acquisition", "AcquisitionConfig")):
        from napari_alunet import config as cfg

        experiment[key] = from_dict(getattr(cfg, cls), experiment[key])
    experiment["strategies"] = tuple(experiment["strategies"])
    return ExperimentConfig(**experiment), record


def prepare_out(out: Path, record: dict[str, Any]) -> None:
    """Write config.json, or check it against an existing one (resume)."""
    from napari_alunet.fileio import atomic_write_bytes

    path = out / CONFIG_FILE
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path} is unreadable ({exc}); use a new --out") from None
        differences = config_differences(old, record)
        if differences:
            raise ValueError(
                f"{out} holds an experiment with different settings, so it cannot be resumed; "
                "use a new --out (or the original arguments). Differences (saved -> now):\n  "
                + "\n  ".join(differences)
            )
        old.setdefault("sessions", []).extend(record["sessions"])
        record = old
    elif (out / ROUNDS_FILE).exists():
        raise ValueError(f"{out} has {ROUNDS_FILE} but no {CONFIG_FILE}: use a new --out")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, (json.dumps(record, indent=2) + "\n").encode())


# -- rounds.csv -----------------------------------------------------------------------------------
def _format(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, float | np.floating):
        return "" if math.isnan(value) else repr(float(value))
    if isinstance(value, list | tuple):
        return " ".join(str(int(v)) for v in value)
    return str(value)


class RoundsFile:
    """Append-only rounds.csv: every row flushed and fsynced before the round counts as done."""

    def __init__(self, path: Path, columns: list[str]) -> None:
        self.path = path
        self.columns = columns
        if not path.exists() or path.stat().st_size == 0:
            self._append(",".join(columns) + "\n")
            return
        self._repair()
        with path.open(newline="") as handle:
            header = next(csv.reader(handle), [])
        if header != columns and header == columns[: len(header)]:
            self._add_columns(len(columns) - len(header))
            header = columns
        if header != columns:
            raise ValueError(
                f"{path} has columns {header} but this experiment writes {columns}; use a new "
                "--out"
            )

    def _repair(self) -> None:
        # A crash in the middle of a write leaves a last line without its newline: drop it, that
        # round was not recorded (and will be recomputed).
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            with self.path.open("r+b") as handle:
                handle.truncate(keep)
                handle.flush()
                os.fsync(handle.fileno())

    def _add_columns(self, n_new: int) -> None:
        """A run recorded before columns were added at the end (reviewed pixels, regions):
        rewrite it atomically with the new header and those cells empty, so it resumes."""
        from napari_alunet.fileio import atomic_write_bytes

        with self.path.open(newline="") as handle:
            rows = list(csv.reader(handle))
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(self.columns)
        writer.writerows(row + [""] * n_new for row in rows[1:])
        atomic_write_bytes(self.path, buffer.getvalue().encode())

    def _append(self, text: str) -> None:
        with self.path.open("a", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())

    def append(self, row: dict[str, Any]) -> None:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerow(
            [_format(row.get(c)) for c in self.columns])
        self._append(buffer.getvalue())

    def read(self) -> Any:
        """The table so far (see :func:`read_rounds`)."""
        return read_rounds(self.path)


def read_rounds(path: str | os.PathLike[str]) -> Any:
    """rounds.csv as a pandas DataFrame; duplicates of (strategy, seed, round) dropped."""
    import pandas as pd

    table = pd.read_csv(path, dtype={"acquired_ids": str, "strategy": str, "init": str,
                                     "acquired_regions": str})
    table["acquired_ids"] = table["acquired_ids"].fillna("")
    return table.drop_duplicates(["strategy", "seed", "round"], keep="first").reset_index(
        drop=True)


def format_regions(tiles: Mapping[int, Sequence[int]]) -> str:
    """``{3: [1, 5], 9: [0]}`` -> ``'3:1.5 9:0'`` (the acquired_regions column)."""
    return " ".join(f"{int(i)}:" + ".".join(str(int(t)) for t in ts) for i, ts in tiles.items())


def parse_regions(text: Any) -> dict[int, list[int]]:
    """The inverse of :func:`format_regions` (empty or NaN -> {})."""
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return {}
    out: dict[int, list[int]] = {}
    for token in str(text).split():
        image_id, _, tiles = token.partition(":")
        out[int(image_id)] = [int(t) for t in tiles.split(".") if t]
    return out


def parse_ids(text: Any) -> list[int]:
    """``'3 17 5'`` -> ``[3, 17, 5]`` (empty or NaN -> [])."""
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return []
    return [int(t) for t in str(text).split()]


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


__all__ = [
    "format_regions", "parse_regions",
    "CONFIG_FILE", "RESUMABLE_DIFFERENCES", "RESUME_MODEL", "ROUNDS_FILE", "SUMMARY_FILE",
    "RoundsFile", "check_config", "config_differences", "config_record",
    "load_experiment_config", "make_config", "parse_ids", "prepare_out", "read_rounds",
    "round_columns", "split_strategy",
]
