"""Oracle-replay active-learning experiments: several strategies, several seeds, one table.

The pool (images and ground truth) is loaded once into memory. For every seed and strategy the
loop reads like the algorithm (BaaL's ``active_loop``)::

    labelled = initial set of the seed
    repeat:
        reset the model (or keep it: warm start) -> train on labelled with the product's
        recipe (training/recipe.py: step budget, EMA, the unlabelled rest of the training pool
        for the semi-supervised term, validation only when big enough) -> evaluate on the
        fixed test pool -> score the unlabelled pool -> acquire the top k -> the oracle labels them -> record the round
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

import contextlib
import dataclasses
import math
import os
import time
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_alunet.config import ExperimentConfig
from napari_alunet.experiment.pool import Pool, Splits, load_pool, make_splits, planned_sizes
from napari_alunet.experiment.records import (
    CONFIG_FILE, RESUME_MODEL, ROUNDS_FILE, SUMMARY_FILE, RoundsFile, check_config,
    config_record, load_experiment_config, parse_ids, prepare_out, read_rounds, round_columns,
    split_strategy,
)
from napari_alunet.experiment.report import FULL


# -- events and result ----------------------------------------------------------------------------
@dataclass
class ExperimentPlan:
    """First event: what will run. ``done_rows`` rows are already in rounds.csv (a resume)."""

    out: Path
    n_images: int
    n_train_pool: int
    n_test: int
    sizes: list[int]
    runs: list[tuple[str, int]]
    total_rows: int
    done_rows: int
    device: str
    skipped_images: list[str] = field(default_factory=list)


@dataclass
class RoundStarted:
    """A round of one (strategy, seed) run begins; ``stage`` is ``'train'`` or ``'score'``;
    ``steps`` is the planned training budget (optimiser steps) of a fit on ``n_labelled``."""

    strategy: str
    seed: int
    round: int
    n_labelled: int
    fraction: float
    stage: str
    steps: int


@dataclass
class RoundRecorded:
    """A round's row was appended (and fsynced) to rounds.csv."""

    strategy: str
    seed: int
    round: int
    row: dict[str, Any]


@dataclass
class ReportWritten:
    """summary.csv and the figures were (re)written."""

    paths: list[Path]


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
@dataclass
class _Context:
    config: ExperimentConfig
    pool: Pool
    splits: Splits
    sizes: list[int]
    device: Any
    out: Path
    rounds_file: RoundsFile
    shared_round0: dict[int, tuple[dict[str, Any], dict[str, Any]]] = field(default_factory=dict)


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
    :class:`RoundRecorded`; finally :class:`ReportWritten`. Closing the generator stops after the current batch; every round
    already recorded stays in rounds.csv and the next call resumes from there.

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
    splits = make_splits(len(pool), config)
    n_train_pool = len(splits.train_pool)
    sizes = planned_sizes(len(splits.initial[0]), config.k, n_train_pool, rounds=config.rounds,
                          until_fraction=config.until_fraction)
    device = resolve_device(config.train.device)
    record = config_record(config, pool, splits, sample_shape, str(device), command)
    prepare_out(out, record)
    rounds_file = RoundsFile(out / ROUNDS_FILE, round_columns(pool.class_names))
    done = _done_rows(rounds_file)

    order: list[tuple[str, int]] = []
    for seed in range(config.seeds):
        # Seed-major order: an interrupted experiment holds complete, paired seeds.
        order.append((FULL, seed))
        order.extend((strategy, seed) for strategy in config.strategies)
    total = sum(1 if s == FULL else len(sizes) for s, _ in order)
    done_rows = sum(len(done.get(run, {})) for run in order)
    yield ExperimentPlan(out, len(pool), n_train_pool, len(splits.test), sizes, order, total,
                         done_rows, str(device), pool.skipped)

    ctx = _Context(config, pool, splits, sizes, device, out, rounds_file)
    written = 0
    with _torch_threads(config.train.num_threads):
        for strategy, seed in order:
            previous = done.get((strategy, seed), {})
            if strategy == FULL:
                ctx.shared_round0.clear()  # a new seed: the last seed's round 0 is not needed
                if 0 not in previous:
                    yield from _full_run(ctx, seed)
                    written += 1
                continue
            if len(previous) >= len(sizes):
                continue
            written += yield from _active_run(ctx, strategy, seed, previous)
            _write_summary(ctx)

    paths = yield from _report(ctx)
    (out / RESUME_MODEL).unlink(missing_ok=True)
    rounds = rounds_file.read()
    import pandas as pd

    summary = pd.read_csv(out / SUMMARY_FILE)
    return ExperimentResult(out, rounds, summary, paths, written, done_rows)


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """Use ``n`` intra-op threads (0: leave torch's choice) for the whole experiment.

    On a small shared CPU, two processes that each spin two OpenMP threads on two cores run
    several times slower than with one thread each (measured: 0.04 vs 0.17 s per 128² image
    and epoch), and scoring and evaluation run outside ``fit``, which sets threads only for
    itself. The setting is process-wide; it is restored when the experiment ends or is closed.
    """
    import torch

    saved = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n > 0:
            torch.set_num_threads(saved)


