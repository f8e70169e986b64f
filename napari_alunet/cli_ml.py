"""``alunet train | round | score | oracle | predict``: the model commands of the CLI."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from napari_alunet.cli_common import ProgressBars, add_train_options, train_overrides
from napari_alunet.config import DEFAULT_MC_PASSES, STRATEGIES


def say_waiting(message: str) -> None:
    """Tell the user a command waits for the project's lock (--wait), rather than look hung."""
    print(message, file=sys.stderr, flush=True)


def _settings(args: argparse.Namespace, project: Any) -> Any:
    """Round settings from the preset, the project's classes and the arguments given."""
    from napari_alunet.config import AcquisitionConfig, TrainConfig, model_preset
    from napari_alunet.loop import RoundSettings

    model = model_preset(args.preset, n_classes=project.classes.n_classes)
    train = TrainConfig()
    overrides = {**train_overrides(args), "device": args.device, "seed": args.seed}
    train = dataclasses.replace(train, **{k: v for k, v in overrides.items() if v is not None})
    acq = AcquisitionConfig(
        strategy=getattr(args, "strategy", "bald"),
        passes=getattr(args, "passes", DEFAULT_MC_PASSES),
        k=getattr(args, "top", 2), subset=getattr(args, "subset", None), seed=args.seed or 0,
        diversity=getattr(args, "batch", "power"), power_beta=getattr(args, "beta", None),
        cold_start=getattr(args, "cold_start", "typical"), unit=getattr(args, "unit", "image"),
        region_size=getattr(args, "region_size", 32),
        region_cost=getattr(args, "region_cost", "none"),
        batch_size=getattr(args, "score_batch", 16))
    if acq.unit == "region":
        from napari_alunet.regions import check_region_settings

        check_region_settings(acq.unit, acq.region_size, acq.region_cost, model.input_size)
    return RoundSettings(model=model, train=train, acquisition=acq)


def _run(args: argparse.Namespace, stop_after: str | None) -> int:
    from napari_alunet import distributed
    from napari_alunet.events import drain
    from napari_alunet.loop import run_round
    from napari_alunet.store import Project

    if args.nproc < 1:
        raise ValueError(f"--nproc must be >= 1, not {args.nproc}")
    if args.nproc > 1 and args.epochs:
        raise ValueError("--epochs cannot be used with --nproc: give the budget in optimiser "
                         "steps (--steps), which count global steps")
    if args.nproc > 1 and not distributed.launched_by_torchrun():
        return relaunch_with_torchrun(args)
    with distributed.process_group(args.device) as (rank, _size), \
            Project.open(args.project, timeout=args.wait, on_wait=say_waiting,
                         read_only=rank > 0) as project:  # only rank 0 writes (and locks)
        settings = _settings(args, project)  # every option checked before anything is saved
        if getattr(args, "restart", False):
            from napari_alunet.loop import restart_round

            if rank == 0:
                abandoned = restart_round(project, drop_queue=args.drop_queue)
                if not (args.quiet or args.json):
                    print(f"round {abandoned.idx} abandoned (kept in the history); starting "
                          f"round {abandoned.idx + 1} with the options given")
            distributed.barrier()
        progress = ProgressBars(args.quiet or args.json or rank > 0)
        try:
            report = drain(run_round(project, settings, device=args.device,
                                     stop_after=stop_after), progress)
        finally:
            progress.close()
        result: dict[str, Any] = {"round": report.round_idx, "status": report.status,
                                  "n_labelled": report.n_labelled, "test": report.test_metrics,
                                  "queue": [project.image(i).name for i in report.queue],
                                  "seconds": report.seconds}
    if rank > 0:
        return 0
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        dice = report.test_metrics.get("mean_dice")
        print(f"round {report.round_idx} {report.status}: {report.n_labelled} labelled, "
              + ("no test pool" if dice is None else f"test mean Dice {dice:.4f}"))
        for key in sorted(k for k in report.test_metrics if k.startswith("dice_")):
            print(f"  {key:<14} {report.test_metrics[key]}")
        if report.queue:
            from napari_alunet.cli import shown_name

            print("queued for review: " + ", ".join(map(shown_name, result["queue"])))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    return _run(args, "evaluated")


