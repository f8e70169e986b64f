"""From a project (or arrays) to the tensors the model sees.

Every image is letter-boxed to the model's square input (:class:`~.geometry.Letterbox`) and
standardised on its own (zero mean, unit standard deviation), so brightness differences between
microscopes do not decide the segmentation. Labels go through the same letter-box with nearest
neighbour sampling.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from napari_alunet.data.geometry import Letterbox

if TYPE_CHECKING:
    from napari_alunet.store import Project


def normalise(canvas: np.ndarray) -> np.ndarray:
    """Standardise one image, (H, W) -> (H, W) float32 with mean 0 and std 1 (flat: std 1)."""
    canvas = np.asarray(canvas, dtype=np.float32)
    std = float(canvas.std())
    return (canvas - canvas.mean()) / (std if std > 1e-6 else 1.0)


def prepare_image(image: np.ndarray, size: int) -> tuple[np.ndarray, Letterbox]:
    """Letter-box and standardise one original image: (h, w) -> ((size, size) float32, box)."""
    box = Letterbox.fit(image.shape[0], image.shape[1], size)
    return normalise(box.apply_image(image)), box


def load_images(project: Project, image_ids: Sequence[int], size: int) -> np.ndarray:
    """Model inputs for ``image_ids``: (N, 1, size, size) float32."""
    out = np.empty((len(image_ids), 1, size, size), dtype=np.float32)
    for row, image_id in enumerate(image_ids):
        out[row, 0] = prepare_image(project.read_image(image_id), size)[0]
    return out


def load_labels(
    project: Project, image_ids: Sequence[int], size: int, *, ground_truth: bool = False
) -> np.ndarray:
    """Label canvases for ``image_ids``: (N, size, size) uint8.

    Uses each image's current committed label, or its imported ground truth when
    ``ground_truth`` (the test pool and oracle replays). Raises ``ValueError`` naming the first
    image that has none.
    """
    out = np.empty((len(image_ids), size, size), dtype=np.uint8)
    for row, image_id in enumerate(image_ids):
        labels = (project.read_ground_truth(image_id) if ground_truth
                  else project.read_label(image_id))
        if labels is None:
            what = "ground truth" if ground_truth else "committed label"
            raise ValueError(
                f"image {project.image(image_id).name!r} has no {what}; label it (Review) or "
                "leave it out"
            )
        out[row] = Letterbox.fit(labels.shape[0], labels.shape[1], size).apply_labels(labels)
    return out


def validation_split(
    image_ids: Sequence[int], fraction: float, seed: int, *, minimum: int = 1
) -> tuple[list[int], list[int]]:
    """Split labelled ids into (train, validation), stably across rounds.

    An image's side is decided by a hash of ``(seed, image id)``, not by its position, so as the
    labelled pool grows no image moves from validation to training or back. At least
    ``minimum`` images go to validation when there are two or more images, and at least one
    image always stays for training.

    The validation set comes from the labelled pool only; the test pool is never used to choose
    a model.
    """
    ids = sorted(int(i) for i in image_ids)
    if len(ids) < 2 or fraction <= 0:
        return ids, []
    keys = {i: _unit_hash(seed, i) for i in ids}
    val = [i for i in ids if keys[i] < fraction]
    if len(val) < minimum:
        val = sorted(ids, key=lambda i: keys[i])[:minimum]
    if len(val) >= len(ids):
        val = sorted(val, key=lambda i: keys[i])[: len(ids) - 1]
    val_set = set(val)
    return [i for i in ids if i not in val_set], sorted(val_set)


def _unit_hash(seed: int, image_id: int) -> float:
    digest = hashlib.blake2b(f"{seed}:{image_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64