def _done_rows(rounds_file: RoundsFile) -> dict[tuple[str, int], dict[int, dict[str, Any]]]:
    table = rounds_file.read()
    done: dict[tuple[str, int], dict[int, dict[str, Any]]] = {}
    for row in table.to_dict("records"):
        done.setdefault((str(row["strategy"]), int(row["seed"])), {})[int(row["round"])] = row
    return done


def _train_seed(seed: int, round_idx: int) -> int:
    # Depends on (seed, round) only: the same across strategies, so round 0 is shared exactly.
    return seed * 1000 + round_idx


def _metrics_row(metrics: dict[str, float], class_names: Sequence[str]) -> dict[str, Any]:
    row: dict[str, Any] = {
        "mean_dice": metrics["mean_dice"], "mean_iou": metrics.get("mean_iou", math.nan),
        "pixel_accuracy": metrics["pixel_accuracy"], "ece": metrics.get("ece", math.nan),
    }
    for i, name in enumerate(class_names):
        row[f"dice_{name}"] = metrics.get(f"dice_{i}", math.nan)
    return row


def _train_and_evaluate(ctx: _Context, model: Any, labelled: Sequence[int], seed: int,
                        round_idx: int) -> Generator[Any, None, dict[str, Any]]:
    """Fit on ``labelled`` with the product's recipe, evaluate on the test pool.

    The semi-supervised term draws on the rest of the training pool, never on the test pool.
    """
    from napari_alunet.training.engine import evaluate
    from napari_alunet.training.recipe import plan_fit, train_model

    cfg = ctx.config
    train_config = dataclasses.replace(cfg.train, seed=_train_seed(seed, round_idx))
    # The validation split hashes (seed, image id): an image stays on its side as the labelled
    # set grows, and the test pool is never looked at while choosing the model.
    unlabelled = sorted(set(ctx.splits.train_pool) - set(labelled))
    plan = plan_fit(labelled, unlabelled, train_config, seed=seed, unlabelled_seed=round_idx)
    pool = ctx.pool

    def load(ids: Sequence[int], with_labels: bool) -> tuple[np.ndarray, Any]:
        rows = np.asarray(ids, dtype=np.intp)
        return pool.images[rows], pool.labels[rows] if with_labels else None

    start = time.perf_counter()
    trained = yield from train_model(model, plan, load, train_config,
                                     n_classes=cfg.model.n_classes, device=ctx.device)
    train_seconds = time.perf_counter() - start
    test = np.asarray(ctx.splits.test, dtype=np.intp)
    metrics = evaluate(model, ctx.pool.images[test], ctx.pool.labels[test],
                       n_classes=cfg.model.n_classes, batch_size=cfg.acquisition.batch_size,
                       device=ctx.device)
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


def _fresh_model(config: ExperimentConfig, seed: int) -> Any:
    from napari_alunet.model import build_model
    from napari_alunet.training.engine import reset_parameters

    # Same initial weights for every strategy and (without warm start) every round of a seed,
    # as BaaL resets to stored initial weights: differences come from the labels alone.
    return reset_parameters(build_model(config.model), seed=seed)


def _full_run(ctx: _Context, seed: int) -> Generator[Any, None, None]:
    n = len(ctx.splits.train_pool)
    yield RoundStarted(FULL, seed, 0, n, 1.0, "train", ctx.config.train.planned_steps(n))
    model = _fresh_model(ctx.config, seed)
    # Round index 999 keeps the full run's training seed apart from the active runs' rounds.
    stats = yield from _train_and_evaluate(ctx, model, ctx.splits.train_pool, seed, 999)
    scratch = int(ctx.pool.foreground[ctx.splits.train_pool].sum())
    row = {"strategy": FULL, "seed": seed, "round": 0, "n_labelled": n, "n_train_pool": n,
           "fraction": 1.0, **stats, "init": "fresh", "score_seconds": 0.0, "n_scored": 0,
           "acquired_ids": [], "correction_pixels": 0, "scratch_pixels": 0,
           "cumulative_correction_pixels": scratch, "cumulative_scratch_pixels": scratch}
    ctx.rounds_file.append(row)
    yield RoundRecorded(FULL, seed, 0, row)


