"""Oracle-replay active-learning experiments: several strategies, several seeds, one table.

The pool (images and ground truth) is loaded once into memory. For every seed and strategy the
loop reads like the algorithm (BaaL's ``active_loop``)::

    labelled = initial set of the seed
    repeat:
        reset the model (or keep it: warm start) -> train on labelled with the product's
        recipe (training/recipe.py: step budget, EMA, the unlabelled rest of the training pool
        for the semi-supervised term, validation only when big enough) -> evaluate on the
        fixed test pool -> score the unlabelled pool -> acquire the top k -> the oracle labels
        them -> record the round
    until the labelled fraction (or the number of rounds) is reached

plus one full-data baseline per seed (train on the whole training pool), whose Dice defines
"95 % of full".

Pairing, so that strategies are compared on the same footing:

* one test split for the whole experiment (drawn from ``sample_seed``);
* per seed, one initial labelled set, one set of initial weights and one round-0 model shared by
  all strategies (round 0 is trained once per seed and reused);
* training and acquisition seeds depend on (seed, round), not on the strategy.

Records (all in ``OUT``):

``rounds.csv``
    long format, one row per (strategy, seed, round), appended, flushed and fsynced after every
    round, so an interrupted run keeps every finished round. Columns: see :func:`round_columns`.
    ``acquired_ids`` are the images acquired *after* evaluating that round (they join the
    labelled set of the next round); ``correction_pixels`` / ``scratch_pixels`` are the oracle's
    cost of labelling them (pixels where the model's proposal differs from the ground truth at
    the image's original size / foreground pixels drawn from an empty mask).
    ``cumulative_correction_pixels`` / ``cumulative_scratch_pixels`` are the total cost of the
    labelled set the round was *trained on* (the initial set counts as drawn from scratch in
    both), i.e. the effort that bought the round's Dice.
``summary.csv``
    per strategy, statistics over seeds (:func:`napari_alunet.experiment.report.summarise`).
``learning_curves.png/.svg``, ``dice_vs_effort.png/.svg``
    :mod:`napari_alunet.experiment.plots`.
``config.json``
    the resolved configuration, versions, device, command line and the splits. Running the same
    experiment again resumes it: finished rounds are skipped, an unfinished run continues from
    the labelled set recorded in ``rounds.csv``; different settings are refused.
``resume_model.pt``
    the newest model of the run in progress (warm start only), so that a resumed warm-started
    run continues from the same weights; removed when the experiment finishes.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_alunet import active, distributed
from napari_alunet.config import ExperimentConfig
from napari_alunet.events import ExperimentPlan, ReportWritten, RoundRecorded, RoundStarted
from napari_alunet.experiment.oracle import (
    COSTS,
    RunContext,
    acquire_images,
    acquire_regions,
    initial_costs,
    replay,
    reveal,
    reviewed_area,
)
from napari_alunet.experiment.plots import report_subtitle, write_report
from napari_alunet.experiment.pool import Pool, load_pool, make_splits, planned_sizes
from napari_alunet.experiment.records import (
    RESUME_MODEL,
    ROUNDS_FILE,
    SUMMARY_FILE,
    RoundsFile,
    config_record,
    format_regions,
    load_resume_model,
    prepare_out,
    round_columns,
    save_resume_model,
)
from napari_alunet.experiment.report import FULL
from napari_alunet.experiment.settings import Arm, check_config, full_budget, parse_arm
from napari_alunet.training.device import torch_threads


# -- events and result ----------------------------------------------------------------------------
@dataclass
class ExperimentResult:
    """What :func:`run_experiment` returns.

    Attributes
    ----------
    out : the output folder.
    rounds : the full rounds.csv table (pandas DataFrame).
    summary : the summary.csv table.
    figures : paths of the PNG and SVG figures.
    rows_written : rows this call appended (0 when everything was already done).
    rows_resumed : rows found from an earlier call.
    """

    out: Path
    rounds: Any
    summary: Any
    figures: list[Path]
    rows_written: int
    rows_resumed: int


# -- the experiment -------------------------------------------------------------------------------
def run_experiment(
    config: ExperimentConfig,
    out: str | os.PathLike[str],
    *,
    sample_shape: tuple[int, int] | None = None,
    command: str | None = None,
    pool: Pool | None = None,
) -> Generator[Any, None, ExperimentResult]:
    """Run (or resume) an oracle-replay experiment, yielding progress events.

    Parameters
    ----------
    config : the experiment (see :func:`make_config`); ``model`` is the architecture,
        ``train`` the per-round training (``warm_start`` False resets the weights to the seed's
        initial weights every round), ``acquisition`` the scoring (``subset``, ``reduction``,
        ``diversity``, ``batch_size``; strategy, k, passes and seed are set per round).
    out : output folder (created). If it holds an experiment with the same settings, that
        experiment is resumed; otherwise ``ValueError`` lists the differing settings.
    sample_shape : (h, w) of synthetic images (``config.data == "sample"``); None: realistic
        sizes. Saved in config.json.
    command : the command line, saved in config.json.
    pool : an already loaded pool (tests); default :func:`load_pool`.

    Yields
    ------
    ExperimentPlan once, then per round :class:`RoundStarted`, the engine's ``StepEvent`` /
    ``EvalEvent``, the recipe's ``HealthEvent``, the scorer's ``ScoreProgress`` and
    :class:`RoundRecorded`; finally :class:`ReportWritten`. Closing the generator stops after
    the current batch; every round already recorded stays in rounds.csv and the next call
    resumes from there.

    Returns
    -------
    ExperimentResult
    """
    from napari_alunet.training.device import resolve_device

    check_config(config)
    out = Path(out)
    pool = pool if pool is not None else load_pool(config, sample_shape=sample_shape)
    if config.model.n_classes != len(pool.class_names):
        raise ValueError(f"the model has {config.model.n_classes} classes but the pool "
                         f"{len(pool.class_names)} ({', '.join(pool.class_names)})")
    splits = make_splits(pool, config)
    n_train_pool = len(splits.train_pool)
    sizes = planned_sizes(len(splits.initial[config.first_seed]), config.k, n_train_pool,
                          rounds=config.rounds, until_fraction=config.until_fraction)
    device = resolve_device(config.train.device)
    record = config_record(config, pool, splits, sample_shape, str(device), command)
    # Under torchrun every rank runs the experiment (data-parallel fits, sharded scoring) and
    # computes the same rows; rank 0 alone writes them, the others read what was there.
    primary = distributed.is_primary()
    columns = round_columns(pool.class_names, sorted(set(pool.modes)) if pool.modes else ())
    if primary:
        prepare_out(out, record)
        rounds_file = RoundsFile(out / ROUNDS_FILE, columns)
    distributed.barrier()
    if not primary:
        rounds_file = RoundsFile(out / ROUNDS_FILE, columns)
    done = _done_rows(rounds_file)
    distributed.barrier()  # every rank knows what was done before rank 0 appends more

    order: list[tuple[str, int]] = []
    for seed in range(config.first_seed, config.first_seed + config.seeds):
        # Seed-major order: an interrupted experiment holds complete, paired seeds.
        if config.full_baseline:
            order.append((FULL, seed))
        order.extend((strategy, seed) for strategy in config.strategies)
    total = sum(1 if s == FULL else len(sizes) for s, _ in order)
    done_rows = sum(len(done.get(run, {})) for run in order)
    yield ExperimentPlan(out, len(pool), n_train_pool, len(splits.test), sizes, order, total,
                         done_rows, str(device), pool.skipped)

    ctx = RunContext(config, pool, splits, sizes, device, out, rounds_file)
    written = 0
    with torch_threads(config.train.num_threads):
        last_seed = None
        for strategy, seed in order:
            previous = done.get((strategy, seed), {})
            if seed != last_seed:
                # A new seed: the last seed's round 0 and initial sets are not needed.
                ctx.shared_round0.clear()
                ctx.initial_sets.clear()
                last_seed = seed
            if strategy == FULL:
                if 0 not in previous:
                    yield from _full_run(ctx, seed)
                    written += 1
                continue
            if len(previous) >= len(sizes):
                continue
            written += yield from _active_run(ctx, strategy, seed, previous)
            if primary:
                _write_summary(ctx)

    paths = yield from _report(ctx)
    if primary:
        (out / RESUME_MODEL).unlink(missing_ok=True)
    distributed.barrier()  # the other ranks read the files once rank 0 has written them
    rounds = rounds_file.read()
    import pandas as pd

    summary = pd.read_csv(out / SUMMARY_FILE)
    return ExperimentResult(out, rounds, summary, paths, written, done_rows)


def _done_rows(rounds_file: RoundsFile) -> dict[tuple[str, int], dict[int, dict[str, Any]]]:
    table = rounds_file.read()
    done: dict[tuple[str, int], dict[int, dict[str, Any]]] = {}
    for row in table.to_dict("records"):
        done.setdefault((str(row["strategy"]), int(row["seed"])), {})[int(row["round"])] = row
    return done


def _metrics_row(metrics: dict[str, float], class_names: Sequence[str]) -> dict[str, Any]:
    row: dict[str, Any] = {
        "mean_dice": metrics["mean_dice"], "mean_iou": metrics.get("mean_iou", math.nan),
        "pixel_accuracy": metrics["pixel_accuracy"], "ece": metrics.get("ece", math.nan),
    }
    for i, name in enumerate(class_names):
        row[f"dice_{name}"] = metrics.get(f"dice_{i}", math.nan)
    row.update({k: v for k, v in metrics.items() if k.startswith(("dice_mode_", "worst_mode"))})
    return row


def _train_and_evaluate(ctx: RunContext, model: Any, labelled: Sequence[int], seed: int,
                        round_idx: int, *, steps: int | None = None,
                        known: dict[int, np.ndarray] | None = None,
                        ) -> Generator[Any, None, dict[str, Any]]:
    """One step's training and evaluation (:mod:`napari_alunet.active`) on the memory pool.

    The semi-supervised term draws on the rest of the training pool, never on the test pool.
    ``steps`` overrides the budget (the full-data baseline, region arms); ``known`` gives the
    reviewed pixels of partially labelled images (region arms).
    """
    cfg = ctx.config
    train_config = dataclasses.replace(cfg.train, seed=seed)
    if steps is not None:
        train_config = dataclasses.replace(train_config, steps=int(steps))
    pool = ctx.pool.active_pool(ctx.splits, labelled, known)
    start = time.perf_counter()
    trained = yield from active.train(pool, model, train_config, round_idx=round_idx,
                                      n_classes=cfg.model.n_classes, device=ctx.device)
    train_seconds = time.perf_counter() - start
    metrics = active.evaluate(pool, model, n_classes=cfg.model.n_classes,
                              batch_size=cfg.acquisition.batch_size, device=ctx.device,
                              precision=cfg.train.precision)
    record = trained.record(train_config)
    return {
        **_metrics_row(metrics, ctx.pool.class_names),
        "n_train": record["n_train"], "n_val": record["n_val"],
        "n_unlabelled": record["n_unlabelled"], "selection": record["selection"],
        "steps": record["steps_run"], "passes": record["passes"],
        "best_step": record["best_step"], "stopped_early": record["stopped_early"],
        "best_val_dice": trained.fit.best_val_dice, "labelled_dice": trained.labelled_dice,
        "attempts": record["attempts"], "train_seconds": train_seconds,
    }


def _full_run(ctx: RunContext, seed: int) -> Generator[Any, None, None]:
    n = len(ctx.splits.train_pool)
    steps = full_budget(ctx.config, n)
    yield RoundStarted(FULL, seed, 0, n, 1.0, "train",
                       steps or ctx.config.train.planned_steps(n))
    model = active.fresh_model(ctx.config.model, seed)
    # Round index 999 keeps the full run's training seed apart from the active runs' rounds.
    stats = yield from _train_and_evaluate(ctx, model, ctx.splits.train_pool, seed, 999,
                                           steps=steps)
    spent = initial_costs(ctx, ctx.splits.train_pool)
    row = {"strategy": FULL, "seed": seed, "round": 0, "n_labelled": n, "n_train_pool": n,
           "fraction": 1.0, **stats, "init": "fresh", "score_seconds": 0.0, "n_scored": 0,
           "acquired_ids": [], **dict.fromkeys(COSTS, 0),
           **{f"cumulative_{name}": spent[name] for name in COSTS}}
    _record_row(ctx, row)
    yield RoundRecorded(FULL, seed, 0, row)


def _initial_set(ctx: RunContext, arm: Arm, seed: int) -> Generator[Any, None, list[int]]:
    """The arm's round-0 labelled set: the seed's random one, or the typicality cold start
    (same size) over the training pool, embedded by the seed's initial network."""
    initial = ctx.splits.initial[seed]
    if arm.initial == "random":
        return list(initial)
    if (seed, arm.initial) not in ctx.initial_sets:
        chosen = yield from active.cold_start(
            ctx.pool.active_pool(ctx.splits, []), k=len(initial), method=arm.initial,
            seed=seed, model=active.fresh_model(ctx.config.model, seed),
            candidates=ctx.splits.train_pool, batch_size=ctx.config.acquisition.batch_size,
            device=ctx.device, precision=ctx.config.train.precision)
        if distributed.active():
            chosen = distributed.broadcast(chosen)  # one initial set on every rank
        ctx.initial_sets[(seed, arm.initial)] = sorted(chosen)
    return list(ctx.initial_sets[(seed, arm.initial)])


