"""Label versions of a project: commit, read, history and undo (mixed into Project).

Every commit writes a new version file (atomically, fsynced) before the row that points to it;
a version is never overwritten or deleted, only withdrawn (``active = 0``) by undo.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_alunet.config import UNKNOWN_LABEL, ClassSpec
from napari_alunet.fileio import atomic_write_png
from napari_alunet.store.records import (
    LABEL_SOURCES,
    ImageRecord,
    LabelVersion,
    ProjectError,
    label_from_row,
    now_iso,
)


def read_png(path: Path) -> np.ndarray:
    """A class-index PNG (mask or label version), (height, width) uint8."""
    from PIL import Image

    with Image.open(path) as img:
        return np.asarray(img, dtype=np.uint8)


class LabelsMixin:
    """Label bookkeeping; relies on Project's connection, lock, image records and classes."""

    if TYPE_CHECKING:
        # Provided by Project, the only class this is mixed into (declared for the type checker).
        path: Path
        _mutex: threading.RLock

        def transaction(self) -> contextlib.AbstractContextManager[sqlite3.Cursor]: ...

        def _query(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]: ...

        def _require_writable(self) -> None: ...

        def image(self, image_id: int) -> ImageRecord: ...

        @property
        def classes(self) -> ClassSpec: ...

    def current_label(self, image_id: int) -> LabelVersion | None:
        rows = self._query(
            "SELECT * FROM label_versions WHERE image_id = ? AND active = 1 ORDER BY id DESC "
            "LIMIT 1",
            (int(image_id),),
        )
        return label_from_row(rows[0]) if rows else None

    def read_label(self, image_id: int) -> np.ndarray | None:
        """The current label image, (height, width) uint8, or None if never labelled.

        ``UNKNOWN_LABEL`` (255) marks pixels no review has covered yet (a partial label)."""
        version = self.current_label(image_id)
        return None if version is None else read_png(self.path / version.rel_path)

    def partial_ids(self) -> list[int]:
        """Images whose current label still has unreviewed pixels (one query, not one per
        image)."""
        rows = self._query(
            "SELECT v.image_id FROM label_versions v WHERE v.active = 1 AND v.pixels_unknown > 0 "
            "AND v.id = (SELECT MAX(id) FROM label_versions w WHERE w.image_id = v.image_id "
            "AND w.active = 1) ORDER BY v.image_id")
        return [r["image_id"] for r in rows]

    def read_label_version(self, version: LabelVersion) -> np.ndarray:
        """The mask of one label version (active or withdrawn), (height, width) uint8."""
        return read_png(self.path / version.rel_path)

    def label_history(self, image_id: int) -> list[LabelVersion]:
        rows = self._query(
            "SELECT * FROM label_versions WHERE image_id = ? ORDER BY id", (int(image_id),)
        )
        return [label_from_row(r) for r in rows]

    def commit_label(
        self,
        image_id: int,
        labels: np.ndarray,
        *,
        source: str = "human",
        author: str | None = None,
        round_index: int | None = None,
        seconds_spent: float | None = None,
        reference: np.ndarray | None = None,
    ) -> LabelVersion:
        """Store a label image for ``image_id`` and move the image to the labelled pool.

        The mask file is written and fsynced before the transaction that records it commits;
        when this returns, the label survives a crash.

        A *partial* label (region-level review) holds ``UNKNOWN_LABEL`` (255) where nobody
        looked. It is merged into the image's current label: the reviewed pixels replace what
        was there, the rest keeps the earlier reviews (:func:`napari_alunet.regions.
        merge_partial`), and the merged image is stored as the new version, so undo withdraws
        exactly this commit. A full label (no unknown pixel) replaces the current one.

        Parameters
        ----------
        labels : (height, width) integer array of class indices at the image's original size,
            ``UNKNOWN_LABEL`` where unreviewed.
        source : 'human', 'oracle', 'model' or 'imported'.
        reference : (height, width) what the annotator started from (the model's prediction);
            ``pixels_changed`` counts reviewed pixels that differ from it. Without it, the
            previous label version is the reference, and without that, an all-background image
            (drawing from scratch).
        """
        from napari_alunet.regions import known_mask, merge_partial

        self._require_writable()
        if source not in LABEL_SOURCES:
            raise ValueError(f"source must be one of {LABEL_SOURCES}, not {source!r}")
        record = self.image(image_id)
        if record.pool == "test":
            raise ProjectError(
                f"image {record.name!r} is in the test pool; test labels are fixed at import so "
                "that rounds stay comparable"
            )
        labels = np.asarray(labels)
        n_classes = self.classes.n_classes
        if labels.shape != (record.height, record.width):
            raise ValueError(
                f"labels for {record.name!r} must be {record.height}x{record.width} (the "
                f"original image size), got shape {labels.shape}"
            )
        reviewed = known_mask(labels)
        if labels.size and (labels.min() < 0 or labels[reviewed].max(initial=0) >= n_classes):
            raise ValueError(
                f"labels for {record.name!r} hold values outside 0..{n_classes - 1} and "
                f"{UNKNOWN_LABEL} (unreviewed) (found {int(labels.min())}..{int(labels.max())})"
            )
        if not reviewed.any():
            raise ValueError(f"labels for {record.name!r} have no reviewed pixel (all "
                             f"{UNKNOWN_LABEL}): there is nothing to commit")
        labels = labels.astype(np.uint8)
        # One thread at a time from choosing the version file name to recording it: two threads
        # committing the same image would otherwise pick one name and overwrite each other's file.
        with self._mutex:
            # The current label is read only when it is needed: as the reference, or to merge
            # a partial review into (a full label replaces it; commits run on the GUI thread).
            partial = not reviewed.all()
            previous = self.read_label(image_id) if reference is None or partial else None
            if reference is None:
                reference = previous
            if reference is None:
                pixels_changed = int(np.count_nonzero(labels[reviewed]))
            else:
                pixels_changed = int(np.count_nonzero(labels[reviewed] != reference[reviewed]))
            merged = merge_partial(previous, labels) if partial else labels
            known = known_mask(merged)
            version_no = len(self.label_history(image_id)) + 1
            rel = f"masks/labels/{image_id:06d}_v{version_no:03d}.png"
            digest = atomic_write_png(self.path / rel, merged)
            with self.transaction() as cur:
                cur.execute(
                    "INSERT INTO label_versions (image_id, rel_path, sha256, source, author, "
                    "round_index, created_at, pixels_changed, pixels_foreground, seconds_spent, "
                    "pixels_unknown) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (image_id, rel, digest, source, author, round_index, now_iso(), pixels_changed,
                     int(np.count_nonzero(merged[known])), seconds_spent,
                     int(merged.size - np.count_nonzero(known))),
                )
                version_id = cur.lastrowid
                if record.pool != "labelled":
                    cur.execute(
                        "UPDATE images SET pool = 'labelled', labelled_round = ? WHERE id = ?",
                        (round_index, image_id),
                    )
                cur.execute(
                    "UPDATE queue SET status = 'committed' WHERE image_id = ? AND status != "
                    "'committed'",
                    (image_id,),
                )
        return label_from_row(
            self._query("SELECT * FROM label_versions WHERE id = ?", (version_id,))[0])

    def undo_last_commit(self) -> LabelVersion | None:
        """Withdraw the newest active human/oracle label version.

        The version stays in the history (``active = 0``). If the image has no other active
        version it returns to the unlabelled pool and, if it was queued, back to 'pending'.
        Returns the withdrawn version, or None when there is nothing to undo.
        """
        with self._mutex:  # pick and withdraw atomically: two undos withdraw two versions
            rows = self._query(
                "SELECT * FROM label_versions WHERE active = 1 AND source IN ('human', 'oracle', "
                "'model') ORDER BY id DESC LIMIT 1"
            )
            if not rows:
                return None
            version = label_from_row(rows[0])
            with self.transaction() as cur:
                cur.execute("UPDATE label_versions SET active = 0 WHERE id = ?", (version.id,))
                remaining = cur.execute(
                    "SELECT COUNT(*) FROM label_versions WHERE image_id = ? AND active = 1",
                    (version.image_id,),
                ).fetchone()[0]
                if remaining == 0:
                    cur.execute(
                        "UPDATE images SET pool = 'unlabelled', labelled_round = NULL WHERE id = ?",
                        (version.image_id,),
                    )
                    cur.execute(
                        "UPDATE queue SET status = 'pending' WHERE image_id = ? AND status = "
                        "'committed'",
                        (version.image_id,),
                    )
        return version
