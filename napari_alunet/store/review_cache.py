"""What the reviewer is shown for a queued image, cached per round (mixed into Project).

One compressed ``.npz`` per (round, image) under ``cache/``: the model's prediction at the
image's original size (``uint8`` class indices), its uncertainty maps (stored as float16: they
are for display) and, for a region-level review, the region to review (``bool``). Written
atomically when the round is scored, read when the image is opened in Review and when its
label is committed (the prediction is the reference for "pixels changed").
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from napari_alunet.fileio import atomic_write_bytes


@dataclass
class ReviewEntry:
    """A cached review: ``prediction`` (h, w) uint8 or None, ``maps`` {name: (h, w) float32},
    ``region`` (h, w) bool or None (a whole-image review)."""

    prediction: np.ndarray | None
    maps: dict[str, np.ndarray] = field(default_factory=dict)
    region: np.ndarray | None = None


class ReviewCacheMixin:
    """Review-cache files of a project; relies on ``Project.path``."""

    if TYPE_CHECKING:
        path: Path

    def review_cache_path(self, round_idx: int, image_id: int) -> Path:
        return self.path / "cache" / f"round_{round_idx:03d}" / f"{image_id:06d}.npz"

    def write_review(self, round_idx: int, image_id: int, prediction: np.ndarray | None,
                     maps: dict[str, np.ndarray], region: np.ndarray | None = None) -> Path:
        """Cache what the reviewer is shown for ``image_id`` in round ``round_idx`` (atomic)."""
        arrays = {f"map_{k}": np.asarray(v).astype(np.float16) for k, v in maps.items()}
        if prediction is not None:
            arrays["prediction"] = np.asarray(prediction).astype(np.uint8)
        if region is not None:
            arrays["region"] = np.asarray(region).astype(bool)
        buffer = io.BytesIO()
        # numpy's stubs match **kwds against the allow_pickle: bool parameter as well.
        np.savez_compressed(buffer, **arrays)  # type: ignore[arg-type]
        return atomic_write_bytes(self.review_cache_path(round_idx, image_id), buffer.getvalue())

    def read_review(self, round_idx: int, image_id: int, *,
                    maps: bool = True) -> ReviewEntry | None:
        """The cached review, or None when there is none. ``maps=False`` leaves the maps
        compressed (a commit needs only the prediction and the region)."""
        path = self.review_cache_path(round_idx, image_id)
        if not path.is_file():
            return None
        with np.load(path) as data:
            return ReviewEntry(
                data["prediction"] if "prediction" in data.files else None,
                {k[4:]: data[k].astype(np.float32) for k in data.files
                 if maps and k.startswith("map_")},
                data["region"].astype(bool) if "region" in data.files else None)
