"""Scoring the unlabelled pool: streamed MC-dropout uncertainty with bounded memory.

:func:`score_pool` reads the pool in batches through ``load_batch``, runs the MC passes on the
device, reduces the maps to one score per image there, and keeps only those scores (plus a small
feature vector per image when ``diversity="feature"``) on the host. After ranking, a short second
pass recomputes the maps and predictions of the ``top_k`` chosen images for review.

That second pass gives the same numbers as the first because dropout masks are not drawn from a
global random stream: each is drawn from a generator seeded with ``(config.seed, image id, pass,
layer)`` (:class:`napari_alunet.model.mc.SeededDropout`). So an image's score does not depend on
which images share its batch, on the batch size, on the pool order or on a subset draw, and it
is reproducible, while BatchNorm stays on its running statistics
(:func:`napari_alunet.model.mc.mc_predict`).
Device, precision and memory format follow :mod:`napari_alunet.training.device`, as in training.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from napari_alunet import distributed
from napari_alunet.acquisition import DIVERSITY, choose_subset, rank, strategy_map
from napari_alunet.config import REVIEW_MAPS, AcquisitionConfig
from napari_alunet.events import ScoreProgress  # noqa: F401 (re-exported)
from napari_alunet.inference import gradient_embeddings, mc_probabilities, rows_per_call
from napari_alunet.training.device import (
    check_precision,
    inference_context,
    model_device,
    placed,
    to_device,
)
from napari_alunet.uncertainty import MAP_NAMES, REDUCTIONS, compute_maps, image_scores

__all__ = ["ScoreProgress", "ScoreResult", "review_pass", "score_pool", "score_regions"]

#: Side of the pooled MC mean used as a feature vector for diversity="feature": C * 4 * 4 values.
_FEATURE_SIDE = 4


@dataclass
class ScoreResult:
    """What :func:`score_pool` returns.

    Attributes
    ----------
    scores : ``{image_id: score}`` for every scored id (empty for ``random``, which scores none).
    ranked : the ``top_k`` ids in acquisition order.
    maps : ``{image_id: {map name: (S, S) float32}}`` for the ranked ids.
    predictions : ``{image_id: (S, S) uint8}`` argmax of the MC mean, for the ranked ids.
    seconds : wall time of the whole call.
    strategy : the strategy used.
    probabilities : ``{image_id: (C, S, S) float32}`` the MC-mean probabilities of the ranked
        ids: what the reviewer is shown (:func:`napari_alunet.active.review_prediction` maps
        them to the image's original grid).
    """

    scores: dict[int, float]
    ranked: list[int]
    maps: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)
    predictions: dict[int, np.ndarray] = field(default_factory=dict)
    seconds: float = 0.0
    strategy: str = ""
    probabilities: dict[int, np.ndarray] = field(default_factory=dict)


# -- the scorer ----------------------------------------------------------------------------------


def score_pool(
    model: nn.Module,
    image_ids: Sequence[int],
    load_batch: Callable[[list[int]], np.ndarray],
    config: AcquisitionConfig,
    *,
    top_k: int,
    device: str | torch.device | None = None,
    keep_maps: Sequence[str] = REVIEW_MAPS,
    precision: str = "auto",
) -> Generator[ScoreProgress, None, ScoreResult]:
    """Score a pool and choose the ``top_k`` images to label, as a progress generator.

    Parameters
    ----------
    model : the MC-dropout network; moved to ``device``. Its modes and BatchNorm statistics are
        left as they were.
    image_ids : pool image ids to consider.
    load_batch : ``ids -> (len(ids), 1, S, S) float32`` normalised images; called with at most
        ``config.batch_size`` ids at a time, so the pool is never in memory at once.
    config : strategy, passes, subset, reduction, diversity, power_beta, batch_size, seed.
    top_k : how many ids to choose.
    device : where to run (default: the model's device).
    keep_maps : maps (of :data:`~napari_alunet.uncertainty.MAP_NAMES`) returned for the chosen
        ids; the strategy's own map is always added.
    precision : the training config's precision (:func:`~napari_alunet.training.device.autocast`:
        ``"auto"`` is bf16 on CUDA, float32 elsewhere).

    Yields
    ------
    ScoreProgress after every batch.

    Under an initialised ``torch.distributed`` process group (``torchrun``), each rank scores
    an interleaved shard and every rank returns rank 0's merged result, equal to one process's
    (:mod:`napari_alunet.distributed`).

    Returns
    -------
    ScoreResult. Host memory is one float per scored image (plus ``C * 16`` floats with
    ``diversity="feature"``) and the maps of the ``top_k`` chosen images only; those are
    recomputed after ranking, which gives identical values because dropout masks are seeded
    per image (:class:`SeededDropout`).
    """
    start = time.perf_counter()
    check_precision(precision)
    map_name = strategy_map(config.strategy)
    if config.reduction not in REDUCTIONS:
        raise ValueError(f"unknown reduction {config.reduction!r}; choose from {REDUCTIONS}")
    if config.diversity not in DIVERSITY:
        raise ValueError(f"unknown diversity {config.diversity!r}; choose from {DIVERSITY}")
    if config.batch_size < 1 or config.passes < 1 or top_k < 0:
        raise ValueError("batch_size and passes must be >= 1 and top_k >= 0")
    names = tuple(dict.fromkeys([*keep_maps, *([map_name] if map_name else [])]))
    unknown = [n for n in names if n not in MAP_NAMES]
    if unknown:
        raise ValueError(f"unknown map(s) {unknown} in keep_maps; choose from {MAP_NAMES}")
    rng = np.random.default_rng(config.seed)
    ids = choose_subset(image_ids, config.subset, rng)
    bs = config.batch_size
    batches = [ids[b : b + bs] for b in range(0, len(ids), bs)]
    # Under torchrun each rank scores a shard of whole batches, the very batches one process
    # would score (so every image meets the same batch mates: the same numbers to the bit);
    # rank 0 merges (napari_alunet.distributed).
    sharded = distributed.active()
    if sharded:
        mine = distributed.shard(range(len(batches)), *distributed.rank_and_size())
        batches = [batches[b] for b in mine]
    n_mine = sum(len(b) for b in batches)
    dev = model_device(model, device)
    scores: dict[int, float] = {}
    features: dict[int, np.ndarray] = {}

    def batch(batch_ids: list[int]) -> torch.Tensor:
        images = load_batch(batch_ids)
        if len(images) != len(batch_ids):
            raise ValueError(f"load_batch returned {len(images)} images for {len(batch_ids)} ids")
        return to_device(images, dev)

    with placed(model, dev):
        if map_name is not None:  # random scores nothing: the model does not run on the pool
            done = 0
            for batch_ids in batches:
                x = batch(batch_ids)
                with inference_context(dev, precision):
                    mc, det = mc_probabilities(model, x, batch_ids, config.passes, config.seed,
                                             det=map_name in ("kl", "js"),
                                             rows=rows_per_call(dev, x, bs * config.passes))
                    mean = mc.mean(0)
                    values = image_scores(compute_maps(mc, det, [map_name])[map_name],
                                          config.reduction, probs=mean)
                    if config.diversity == "feature":
                        pooled = F.adaptive_avg_pool2d(mean, _FEATURE_SIDE).flatten(1)
                        features.update(zip(batch_ids, pooled.float().cpu().numpy()))
                    elif config.diversity == "badge":
                        features.update(zip(batch_ids, gradient_embeddings(model, x)))
                    scores.update(zip(batch_ids, values.double().cpu().tolist()))
                done += len(batch_ids)
                seconds = time.perf_counter() - start
                yield ScoreProgress(done, n_mine, seconds, done / max(seconds, 1e-9))

        if sharded:
            parts = distributed.gather_to_primary((scores, features))
            if parts is None:  # not rank 0: wait for its result
                result: ScoreResult = distributed.broadcast(None)
                return result
            scores, features = {}, {}
            for part_scores, part_features in parts:
                scores.update(part_scores)
                features.update(part_features)
        ranked = rank(scores if map_name else {i: 0.0 for i in ids}, top_k,
                      strategy=config.strategy, rng=rng, diversity=config.diversity,
                      power_beta=config.power_beta, features=features or None)
        del features
        review = yield from _review_pass(model, ranked, load_batch, config, names, dev,
                                         precision)
    result = ScoreResult(scores, ranked, review.maps, review.predictions,
                         time.perf_counter() - start, config.strategy, review.probabilities)
    return distributed.broadcast(result) if sharded else result


def score_regions(
    model: nn.Module,
    image_ids: Sequence[int],
    load_batch: Callable[[list[int]], np.ndarray],
    load_weights: Callable[[list[int]], np.ndarray],
    config: AcquisitionConfig,
    *,
    device: str | torch.device | None = None,
    precision: str = "auto",
) -> Generator[ScoreProgress, None, dict[int, np.ndarray]]:
    """Score the regions (canvas tiles) of a pool: ``{image_id: (n_tiles,) float64}``.

    Parameters
    ----------
    image_ids, load_batch, device, precision : as in :func:`score_pool` (same seeded masks, so a
        region's score does not depend on the batch either).
    load_weights : ``ids -> (len(ids), S, S)`` float, 1 where a pixel may be reviewed (image
        content not yet labelled), 0 elsewhere (letter-box padding, reviewed pixels).
    config : ``strategy`` (its map), ``passes``, ``batch_size``, ``seed``, ``region_size``
        (tile side) and ``region_cost`` (``"boundary"`` divides by the estimated correction
        cost, from the MC-mean prediction; :func:`napari_alunet.regions.boundary_cost`).

    Returns
    -------
    Per image the mean map value of each tile over its counted pixels; NaN for a tile with
    fewer than :data:`~napari_alunet.regions.MIN_CONTENT` of its area countable (never
    proposed). ``random`` scores no pixel: its tiles are 0 where countable.
    """
    from napari_alunet.regions import (
        MIN_CONTENT,
        boundary_cost,
        check_region_settings,
        n_tiles,
        region_scores,
        tile_regions,
    )

    start = time.perf_counter()
    check_precision(precision)
    map_name = strategy_map(config.strategy)
    check_region_settings("region", config.region_size, config.region_cost)
    if config.batch_size < 1 or config.passes < 1:
        raise ValueError("batch_size and passes must be >= 1")
    ids = [int(i) for i in image_ids]
    dev = model_device(model, device)
    bs = config.batch_size
    out: dict[int, np.ndarray] = {}
    grid: np.ndarray | None = None
    with placed(model, dev):
        for begin in range(0, len(ids), bs):
            batch_ids = ids[begin : begin + bs]
            weights = np.asarray(load_weights(batch_ids), dtype=np.float64)
            size = weights.shape[-1]
            if grid is None:  # the canvas is the same for every batch: the grid once
                check_region_settings("region", config.region_size, config.region_cost, size)
                grid = tile_regions(size, size, config.region_size)
                n = n_tiles(size, config.region_size)
                area = np.bincount(grid.ravel(), minlength=n)[:n]  # pixels per tile
            maps = predictions = None
            if map_name is not None:
                x = to_device(load_batch(batch_ids), dev)
                with inference_context(dev, precision):
                    mc, det = mc_probabilities(model, x, batch_ids, config.passes, config.seed,
                                             det=map_name in ("kl", "js"),
                                             rows=rows_per_call(dev, x, bs * config.passes))
                    maps = compute_maps(mc, det, [map_name])[map_name].float().cpu().numpy()
                    predictions = mc.mean(0).argmax(1).cpu().numpy()
            for row, image_id in enumerate(batch_ids):
                w = weights[row]
                counted = np.bincount(grid.ravel(), weights=w.ravel(), minlength=n)[:n]
                if maps is None:
                    values = np.zeros(n)
                else:
                    assert predictions is not None  # computed together with maps
                    cost = (boundary_cost(predictions[row]) if config.region_cost == "boundary"
                            else None)
                    values = region_scores(maps[row], grid, n_regions=n, weights=w, cost=cost)
                out[image_id] = np.where(counted >= MIN_CONTENT * area, values, np.nan)
            done = begin + len(batch_ids)
            seconds = time.perf_counter() - start
            yield ScoreProgress(done, len(ids), seconds, done / max(seconds, 1e-9))
    return out


def review_pass(
    model: nn.Module, image_ids: Sequence[int], load_batch: Callable[[list[int]], np.ndarray],
    config: AcquisitionConfig, *, device: str | torch.device | None = None,
    keep_maps: Sequence[str] = REVIEW_MAPS, precision: str = "auto",
) -> Generator[ScoreProgress, None, ScoreResult]:
    """The maps, MC-mean probabilities and labels of ``image_ids``, chosen by another rule.

    The same pass :func:`score_pool` runs for its ranked images (same seeded masks, so the same
    numbers), for images chosen without scoring the pool (oracle-error, cold start). Returns a
    :class:`ScoreResult` with empty ``scores`` and ``ranked == list(image_ids)``.
    """
    start = time.perf_counter()
    check_precision(precision)
    names = tuple(dict.fromkeys(keep_maps))
    dev = model_device(model, device)
    with placed(model, dev):
        review = yield from _review_pass(model, [int(i) for i in image_ids], load_batch, config,
                                         names, dev, precision)
    return ScoreResult({}, [int(i) for i in image_ids], review.maps, review.predictions,
                       time.perf_counter() - start, config.strategy, review.probabilities)


@dataclass
class _Review:
    maps: dict[int, dict[str, np.ndarray]]
    predictions: dict[int, np.ndarray]
    probabilities: dict[int, np.ndarray]


def _review_pass(model: nn.Module, ranked: list[int], load_batch: Callable[[list[int]], np.ndarray],
                 config: AcquisitionConfig, names: Sequence[str], dev: torch.device,
                 precision: str) -> Generator[ScoreProgress, None, _Review]:
    """MC maps, MC-mean probabilities and labels of ``ranked`` (the model is prepared)."""
    review = _Review({}, {}, {})
    review_start = time.perf_counter()
    bs = config.batch_size
    for begin in range(0, len(ranked), bs):
        batch_ids = ranked[begin : begin + bs]
        images = load_batch(batch_ids)
        if len(images) != len(batch_ids):
            raise ValueError(f"load_batch returned {len(images)} images for {len(batch_ids)} ids")
        x = to_device(images, dev)
        with inference_context(dev, precision):
            mc, det = mc_probabilities(model, x, batch_ids, config.passes, config.seed,
                                     det=bool({"kl", "js"}.intersection(names)),
                                     rows=rows_per_call(dev, x, bs * config.passes))
            batch_maps = {k: v.float().cpu().numpy() for k, v in
                          compute_maps(mc, det, names).items()}
            mean: torch.Tensor | np.ndarray  # the tensor, then its numpy copy
            mean = mc.mean(0).float()
            labels = mean.argmax(1).to(torch.uint8).cpu().numpy()
            mean = mean.cpu().numpy()
        for row, image_id in enumerate(batch_ids):
            review.maps[image_id] = {k: np.ascontiguousarray(v[row]) for k, v in batch_maps.items()}
            review.predictions[image_id] = np.ascontiguousarray(labels[row])
            review.probabilities[image_id] = np.ascontiguousarray(mean[row])
        done = begin + len(batch_ids)
        seconds = time.perf_counter() - review_start
        yield ScoreProgress(done, len(ranked), seconds, done / max(seconds, 1e-9), "review")
    return review
