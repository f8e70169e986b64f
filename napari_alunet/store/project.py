"""The project store: one folder, one SQLite database, atomic mask files.

A project folder holds::

    project.db            SQLite (WAL, foreign keys): images, label versions, rounds, metrics,
                          scores, the review queue, settings
    project.lock          held (flock) by the one process that may write
    images/               the imported originals, copied once, named ``<id>_<safe name>.<ext>``
    masks/ground_truth/   imported ground truth, class-index PNGs at original size
    masks/labels/         committed label versions, class-index PNGs at original size;
                          255 (UNKNOWN_LABEL) marks pixels a partial (region) review left out
    models/               checkpoints, one per round
    cache/                review data (predictions and uncertainty maps of queued images)

Durability rules: every file is written atomically (:mod:`napari_alunet.fileio`) *before* the
row that points to it is committed, and every user action is one transaction. A crash therefore
leaves at worst an unreferenced file, never a row pointing at a missing or half-written one. Pools
are a column, not folders: no file is ever moved or copied between pools.

Concurrency: one writer per project, enforced with an exclusive ``flock`` on ``project.lock``. A
second process gets :class:`ProjectLockedError` (or waits ``timeout`` seconds), or opens the
project read-only. SQLite's own locking protects readers.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_alunet.config import ClassSpec, DataConfig, from_dict, to_dict
from napari_alunet.fileio import TEMP_PREFIX, sha256_file
from napari_alunet.store.connection import (
    DB_NAME,
    LOCK_NAME,
    add_missing_columns,
    connect_read_only,
    refuse_links,
)
from napari_alunet.store.labels import LabelsMixin, read_png
from napari_alunet.store.lock import acquire_lock
from napari_alunet.store.records import (
    POOLS,
    SCHEMA,
    SCHEMA_VERSION,
    ImageRecord,
    ProjectError,
    image_from_row,
    now_iso,
)
from napari_alunet.store.review_cache import ReviewCacheMixin
from napari_alunet.store.rounds import RoundsMixin


class Project(LabelsMixin, RoundsMixin, ReviewCacheMixin):
    """An open project. Use :meth:`create` or :meth:`open`; close it (or use ``with``).

    All methods are thread-safe (one lock around the connection), so a GUI worker thread and the
    GUI thread may share one ``Project``.
    """

    def __init__(self, path: Path, conn: sqlite3.Connection, lock_fd: int | None) -> None:
        self.path = path
        self._conn = conn
        self._lock_fd = lock_fd
        self._mutex = threading.RLock()
        self.read_only = lock_fd is None

    # -- opening and closing ------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        *,
        classes: ClassSpec | None = None,
        data: DataConfig | None = None,
        settings: dict[str, Any] | None = None,
    ) -> Project:
        """Create an empty project in ``path`` (which must not exist or be an empty folder)."""
        path = Path(path)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise ProjectError(
                f"cannot create a project in {path}: it exists and is not an empty folder; "
                "choose a new folder name"
            )
        path.mkdir(parents=True, exist_ok=True)
        for sub in ("images", "masks/ground_truth", "masks/labels", "models", "cache"):
            (path / sub).mkdir(parents=True, exist_ok=True)
        project = cls._connect(path, read_only=False, timeout=0.0, create=True)
        with project.transaction() as cur:
            meta = {
                "schema_version": SCHEMA_VERSION,
                "created_at": now_iso(),
                "classes": to_dict(classes or ClassSpec()),
                "data": to_dict(data or DataConfig()),
            }
            meta.update(settings or {})
            for key, value in meta.items():
                cur.execute("INSERT INTO meta VALUES (?, ?)", (key, json.dumps(value)))
        return project

    @classmethod
    def open(
        cls, path: str | os.PathLike[str], *, read_only: bool = False, timeout: float = 0.0,
        on_wait: Callable[[str], None] | None = None,
    ) -> Project:
        """Open an existing project.

        Parameters
        ----------
        read_only : open without the writer lock; any change raises ``ProjectError``.
        timeout : seconds to wait for another writer to close the project before raising
            :class:`ProjectLockedError`.
        on_wait : called once with a message (who holds the project, for how long we wait)
            when the wait begins, so a command can say it is waiting rather than look hung.
        """
        path = Path(path)
        if not (path / DB_NAME).is_file():
            raise ProjectError(
                f"{path} is not a napari-alunet project (no {DB_NAME}); create one with "
                "'alunet import' or the Project widget"
            )
        project = cls._connect(path, read_only=read_only, timeout=timeout, create=False,
                               on_wait=on_wait)
        try:
            version = project.get_setting("schema_version")
        except (sqlite3.Error, ValueError) as exc:  # empty, foreign or damaged database
            project.close()
            size = (path / DB_NAME).stat().st_size
            what = ("is empty (0 bytes)" if size == 0 else
                    f"is not a napari-alunet database or is damaged ({exc})")
            raise ProjectError(
                f"{path / DB_NAME} {what}; restore it from a backup, or import the images "
                "again into a new project ('alunet import')") from exc
        if version != SCHEMA_VERSION:
            project.close()
            raise ProjectError(
                f"{path} has schema version {version}; this napari-alunet reads version "
                f"{SCHEMA_VERSION}: upgrade napari-alunet"
            )
        if not read_only:
            project.clean_debris()
        return project

    @classmethod
    def _connect(
        cls, path: Path, *, read_only: bool, timeout: float, create: bool,
        on_wait: Callable[[str], None] | None = None,
    ) -> Project:
        if not read_only:
            refuse_links(path)  # before anything is written, the lock included
        lock_fd = None if read_only else acquire_lock(path / LOCK_NAME, timeout,
                                                       on_wait=on_wait)
        try:
            db = path / DB_NAME
            if read_only:
                conn = connect_read_only(db)
            else:
                conn = sqlite3.connect(db, check_same_thread=False, timeout=30.0)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=FULL")
            conn.isolation_level = None  # explicit BEGIN/COMMIT in transaction()
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA foreign_keys=ON")
            if create:
                conn.executescript(SCHEMA)
            elif not read_only:
                add_missing_columns(conn)
        except sqlite3.Error as exc:
            if lock_fd is not None:
                os.close(lock_fd)
            raise ProjectError(f"cannot open the database of {path}: {exc}") from exc
        except BaseException:
            if lock_fd is not None:
                os.close(lock_fd)
            raise
        return cls(path, conn, lock_fd)

    def close(self) -> None:
        with self._mutex:
            if self._conn is not None:
                self._conn.close()
                self._conn = None  # type: ignore[assignment]
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    def __enter__(self) -> Project:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Cursor]:
        """One atomic unit of change (``BEGIN IMMEDIATE`` ... ``COMMIT``; rollback on error)."""
        self._require_writable()
        with self._mutex:
            cur = self._conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            else:
                cur.execute("COMMIT")

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._mutex:
            if self._conn is None:
                raise ProjectError(f"project {self.path} is closed")
            return self._conn.execute(sql, args).fetchall()

    def _require_writable(self) -> None:
        if self.read_only:
            raise ProjectError(
                f"project {self.path} is open read-only (another process may be writing to it); "
                "close the other session to change it"
            )
        if self._conn is None:
            raise ProjectError(f"project {self.path} is closed")

    # -- settings -----------------------------------------------------------------------------
    def get_setting(self, key: str, default: Any = None) -> Any:
        rows = self._query("SELECT value FROM meta WHERE key = ?", (key,))
        return json.loads(rows[0]["value"]) if rows else default

    def set_setting(self, key: str, value: Any) -> None:
        with self.transaction() as cur:
            cur.execute(
                "INSERT INTO meta VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, json.dumps(value)),
            )

    @property
    def classes(self) -> ClassSpec:
        return from_dict(ClassSpec, self.get_setting("classes"))

    @property
    def data_config(self) -> DataConfig:
        return from_dict(DataConfig, self.get_setting("data"))

    # -- images ---------------------------------------------------------------------------------
    def import_rows(self, records: Iterable[dict[str, Any]]) -> None:
        """Record imported images in one transaction (the importer's only write to the database).

        Each record holds the ``images`` columns (``id``, ``name``, ``source_name``,
        ``rel_path``, ``sha256``, ``height``, ``width``, ``pool``, ``gt_path``, ``gt_sha256``);
        the files they name are already written. An image imported into the labelled pool gets
        its ground truth as its first label version (source ``imported``, round 0: the file is
        referenced, not copied).
        """
        self._require_writable()
        rows = [{**r, "labelled_round": 0 if r["pool"] == "labelled" else None} for r in records]
        unlabelled_gt = [r["name"] for r in rows if r["pool"] == "labelled" and not r["gt_path"]]
        if unlabelled_gt:
            raise ValueError(f"images {unlabelled_gt[:3]} are put in the labelled pool without "
                             "ground truth")
        stamp = now_iso()
        with self.transaction() as cur:
            cur.executemany(
                "INSERT INTO images (id, name, source_name, rel_path, sha256, height, width, "
                "pool, labelled_round, gt_path, gt_sha256, added_at) VALUES (:id, :name, "
                ":source_name, :rel_path, :sha256, :height, :width, :pool, :labelled_round, "
                ":gt_path, :gt_sha256, :added_at)",
                [{**r, "added_at": stamp} for r in rows],
            )
            cur.executemany(
                "INSERT INTO label_versions (image_id, rel_path, sha256, source, round_index, "
                "created_at) VALUES (?, ?, ?, 'imported', 0, ?)",
                [(r["id"], r["gt_path"], r["gt_sha256"], stamp) for r in rows
                 if r["pool"] == "labelled"],
            )

    def images(self, pool: str | None = None) -> list[ImageRecord]:
        """Image records, ordered by id, optionally of one pool."""
        if pool is not None and pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, not {pool!r}")
        sql = "SELECT * FROM images" + (" WHERE pool = ?" if pool else "") + " ORDER BY id"
        return [image_from_row(r) for r in self._query(sql, (pool,) if pool else ())]

    def image(self, image_id: int) -> ImageRecord:
        rows = self._query("SELECT * FROM images WHERE id = ?", (int(image_id),))
        if not rows:
            raise KeyError(f"no image with id {image_id} in project {self.path}")
        return image_from_row(rows[0])

    def counts(self) -> dict[str, int]:
        """Number of images per pool (every pool present, zeros included)."""
        rows = self._query("SELECT pool, COUNT(*) AS n FROM images GROUP BY pool")
        counts = dict.fromkeys(POOLS, 0)
        counts.update({r["pool"]: r["n"] for r in rows})
        return counts

    def read_image(self, image_id: int) -> np.ndarray:
        """The original image, (height, width) float32."""
        from napari_alunet.imagefile import read_image

        return read_image(self.path / self.image(image_id).rel_path)

    def read_ground_truth(self, image_id: int) -> np.ndarray | None:
        """Imported ground truth, (height, width) uint8 class indices, or None."""
        record = self.image(image_id)
        return None if record.gt_path is None else read_png(self.path / record.gt_path)

    # -- files, checks --------------------------------------------------------------------------
    def checkpoint_path(self, round_idx: int) -> Path:
        return self.path / "models" / f"round_{round_idx:03d}.pt"

    def clean_debris(self) -> list[Path]:
        """Delete temporary files a crash left behind (never a file a row points to)."""
        removed = []
        for folder, _dirs, files in os.walk(self.path):
            for name in files:
                if name.startswith(TEMP_PREFIX):
                    target = Path(folder) / name
                    with contextlib.suppress(OSError):
                        target.unlink()
                        removed.append(target)
        return removed

    def verify(self, *, hashes: bool = True) -> list[str]:
        """Problems found: database integrity, files that rows reference (missing, altered) and
        image, ground-truth and label files whose size is not the image's recorded size."""
        problems = [r[0] for r in self._query("PRAGMA integrity_check") if r[0] != "ok"]
        problems += [f"foreign key: {tuple(r)}" for r in self._query("PRAGMA foreign_key_check")]
        refs = [(r["rel_path"], r["sha256"])
                for r in self._query("SELECT rel_path, sha256 FROM images")]
        refs += [(r["gt_path"], r["gt_sha256"]) for r in self._query(
            "SELECT gt_path, gt_sha256 FROM images WHERE gt_path IS NOT NULL")]
        refs += [(r["rel_path"], r["sha256"]) for r in self._query(
            "SELECT rel_path, sha256 FROM label_versions")]
        # A round's checkpoint is referenced too; its model_version is its hash's first 16 hex.
        refs += [(r["checkpoint"], r["model_version"]) for r in self._query(
            "SELECT checkpoint, model_version FROM rounds WHERE checkpoint IS NOT NULL")]
        for rel, digest in refs:
            file = self.path / rel
            if not file.is_file():
                problems.append(f"missing file: {rel}")
            elif hashes and digest and sha256_file(file)[: len(digest)] != digest:
                problems.append(f"file does not match its recorded hash: {rel}")
        problems += self._size_problems()
        return problems

    def _size_problems(self) -> list[str]:
        """Pixel files whose header size differs from their image's recorded size."""
        from napari_alunet.imagefile import InputError, read_image_size

        sized = [(r["rel_path"], r["height"], r["width"]) for r in self._query(
            "SELECT rel_path, height, width FROM images")]
        sized += [(r["gt_path"], r["height"], r["width"]) for r in self._query(
            "SELECT gt_path, height, width FROM images WHERE gt_path IS NOT NULL")]
        sized += [(r["rel_path"], r["height"], r["width"]) for r in self._query(
            "SELECT l.rel_path, i.height, i.width FROM label_versions l JOIN images i "
            "ON i.id = l.image_id")]
        problems = []
        for rel, height, width in sized:
            file = self.path / rel
            if not file.is_file():
                continue  # reported as missing above
            try:
                found = read_image_size(file)
            except InputError as exc:
                problems.append(f"unreadable file: {rel} ({exc})")
                continue
            if found != (height, width):
                problems.append(f"wrong size: {rel} is {found[0]} x {found[1]}, the image is "
                                f"{height} x {width}")
        return problems
