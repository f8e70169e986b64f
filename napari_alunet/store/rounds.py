"""Rounds, metrics, acquisition scores and the review queue of a project (mixed into Project)."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_alunet.store.records import RoundRecord, RoundStatus, now_iso, round_from_row


class RoundsMixin:
    """Round bookkeeping; relies on ``Project.transaction`` and ``Project._query``."""

    if TYPE_CHECKING:
        # Provided by Project, the only class this is mixed into (declared for the type checker).
        path: Path

        def transaction(self) -> contextlib.AbstractContextManager[sqlite3.Cursor]: ...

        def _query(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]: ...

    def rounds(self) -> list[RoundRecord]:
        return [round_from_row(r) for r in self._query("SELECT * FROM rounds ORDER BY idx")]

    def current_round(self) -> RoundRecord | None:
        rows = self._query("SELECT * FROM rounds ORDER BY idx DESC LIMIT 1")
        return round_from_row(rows[0]) if rows else None

    def start_round(self, config: dict[str, Any] | None = None) -> RoundRecord:
        """Open round ``last + 1`` with status ``RoundStatus.STARTED``."""
        with self.transaction() as cur:
            last = cur.execute("SELECT MAX(idx) FROM rounds").fetchone()[0]
            idx = 0 if last is None else last + 1
            n_labelled = cur.execute(
                "SELECT COUNT(*) FROM images WHERE pool = 'labelled'"
            ).fetchone()[0]
            cur.execute(
                "INSERT INTO rounds (idx, status, started_at, n_labelled, config) "
                "VALUES (?, ?, ?, ?, ?)",
                (idx, RoundStatus.STARTED.value, now_iso(), n_labelled,
                 json.dumps(config) if config is not None else None),
            )
        return self.round(idx)

    def round(self, idx: int) -> RoundRecord:
        rows = self._query("SELECT * FROM rounds WHERE idx = ?", (int(idx),))
        if not rows:
            raise KeyError(f"no round {idx} in project {self.path}")
        return round_from_row(rows[0])

    def update_round(self, idx: int, **fields: Any) -> RoundRecord:
        """Set ``status``, ``checkpoint``, ``model_version``, ``finished_at``, ``n_labelled``,
        ``config``."""
        allowed = {"status", "checkpoint", "model_version", "finished_at", "n_labelled", "config"}
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"cannot update round field(s) {sorted(unknown)}")
        if "config" in fields:
            fields["config"] = json.dumps(fields["config"])
        if "status" in fields:  # a clear error for a status no round can have; stored as text
            fields["status"] = RoundStatus(fields["status"]).value
        with self.transaction() as cur:
            for key, value in fields.items():
                cur.execute(f"UPDATE rounds SET {key} = ? WHERE idx = ?", (value, int(idx)))
        return self.round(idx)

    def record_metrics(self, round_idx: int, split: str, metrics: dict[str, float]) -> None:
        with self.transaction() as cur:
            cur.executemany(
                "INSERT OR REPLACE INTO metrics VALUES (?, ?, ?, ?)",
                [(round_idx, split, k, _float_or_none(v)) for k, v in metrics.items()],
            )

    def metrics(self, split: str | None = None) -> list[dict[str, Any]]:
        """Rows of (round_idx, split, name, value)."""
        sql = "SELECT * FROM metrics" + (" WHERE split = ?" if split else "")
        return [dict(r) for r in self._query(sql + " ORDER BY round_idx, name",
                                            (split,) if split else ())]

    def save_scores(
        self, round_idx: int, model_version: str, strategy: str, scores: dict[int, float]
    ) -> None:
        with self.transaction() as cur:
            cur.executemany(
                "INSERT OR REPLACE INTO scores VALUES (?, ?, ?, ?, ?)",
                [(round_idx, model_version, strategy, int(i), float(s)) for i, s in scores.items()],
            )

    def load_scores(self, round_idx: int, model_version: str, strategy: str) -> dict[int, float]:
        rows = self._query(
            "SELECT image_id, score FROM scores WHERE round_idx = ? AND model_version = ? AND "
            "strategy = ?",
            (round_idx, model_version, strategy),
        )
        return {r["image_id"]: r["score"] for r in rows}

    def set_queue(self, round_idx: int, image_ids: Sequence[int]) -> None:
        with self.transaction() as cur:
            cur.execute("DELETE FROM queue WHERE round_idx = ? AND status != 'committed'",
                        (round_idx,))
            start = cur.execute(
                "SELECT COALESCE(MAX(position) + 1, 0) FROM queue WHERE round_idx = ?",
                (round_idx,),
            ).fetchone()[0]
            cur.executemany(
                "INSERT OR IGNORE INTO queue (round_idx, position, image_id) VALUES (?, ?, ?)",
                [(round_idx, start + i, int(image_id)) for i, image_id in enumerate(image_ids)],
            )

    def queue(self, round_idx: int | None = None, *, pending_only: bool = True) -> list[int]:
        """Image ids queued for review in a round (default: the newest round), in order."""
        if round_idx is None:
            current = self.current_round()
            if current is None:
                return []
            round_idx = current.idx
        sql = "SELECT image_id FROM queue WHERE round_idx = ?"
        if pending_only:
            sql += " AND status = 'pending'"
        return [r["image_id"] for r in self._query(sql + " ORDER BY position", (round_idx,))]

    def abandon_round(self, round_idx: int) -> None:
        """Mark a round 'abandoned' (kept in the history) and its pending queue 'skipped',
        in one transaction."""
        with self.transaction() as cur:
            cur.execute("UPDATE rounds SET status = ?, finished_at = ? WHERE idx = ?",
                        (RoundStatus.ABANDONED.value, now_iso(), int(round_idx)))
            cur.execute("UPDATE queue SET status = 'skipped' WHERE round_idx = ? AND status = "
                        "'pending'", (int(round_idx),))

    def skip(self, round_idx: int, image_id: int) -> None:
        """Move a queued image to the end of the queue."""
        with self.transaction() as cur:
            end = cur.execute(
                "SELECT COALESCE(MAX(position) + 1, 0) FROM queue WHERE round_idx = ?",
                (round_idx,),
            ).fetchone()[0]
            cur.execute(
                "UPDATE queue SET position = ? WHERE round_idx = ? AND image_id = ?",
                (end, round_idx, int(image_id)),
            )



def _float_or_none(value: Any) -> float | None:
    value = float(value)
    return None if np.isnan(value) else value
