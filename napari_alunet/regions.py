"""Regions: the unit of region-level review, their scores, their selection and partial labels.

A reviewer who corrects whole images spends most of the time confirming pixels the model has
right. Region-level acquisition (CEREALS, Mackowiak et al. 2018, arXiv 1810.09726) ranks
*regions* across the pool by their uncertainty and asks for labels inside them only.

The unit
    A region is a square **tile of the model's input canvas**: tile ``t`` of an ``S x S``
    canvas cut into ``ceil(S / size)`` rows and columns of ``size x size`` pixels, numbered
    row by row. Tiles live where the uncertainty maps are computed, so a region's score is an
    exact mean over canvas pixels; on the original image a tile is the pixels whose
    nearest-neighbour canvas position falls in it (:meth:`Letterbox.invert_labels`), so the
    review regions of the original grid cover it without gaps or overlaps. Only the part of a
    tile that shows the image counts (the letter-box padding is not reviewed and not scored);
    a tile that is less than :data:`MIN_CONTENT` image is never proposed. Superpixels of the
    original image (:func:`superpixel_regions`, scikit-image SLIC) are offered for looking at
    and scoring any map, with the same :func:`region_means`.
Scores
    A region's score is the mean of a pixel map (BALD, entropy, ... from
    :mod:`napari_alunet.uncertainty`) over its image pixels. Optionally divided by an
    estimated correction cost (``region_cost="boundary"``): ``1 + BOUNDARY_COST_WEIGHT x``
    the fraction of its pixels on a predicted class boundary, as a proxy for the strokes a fix
    needs (CEREALS learns its cost model; we have no annotation-time data to learn one from).
Selection
    Candidates are ``(image id, tile)`` pairs, encoded as one integer ``image id x n_tiles +
    tile`` so the image-level batch rules of :func:`napari_alunet.acquisition.rank` (top-k,
    stochastic power sampling with beta from the scores' range, random) apply unchanged.
Partial labels
    Unreviewed pixels hold :data:`~napari_alunet.config.UNKNOWN_LABEL` (255): not background.
    A commit of a partial label merges into the image's current label (:func:`merge_partial`);
    training and metrics ignore unknown pixels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from napari_alunet.config import REGION_COSTS, UNITS, UNKNOWN_LABEL

__all__ = [
    "BOUNDARY_COST_WEIGHT", "MIN_CONTENT", "REGION_COSTS", "UNITS", "UNKNOWN_LABEL",
    "boundary_cost", "decode", "encode", "known_mask", "merge_partial", "n_tiles",
    "region_means", "region_scores", "select_regions", "superpixel_regions", "tile_mask",
    "tile_regions",
]

#: A tile whose image content is below this fraction is never proposed (mostly padding).
MIN_CONTENT = 0.25
#: Weight of the boundary fraction in the estimated cost ``1 + w * boundary fraction``; a
#: tile crossed by boundaries on a quarter of its pixels costs twice a uniform one.
BOUNDARY_COST_WEIGHT = 4.0


def check_region_settings(unit: str, region_size: int, region_cost: str,
                          input_size: int | None = None) -> None:
    """ValueError naming the option when a region setting is out of range."""
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {', '.join(UNITS)}, not {unit!r}")
    if region_cost not in REGION_COSTS:
        raise ValueError(f"region_cost must be one of {', '.join(REGION_COSTS)}, "
                         f"not {region_cost!r}")
    if int(region_size) < 4:
        raise ValueError(f"region_size must be >= 4 model-input pixels, got {region_size}")
    if input_size is not None and int(region_size) > int(input_size):
        raise ValueError(f"region_size {region_size} is larger than the model input "
                         f"{input_size}; choose at most {input_size}")


# -- the unit -------------------------------------------------------------------------------------
def n_tiles(size: int, tile: int) -> int:
    """Tiles of a ``size x size`` canvas cut into ``tile``-pixel squares (last ones clipped)."""
    per_side = -(-int(size) // int(tile))
    return per_side * per_side


def tile_regions(height: int, width: int, tile: int) -> np.ndarray:
    """``(height, width)`` int32 tile index of every pixel, tiles numbered row by row.

    The grid has ``ceil(width / tile)`` columns; border tiles are clipped, not padded.
    """
    if tile < 1:
        raise ValueError(f"tile must be >= 1, got {tile}")
    per_row = -(-int(width) // int(tile))
    rows = np.arange(height, dtype=np.int32)[:, None] // tile
    cols = np.arange(width, dtype=np.int32)[None, :] // tile
    return rows * per_row + cols


def tile_mask(size: int, tile: int, tiles: Sequence[int]) -> np.ndarray:
    """``(size, size)`` bool: True in the given tiles of a square canvas."""
    grid = tile_regions(size, size, tile)
    return np.isin(grid, np.asarray(list(tiles), dtype=np.int32))


def superpixel_regions(image: np.ndarray, *, n_segments: int = 100,
                       compactness: float = 0.1) -> np.ndarray:
    """``(h, w)`` int32 SLIC superpixel index (0-based) of a grayscale ``(h, w)`` image.

    ``compactness`` is for intensities scaled to [0, 1] (the image is min-max scaled first);
    larger values give squarer regions.
    """
    from skimage.segmentation import slic

    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 2:
        raise ValueError(f"superpixels need a 2-D grayscale image, got shape {img.shape}")
    span = float(img.max() - img.min())
    scaled = (img - img.min()) / span if span > 0 else np.zeros_like(img)
    return slic(scaled, n_segments=int(n_segments), compactness=float(compactness),
                channel_axis=None, start_label=0, enforce_connectivity=True).astype(np.int32)


# -- scores ---------------------------------------------------------------------------------------
def region_means(values: np.ndarray, regions: np.ndarray, *, n_regions: int | None = None,
                 weights: np.ndarray | None = None) -> np.ndarray:
    """Mean of ``values`` over each region: ``(n_regions,)`` float64, NaN for an empty region.

    Parameters
    ----------
    values : (H, W) float map.
    regions : (H, W) non-negative integer region index per pixel.
    n_regions : length of the result (default ``regions.max() + 1``).
    weights : (H, W) >= 0 weight per pixel (1: counts, 0: ignored, e.g. padding); default 1.
    """
    values = np.asarray(values, dtype=np.float64)
    regions = np.asarray(regions)
    if values.shape != regions.shape:
        raise ValueError(f"map {values.shape} and regions {regions.shape} differ in shape")
    if regions.size and regions.min() < 0:
        raise ValueError("region indices must be >= 0")
    n = int(regions.max()) + 1 if n_regions is None else int(n_regions)
    w = np.ones(values.shape) if weights is None else np.asarray(weights, dtype=np.float64)
    flat = regions.ravel().astype(np.int64)
    sums = np.bincount(flat, weights=(values * w).ravel(), minlength=n)[:n]
    counts = np.bincount(flat, weights=w.ravel(), minlength=n)[:n]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.where(counts > 0, counts, 1.0), np.nan)


def boundary_cost(prediction: np.ndarray) -> np.ndarray:
    """``(H, W)`` float64 per-pixel cost: ``1 + BOUNDARY_COST_WEIGHT`` on predicted boundaries.

    A pixel is on a boundary when a 4-neighbour has another predicted class. The region mean
    of this map is the estimated correction cost ``1 + w * boundary fraction``.
    """
    p = np.asarray(prediction)
    edge = np.zeros(p.shape, dtype=bool)
    vertical = p[1:] != p[:-1]
    horizontal = p[:, 1:] != p[:, :-1]
    edge[1:] |= vertical
    edge[:-1] |= vertical
    edge[:, 1:] |= horizontal
    edge[:, :-1] |= horizontal
    return 1.0 + BOUNDARY_COST_WEIGHT * edge


def region_scores(score_map: np.ndarray, regions: np.ndarray, *, n_regions: int | None = None,
                  weights: np.ndarray | None = None, cost: np.ndarray | None = None
                  ) -> np.ndarray:
    """``(n_regions,)`` region scores: the mean map value, divided by the mean ``cost`` if given.

    ``weights`` (H, W) say which pixels count (1) and which do not (0: padding, pixels already
    labelled); ``cost`` (H, W) > 0 is a per-pixel correction cost (:func:`boundary_cost`).
    NaN for a region with no counted pixel.
    """
    scores = region_means(score_map, regions, n_regions=n_regions, weights=weights)
    if cost is not None:
        scores = scores / region_means(cost, regions, n_regions=len(scores), weights=weights)
    return scores


# -- selection ------------------------------------------------------------------------------------
def encode(image_id: int, tile: int, tiles_per_image: int) -> int:
    """One integer for the candidate ``(image_id, tile)``."""
    return int(image_id) * int(tiles_per_image) + int(tile)


def decode(candidate: int, tiles_per_image: int) -> tuple[int, int]:
    """``(image_id, tile)`` of a candidate made by :func:`encode`."""
    return int(candidate) // int(tiles_per_image), int(candidate) % int(tiles_per_image)


def select_regions(
    scores: Mapping[int, np.ndarray], k: int, *, strategy: str, rng: np.random.Generator,
    diversity: str = "none", power_beta: float | None = None,
) -> dict[int, list[int]]:
    """The ``k`` regions to review, as ``{image id: [tiles]}`` in the order images were first hit.

    Parameters
    ----------
    scores : ``{image id: (n_tiles,) float}``; NaN marks a tile that may not be taken (padding,
        already labelled). Every array has the same length.
    k : how many regions in all (at most the number of candidates).
    strategy, diversity, power_beta : as in :func:`napari_alunet.acquisition.rank` (``random``
        draws uniformly among the candidates; ``power`` is stochastic power sampling; the
        feature-based diversities need image features and are refused here).
    """
    from napari_alunet.acquisition import rank

    if diversity in ("feature", "badge"):
        raise ValueError(f"diversity {diversity!r} works on image features; regions take k by "
                         "their scores: none, power, softrank or softmax")
    lengths = {len(v) for v in scores.values()}
    if len(lengths) > 1:
        raise ValueError(f"every image needs the same number of tiles, got {sorted(lengths)}")
    if not scores:
        return {}
    per_image = lengths.pop()
    candidates: dict[int, float] = {}
    tile: int | np.integer  # a numpy index below, then a decoded int
    for image_id, values in scores.items():
        values = np.asarray(values, dtype=np.float64)
        for tile in np.flatnonzero(np.isfinite(values)):
            candidates[encode(image_id, int(tile), per_image)] = max(float(values[tile]), 0.0)
    chosen = rank(candidates, int(k), strategy=strategy, rng=rng, diversity=diversity,
                  power_beta=power_beta)
    out: dict[int, list[int]] = {}
    for candidate in chosen:
        image_id, tile = decode(candidate, per_image)
        out.setdefault(image_id, []).append(tile)
    return {image_id: sorted(tiles) for image_id, tiles in out.items()}


# -- partial labels -------------------------------------------------------------------------------
def known_mask(labels: np.ndarray) -> np.ndarray:
    """True where a label image holds a class (reviewed), False where it is unknown."""
    return np.asarray(labels) != UNKNOWN_LABEL


def merge_partial(previous: np.ndarray | None, new: np.ndarray) -> np.ndarray:
    """A new partial review merged into the current label: its known pixels win.

    ``previous`` None means nothing was labelled yet (all unknown). Returns a new uint8 array;
    the union of the known pixels of both, with ``new`` where both know a pixel.
    """
    new = np.asarray(new)
    if previous is None:
        return new.astype(np.uint8, copy=True)
    previous = np.asarray(previous)
    if previous.shape != new.shape:
        raise ValueError(f"cannot merge a {new.shape} label into a {previous.shape} one")
    return np.where(known_mask(new), new, previous).astype(np.uint8)