def cmd_round(args: argparse.Namespace) -> int:
    return _run(args, None)


def cmd_score(args: argparse.Namespace) -> int:
    from napari_alunet import distributed
    from napari_alunet.events import drain
    from napari_alunet.loop import rescore
    from napari_alunet.store import Project

    if args.nproc < 1:
        raise ValueError(f"--nproc must be >= 1, not {args.nproc}")
    if args.nproc > 1 and not distributed.launched_by_torchrun():
        return relaunch_with_torchrun(args)
    with distributed.process_group(args.device) as (rank, _size):
        # Only rank 0 writes (and holds the lock); the other ranks read the images.
        with Project.open(args.project, timeout=args.wait, on_wait=say_waiting,
                          read_only=rank > 0) as project:
            progress = ProgressBars(args.quiet or args.json or rank > 0)
            try:
                result = drain(rescore(project, _settings(args, project).acquisition,
                                       device=args.device), progress)
            finally:
                progress.close()
            ranked = [] if result is None else result.ids
            scores = {} if result is None else result.scores
            names = {i: project.image(i).name for i in set(scores) | set(ranked)}
    if rank > 0:
        return 0
    if args.json:
        print(json.dumps({"strategy": args.strategy, "queue": [names[i] for i in ranked],
                          "scores": {names[i]: s for i, s in scores.items()}}, indent=2))
    else:
        from napari_alunet.cli import shown_name

        print(f"scored {len(scores)} image(s) with {args.strategy}; top {len(ranked)}:")
        for image_id in ranked:
            shown = f"{scores[image_id]:.5f}" if image_id in scores else "(random)"
            print(f"  {shown}  {shown_name(names[image_id])}")
    return 0


def relaunch_with_torchrun(args: argparse.Namespace) -> int:
    """``alunet train|round|score --nproc N`` started by hand: run the same command as N ranks
    of one ``torchrun --standalone`` launch (on this machine) and return its exit status."""
    import subprocess

    argv, rest = [], list(args.argv)
    while rest:
        token = rest.pop(0)
        if token == "--nproc":
            rest.pop(0)
        elif not token.startswith("--nproc="):
            argv.append(token)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={args.nproc}", "-m", "napari_alunet.cli", *argv]
    return subprocess.call(command)


def cmd_oracle(args: argparse.Namespace) -> int:
    from napari_alunet.review import oracle_commit
    from napari_alunet.store import Project

    with Project.open(args.project, timeout=args.wait, on_wait=say_waiting) as project:
        versions = oracle_commit(project)
        print(f"committed stored ground truth for {len(versions)} queued image(s)")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from napari_alunet.events import drain
    from napari_alunet.predict import predict_folder

    bars = ProgressBars(args.quiet)
    try:
        summary = drain(predict_folder(args.checkpoint, args.images, args.out,
                                       method=args.uncertainty, passes=args.passes,
                                       device=args.device), bars)
    finally:
        bars.close()
    print(f"wrote masks, uncertainty maps and scores.csv for {summary.n_images} image(s) to "
          f"{summary.out} ({summary.method}, {summary.seconds:.1f} s)")
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda or mps")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--wait", type=float, default=0.0,
                   help="seconds to wait for another process that has the project open")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--quiet", action="store_true")


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("project", type=Path)
    p.add_argument("--preset", choices=("cpu", "gpu", "tiny"), default="cpu")
    add_train_options(p)
    p.add_argument("--nproc", type=int, default=1, metavar="N",
                   help="train with N processes (torch.distributed data parallel: gloo on the "
                   "CPU, nccl on GPUs; started with torchrun --standalone): each step takes N x "
                   "the batch size, one slice per process; the step budget counts global "
                   "steps; BatchNorm statistics are per process. Scoring is sharded as with "
                   "'score --nproc'")


