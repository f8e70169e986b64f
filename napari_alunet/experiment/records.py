"""What an experiment writes and reads back: ``rounds.csv`` (append-only, fsynced per row) and
``config.json`` (the resolved configuration, versions and splits; compared on resume)."""

from __future__ import annotations

import csv
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

from napari_alunet.config import ExperimentConfig, from_dict, to_dict
from napari_alunet.experiment.pool import Pool, Splits

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
        if key == "processes" and a.get(key) is None and b.get(key) == 1:
            continue  # saved before data-parallel runs existed: it ran as one process
        if a.get(key, "<absent>") != b.get(key, "<absent>"):
            lines.append(f"{key}: {_short(a.get(key, '<absent>'))} -> "
                         f"{_short(b.get(key, '<absent>'))}")
    return lines


def _short(value: Any, limit: int = 80) -> str:
    # A changed folder lists every image name: say how it changed without printing them all.
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 5] + " ...]"


#: The parts of config.json that define the experiment's results.
_COMPARED = ("experiment", "sample_shape", "generator_version", "pool", "processes")


def config_record(config: ExperimentConfig, pool: Pool, splits: Splits,
                   sample_shape: tuple[int, int] | None, device: str,
                   command: str | None) -> dict[str, Any]:
    import torch

    from napari_alunet import __version__, distributed

    # Under torchrun the fits are data-parallel (N x the batch per step), so the number of
    # processes is part of what makes the curves comparable: a resume must use the same.
    processes = distributed.rank_and_size()[1]

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
        "processes": processes,
        "command": command,
        "sessions": [{"started": _now(), "device": device, "command": command,
                      "processes": processes}],
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


def save_resume_model(out: Path, model: Any, model_config: Any, class_names: Sequence[str],
                      strategy: str, seed: int, round_idx: int) -> None:
    """Keep a warm-started run's newest model in ``out``, tagged with (strategy, seed, round)."""
    from napari_alunet.training.checkpoint import save_checkpoint

    save_checkpoint(out / RESUME_MODEL, model, model_config=model_config,
                    class_names=list(class_names),
                    extra={"strategy": strategy, "seed": seed, "round": round_idx})


def load_resume_model(out: Path, model_config: Any, strategy: str, seed: int,
                      round_idx: int) -> Any:
    """The saved warm-start model of exactly (strategy, seed, round), else None."""
    from napari_alunet.training.checkpoint import CheckpointError, load_checkpoint

    path = out / RESUME_MODEL
    if not path.is_file():
        return None
    try:
        model, meta = load_checkpoint(path, expected_model_config=model_config)
    except (CheckpointError, OSError):
        return None
    extra = meta.get("extra") or {}
    if (extra.get("strategy"), extra.get("seed"), extra.get("round")) != (strategy, seed,
                                                                           round_idx):
        return None
    return model


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


__all__ = [
    "format_regions", "parse_regions",
    "CONFIG_FILE", "RESUMABLE_DIFFERENCES", "RESUME_MODEL", "ROUNDS_FILE", "SUMMARY_FILE",
    "RoundsFile", "config_differences", "config_record", "load_experiment_config",
    "load_resume_model", "parse_ids", "prepare_out", "read_rounds", "round_columns",
    "save_resume_model",
]
