"""Rows of the project database as frozen dataclasses, the schema and the store's errors."""

from __future__ import annotations

import datetime as _dt
import enum
import json
import sqlite3
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from napari_alunet.config import RoundSettings

SCHEMA_VERSION = 1
POOLS = ("labelled", "unlabelled", "test")
LABEL_SOURCES = ("imported", "human", "oracle", "model")


class RoundStatus(str, enum.Enum):
    """How far a round got. A round moves ``started -> trained -> evaluated -> queued ->
    complete``; ``abandoned`` ends a round that was restarted or could not go on.

    Members compare equal to (and are stored as) their lower-case strings.
    """

    STARTED = "started"
    TRAINED = "trained"
    EVALUATED = "evaluated"
    QUEUED = "queued"
    COMPLETE = "complete"
    ABANDONED = "abandoned"

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)

    @property
    def finished(self) -> bool:
        """Complete or abandoned: nothing more happens in this round."""
        return self in (RoundStatus.COMPLETE, RoundStatus.ABANDONED)

    @property
    def has_model(self) -> bool:
        """Evaluated or queued: the round's model is trained, checked and can score."""
        return self in (RoundStatus.EVALUATED, RoundStatus.QUEUED)

    @property
    def in_progress(self) -> bool:
        """Started, trained or evaluated: a run of the round was cut off and can resume."""
        return self in (RoundStatus.STARTED, RoundStatus.TRAINED, RoundStatus.EVALUATED)

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    source_name TEXT NOT NULL,
    rel_path TEXT NOT NULL UNIQUE,
    sha256 TEXT NOT NULL,
    height INTEGER NOT NULL CHECK (height > 0),
    width INTEGER NOT NULL CHECK (width > 0),
    pool TEXT NOT NULL CHECK (pool IN ('labelled', 'unlabelled', 'test')),
    labelled_round INTEGER,
    gt_path TEXT,
    gt_sha256 TEXT,
    added_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS images_pool ON images (pool);
CREATE TABLE IF NOT EXISTS label_versions (
    id INTEGER PRIMARY KEY,
    image_id INTEGER NOT NULL REFERENCES images (id),
    rel_path TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    source TEXT NOT NULL CHECK (source IN ('imported', 'human', 'oracle', 'model')),
    author TEXT,
    round_index INTEGER,
    created_at TEXT NOT NULL,
    pixels_changed INTEGER,
    pixels_foreground INTEGER,
    seconds_spent REAL,
    active INTEGER NOT NULL DEFAULT 1,
    pixels_unknown INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS label_versions_image ON label_versions (image_id, active);
CREATE TABLE IF NOT EXISTS rounds (
    idx INTEGER PRIMARY KEY,
    status TEXT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    n_labelled INTEGER,
    checkpoint TEXT,
    model_version TEXT,
    config TEXT
);
CREATE TABLE IF NOT EXISTS metrics (
    round_idx INTEGER NOT NULL REFERENCES rounds (idx),
    split TEXT NOT NULL,
    name TEXT NOT NULL,
    value REAL,
    PRIMARY KEY (round_idx, split, name)
);
CREATE TABLE IF NOT EXISTS scores (
    round_idx INTEGER NOT NULL REFERENCES rounds (idx),
    model_version TEXT NOT NULL,
    strategy TEXT NOT NULL,
    image_id INTEGER NOT NULL REFERENCES images (id),
    score REAL NOT NULL,
    PRIMARY KEY (round_idx, model_version, strategy, image_id)
);
CREATE TABLE IF NOT EXISTS queue (
    round_idx INTEGER NOT NULL REFERENCES rounds (idx),
    position INTEGER NOT NULL,
    image_id INTEGER NOT NULL REFERENCES images (id),
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'committed', 'skipped')),
    PRIMARY KEY (round_idx, image_id)
);
"""


class ProjectError(RuntimeError):
    """A project cannot be opened or changed; the message says what to do."""


class ProjectLockedError(ProjectError):
    """Another process has the project open for writing."""


@dataclass(frozen=True)
class ImageRecord:
    """One row of ``images``: where the original is and which pool it is in."""

    id: int
    name: str
    source_name: str
    rel_path: str
    sha256: str
    height: int
    width: int
    pool: str
    labelled_round: int | None
    gt_path: str | None
    gt_sha256: str | None

    @property
    def has_ground_truth(self) -> bool:
        return self.gt_path is not None


@dataclass(frozen=True)
class LabelVersion:
    """One committed label image and who or what made it."""

    id: int
    image_id: int
    rel_path: str
    sha256: str
    source: str
    author: str | None
    round_index: int | None
    created_at: str
    pixels_changed: int | None
    pixels_foreground: int | None
    seconds_spent: float | None
    active: bool
    #: Pixels still unreviewed (``UNKNOWN_LABEL``) in this version: 0 for a full label.
    pixels_unknown: int = 0

    @property
    def partial(self) -> bool:
        """True when part of the image is still unreviewed (region-level review)."""
        return self.pixels_unknown > 0


@dataclass(frozen=True)
class RoundRecord:
    idx: int
    status: RoundStatus
    started_at: str
    finished_at: str | None
    n_labelled: int | None
    checkpoint: str | None
    model_version: str | None
    config: dict[str, Any] | None

    @property
    def settings(self) -> RoundSettings:
        """The settings the round was started with (the defaults for a round without any)."""
        from napari_alunet.config import RoundSettings

        return RoundSettings.from_dict(self.config) if self.config else RoundSettings()


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")




def image_from_row(row: sqlite3.Row) -> ImageRecord:
    return ImageRecord(**{k: row[k] for k in ImageRecord.__dataclass_fields__})


#: Columns added after schema version 1 and their SQL, added to an older database on opening.
ADDED_COLUMNS = {
    "label_versions": {"pixels_unknown": "INTEGER NOT NULL DEFAULT 0"},
}


def label_from_row(row: sqlite3.Row) -> LabelVersion:
    present = set(row.keys())  # a read-only old database may lack an added column
    values = {k: row[k] for k in LabelVersion.__dataclass_fields__ if k in present}
    values["active"] = bool(values["active"])
    return LabelVersion(**values)


def round_from_row(row: sqlite3.Row) -> RoundRecord:
    values = {k: row[k] for k in RoundRecord.__dataclass_fields__}
    values["config"] = json.loads(values["config"]) if values["config"] else None
    values["status"] = RoundStatus(values["status"])
    return RoundRecord(**values)
