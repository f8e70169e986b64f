"""The experiment's pool in memory, its fixed test split, each seed's initial labelled set, and
the schedule of labelled-set sizes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_alunet.config import ExperimentConfig


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
    modes : N group names (an embryo's mode: per-mode Dice), or None.
    embryos : N embryo ids (frames of one embryo share one), or None.
    given_test : ids of a test set the data defines (fresh embryos of a benchmark pool), or
        None (the test set is drawn by :func:`make_splits`).
    """

    names: list[str]
    images: np.ndarray
    labels: np.ndarray
    truth: list[np.ndarray]
    boxes: list[Any]
    foreground: np.ndarray
    class_names: tuple[str, ...]
    skipped: list[str] = field(default_factory=list)
    modes: list[str] | None = None
    embryos: list[int] | None = None
    given_test: list[int] | None = None

    def __len__(self) -> int:
        return len(self.names)

    def load_batch(self, ids: Sequence[int]) -> np.ndarray:
        """``score_pool``'s loader over the in-memory arrays: (len(ids), 1, S, S) float32."""
        return self.images[np.asarray(ids, dtype=np.intp)]

    def active_pool(self, splits: Splits, labelled: Sequence[int],
                    known: dict[int, np.ndarray] | None = None) -> Any:
        """This pool as the :class:`~napari_alunet.pools.MemoryPool` the step runs on
        (``known``: the reviewed canvas pixels of partially labelled ids)."""
        from napari_alunet.pools import MemoryPool

        return MemoryPool(self.images, self.labels, self.truth, self.boxes,
                          list(splits.train_pool), list(splits.test),
                          sorted(int(i) for i in labelled), self.class_names, self.modes,
                          self.embryos, known)


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
    modes: list[str] | None = None
    embryos: list[int] | None = None
    given_test: list[int] | None = None
    # Loop variables each branch binds: a generated or a loaded mask (None: the image has none);
    # a generated embryo's parameters, or a pool folder's pool.csv rows.
    labels: np.ndarray | None
    info: dict[str, Any] | None
    if config.data == "sample":
        from napari_alunet.data.synthetic import generate_pool

        for name, image, labels, _params in generate_pool(config.sample_n, config.sample_seed,
                                                          shape=sample_shape):
            names.append(str(name))
            originals.append(image)
            truths.append(np.asarray(labels, dtype=np.uint8))
    elif config.data == "redundant":
        # The benchmark pool: several frames per embryo, rare modes, and a test set of fresh
        # embryos with the same number of each mode (data/redundant.py).
        from napari_alunet.data.redundant import generate_redundant_pool, generate_test_set

        modes, embryos, given_test = [], [], []
        from napari_alunet.data.redundant import MODES

        rare = float(config.rare_mode_p)
        mode_p = {m: (1.0 - rare * (len(MODES) - 1)) if m == "common" else rare for m in MODES}
        streams = (generate_redundant_pool(config.sample_n, config.sample_seed,
                                           shape=sample_shape, mode_p=mode_p),
                   generate_test_set(config.test_per_mode, config.sample_seed,
                                     shape=sample_shape))
        for stream, is_test in zip(streams, (False, True)):
            for name, image, labels, info in stream:
                if is_test:
                    given_test.append(len(names))
                names.append(str(name))
                originals.append(image)
                truths.append(np.asarray(labels, dtype=np.uint8))
                modes.append(str(info["mode"]))
                embryos.append(int(info["embryo"]))  # test embryos have ids of their own
    else:
        from napari_alunet.data import io as dio
        from napari_alunet.data.naming import scan_pool
        from napari_alunet.data.sample_files import read_pool_info

        listing = scan_pool(config.data)
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
        info = read_pool_info(config.data)
        if info is not None:  # a written benchmark pool: its modes, embryos and test set
            known: list[Any] = [info.get(n) for n in names]  # rows or None; checked next
            if all(k is not None for k in known):
                modes = [str(k["mode"]) for k in known]
                embryos = [int(k["embryo"]) for k in known]
                given_test = [i for i, k in enumerate(known) if k["split"] == "test"] or None
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
                skipped, modes, embryos, given_test)


# -- splits and schedule --------------------------------------------------------------------------
@dataclass
class Splits:
    """The fixed test split and each seed's initial labelled set (image ids, ascending)."""

    test: list[int]
    train_pool: list[int]
    initial: dict[int, list[int]]


def make_splits(pool: Pool | int, config: ExperimentConfig) -> Splits:
    """One test split for the whole experiment, one initial labelled set per seed.

    Both come from :func:`napari_alunet.data.splits.split_pool`, the rule a project's import
    uses. The test split depends on ``sample_seed`` only (or is the pool's own fresh-embryo
    test set), so every (strategy, seed) pair is evaluated on the same images; frames of one
    embryo never straddle it, and every mode is represented. The initial set of seed ``s``
    depends on ``s`` only, so every strategy of a seed starts from the same labels.
    """
    from napari_alunet.data.splits import split_pool

    n_images = pool if isinstance(pool, int) else len(pool)
    groups = strata = given = None
    if not isinstance(pool, int):
        if pool.embryos is not None:
            groups = dict(enumerate(pool.embryos))
        if pool.modes is not None:
            strata = dict(enumerate(pool.modes))
        given = pool.given_test
    if config.test_fraction <= 0 and given is None:
        raise ValueError("test_fraction must be > 0: the curves are measured on the test pool")
    ids = list(range(n_images))
    base = split_pool(ids, test_fraction=config.test_fraction, initial=0,
                      seed=config.sample_seed, groups=groups, strata=strata, test_ids=given)
    n0 = initial_size(len(base.train_pool), config.initial_fraction)
    initial = {}
    for seed in range(config.first_seed, config.first_seed + config.seeds):
        initial[seed] = split_pool(ids, test_fraction=config.test_fraction, initial=n0,
                                   seed=config.sample_seed, initial_seed=seed, groups=groups,
                                   strata=strata, test_ids=base.test).initial
    return Splits(base.test, base.train_pool, initial)


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