def _active_run(ctx: _Context, strategy: str, seed: int,
                previous: dict[int, dict[str, Any]]) -> Generator[Any, None, int]:
    """One (strategy, seed) learning curve, continuing after the rounds in ``previous``."""
    cfg = ctx.config
    pool, splits = ctx.pool, ctx.splits
    n_train_pool = len(splits.train_pool)
    last_round = len(ctx.sizes) - 1

    # Replay what was recorded: the labelled set and the effort spent on it.
    labelled = list(splits.initial[seed])
    cum_correction = cum_scratch = int(pool.foreground[labelled].sum())
    for r in range(len(ctx.sizes)):
        if r not in previous:
            break
        acquired = parse_ids(previous[r]["acquired_ids"])
        labelled += acquired
        cum_correction += int(previous[r]["correction_pixels"])
        cum_scratch += int(previous[r]["scratch_pixels"])
    start_round = len([r for r in range(len(ctx.sizes)) if r in previous])
    if start_round < len(previous):
        raise ValueError(f"{ctx.rounds_file.path}: rounds of {strategy} seed {seed} have a "
                         "gap; use a new --out")

    model = None
    if start_round > 0 and cfg.train.warm_start:
        # Continue from the weights the interrupted run had; without them (crash before they
        # were saved) this round starts from the seed's initial weights, and the row says so.
        model = _load_resume_model(ctx, strategy, seed, start_round - 1)
    written = 0
    for r in range(start_round, len(ctx.sizes)):
        if len(labelled) != ctx.sizes[r]:
            raise ValueError(
                f"{strategy} seed {seed} round {r}: {len(labelled)} labelled images but the plan "
                f"says {ctx.sizes[r]}; rounds.csv does not belong to these settings, use a new "
                "--out")
        fraction = len(labelled) / n_train_pool
        yield RoundStarted(strategy, seed, r, len(labelled), fraction, "train",
                           cfg.train.planned_steps(len(labelled)))
        resumed = " (resumed)" if r == start_round and r > 0 else ""
        if r == 0 and seed in ctx.shared_round0:
            # Round 0 has the same labels, weights and seeds for every strategy of a seed:
            # reuse its model and metrics (including its train_seconds) instead of retraining.
            state, stats = ctx.shared_round0[seed]
            model = _fresh_model(cfg, seed)
            model.load_state_dict(state)
            init = "shared round 0"
        else:
            if model is not None and cfg.train.warm_start and r > 0:
                init = "warm" + resumed
            else:
                model = _fresh_model(cfg, seed)
                init = "fresh" + resumed
            stats = yield from _train_and_evaluate(ctx, model, labelled, seed, r)
            if r == 0:
                ctx.shared_round0[seed] = (
                    {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}, stats)

        acquired: list[int] = []
        correction = scratch = 0
        score_seconds, n_scored = 0.0, 0
        if r < last_round:
            yield RoundStarted(strategy, seed, r, len(labelled), fraction, "score",
                               cfg.train.planned_steps(len(labelled)))
            start = time.perf_counter()
            k = ctx.sizes[r + 1] - len(labelled)
            acquired, n_scored, costs = yield from _acquire(ctx, model, strategy, seed, r,
                                                            labelled, k)
            score_seconds = time.perf_counter() - start
            correction, scratch = int(costs.sum()), int(pool.foreground[acquired].sum())
        row = {"strategy": strategy, "seed": seed, "round": r, "n_labelled": len(labelled),
               "n_train_pool": n_train_pool, "fraction": fraction, **stats, "init": init,
               "score_seconds": score_seconds, "n_scored": n_scored, "acquired_ids": acquired,
               "correction_pixels": correction, "scratch_pixels": scratch,
               "cumulative_correction_pixels": cum_correction,
               "cumulative_scratch_pixels": cum_scratch}
        if cfg.train.warm_start and r < last_round:
            _save_resume_model(ctx, model, strategy, seed, r)
        ctx.rounds_file.append(row)
        written += 1
        yield RoundRecorded(strategy, seed, r, row)
        labelled += acquired
        cum_correction += correction
        cum_scratch += scratch
    return written


