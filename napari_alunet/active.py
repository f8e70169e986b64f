"""One active-learning step: the same code for a project round and for a benchmark round.

A step reads like the algorithm::

    train    the model on the labelled images with the few-labels recipe (the unlabelled
             images feed its semi-supervised term; never the test images)
    evaluate on the test images: overall, and per group (an embryo's mode) when known
    acquire  k images: score the unlabelled pool with MC dropout and take k of them (or take
             a cold start when nothing is labelled yet)
    review   the prediction the reviewer corrects: the MC-mean probabilities of each acquired
             image mapped back to its original grid, then argmax. The oracle's correction cost
             is measured against the same prediction.

The steps talk to the images through :class:`~napari_alunet.pools.ActivePool`:
:class:`~napari_alunet.pools.ProjectPool` (a project on disk: ``loop.run_round``, the GUI,
``alunet round``) and :class:`~napari_alunet.pools.MemoryPool` (arrays in memory: the
experiment runner). The project round adds persistence between the steps (a round can be
resumed after each); the experiment runner adds curves and statistics; neither trains, scores
or picks images its own way.

Seeds: everything random in round ``r`` derives from a base seed and ``r``
(:func:`round_seed`), so a project and a benchmark run with the same seeds take the same
decisions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_alunet.config import (
    REVIEW_MAPS,
    AcquisitionConfig,
    ModelConfig,
    TrainConfig,
)
from napari_alunet.data.geometry import Letterbox

__all__ = [
    "ActivePool", "Acquired", "MemoryPool", "ProjectPool", "acquire", "acquire_regions",
    "cold_start", "content_mask", "evaluate", "fresh_model", "review_prediction", "round_seed",
    "train",
]

from napari_alunet.config import COLD_STARTS, ORACLE_STRATEGIES  # noqa: E402 (re-exported)
from napari_alunet.pools import ActivePool, MemoryPool, ProjectPool  # noqa: E402, F401


def round_seed(seed: int, round_idx: int) -> int:
    """The seed of round ``round_idx`` drawn from a base ``seed`` (training or acquisition)."""
    return int(seed) * 1000 + int(round_idx)


def fresh_model(model_config: ModelConfig, seed: int) -> Any:
    """A new network with initial weights drawn from ``seed`` only.

    Every strategy of a benchmark seed, and a project's first round, start from these weights:
    differences between runs come from the labels alone (as BaaL resets to stored weights).
    """
    from napari_alunet.model import build_model
    from napari_alunet.training.engine import reset_parameters

    return reset_parameters(build_model(model_config), seed=int(seed))


def train(
    pool: ActivePool, model: Any, config: TrainConfig, *, round_idx: int, n_classes: int,
    checkpoint_path: Any = None, checkpoint_meta: dict[str, Any] | None = None,
    device: Any = None,
) -> Generator[Any, None, Any]:
    """Fit ``model`` in place on the pool's labelled images (few-labels recipe).

    The validation split hashes ``(config.seed, image id)``, so an image keeps its side as the
    labelled set grows; the fit itself is seeded with ``round_seed(config.seed, round_idx)``.
    Returns the recipe's :class:`~napari_alunet.training.recipe.TrainedModel`.
    """
    from napari_alunet.training.recipe import plan_fit, train_model

    fit_config = dataclasses.replace(config, seed=round_seed(config.seed, round_idx))
    plan = plan_fit(pool.labelled_ids(), pool.unlabelled_ids(), fit_config, seed=config.seed,
                    unlabelled_seed=round_idx)

    def load(ids: Sequence[int], with_labels: bool) -> tuple[np.ndarray, Any]:
        return pool.load_images(ids), pool.load_labels(ids) if with_labels else None

    meta = {**(checkpoint_meta or {}), "train_ids": plan.train_ids, "val_ids": plan.val_ids}
    trained = yield from train_model(model, plan, load, fit_config, n_classes=n_classes,
                                     checkpoint_path=checkpoint_path, checkpoint_meta=meta,
                                     device=device)
    return trained


def evaluate(pool: ActivePool, model: Any, *, n_classes: int, batch_size: int = 16,
             device: Any = None, precision: str = "auto") -> dict[str, float]:
    """Test metrics of the deterministic model: overall, and per group when the pool has groups.

    ``precision`` is the training config's (as for every forward pass here: it is passed on to
    :mod:`napari_alunet.inference` and :mod:`napari_alunet.scoring`).
    Keys: those of :func:`napari_alunet.inference.evaluate`, ``n_test``, and with groups
    ``dice_mode_<group>`` (mean foreground Dice over that group's images) and
    ``worst_mode_dice`` (the smallest of them). Empty dict when there are no test images.
    """
    from napari_alunet.inference import evaluate as evaluate_arrays

    test = pool.test_ids()
    if not test:
        return {}
    images, truth = pool.load_images(test), pool.load_truth(test)
    metrics = evaluate_arrays(model, images, truth, n_classes=n_classes, batch_size=batch_size,
                              device=device, precision=precision)
    metrics["n_test"] = float(len(test))
    groups = pool.groups(test)
    if groups is not None:
        per_group = {}
        names = np.asarray(groups)
        for group in sorted(set(groups)):
            rows = np.flatnonzero(names == group)
            per_group[group] = evaluate_arrays(
                model, images[rows], truth[rows], n_classes=n_classes, batch_size=batch_size,
                device=device, precision=precision)["mean_dice"]
            metrics[f"dice_mode_{group}"] = per_group[group]
        metrics["worst_mode_dice"] = float(np.nanmin(list(per_group.values())))
    return metrics


@dataclass
class Acquired:
    """The images one acquisition took and what the reviewer is shown for them.

    Attributes
    ----------
    ids : acquired ids in acquisition order.
    scores : ``{id: score}`` of every scored image (empty for random and cold starts).
    predictions : ``{id: (h, w) uint8}`` the review prediction at the image's original size.
    maps : ``{id: {map name: (h, w) float32}}`` uncertainty maps at the original size.
    strategy : the rule that took them.
    regions : region-level acquisition only: ``{id: (h, w) bool}`` the pixels to review at the
        original size (the chosen tiles); empty for whole images.
    tiles : region-level acquisition only: ``{id: [canvas tile indices]}``.
    """

    ids: list[int]
    scores: dict[int, float]
    predictions: dict[int, np.ndarray]
    maps: dict[int, dict[str, np.ndarray]]
    strategy: str
    seconds: float = 0.0
    regions: dict[int, np.ndarray] = field(default_factory=dict)
    tiles: dict[int, list[int]] = field(default_factory=dict)


def review_prediction(box: Letterbox, probabilities: np.ndarray) -> np.ndarray:
    """(h, w) uint8 labels a reviewer corrects, from (C, S, S) canvas probabilities.

    The probabilities are mapped back to the original grid smoothly, then argmax:
    nearest-neighbour upsampling of canvas labels would leave 3-4 px steps on every boundary
    for the annotator to fix.
    """
    return np.argmax(box.invert_map(probabilities), axis=0).astype(np.uint8)


def acquire(
    pool: ActivePool, model: Any, acquisition: AcquisitionConfig, *, k: int, round_idx: int,
    device: Any = None, keep_maps: Sequence[str] = REVIEW_MAPS, precision: str = "auto",
) -> Generator[Any, None, Acquired]:
    """Take ``k`` unlabelled images with ``acquisition`` and prepare their review.

    ``acquisition.seed`` is the base seed (:func:`round_seed` with ``round_idx`` seeds the
    dropout masks and any sampling). ``strategy="oracle_error"`` (a benchmark control, the
    upper bound) needs ground truth for the unlabelled images: it scores each image by the
    true error of its review prediction, ``1 - Dice`` (mean foreground Dice, the metric the
    benchmark reports), and takes the ``k`` worst, at most one frame per embryo when the pool
    knows its embryos (:func:`~napari_alunet.acquisition.top_k_distinct`). Yields the
    scorer's ScoreProgress.
    """
    import time

    from napari_alunet.acquisition import top_k_distinct
    from napari_alunet.scoring import review_pass, score_pool

    start = time.perf_counter()
    config = dataclasses.replace(acquisition, seed=round_seed(acquisition.seed, round_idx))
    if config.unit == "region":
        acquired = yield from acquire_regions(pool, model, config, k=k, device=device,
                                              precision=precision, keep_maps=keep_maps)
        acquired.seconds = time.perf_counter() - start
        return acquired
    if config.unit != "image":
        raise ValueError(f"unit must be 'image' or 'region', not {config.unit!r}")
    unlabelled = pool.unlabelled_ids()
    k = min(int(k), len(unlabelled))
    if k <= 0:
        return Acquired([], {}, {}, {}, config.strategy)
    if config.strategy in ORACLE_STRATEGIES:
        # The true error of the prediction the reviewer would be shown (MC mean), for every
        # unlabelled image: one review pass over the pool, batch by batch so memory stays
        # bounded on a big pool (probabilities are C x S x S).
        scores: dict[int, float] = {}
        for begin in range(0, len(unlabelled), config.batch_size):
            ids = unlabelled[begin : begin + config.batch_size]
            batch = yield from review_pass(model, ids, pool.load_images, config, keep_maps=(),
                                           device=device, precision=precision)
            truth = pool.load_truth(ids)
            n_classes = len(pool.class_names) or None
            scores.update((i, dice_error(batch.predictions[i], truth[row], n_classes))
                          for row, i in enumerate(ids))
        # Greedy top k knows the truth, so it is the strongest simple rule, but plain top k
        # takes k frames of one badly predicted embryo (benchmark v1): one per embryo.
        chosen = top_k_distinct(scores, k, pool.embryos(unlabelled))
        result = yield from review_pass(model, chosen, pool.load_images, config,
                                        keep_maps=keep_maps, device=device, precision=precision)
        result.scores = scores
    else:
        result = yield from score_pool(model, unlabelled, pool.load_images, config, top_k=k,
                                       device=device, keep_maps=keep_maps,
                                       precision=precision)
    acquired = _for_review(pool, result, config.strategy)
    acquired.seconds = time.perf_counter() - start
    return acquired


def content_mask(box: Letterbox) -> np.ndarray:
    """(S, S) bool: the canvas pixels that show the image (not letter-box padding)."""
    mask = np.zeros((box.size, box.size), dtype=bool)
    mask[box.top : box.top + box.new_h, box.left : box.left + box.new_w] = True
    return mask


def acquire_regions(
    pool: ActivePool, model: Any, config: AcquisitionConfig, *, k: int, device: Any = None,
    keep_maps: Sequence[str] = REVIEW_MAPS, precision: str = "auto",
) -> Generator[Any, None, Acquired]:
    """Take ``k`` regions (canvas tiles, :mod:`napari_alunet.regions`) across the pool.

    Candidates are the unreviewed tiles of unlabelled and partially labelled images. Each is
    scored by the strategy's map averaged over its unreviewed image pixels (optionally divided
    by its estimated correction cost), and ``k`` are taken by the image-level batch rule
    (``diversity``: top-k, power sampling, ...; ``random`` draws uniformly). ``config.seed`` is
    the round's seed already. Returns the images in the order their first region was taken,
    with their review prediction, maps and the regions to review at the original size.
    """
    from napari_alunet.regions import select_regions, tile_mask
    from napari_alunet.scoring import review_pass, score_regions

    if config.strategy in ORACLE_STRATEGIES:
        raise ValueError(f"{config.strategy} takes whole images; regions are taken by a "
                         "strategy's uncertainty map or at random")
    from napari_alunet.acquisition import choose_subset

    rng = np.random.default_rng(config.seed)
    candidates = sorted(set(pool.unlabelled_ids()) | set(pool.partial_ids()))
    candidates = choose_subset(candidates, config.subset, rng)  # --subset: score fewer images
    if int(k) <= 0 or not candidates:
        return Acquired([], {}, {}, {}, config.strategy)

    def open_pixels(ids: Sequence[int]) -> np.ndarray:
        content = np.stack([content_mask(pool.letterbox(i)) for i in ids])
        return content & ~pool.known(ids)

    tile_scores = yield from score_regions(model, candidates, pool.load_images, open_pixels,
                                           config, device=device, precision=precision)
    chosen = select_regions(tile_scores, int(k), strategy=config.strategy, rng=rng,
                            diversity=config.diversity, power_beta=config.power_beta)
    ids = list(chosen)
    result = yield from review_pass(model, ids, pool.load_images, config, keep_maps=keep_maps,
                                    device=device, precision=precision)
    acquired = _for_review(pool, result, config.strategy)
    acquired.scores = {i: float(np.nanmax(v)) for i, v in tile_scores.items()
                       if np.isfinite(v).any()}
    opened = dict(zip(ids, open_pixels(ids))) if ids else {}  # one read for all chosen
    for image_id, tiles in chosen.items():
        box = pool.letterbox(image_id)
        canvas = tile_mask(box.size, config.region_size, tiles) & opened[image_id]
        acquired.regions[image_id] = box.invert_labels(canvas.astype(np.uint8)).astype(bool)
        acquired.tiles[image_id] = list(tiles)
    return acquired


def predict_for_review(
    pool: ActivePool, model: Any, image_ids: Sequence[int], config: AcquisitionConfig, *,
    device: Any = None, keep_maps: Sequence[str] = REVIEW_MAPS, precision: str = "auto",
) -> Generator[Any, None, Acquired]:
    """The review prediction and uncertainty maps of images chosen by the user (not by a
    strategy), exactly as :func:`acquire` gives them for the images it takes: the same seeded
    MC pass, at the original size. ``scores`` stays empty (nothing was ranked)."""
    from napari_alunet.scoring import review_pass

    ids = [int(i) for i in image_ids]
    if not ids:
        return Acquired([], {}, {}, {}, config.strategy)
    result = yield from review_pass(model, ids, pool.load_images, config, keep_maps=keep_maps,
                                    device=device, precision=precision)
    return _for_review(pool, result, config.strategy)


def dice_error(prediction: np.ndarray, truth: np.ndarray, n_classes: int | None = None) -> float:
    """``1 -`` mean foreground Dice of one (S, S) prediction against its (S, S) truth.

    0 when neither holds any foreground class (nothing to find, nothing wrong).
    ``n_classes`` defaults to the largest class index present + 1.
    """
    from napari_alunet.training.metrics import confusion_matrix, mean_foreground_dice

    if n_classes is None:
        n_classes = int(max(prediction.max(initial=0), truth.max(initial=0))) + 1

    dice = mean_foreground_dice(confusion_matrix(prediction, truth, n_classes))
    return 0.0 if np.isnan(dice) else 1.0 - dice


def _for_review(pool: ActivePool, result: Any, strategy: str) -> Acquired:
    predictions, maps = {}, {}
    for image_id in result.ranked:
        box = pool.letterbox(image_id)
        predictions[image_id] = review_prediction(box, result.probabilities[image_id])
        maps[image_id] = {name: box.invert_map(m) for name, m in result.maps[image_id].items()}
    return Acquired(list(result.ranked), dict(result.scores), predictions, maps, strategy)


def cold_start(
    pool: ActivePool, *, k: int, method: str, seed: int, model: Any = None,
    candidates: Sequence[int] | None = None, batch_size: int = 16, device: Any = None,
    precision: str = "auto",
) -> Generator[Any, None, list[int]]:
    """The first ``k`` images to label when nothing is labelled yet (or a benchmark's initial set).

    ``method="random"``: uniform. ``method="typical"`` (TypiClust, Hacohen et al. 2022): embed
    the candidates with ``model``'s encoder (an untrained network is what a new project has),
    cluster them into ``k`` groups and take the most typical member of each, so the first
    labels cover the kinds of image the pool holds instead of repeating the commonest one.
    ``candidates`` default to the unlabelled pool. Yields ScoreProgress while embedding.
    """
    from napari_alunet.diversity import typical_start

    if method not in COLD_STARTS:
        raise ValueError(f"unknown cold start {method!r}; choose one of {', '.join(COLD_STARTS)}")
    ids = sorted(int(i) for i in (candidates if candidates is not None else pool.unlabelled_ids()))
    k = min(int(k), len(ids))
    rng = np.random.default_rng([int(seed), 3])
    if k <= 0:
        return []
    if method == "random" or k >= len(ids):
        return sorted(int(i) for i in rng.choice(ids, size=k, replace=False))
    if model is None:
        raise ValueError("a typical cold start needs a model to embed the images")
    from napari_alunet.inference import encoder_embeddings

    features = yield from encoder_embeddings(model, ids, pool.load_images,
                                             batch_size=batch_size, device=device,
                                             precision=precision)
    matrix = np.stack([features[i] for i in ids])
    # Standardise each feature: otherwise the few channels with the largest activations decide
    # the clusters alone.
    matrix = (matrix - matrix.mean(0)) / (matrix.std(0) + 1e-6)
    return [int(i) for i in typical_start(ids, matrix, k, rng)]