def _active_run(ctx: RunContext, strategy: str, seed: int,
                previous: dict[int, dict[str, Any]]) -> Generator[Any, None, int]:
    """One (arm, seed) learning curve, continuing after the rounds in ``previous``.

    Every round is one step of :mod:`napari_alunet.active` (train, evaluate, acquire, review
    prediction) on the memory pool; the oracle labels what was acquired.
    """
    cfg = ctx.config
    arm = parse_arm(strategy, cfg.acquisition.diversity)
    n_train_pool = len(ctx.splits.train_pool)
    last_round = len(ctx.sizes) - 1
    region = arm.unit == "region"

    # Replay what was recorded: the labelled set and the effort spent on it.
    labelled = yield from _initial_set(ctx, arm, seed)
    spent, known = replay(ctx, strategy, seed, labelled, previous, region=region)
    start_round = len([r for r in range(len(ctx.sizes)) if r in previous])
    if start_round < len(previous):
        raise ValueError(f"{ctx.rounds_file.path}: rounds of {strategy} seed {seed} have a "
                         "gap; use a new --out")

    model = None
    if start_round > 0 and cfg.train.warm_start:
        # Continue from the weights the interrupted run had; without them (crash before they
        # were saved) this round starts from the seed's initial weights, and the row says so.
        model = load_resume_model(ctx.out, ctx.config.model, strategy, seed,
                                  start_round - 1)
    written = 0
    share_key = (seed, arm.initial)
    for r in range(start_round, len(ctx.sizes)):
        if not region and len(labelled) != ctx.sizes[r]:
            raise ValueError(
                f"{strategy} seed {seed} round {r}: {len(labelled)} labelled images but the plan "
                f"says {ctx.sizes[r]}; rounds.csv does not belong to these settings, use a new "
                "--out")
        # A region arm's labelled fraction is the share of the pool's pixels it reviewed (for
        # an image arm the two agree up to the spread of image sizes).
        fraction = (spent["reviewed_pixels"] / reviewed_area(ctx, ctx.splits.train_pool) if region
                    else len(labelled) / n_train_pool)
        yield RoundStarted(strategy, seed, r, len(labelled), fraction, "train",
                           cfg.train.planned_steps(len(labelled)))
        resumed = " (resumed)" if r == start_round and r > 0 else ""
        if r == 0 and share_key in ctx.shared_round0:
            # Round 0 has the same labels, weights and seeds for every arm of a seed with the
            # same initial set: reuse its model and metrics instead of retraining.
            state, stats = ctx.shared_round0[share_key]
            model = active.fresh_model(cfg.model, seed)
            model.load_state_dict(state)
            init = "shared round 0"
        else:
            if model is not None and cfg.train.warm_start and r > 0:
                init = "warm" + resumed
            else:
                model = active.fresh_model(cfg.model, seed)
                init = "fresh" + resumed
            # A region arm's labelled images are partly unknown: it trains the budget an image
            # arm has for the same round (the same number of reviewed pixels), not a budget
            # that grows with every image a region touched.
            stats = yield from _train_and_evaluate(
                ctx, model, labelled, seed, r, known=known if region else None,
                steps=cfg.train.planned_steps(ctx.sizes[r]) if region else None)
            if r == 0:
                ctx.shared_round0[share_key] = (
                    {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}, stats)

        acquired: list[int] = []
        tiles: dict[int, list[int]] = {}
        costs = dict.fromkeys(COSTS, 0)
        score_seconds, n_scored = 0.0, 0
        if r < last_round:
            yield RoundStarted(strategy, seed, r, len(labelled), fraction, "score",
                               cfg.train.planned_steps(len(labelled)))
            start = time.perf_counter()
            k = ctx.sizes[r + 1] - ctx.sizes[r]
            if region:
                tiles, n_scored, costs = yield from acquire_regions(ctx, model, arm, seed, r,
                                                                     labelled, known, k)
                acquired = list(tiles)
            else:
                acquired, n_scored, costs = yield from acquire_images(ctx, model, arm, seed, r,
                                                                labelled, k)
            if distributed.active():
                # Every rank labels what rank 0 acquired (a GPU may break a tie differently).
                acquired, tiles, costs = distributed.broadcast((acquired, tiles, costs))
            score_seconds = time.perf_counter() - start
        row = {"strategy": strategy, "seed": seed, "round": r, "n_labelled": len(labelled),
               "n_train_pool": n_train_pool, "fraction": fraction, **stats, "init": init,
               "score_seconds": score_seconds, "n_scored": n_scored, "acquired_ids": acquired,
               "acquired_regions": format_regions(tiles),
               **costs, **{f"cumulative_{name}": spent[name] for name in COSTS}}
        if cfg.train.warm_start and r < last_round and distributed.is_primary():
            save_resume_model(ctx.out, model, ctx.config.model, ctx.pool.class_names, strategy,
                              seed, r)
        _record_row(ctx, row)
        written += 1
        yield RoundRecorded(strategy, seed, r, row)
        if region:
            reveal(ctx, labelled, known, tiles)
        else:
            labelled += acquired
        for name in COSTS:
            spent[name] += costs[name]
    return written


def _record_row(ctx: RunContext, row: dict[str, Any]) -> None:
    """Append a finished round to rounds.csv (rank 0 only: every rank computed the same row)."""
    if distributed.is_primary():
        ctx.rounds_file.append(row)


def _write_summary(ctx: RunContext) -> Any:
    from napari_alunet.experiment.report import write_summary

    return write_summary(ctx.rounds_file.read(), str(ctx.out / SUMMARY_FILE))


def _report(ctx: RunContext) -> Generator[Any, None, list[Path]]:
    if not distributed.is_primary():
        return []
    paths = write_report(ctx.out, class_names=ctx.pool.class_names,
                         subtitle=report_subtitle(ctx.config, len(ctx.pool), len(ctx.splits.test)))
    yield ReportWritten(paths)
    return paths


__all__ = [
    "ExperimentPlan", "ExperimentResult", "ReportWritten", "RoundRecorded", "RoundStarted",
    "run_experiment", "write_report",
]
