"""Scoring the unlabelled pool: streamed MC-dropout uncertainty with bounded memory.

:func:`score_pool` reads the pool in batches through ``load_batch``, runs the MC passes on the
device, reduces the maps to one score per image there, and keeps only those scores (plus a small
feature vector per image when ``diversity="feature"``) on the host. After ranking, a short second
pass recomputes the maps and predictions of the ``top_k`` chosen images for review.

That second pass gives the same numbers as the first because dropout masks are not drawn from a
global random stream: each is drawn from a generator seeded with ``(config.seed, image id, pass,
layer)`` (:class:`SeededDropout`). So an image's score does not depend on which images share its
batch, on the batch size, on the pool order or on a subset draw, and it is reproducible, while
BatchNorm stays on its running statistics (:func:`napari_alunet.model.mc.mc_predict`).

:func:`predict_with_uncertainty` gives labels and an entropy map by one of the three methods of
published MC-U-Net work: softmax of one deterministic pass, MC dropout, test-time augmentation.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from napari_alunet.acquisition import DIVERSITY, choose_subset, rank, strategy_map
from napari_alunet.config import REVIEW_MAPS, AcquisitionConfig
from napari_alunet.events import ScoreProgress  # noqa: F401 (re-exported)
from napari_alunet.model.mc import mc_predict
from napari_alunet.uncertainty import MAP_NAMES, REDUCTIONS, compute_maps, entropy, image_scores

__all__ = ["ScoreProgress", "ScoreResult", "SeededDropout", "encoder_embeddings",
           "gradient_embeddings", "predict_with_uncertainty", "review_pass", "score_pool",
           "score_regions"]

_M64 = (1 << 64) - 1
_ELEMENT_DROPOUT = (nn.Dropout,)
_FEATURE_DROPOUT = (nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)
#: Pixels per forward call (images x passes x H x W) on the CPU. Two cores are fastest on a few
#: images at a time (cache-resident activations: at 128x128, 8 rows per call ran 2.4x faster per
#: image than 64). On GPUs one call takes the whole batch times all passes.
_CPU_PIXELS = 8 * 128 * 128
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


# -- per-image seeded dropout --------------------------------------------------------------------


def _mix64(x: int) -> int:
    # splitmix64 finaliser: turns structured keys (seed, id, pass, layer) into unrelated seeds.
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def _key(*parts: int) -> int:
    h = 0
    for part in parts:
        h = _mix64(h ^ (part & _M64))
    return h


class SeededDropout:
    """Context in which dropout masks depend only on ``(seed, image id, pass, layer)``.

    Inside it, every ``nn.Dropout``/``Dropout1d/2d/3d`` has ``p`` set to 0 (so its own random
    op is skipped) and a forward hook multiplies the output by a mask drawn from a generator
    seeded per row. Call :meth:`begin` with the image ids of the batch before each
    :func:`mc_predict`; rows are ``pass * len(ids) + image``, as ``mc_predict`` lays them out.
    Other dropout types (``AlphaDropout``) keep their global-RNG behaviour.
    """

    def __init__(self, model: nn.Module, seed: int) -> None:
        self.model = model
        self.seed = int(seed)
        self.ids: list[int] = []
        self.offset = 0
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._saved_p: dict[nn.Dropout | nn.Dropout1d | nn.Dropout2d | nn.Dropout3d, float] = {}
        self._generators: dict[torch.device, torch.Generator] = {}

    def begin(self, ids: Sequence[int]) -> None:
        """The image ids of the next MC call, in batch order."""
        self.ids = [int(i) for i in ids]
        self.offset = 0

    def __enter__(self) -> SeededDropout:
        layer = 0
        for module in self.model.modules():
            if isinstance(module, _ELEMENT_DROPOUT + _FEATURE_DROPOUT) and module.p > 0:
                self._saved_p[module] = module.p
                self._handles.append(module.register_forward_hook(self._hook(layer, module.p)))
                module.p = 0.0
                layer += 1
        self._handles.append(self.model.register_forward_hook(self._advance))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        for module, p in self._saved_p.items():
            module.p = p
        self._handles.clear()
        self._saved_p.clear()

    def _advance(self, _module: nn.Module, _args: object, out: torch.Tensor) -> None:
        self.offset += out.shape[0] // max(1, len(self.ids))

    def _hook(self, layer: int, p: float) -> Callable[..., torch.Tensor | None]:
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor):
            if not module.training:
                return None
            x = args[0]
            n_ids = len(self.ids)
            if n_ids == 0 or x.shape[0] % n_ids:
                raise RuntimeError("SeededDropout.begin(ids) must name the images of the batch")
            if isinstance(module, _FEATURE_DROPOUT):
                shape = (*x.shape[:2], *([1] * (x.dim() - 2)))  # one draw per channel
            else:
                shape = tuple(x.shape)
            gen = self._generator(x.device)
            uniform = torch.empty(shape, device=x.device)
            for row in range(x.shape[0]):  # rows = images x passes, not pixels
                image = self.ids[row % n_ids]
                gen.manual_seed(_key(self.seed, image, self.offset + row // n_ids, layer))
                uniform[row].uniform_(generator=gen)
            return x * (uniform >= p) * (1.0 / (1.0 - p))

        return hook

    def _generator(self, device: torch.device) -> torch.Generator:
        if device not in self._generators:
            self._generators[device] = torch.Generator(device=device)
        return self._generators[device]


# -- device helpers ------------------------------------------------------------------------------


def _device(model: nn.Module, device: str | torch.device | None) -> torch.device:
    if device is None or device == "auto":
        try:
            return next(model.parameters()).device
        except StopIteration:
            return torch.device("cpu")
    return torch.device(device)


@contextlib.contextmanager
def _compute(device: torch.device) -> Iterator[None]:
    # no_grad and autocast are thread-local and would leak to the consumer if held across a
    # yield, so they wrap each batch's computation only.
    with torch.no_grad():
        if device.type == "cuda":
            with torch.autocast("cuda", dtype=torch.bfloat16):
                yield
        else:
            yield


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    saved = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for module, mode in saved.items():
            module.training = mode


@contextlib.contextmanager
def _prepared(model: nn.Module, device: torch.device) -> Iterator[None]:
    """Model on ``device`` in channels_last (faster convolutions on CPU and GPU), restored after."""
    conv_weights = [p for p in model.parameters() if p.dim() == 4]
    was_contiguous = all(p.is_contiguous() for p in conv_weights)
    # Module.to accepts memory_format at run time, but torch's overloads do not declare it.
    model.to(device=device, memory_format=torch.channels_last)  # type: ignore[call-overload]
    try:
        yield
    finally:
        if was_contiguous:
            model.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]


def _rows(device: torch.device, x: torch.Tensor, gpu_rows: int) -> int:
    if device.type != "cpu":
        return gpu_rows
    return max(1, _CPU_PIXELS // (x.shape[-2] * x.shape[-1]))


def _to_device(images: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    x = torch.as_tensor(images, dtype=torch.float32)
    if x.dim() != 4:
        raise ValueError(f"images must have shape (B, C_in, S, S), got {tuple(x.shape)}")
    return x.to(device).contiguous(memory_format=torch.channels_last)


def _probabilities(
    model: nn.Module, x: torch.Tensor, ids: Sequence[int], passes: int, seed: int, *,
    det: bool, rows: int,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """MC probabilities (T, B, C, H, W) and, if asked, deterministic ones (B, C, H, W).

    Forward calls hold about ``rows`` images x passes; ``ids`` key the dropout masks.
    """
    per_call = max(1, rows // passes)
    samples = []
    with SeededDropout(model, seed) as seeded:
        for s in range(0, x.shape[0], per_call):
            seeded.begin(ids[s : s + per_call])
            chunk = max(1, rows // min(per_call, x.shape[0] - s))
            samples.append(mc_predict(model, x[s : s + per_call], passes, chunk=chunk))
    det_probs = None
    if det:
        with _eval_mode(model):
            det_probs = torch.cat([torch.softmax(model(x[s : s + rows]).float(), 1)
                                   for s in range(0, x.shape[0], rows)])
    return torch.cat(samples, 1), det_probs


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
    device : where to run (default: the model's device). On CUDA, bf16 autocast.
    keep_maps : maps (of :data:`~napari_alunet.uncertainty.MAP_NAMES`) returned for the chosen
        ids; the strategy's own map is always added.

    Yields
    ------
    ScoreProgress after every batch.

    Returns
    -------
    ScoreResult. Host memory is one float per scored image (plus ``C * 16`` floats with
    ``diversity="feature"``) and the maps of the ``top_k`` chosen images only; those are
    recomputed after ranking, which gives identical values because dropout masks are seeded
    per image (:class:`SeededDropout`).
    """
    start = time.perf_counter()
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
    dev = _device(model, device)
    scores: dict[int, float] = {}
    features: dict[int, np.ndarray] = {}
    bs = config.batch_size

    def batch(batch_ids: list[int]) -> torch.Tensor:
        images = load_batch(batch_ids)
        if len(images) != len(batch_ids):
            raise ValueError(f"load_batch returned {len(images)} images for {len(batch_ids)} ids")
        return _to_device(images, dev)

    with _prepared(model, dev):
        if map_name is not None:  # random scores nothing: the model does not run on the pool
            for begin in range(0, len(ids), bs):
                batch_ids = ids[begin : begin + bs]
                x = batch(batch_ids)
                with _compute(dev):
                    mc, det = _probabilities(model, x, batch_ids, config.passes, config.seed,
                                             det=map_name in ("kl", "js"),
                                             rows=_rows(dev, x, bs * config.passes))
                    mean = mc.mean(0)
                    values = image_scores(compute_maps(mc, det, [map_name])[map_name],
                                          config.reduction, probs=mean)
                    if config.diversity == "feature":
                        pooled = F.adaptive_avg_pool2d(mean, _FEATURE_SIDE).flatten(1)
                        features.update(zip(batch_ids, pooled.float().cpu().numpy()))
                    elif config.diversity == "badge":
                        features.update(zip(batch_ids, gradient_embeddings(model, x)))
                    scores.update(zip(batch_ids, values.double().cpu().tolist()))
                done = begin + len(batch_ids)
                seconds = time.perf_counter() - start
                yield ScoreProgress(done, len(ids), seconds, done / max(seconds, 1e-9))

        ranked = rank(scores if map_name else {i: 0.0 for i in ids}, top_k,
                      strategy=config.strategy, rng=rng, diversity=config.diversity,
                      power_beta=config.power_beta, features=features or None)
        del features
        review = yield from _review_pass(model, ranked, load_batch, config, names, dev)
    return ScoreResult(scores, ranked, review.maps, review.predictions,
                       time.perf_counter() - start, config.strategy, review.probabilities)


