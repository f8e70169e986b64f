"""``alunet experiment``: oracle-replay comparison of acquisition strategies over seeds.

Drains :func:`napari_alunet.experiment.run_experiment` with two tqdm bars on stderr: the
whole experiment (rounds) and the current round (training steps, then scoring). Running the same
command again resumes an interrupted experiment.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from napari_alunet.cli_common import (
    ProgressBars,
    add_train_options,
    progress_bar,
    train_overrides,
)
from napari_alunet.config import DEFAULT_MC_PASSES, DIVERSITY, ORACLE_STRATEGIES, STRATEGIES

STRATEGY_CHOICES = STRATEGIES + ORACLE_STRATEGIES
DIVERSITY_CHOICES = DIVERSITY


def strategy_name(value: str) -> str:
    """argparse type of an arm: ``[typical:]strategy[+diversity][@unit][#replicate]``."""
    from napari_alunet.experiment.settings import parse_arm

    try:
        parse_arm(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def config_from_args(args: argparse.Namespace) -> Any:
    """The resolved ExperimentConfig of the command-line arguments."""
    from napari_alunet.experiment import make_config

    if args.rounds is None and args.until_fraction is None:
        args.until_fraction = 0.5  # resolved here so config.json and the command agree
    rounds, until = args.rounds, args.until_fraction
    return make_config(
        preset=args.preset, train=train_overrides(args), device=args.device,
        subset=args.subset, warm_start=not args.from_scratch, threads=args.threads,
        data=str(args.data), strategies=tuple(args.strategies), seeds=args.seeds,
        first_seed=args.first_seed, k=args.k,
        initial_fraction=args.initial_fraction, test_fraction=args.test_fraction,
        rounds=rounds, until_fraction=until, passes=args.passes, sample_n=args.sample_n,
        sample_seed=args.sample_seed, diversity=args.diversity, power_beta=args.power_beta,
        input_size=args.input_size, test_per_mode=args.test_per_mode,
        full_baseline=not args.no_full_baseline, region_size=args.region_size,
        region_budget=args.region_budget,
    )


class _ExperimentBars(ProgressBars):
    """:class:`ProgressBars` with an overall bar of the experiment's rounds above the bar of
    the round in progress (its steps, then its scoring)."""

    def __init__(self, quiet: bool) -> None:
        super().__init__(quiet)
        self.overall: Any = None

    def __call__(self, event: Any) -> bool:
        from napari_alunet.events import ExperimentPlan, RoundRecorded, RoundStarted

        if isinstance(event, ExperimentPlan):
            if not self.quiet:
                resumed = f", resuming after {event.done_rows} recorded round(s)" \
                    if event.done_rows else ""
                print(f"{event.n_images} images ({event.n_train_pool} training pool, "
                      f"{event.n_test} test) on {event.device}; labelled sizes per round "
                      f"{event.sizes}; {event.total_rows} rounds in all{resumed}",
                      file=sys.stderr, flush=True)
                if event.skipped_images:
                    print(f"left out {len(event.skipped_images)} image(s) without ground "
                          "truth: " + ", ".join(event.skipped_images[:10]), file=sys.stderr)
            self.overall = progress_bar(event.total_rows, "experiment", quiet=self.quiet)
            self.overall.update(event.done_rows)
        elif isinstance(event, RoundStarted):
            self.label = f"{event.strategy} s{event.seed} r{event.round}"
            if event.stage == "train":
                self.bar_for("steps", event.steps)
        elif isinstance(event, RoundRecorded) and self.overall is not None:
            self.overall.update(1)
            self.overall.set_postfix(last=f"{event.strategy} s{event.seed} r{event.round} "
                                     f"Dice {event.row['mean_dice']:.3f}")
        else:
            return super().__call__(event)
        return True

    def close(self) -> None:
        super().close()
        if self.overall is not None:
            self.overall.close()
        self.overall = None


def cmd_experiment(args: argparse.Namespace) -> int:
    from napari_alunet.events import drain
    from napari_alunet.experiment import markdown_table, run_experiment, write_report

    if args.report_only:
        paths = write_report(args.out)
        print("wrote " + ", ".join(str(p) for p in paths))
        return 0
    from napari_alunet import distributed

    if args.nproc < 1:
        raise ValueError(f"--nproc must be >= 1, not {args.nproc}")
    if args.nproc > 1 and not distributed.launched_by_torchrun():
        from napari_alunet.cli_ml import relaunch_with_torchrun

        return relaunch_with_torchrun(args)
    config = config_from_args(args)
    shape = tuple(args.sample_shape) if args.sample_shape else None
    with distributed.process_group(config.train.device) as (rank, _size):
        bars = _ExperimentBars(args.quiet or rank > 0)
        try:
            result = drain(run_experiment(config, args.out, sample_shape=shape,
                                          command=command_line(args)), bars)
        finally:
            bars.close()
    if rank > 0:
        return 0
    print(markdown_table(result.summary))
    print(f"\nwrote {result.rows_written} new round(s) to {args.out}: rounds.csv, summary.csv, "
          + ", ".join(p.name for p in result.figures if p.suffix == ".png"))
    return 0


def command_line(args: argparse.Namespace) -> str:
    """The experiment as one explicit ``alunet experiment`` command (every option spelled out,
    so it reruns the same experiment even if defaults change later)."""
    parts = ["alunet", "experiment", "--data", str(args.data),
             "--strategies", *args.strategies]
    for flag in ("seeds", "first_seed", "k", "initial_fraction", "test_fraction", "rounds",
                 "until_fraction",
                 "passes", "preset", "steps", "epochs", "patience", "lr", "sample_n",
                 "sample_seed", "test_per_mode", "input_size", "subset",
                 "device", "threads", "diversity", "power_beta", "region_size",
                 "region_budget"):
        value = getattr(args, flag)
        if value is not None:
            parts += [f"--{flag.replace('_', '-')}", str(value)]
    if args.no_full_baseline:
        parts.append("--no-full-baseline")
    if args.sample_shape:
        parts += ["--sample-shape", *map(str, args.sample_shape)]
    if args.semi_supervised is not None:
        parts.append("--semi-supervised" if args.semi_supervised else "--no-semi-supervised")
    if args.from_scratch:
        parts.append("--from-scratch")
    from napari_alunet import distributed

    # Inside a torchrun launch the relaunched arguments no longer hold --nproc: the world does.
    processes = max(getattr(args, "nproc", 1), distributed.rank_and_size()[1])
    if processes > 1:
        parts += ["--nproc", str(processes)]
    parts += ["--out", str(args.out)]
    return shlex.join(parts)


def add_commands(sub: Any) -> None:
    p = sub.add_parser(
        "experiment", help="oracle-replay comparison of acquisition strategies over seeds",
        description="Replay active learning with the ground truth as oracle: for every seed "
        "and strategy train, evaluate on a fixed test pool, score, acquire the top k, repeat. "
        "Writes OUT/rounds.csv (every round), summary.csv, learning_curves.png/.svg, "
        "dice_vs_effort.png/.svg and config.json. The same command resumes an interrupted run.")
    p.add_argument("--data", default="sample",
                   help="'sample' (synthetic pool), 'redundant' (the benchmark pool: frames of "
                   "embryos, rare modes, a fresh test set per mode) or a folder with images "
                   "and masks")
    p.add_argument("--strategies", nargs="+", default=["random", "entropy", "bald", "kl", "js"],
                   type=strategy_name, metavar="ARM",
                   help="arms to compare (default: random entropy bald kl js): "
                   "[typical:]STRATEGY[+BATCH][@region][#N] with STRATEGY one of "
                   f"{', '.join(STRATEGY_CHOICES)}; BATCH one of {', '.join(DIVERSITY_CHOICES)}"
                   "; 'typical:' starts from the typicality cold start; '#2' repeats an arm "
                   "with another acquisition seed ('random#2' is the A/A control); "
                   "'oracle_error' takes the images with the largest true error (upper bound)"
                   "; '@region' reviews regions (tiles) instead of images ('bald+power@region',"
                   " control 'random@region')")
    p.add_argument("--diversity", choices=DIVERSITY_CHOICES, default="power",
                   help="how arms named without a '+' suffix take k images (default power: "
                   "stochastic power sampling; none: plain top k; random never takes one)")
    p.add_argument("--power-beta", type=float, default=None,
                   help="beta of the stochastic batch modes (default: set from the scores' "
                   "dynamic range)")
    p.add_argument("--region-size", type=int, default=16,
                   help="region arms: tile side in model-input pixels (default 16)")
    p.add_argument("--region-budget", type=float, default=1.0,
                   help="region arms: pixels reviewed per round as a multiple of k whole "
                   "images (default 1.0: the image arms' budget)")
    p.add_argument("--seeds", type=int, default=5, help="number of seeds (default 5)")
    p.add_argument("--first-seed", type=int, default=0,
                   help="the first seed (default 0): seeds FIRST..FIRST+N-1, so one experiment "
                   "can be split over processes or machines and merged")
    p.add_argument("--no-full-baseline", action="store_true",
                   help="skip the full-data baseline per seed (no '95 %% of full' column; for "
                   "rerunning some arms of an experiment that has it)")
    p.add_argument("--k", type=int, default=2, help="images acquired per round (default 2)")
    p.add_argument("--initial-fraction", type=float, default=0.1,
                   help="initial labelled fraction of the training pool (default 0.1)")
    p.add_argument("--test-fraction", type=float, default=0.2,
                   help="fraction of the pool held out as the fixed test pool (default 0.2)")
    stop = p.add_mutually_exclusive_group()
    stop.add_argument("--rounds", type=int, default=None, help="acquisition rounds per run")
    stop.add_argument("--until-fraction", type=float, default=None,
                      help="stop at this labelled fraction (default 0.5)")
    p.add_argument("--passes", type=int, default=DEFAULT_MC_PASSES,
                   help=f"MC-dropout passes (default {DEFAULT_MC_PASSES})")
    p.add_argument("--preset", choices=("cpu", "gpu", "tiny"), default="cpu",
                   help="model size (default cpu: 128x128 input)")
    add_train_options(p)
    p.add_argument("--from-scratch", action="store_true",
                   help="reset the weights every round instead of warm-starting")
    p.add_argument("--sample-n", type=int, default=60, help="sample pool size (default 60)")
    p.add_argument("--sample-seed", type=int, default=0,
                   help="seed of the sample pool and of the test split (default 0)")
    p.add_argument("--sample-shape", type=int, nargs=2, metavar=("H", "W"), default=None,
                   help="shape of every sample image (default: realistic sizes)")
    p.add_argument("--test-per-mode", type=int, default=4,
                   help="--data redundant: fresh test embryos per mode (default 4)")
    p.add_argument("--input-size", type=int, default=None,
                   help="model input side (default: the preset's; smaller is faster)")
    p.add_argument("--subset", type=int, default=None,
                   help="score a random subset of N pool images per round")
    p.add_argument("--device", default=None, help="auto, cpu, cuda, mps (default auto)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's choice; 1 is fastest on a busy "
                   "2-core machine)")
    p.add_argument("--nproc", type=int, default=1, metavar="N",
                   help="run with N processes (torch.distributed, started with torchrun "
                   "--standalone): data-parallel fits (N x the batch per step) and sharded "
                   "scoring; a resume must use the same N")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--report-only", action="store_true",
                   help="only rewrite summary.csv and the figures from OUT/rounds.csv")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--debug", action="store_true", help="show tracebacks")


#: Sub-command name -> handler (napari_alunet.cli dispatches to them).
COMMANDS = {"experiment": cmd_experiment}
