"""The experiment's pool in memory, its fixed test split, each seed's initial labelled set, and
the schedule of labelled-set sizes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_alunet.config import ExperimentConfig

#: Offsets mixed into seeds so that the test split, the initial sets and the training seeds do
#: not draw from the same stream.
_TEST_STREAM, _INITIAL_STREAM = 7, 11


# -- the pool -------------------------------------------------------------------------------------
@dataclass
class Pool:
    """The whole labelled pool in memory.

    Attributes
    ----------
    names : image names; an image's id is its index here (names sorted for directories,
        generation order for the sample).
    images : (N, 1, S, S) float32 letter-boxed, standardised model inputs.
    labels : (N, S, S) uint8 letter-boxed ground truth.
    truth : N arrays (h_i, w_i) uint8, the ground truth at original size (for correction cost).
    boxes : N :class:`~napari_alunet.data.geometry.Letterbox` transforms.
    foreground : (N,) int64 foreground pixels of each original ground truth (scratch cost).
    class_names : class names in index order.
    skipped : names of images left out (no ground truth to replay).
    """

    names: list[str]
    images: np.ndarray
    labels: np.ndarray
    truth: list[np.ndarray]
    boxes: list[Any]
    foreground: np.ndarray
    class_names: tuple[str, ...]
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.names)

    def load_batch(self, ids: Sequence[int]) -> np.ndarray:
        """``score_pool``'s loader over the in-memory arrays: (len(ids), 1, S, S) float32."""
        return self.images[np.asarray(ids, dtype=np.intp)]

    def correction_pixels(self, ids: Sequence[int], predictions: np.ndarray) -> np.ndarray:
        """(len(ids),) pixels a reviewer changes: proposal vs truth at the original size.

        ``predictions`` is (len(ids), S, S) uint8 on the canvas; it is mapped back through each
        image's letter-box, so padding never counts and every original pixel counts once.
        """
        return np.array([
            int(np.count_nonzero(self.boxes[i].invert_labels(p) != self.truth[i]))
            for i, p in zip(ids, predictions)], dtype=np.int64)


def load_pool(config: ExperimentConfig, *, sample_shape: tuple[int, int] | None = None) -> Pool:
    """Load the experiment's pool: the synthetic sample or a folder with ground truth.

    Parameters
    ----------
    config : ``data`` is ``"sample"`` (``sample_n`` images from the synthetic generator with
        ``sample_seed``) or a folder in one of the layouts of :func:`napari_alunet.data.io
        .scan_pool`; ``model.input_size`` is the canvas side.
    sample_shape : (h, w) of every sample image; None draws realistic sizes.

    Raises
    ------
    ValueError
        a folder without masks (the oracle needs ground truth), or fewer than four images.
    """
    from napari_alunet.config import DEFAULT_CLASS_COLOURS, DEFAULT_CLASS_NAMES
    from napari_alunet.data.dataset import prepare_image
    from napari_alunet.data.geometry import Letterbox

    size = config.model.input_size
    names: list[str] = []
    originals: list[np.ndarray] = []
    truths: list[np.ndarray] = []
    skipped: list[str] = []
    if config.data == "sample":
        from napari_alunet.data.synthetic import generate_pool

        for name, image, labels, _params in generate_pool(config.sample_n, config.sample_seed,
                                                          shape=sample_shape):
            names.append(str(name))
            originals.append(image)
            truths.append(np.asarray(labels, dtype=np.uint8))
    else:
        from napari_alunet.data import io as dio

        listing = dio.scan_pool(config.data)
        if listing.layout == "images":
            raise ValueError(
                f"{config.data}: only images, no masks; an oracle-replay experiment needs the "
                "ground truth of every image (GT_ICM/GT_TE/GT_ZP/ or masks/ next to images/)"
            )
        for item in listing.items:
            labels = dio.load_item_labels(item, listing.layout, DEFAULT_CLASS_COLOURS)
            if labels is None:
                skipped.append(item.name)
                continue
            names.append(item.name)
            originals.append(dio.read_image(item.image_path))
            truths.append(labels)
    if len(names) < 4:
        raise ValueError(
            f"{len(names)} image(s) with ground truth: an experiment needs at least 4 (test, "
            "initial and pool images); use a bigger pool or --sample-n"
        )
    images = np.empty((len(names), 1, size, size), dtype=np.float32)
    canvas = np.empty((len(names), size, size), dtype=np.uint8)
    boxes = []
    for i, (image, labels) in enumerate(zip(originals, truths)):
        if image.shape[:2] != labels.shape:
            raise ValueError(f"{names[i]}: image {image.shape} and labels {labels.shape} differ")
        images[i, 0], box = prepare_image(image, size)
        canvas[i] = box.apply_labels(labels)
        boxes.append(box)
    assert all(isinstance(b, Letterbox) for b in boxes)
    foreground = np.array([int(np.count_nonzero(t)) for t in truths], dtype=np.int64)
    return Pool(names, images, canvas, truths, boxes, foreground, tuple(DEFAULT_CLASS_NAMES),
                skipped)


# -- splits and schedule --------------------------------------------------------------------------
@dataclass
class Splits:
    """The fixed test split and each seed's initial labelled set (image ids, ascending)."""

    test: list[int]
    train_pool: list[int]
    initial: dict[int, list[int]]


def make_splits(n_images: int, config: ExperimentConfig) -> Splits:
    """One test split for the whole experiment, one initial labelled set per seed.

    The test split depends on ``sample_seed`` only, so every (strategy, seed) pair is evaluated
    on the same images; the initial set of seed ``s`` depends on ``s`` only, so every strategy
    of a seed starts from the same labels.
    """
    ids = np.arange(n_images)
    n_test = round(config.test_fraction * n_images)
    if config.test_fraction > 0:
        n_test = max(1, n_test)
    rng = np.random.default_rng([config.sample_seed, _TEST_STREAM])
    test = sorted(int(i) for i in rng.permutation(ids)[:n_test])
    train_pool = sorted(set(ids.tolist()) - set(test))
    n0 = initial_size(len(train_pool), config.initial_fraction)
    if n0 > len(train_pool):
        raise ValueError(
            f"{len(train_pool)} training image(s) cannot hold an initial set of {n0}: lower "
            "--test-fraction or use more images"
        )
    initial = {}
    for seed in range(config.seeds):
        rng = np.random.default_rng([seed, _INITIAL_STREAM])
        initial[seed] = sorted(int(i) for i in rng.choice(train_pool, size=n0, replace=False))
    return Splits(test, train_pool, initial)


def initial_size(n_train_pool: int, fraction: float) -> int:
    """Images in the initial labelled set: ``round(fraction * n)``, at least 2 (one to train,
    one to validate on)."""
    return max(2, round(fraction * n_train_pool))


def planned_sizes(n0: int, k: int, n_train_pool: int, *, rounds: int | None,
                  until_fraction: float | None) -> list[int]:
    """Labelled-set size of each round, round 0 first.

    Stops after ``rounds`` acquisitions, or at the first round whose labelled fraction reaches
    ``until_fraction``, whichever comes first, and always when the pool is used up.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    sizes = [n0]
    while sizes[-1] < n_train_pool:
        if rounds is not None and len(sizes) - 1 >= rounds:
            break
        if until_fraction is not None and sizes[-1] / n_train_pool >= until_fraction - 1e-9:
            break
        sizes.append(min(n_train_pool, sizes[-1] + k))
    return sizes


__all__ = ["Pool", "Splits", "initial_size", "load_pool", "make_splits", "planned_sizes"]