def score_regions(
    model: nn.Module,
    image_ids: Sequence[int],
    load_batch: Callable[[list[int]], np.ndarray],
    load_weights: Callable[[list[int]], np.ndarray],
    config: AcquisitionConfig,
    *,
    device: str | torch.device | None = None,
) -> Generator[ScoreProgress, None, dict[int, np.ndarray]]:
    """Score the regions (canvas tiles) of a pool: ``{image_id: (n_tiles,) float64}``.

    Parameters
    ----------
    image_ids, load_batch, device : as in :func:`score_pool` (same seeded dropout masks, so a
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
    map_name = strategy_map(config.strategy)
    check_region_settings("region", config.region_size, config.region_cost)
    if config.batch_size < 1 or config.passes < 1:
        raise ValueError("batch_size and passes must be >= 1")
    ids = [int(i) for i in image_ids]
    dev = _device(model, device)
    bs = config.batch_size
    out: dict[int, np.ndarray] = {}
    grid: np.ndarray | None = None
    with _prepared(model, dev):
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
                x = _to_device(load_batch(batch_ids), dev)
                with _compute(dev):
                    mc, det = _probabilities(model, x, batch_ids, config.passes, config.seed,
                                             det=map_name in ("kl", "js"),
                                             rows=_rows(dev, x, bs * config.passes))
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
    keep_maps: Sequence[str] = REVIEW_MAPS,
) -> Generator[ScoreProgress, None, ScoreResult]:
    """The maps, MC-mean probabilities and labels of ``image_ids``, chosen by another rule.

    The same pass :func:`score_pool` runs for its ranked images (same seeded masks, so the same
    numbers), for images chosen without scoring the pool (oracle-error, cold start). Returns a
    :class:`ScoreResult` with empty ``scores`` and ``ranked == list(image_ids)``.
    """
    start = time.perf_counter()
    names = tuple(dict.fromkeys(keep_maps))
    dev = _device(model, device)
    with _prepared(model, dev):
        review = yield from _review_pass(model, [int(i) for i in image_ids], load_batch, config,
                                         names, dev)
    return ScoreResult({}, [int(i) for i in image_ids], review.maps, review.predictions,
                       time.perf_counter() - start, config.strategy, review.probabilities)


@dataclass
class _Review:
    maps: dict[int, dict[str, np.ndarray]]
    predictions: dict[int, np.ndarray]
    probabilities: dict[int, np.ndarray]


def _review_pass(model: nn.Module, ranked: list[int], load_batch: Callable[[list[int]], np.ndarray],
                 config: AcquisitionConfig, names: Sequence[str], dev: torch.device
                 ) -> Generator[ScoreProgress, None, _Review]:
    """MC maps, MC-mean probabilities and labels of ``ranked`` (the model is prepared)."""
    review = _Review({}, {}, {})
    review_start = time.perf_counter()
    bs = config.batch_size
    for begin in range(0, len(ranked), bs):
        batch_ids = ranked[begin : begin + bs]
        images = load_batch(batch_ids)
        if len(images) != len(batch_ids):
            raise ValueError(f"load_batch returned {len(images)} images for {len(batch_ids)} ids")
        x = _to_device(images, dev)
        with _compute(dev):
            mc, det = _probabilities(model, x, batch_ids, config.passes, config.seed,
                                     det=bool({"kl", "js"}.intersection(names)),
                                     rows=_rows(dev, x, bs * config.passes))
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


# -- embeddings for diversity and cold starts -----------------------------------------------------


def gradient_embeddings(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    """BADGE's gradient embeddings of a batch: (B, C * F) float32.

    For each image, the gradient of the cross-entropy with the model's own argmax as target
    with respect to the 1x1 output layer's weights, averaged over pixels:
    ``sum_pixels (p - onehot(argmax p)) outer h / pixels``, with ``h`` the (F,) features
    entering the head (Ash et al. 2020). Its norm grows with the model's uncertainty and its
    direction says what kind of image it is, so k-means++ seeding on it mixes both.
    Deterministic pass (dropout off, BatchNorm on running statistics).
    """
    captured: list[torch.Tensor] = []
    head = cast(nn.Module, model.head)  # torch types attributes as Tensor | Module
    handle = head.register_forward_hook(lambda _m, args, _out: captured.append(args[0]))
    try:
        with torch.no_grad(), _eval_mode(model):
            logits = model(x).float()
    finally:
        handle.remove()
    h = captured[0].float()[..., : logits.shape[-2], : logits.shape[-1]]
    probs = torch.softmax(logits, 1)
    residual = probs - F.one_hot(probs.argmax(1), probs.shape[1]).permute(0, 3, 1, 2).float()
    pixels = logits.shape[-2] * logits.shape[-1]
    grad = torch.einsum("bchw,bfhw->bcf", residual, h) / pixels
    return grad.flatten(1).cpu().numpy().astype(np.float32)


def encoder_embeddings(
    model: nn.Module, image_ids: Sequence[int], load_batch: Callable[[list[int]], np.ndarray], *,
    batch_size: int = 16, device: str | torch.device | None = None,
) -> Generator[ScoreProgress, None, dict[int, np.ndarray]]:
    """``{image_id: (2 F,) float32}``: mean and std over pixels of the bottleneck features.

    What the typicality cold start clusters (:func:`napari_alunet.acquisition.typical_start`).
    Deterministic pass; works with an untrained network too (random convolutional features
    still separate image layouts), which is what a project without labels has.
    """
    dev = _device(model, device)
    ids = [int(i) for i in image_ids]
    out: dict[int, np.ndarray] = {}
    captured: list[torch.Tensor] = []
    start = time.perf_counter()
    bottleneck = cast(nn.Module, model.bottleneck)  # torch types attributes as Tensor | Module
    handle = bottleneck.register_forward_hook(lambda _m, _a, y: captured.append(y))
    try:
        with _prepared(model, dev):
            for begin in range(0, len(ids), batch_size):
                batch_ids = ids[begin : begin + batch_size]
                x = _to_device(load_batch(batch_ids), dev)
                captured.clear()
                with torch.no_grad(), _eval_mode(model):
                    model(x)
                feats = captured[0].float().flatten(2)
                vectors = torch.cat([feats.mean(2), feats.std(2)], 1).cpu().numpy()
                out.update(zip(batch_ids, vectors.astype(np.float32)))
                done = begin + len(batch_ids)
                seconds = time.perf_counter() - start
                yield ScoreProgress(done, len(ids), seconds, done / max(seconds, 1e-9), "embed")
    finally:
        handle.remove()
    return out


# -- prediction with uncertainty -----------------------------------------------------------------


def _dihedral(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    return torch.rot90(torch.flip(x, (-1,)) if flip else x, k, (-2, -1))


def _undo_dihedral(y: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    y = torch.rot90(y, -k, (-2, -1))
    return torch.flip(y, (-1,)) if flip else y


_DIHEDRAL = [(k, flip) for flip in (False, True) for k in range(4)]


def predict_with_uncertainty(
    model: nn.Module,
    images: np.ndarray | torch.Tensor,
    *,
    method: str = "mc",
    passes: int = 20,
    device: str | torch.device | None = None,
    batch_size: int = 8,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, an uncertainty map and the mean probabilities of a batch of images.

    Parameters
    ----------
    model : the segmentation network; its modes and BatchNorm statistics are left unchanged.
    images : (B, 1, S, S) float32 normalised images.
    method : ``"softmax"``: one deterministic pass (dropout off); ``"mc"``: mean of ``passes``
        MC-dropout passes; ``"tta"``: mean over the 8 flips/rotations by 90 degrees of a
        deterministic pass, each prediction transformed back before averaging.
    passes : MC passes (``"mc"`` only).
    device : where to run (default: the model's device).
    batch_size : images per step.
    seed : seeds the MC dropout masks, per image position in ``images``.

    Returns
    -------
    labels : (B, S, S) uint8, argmax of the mean probabilities.
    uncertainty : (B, S, S) float32, entropy of the mean probabilities (nats).
    mean_probs : (B, C, S, S) float32.
    """
    if method not in ("mc", "tta", "softmax"):
        raise ValueError(f"unknown method {method!r}; choose 'mc', 'tta' or 'softmax'")
    dev = _device(model, device)
    x_all = torch.as_tensor(images, dtype=torch.float32)
    means = []
    with _prepared(model, dev):
        for s in range(0, x_all.shape[0], batch_size):
            x = _to_device(x_all[s : s + batch_size], dev)
            with _compute(dev):
                if method == "mc":
                    mc, _ = _probabilities(model, x, list(range(s, s + len(x))), passes, seed,
                                           det=False, rows=_rows(dev, x, batch_size * passes))
                    mean = mc.mean(0)
                else:
                    with _eval_mode(model):
                        if method == "softmax":
                            mean = torch.softmax(model(x).float(), 1)
                        else:
                            # all 8 views in one forward call; each is mapped back before averaging
                            views = torch.cat([_dihedral(x, k, f) for k, f in _DIHEDRAL])
                            probs = torch.softmax(model(views).float(), 1).chunk(len(_DIHEDRAL))
                            mean = torch.stack([_undo_dihedral(p, k, f) for p, (k, f)
                                                in zip(probs, _DIHEDRAL)]).mean(0)
                means.append(mean.float().cpu())
    mean_probs = torch.cat(means)
    labels = mean_probs.argmax(1).to(torch.uint8).numpy()
    return labels, entropy(mean_probs).numpy(), mean_probs.numpy()