def _acquire(ctx: _Context, model: Any, strategy: str, seed: int, round_idx: int,
             labelled: Sequence[int], k: int) -> Generator[Any, None, tuple[list[int], int, Any]]:
    """Score the unlabelled pool, take the top ``k``, price the oracle's corrections."""
    from napari_alunet.scoring import score_pool
    from napari_alunet.training.engine import predict_labels

    cfg = ctx.config
    taken = set(labelled)
    unlabelled = [i for i in ctx.splits.train_pool if i not in taken]
    base, diversity = split_strategy(strategy, cfg.acquisition.diversity)
    acq = dataclasses.replace(cfg.acquisition, strategy=base, diversity=diversity, k=cfg.k,
                              passes=cfg.passes, seed=_train_seed(seed, round_idx))
    result = yield from score_pool(model, unlabelled, ctx.pool.load_batch, acq,
                                   top_k=min(k, len(unlabelled)), device=ctx.device,
                                   keep_maps=())
    acquired = [int(i) for i in result.ranked]
    bad = taken.intersection(acquired) | set(ctx.splits.test).intersection(acquired)
    if bad:  # a scorer bug would silently leak labels or test images: stop loudly instead
        raise RuntimeError(f"the scorer proposed ids {sorted(bad)} that are labelled or test")
    # What the reviewer is shown is the MC-mean prediction the scorer made for the chosen ids;
    # fall back to a deterministic prediction for any id it did not return.
    missing = [i for i in acquired if i not in result.predictions]
    fallback = dict(zip(missing, predict_labels(model, ctx.pool.images[missing],
                                                device=ctx.device))) if missing else {}
    predictions = np.stack([result.predictions.get(i, fallback.get(i)) for i in acquired]) \
        if acquired else np.empty((0,) + ctx.pool.labels.shape[1:], np.uint8)
    costs = ctx.pool.correction_pixels(acquired, predictions)
    return acquired, len(result.scores), costs


def _save_resume_model(ctx: _Context, model: Any, strategy: str, seed: int, round_idx: int) -> None:
    from napari_alunet.training.checkpoint import save_checkpoint

    save_checkpoint(ctx.out / RESUME_MODEL, model, model_config=ctx.config.model,
                    class_names=list(ctx.pool.class_names),
                    extra={"strategy": strategy, "seed": seed, "round": round_idx})


def _load_resume_model(ctx: _Context, strategy: str, seed: int, round_idx: int) -> Any:
    """The saved warm-start model of exactly (strategy, seed, round), else None."""
    from napari_alunet.training.checkpoint import CheckpointError, load_checkpoint

    path = ctx.out / RESUME_MODEL
    if not path.is_file():
        return None
    try:
        model, meta = load_checkpoint(path, expected_model_config=ctx.config.model)
    except (CheckpointError, OSError):
        return None
    extra = meta.get("extra") or {}
    if (extra.get("strategy"), extra.get("seed"), extra.get("round")) != (strategy, seed,
                                                                           round_idx):
        return None
    return model


def _write_summary(ctx: _Context) -> Any:
    from napari_alunet.experiment.report import write_summary

    return write_summary(ctx.rounds_file.read(), str(ctx.out / SUMMARY_FILE))


def _report(ctx: _Context) -> Generator[Any, None, list[Path]]:
    paths = write_report(ctx.out, class_names=ctx.pool.class_names,
                         subtitle=_subtitle(ctx.config, len(ctx.pool), len(ctx.splits.test)))
    yield ReportWritten(paths)
    return paths


def _subtitle(config: ExperimentConfig, n_images: int, n_test: int) -> str:
    data = "synthetic sample" if config.data == "sample" else Path(config.data).name
    return (f"{data}, {n_images} images ({n_test} test), {config.preset} preset "
            f"{config.model.input_size}², k={config.k}, {config.passes} MC passes, "
            f"{'warm start' if config.train.warm_start else 'reset each round'}")


def write_report(out: str | os.PathLike[str], *, class_names: Sequence[str] | None = None,
                 subtitle: str | None = None) -> list[Path]:
    """(Re)write summary.csv and the figures from ``out/rounds.csv``; returns all paths."""
    from napari_alunet.experiment.plots import plot_dice_vs_effort, plot_learning_curves
    from napari_alunet.experiment.report import write_summary

    out = Path(out)
    if not (out / ROUNDS_FILE).is_file():
        raise FileNotFoundError(f"{out / ROUNDS_FILE} does not exist: run the experiment first")
    table = read_rounds(out / ROUNDS_FILE)
    if (out / CONFIG_FILE).is_file() and (class_names is None or subtitle is None):
        config, record = load_experiment_config(out)
        class_names = class_names or record["pool"]["class_names"]
        subtitle = subtitle or _subtitle(config, record["pool"]["n_images"],
                                         len(record["pool"]["test_ids"]))
    write_summary(table, str(out / SUMMARY_FILE))
    paths = [out / SUMMARY_FILE]
    if table.empty:
        return paths
    extra = f"\n{subtitle}" if subtitle else ""
    paths += plot_learning_curves(
        table, out / "learning_curves", class_names=class_names,
        title="Test Dice vs labelled fraction (mean ± std over seeds)" + extra)
    paths += plot_dice_vs_effort(
        table, out / "dice_vs_effort",
        title="Test Dice vs annotation effort (mean ± std over seeds)" + extra)
    return paths


__all__ = [
    "ExperimentPlan", "ExperimentResult", "ReportWritten", "RoundRecorded", "RoundStarted",
    "run_experiment", "write_report",
]
