"""The oracle of an experiment: it labels what a round acquired and counts what that cost.

A reviewer pays for an acquired image in the pixels it looks at, the pixels it corrects in the
model's proposal (the same prediction the Review panel shows) and the clicks those corrections
take (:mod:`napari_alunet.experiment.cost`); the cost of drawing the truth from an empty mask is
counted beside it. Region arms (issue 14) review and pay for their tiles only.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_alunet import active
from napari_alunet.config import ExperimentConfig
from napari_alunet.experiment.pool import Pool, Splits
from napari_alunet.experiment.records import RoundsFile, parse_ids, parse_regions
from napari_alunet.experiment.settings import Arm


@dataclass
class RunContext:
    """What one experiment's rounds share: settings, the memory pool, its splits, the plan."""

    config: ExperimentConfig
    pool: Pool
    splits: Splits
    sizes: list[int]
    device: Any
    out: Path
    rounds_file: RoundsFile
    shared_round0: dict[tuple[int, str], tuple[dict[str, Any], dict[str, Any]]] = field(
        default_factory=dict)
    initial_sets: dict[tuple[int, str], list[int]] = field(default_factory=dict)
    tiles_per_image: float | None = None  # region arms: mean proposable tiles per pool image


COSTS = ("correction_pixels", "scratch_pixels", "correction_clicks", "scratch_clicks",
          "reviewed_pixels")


def scratch_cost(ctx: RunContext, ids: Sequence[int]) -> tuple[int, int]:
    """(pixels, clicks) of drawing ``ids`` from an empty mask."""
    from napari_alunet.experiment.cost import scratch_clicks

    ids = [int(i) for i in ids]
    pixels = int(ctx.pool.foreground[ids].sum()) if ids else 0
    clicks = sum(scratch_clicks(ctx.pool.truth[i], vertex_spacing=ctx.config.vertex_spacing,
                                min_area=ctx.config.min_click_area) for i in ids)
    return pixels, int(clicks)


def missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def reviewed_area(ctx: RunContext, ids: Sequence[int]) -> int:
    """Pixels a reviewer looks at to label ``ids`` whole (their original sizes)."""
    return int(sum(ctx.pool.truth[int(i)].size for i in ids))


def initial_costs(ctx: RunContext, labelled: Sequence[int]) -> dict[str, int]:
    """The cost of the initial set: drawn from scratch on both effort axes, reviewed whole."""
    pixels, clicks = scratch_cost(ctx, labelled)
    return {"correction_pixels": pixels, "scratch_pixels": pixels,
            "correction_clicks": clicks, "scratch_clicks": clicks,
            "reviewed_pixels": reviewed_area(ctx, labelled)}


def reveal(ctx: RunContext, labelled: list[int], known: dict[int, np.ndarray],
            tiles: dict[int, list[int]]) -> None:
    """The oracle labels the acquired tiles: they join the known pixels of their images."""
    from napari_alunet.regions import tile_mask

    size = ctx.pool.images.shape[-1]
    for image_id, image_tiles in tiles.items():
        image_id = int(image_id)
        mask = tile_mask(size, ctx.config.region_size, image_tiles)
        if image_id not in known:
            if image_id in labelled:  # a fully labelled image is never a candidate
                raise RuntimeError(f"region acquired in fully labelled image {image_id}")
            # The letter-box padding is known background, as for a whole label.
            known[image_id] = ~active.content_mask(ctx.pool.boxes[image_id])
            labelled.append(image_id)
        known[image_id] |= mask


def region_k(ctx: RunContext, k: int) -> int:
    """Regions per round: ``region_budget`` x the tiles k whole images of the pool hold on
    average (tiles that show enough of the image to be proposed)."""
    from napari_alunet.regions import MIN_CONTENT, n_tiles, region_means, tile_regions

    if ctx.tiles_per_image is None:
        size, tile = ctx.pool.images.shape[-1], ctx.config.region_size
        grid = tile_regions(size, size, tile)
        counts = [np.count_nonzero(region_means(
            active.content_mask(ctx.pool.boxes[i]).astype(float), grid,
            n_regions=n_tiles(size, tile)) >= MIN_CONTENT) for i in ctx.splits.train_pool]
        ctx.tiles_per_image = float(np.mean(counts)) if counts else 0.0
    return max(1, int(round(ctx.config.region_budget * k * ctx.tiles_per_image)))