def _acq_args(p: argparse.ArgumentParser) -> None:
    from napari_alunet.acquisition import DIVERSITY
    from napari_alunet.active import COLD_STARTS

    p.add_argument("--strategy", default="bald", choices=STRATEGIES)
    p.add_argument("--passes", type=int, default=DEFAULT_MC_PASSES,
                   help=f"MC-dropout passes (default {DEFAULT_MC_PASSES})")
    p.add_argument("--top", type=int, default=2, help="images to queue (k)")
    p.add_argument("--subset", type=int, default=None, help="score a random subset of N images")
    p.add_argument("--score-batch", type=int, default=16, metavar="N",
                   help="images per scoring batch (default 16; lower it if the GPU runs out of "
                   "memory; with --nproc, whole batches are shared out between processes)")
    p.add_argument("--batch", default="power", choices=DIVERSITY,
                   help="how the k images are taken from the scores: power (default; "
                   "stochastic, p ~ score^beta), softrank, softmax, none (plain top k: "
                   "near-duplicates), feature, badge (uncertainty + diversity hybrid)")
    p.add_argument("--beta", type=float, default=None,
                   help="beta of the stochastic modes (default: from the scores' dynamic range)")
    p.add_argument("--cold-start", default="typical", choices=COLD_STARTS,
                   help="first queue of a project without labels: typical (one typical image "
                   "per cluster of the pool; default) or random")
    p.add_argument("--unit", default="image", choices=("image", "region"),
                   help="what is queued for review: whole images (default) or regions (square "
                   "tiles of the model input ranked across the pool; --top counts regions and "
                   "the reviewer labels only inside them)")
    p.add_argument("--region-size", type=int, default=32,
                   help="side of a region tile in model-input pixels (default 32)")
    p.add_argument("--region-cost", default="none", choices=("none", "boundary"),
                   help="divide a region's score by its estimated correction cost (boundary: "
                   "1 + predicted class boundaries per pixel)")


def _restart_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--restart", action="store_true",
                   help="abandon the unfinished current round (kept in the history, its model "
                   "never reused) and start a new one with these options: the way out of a "
                   "round stuck on the settings it was started with")
    p.add_argument("--drop-queue", action="store_true",
                   help="with --restart: also abandon a round whose review queue still has "
                   "images (they return to the unlabelled pool)")


def add_commands(sub: Any) -> None:
    p = sub.add_parser("train", help="train on the labelled pool and evaluate on the test pool")
    _train_args(p)
    _restart_args(p)
    _common(p)
    p = sub.add_parser("round", help="run or resume a whole round: train, evaluate, score, queue")
    _train_args(p)
    _acq_args(p)
    _restart_args(p)
    _common(p)
    p = sub.add_parser("score",
                       help="score the unlabelled pool with the current model, queue top k")
    p.add_argument("project", type=Path)
    p.add_argument("--preset", choices=("cpu", "gpu", "tiny"), default="cpu")
    for name in ("steps", "epochs", "patience", "lr", "semi_supervised"):
        p.set_defaults(**{name: None})
    _acq_args(p)
    p.add_argument("--nproc", type=int, default=1, metavar="N",
                   help="score with N processes (torch.distributed: gloo on the CPU, nccl on "
                   "GPUs; started with torchrun --standalone): each scores a shard of the pool, "
                   "the result is the same as with one")
    _common(p)
    p = sub.add_parser("oracle", help="commit stored ground truth for the queued images")
    p.add_argument("project", type=Path)
    p.add_argument("--wait", type=float, default=0.0)
    p = sub.add_parser("predict", help="segment a folder with a checkpoint, with uncertainty")
    p.add_argument("checkpoint", type=Path)
    p.add_argument("images", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--uncertainty", choices=("mc", "tta", "softmax"), default="mc")
    p.add_argument("--passes", type=int, default=20)
    p.add_argument("--device", default=None)
    p.add_argument("--quiet", action="store_true")


#: Sub-command name -> handler (napari_alunet.cli dispatches to them).
COMMANDS = {"train": cmd_train, "round": cmd_round, "score": cmd_score, "oracle": cmd_oracle,
            "predict": cmd_predict}
