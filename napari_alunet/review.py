"""Reviewing a queued image: what the reviewer is shown, and committing what they made of it.

The round (:mod:`napari_alunet.loop`) caches each queued image's prediction and maps in the
store (:mod:`napari_alunet.store.review_cache`); :func:`review_item` reads them back at the
image's original size, :func:`commit_review` stores the reviewer's labels (the cached
prediction is the reference for "pixels changed"), and :func:`oracle_commit` replays stored
ground truth instead of a person (benchmarks, tests, the CLI's ``--oracle``).
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_alunet.config import UNKNOWN_LABEL
from napari_alunet.events import WorkProgress
from napari_alunet.store import Project


@dataclass
class ReviewItem:
    """What the reviewer sees for one queued image, at the image's original size."""

    image_id: int
    prediction: np.ndarray | None  # (h, w) uint8, the model's labels, or None (cold start)
    maps: dict[str, np.ndarray]  # name -> (h, w) float32 uncertainty map
    score: float | None
    # Region-level review: (h, w) bool, the pixels to review; None for the whole image.
    region: np.ndarray | None = None


def review_item(project: Project, image_id: int, round_idx: int | None = None) -> ReviewItem:
    """The cached prediction and maps of a queued image (computed when the round was scored)."""
    current = project.round(round_idx) if round_idx is not None else project.current_round()
    if current is None:
        return ReviewItem(image_id, None, {}, None)
    cached = project.read_review(current.idx, image_id)
    prediction, maps, region = (None, {}, None) if cached is None else (
        cached.prediction, cached.maps, cached.region)
    return ReviewItem(image_id, prediction, maps, round_scores(project, current).get(image_id),
                      region)


def round_scores(project: Project, record: Any) -> dict[int, float]:
    """The round's acquisition scores (image id -> score) for its strategy, saved under the
    model that ranked the pool; an Update model (:mod:`napari_alunet.model_update`) may have
    replaced that model since, so the versions it replaced are tried after the current one."""
    config = record.config or {}
    strategy = config.get("acquisition", {}).get("strategy", "")
    versions = [record.model_version or ""]
    versions += [u.get("replaced_version") or "" for u in reversed(config.get("updates") or [])]
    for version in dict.fromkeys(versions):
        scores = project.load_scores(record.idx, version, strategy)
        if scores:
            return scores
    return {}


_CACHED = object()


def commit_review(
    project: Project, image_id: int, labels: np.ndarray, *, seconds_spent: float | None = None,
    source: str = "human", author: str | None = None, reference: Any = _CACHED,
    region: Any = _CACHED,
) -> Any:
    """Commit a reviewed label; the reference for 'pixels changed' is the model's prediction.

    ``reference`` is the prediction the annotator started from; by default it is read from the
    round's review cache (a caller that already holds it, like the Review panel, passes it and
    saves that read on the GUI thread). ``region`` ((h, w) bool, default: the queued region
    from the cache, None for a whole image) restricts the commit to the reviewed region: the
    labels outside it become unknown and the store merges the rest into the image's label.
    """
    current = project.current_round()
    if reference is _CACHED or region is _CACHED:
        cached = project.read_review(current.idx, image_id, maps=False) if current else None
        if reference is _CACHED:
            reference = cached.prediction if cached is not None else None
        if region is _CACHED:
            region = cached.region if cached is not None else None
    if region is not None:
        labels = np.asarray(labels)
        if region.shape != labels.shape:
            raise ValueError(f"the review region {region.shape} and the labels {labels.shape} "
                             "differ in shape")
        labels = np.where(region, labels, UNKNOWN_LABEL).astype(np.uint8)
    return project.commit_label(
        image_id, labels, source=source, author=author, seconds_spent=seconds_spent,
        round_index=(current.idx + 1) if current is not None else 0, reference=reference,
    )


def oracle_commit_each(project: Project, image_ids: Sequence[int] | None = None
                       ) -> Generator[WorkProgress, None, list[Any]]:
    """:func:`oracle_commit`, one image at a time, as a progress generator (the Review panel's
    Oracle button runs it in a worker). Closing it stops after the image being committed;
    every commit before stays."""
    ids = list(image_ids) if image_ids is not None else project.queue()
    versions: list[Any] = []
    for done, image_id in enumerate(ids):
        yield WorkProgress(done, len(ids), f"committing ground truth {done + 1}/{len(ids)}")
        versions += oracle_commit(project, [image_id])
    return versions


def oracle_commit(project: Project, image_ids: Sequence[int] | None = None) -> list[Any]:
    """Commit stored ground truth for the pending queue (or ``image_ids``): the oracle replay.

    A region-level queue gets the truth inside its regions only (a partial label)."""
    ids = list(image_ids) if image_ids is not None else project.queue()
    versions = []
    for image_id in ids:
        truth = project.read_ground_truth(image_id)
        if truth is None:
            raise ValueError(
                f"image {project.image(image_id).name!r} has no stored ground truth: the oracle "
                "can only replay imported labels; label it by hand in Review"
            )
        versions.append(commit_review(project, image_id, truth, source="oracle"))
    return versions


def model_version(project: Project, round_idx: int) -> str:
    """The short content hash of the round's checkpoint ('' before it exists)."""
    return project.round(round_idx).model_version or ""


# -- one-click edits (the Review panel's Accept / Erase region tools) ---------------------------
def component_at(labels: np.ndarray, point: tuple[float, float]) -> np.ndarray:
    """(h, w) bool: the connected part (4-connected) of ``labels``'s class at ``point``.

    ``labels`` (h, w) integer class indices; ``point`` (row, column) inside it, else
    ``ValueError``.
    """
    from scipy import ndimage

    labels = np.asarray(labels)
    r, c = _pixel(labels, point)
    parts, _n = ndimage.label(labels == labels[r, c])
    return parts == parts[r, c]


def _pixel(labels: np.ndarray, point: tuple[float, float]) -> tuple[int, int]:
    r, c = (int(round(float(v))) for v in point)
    if not (0 <= r < labels.shape[0] and 0 <= c < labels.shape[1]):
        raise ValueError(f"({r}, {c}) is outside the image ({labels.shape[0]} x "
                         f"{labels.shape[1]})")
    return r, c


def accept_region(labels: np.ndarray, prediction: np.ndarray, point: tuple[float, float]
                  ) -> tuple[np.ndarray, int]:
    """Where the prediction's connected region at ``point`` goes into the labels.

    Returns ``(mask (h, w) bool, class)``: the pixels of the prediction's part at ``point``
    that the labels do not hold as that class yet (the caller writes ``class`` there).
    """
    prediction = np.asarray(prediction)
    region = component_at(prediction, point)
    cls = int(prediction[_pixel(prediction, point)])
    return region & (np.asarray(labels) != cls), cls


def erase_region(labels: np.ndarray, point: tuple[float, float]) -> np.ndarray:
    """(h, w) bool: the labels' connected foreground part at ``point``, to set to background.

    Empty where ``point`` is background or unknown (:data:`~napari_alunet.config.UNKNOWN_LABEL`):
    erasing never turns an unreviewed pixel into a labelled one.
    """
    labels = np.asarray(labels)
    value = int(labels[_pixel(labels, point)])
    if value in (0, UNKNOWN_LABEL):
        return np.zeros(labels.shape, bool)
    return component_at(labels, point)