def acquire_regions(ctx: RunContext, model: Any, arm: Arm, seed: int, round_idx: int,
                     labelled: Sequence[int], known: dict[int, np.ndarray], k: int
                     ) -> Generator[Any, None, tuple[dict[int, list[int]], int, dict[str, int]]]:
    """One step's region acquisition (:func:`napari_alunet.active.acquire` with
    ``unit="region"``) and the oracle's cost, counted inside the regions only: pixels reviewed
    (the regions' area at the original size), pixels and clicks of the corrections there, and
    drawing the regions' truth from scratch."""
    from napari_alunet.experiment.cost import correction_clicks, scratch_clicks

    cfg = ctx.config
    acq = dataclasses.replace(cfg.acquisition, strategy=arm.strategy, diversity=arm.diversity,
                              k=cfg.k, passes=cfg.passes, unit="region",
                              region_size=cfg.region_size,
                              seed=seed + REPLICATE_SEED * (arm.replicate - 1))
    pool = ctx.pool.active_pool(ctx.splits, labelled, known)
    acquired = yield from active.acquire(pool, model, acq, k=region_k(ctx, k),
                                         round_idx=round_idx, device=ctx.device, keep_maps=(),
                                         precision=cfg.train.precision)
    if set(acquired.ids) & set(ctx.splits.test):
        raise RuntimeError("the region scorer proposed test images")
    costs = dict.fromkeys(COSTS, 0)
    for image_id in acquired.ids:
        region = acquired.regions[image_id]
        truth = ctx.pool.truth[image_id]
        prediction = np.where(region, acquired.predictions[image_id], 0)
        truth_in = np.where(region, truth, 0)
        costs["reviewed_pixels"] += int(np.count_nonzero(region))
        costs["correction_pixels"] += int(np.count_nonzero(prediction != truth_in))
        costs["correction_clicks"] += int(correction_clicks(prediction, truth_in,
                                                            min_area=cfg.min_click_area))
        costs["scratch_pixels"] += int(np.count_nonzero(truth_in))
        costs["scratch_clicks"] += int(scratch_clicks(truth_in, vertex_spacing=cfg.vertex_spacing,
                                                      min_area=cfg.min_click_area))
    return dict(acquired.tiles), len(acquired.scores), costs


#: Acquisition seed offset of replicate arms (``random#2``): far from any run seed.
REPLICATE_SEED = 7919


def acquire_images(ctx: RunContext, model: Any, arm: Arm, seed: int, round_idx: int,
             labelled: Sequence[int], k: int
             ) -> Generator[Any, None, tuple[list[int], int, dict[str, int]]]:
    """One step's acquisition (:func:`napari_alunet.active.acquire`) and the oracle's cost.

    The oracle corrects the same prediction a reviewer is shown in the Review panel; its
    cost is counted in pixels and in clicks (:mod:`napari_alunet.experiment.cost`).
    """
    from napari_alunet.experiment.cost import correction_clicks

    cfg = ctx.config
    acq = dataclasses.replace(cfg.acquisition, strategy=arm.strategy, diversity=arm.diversity,
                              k=cfg.k, passes=cfg.passes,
                              seed=seed + REPLICATE_SEED * (arm.replicate - 1))
    pool = ctx.pool.active_pool(ctx.splits, labelled)
    taken = set(labelled)
    acquired = yield from active.acquire(pool, model, acq, k=k, round_idx=round_idx,
                                         device=ctx.device, keep_maps=(),
                                         precision=cfg.train.precision)
    ids = [int(i) for i in acquired.ids]
    bad = taken.intersection(ids) | set(ctx.splits.test).intersection(ids)
    if bad:  # a scorer bug would silently leak labels or test images: stop loudly instead
        raise RuntimeError(f"the scorer proposed ids {sorted(bad)} that are labelled or test")
    truth = ctx.pool.truth
    pixels, clicks = scratch_cost(ctx, ids)
    costs = {
        "reviewed_pixels": reviewed_area(ctx, ids),
        "correction_pixels": int(sum(np.count_nonzero(acquired.predictions[i] != truth[i])
                                     for i in ids)),
        "scratch_pixels": pixels,
        "correction_clicks": int(sum(correction_clicks(acquired.predictions[i], truth[i],
                                                       min_area=cfg.min_click_area)
                                     for i in ids)),
        "scratch_clicks": clicks,
    }
    return ids, len(acquired.scores), costs


def replay(ctx: RunContext, strategy: str, seed: int, labelled: list[int],
           previous: dict[int, dict[str, Any]], *, region: bool,
           ) -> tuple[dict[str, int], dict[int, np.ndarray]]:
    """Relabel what the recorded rounds ``previous`` acquired, for a resumed run.

    ``labelled`` (the initial set) is extended in place. Returns the effort spent so far (the
    initial set counts as drawn from scratch on both effort axes) and, for region arms, the
    reviewed canvas pixels of partially labelled images.
    """
    spent = initial_costs(ctx, labelled)
    known: dict[int, np.ndarray] = {}  # region arms: reviewed canvas pixels of partial images
    for r in range(len(ctx.sizes)):
        if r not in previous:
            break
        if region:
            reveal(ctx, labelled, known, parse_regions(previous[r].get("acquired_regions")))
        else:
            labelled += parse_ids(previous[r]["acquired_ids"])
        for name in COSTS:
            value = previous[r].get(name)
            if name == "reviewed_pixels" and not region and missing(value):
                # Rows written before the column existed: an image arm reviews what it
                # acquired whole, so the value follows from the acquired ids.
                value = reviewed_area(ctx, parse_ids(previous[r]["acquired_ids"]))
            if missing(value):
                raise ValueError(f"{ctx.rounds_file.path}: round {r} of {strategy} seed {seed} "
                                 f"has no {name}; it was written by another version, use a new "
                                 "--out")
            assert value is not None  # missing(None) is True: raised above
            spent[name] += int(value)
    return spent, known
