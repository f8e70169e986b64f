"""``alunet``: the headless twin of the napari widgets.

Every command drains the same core generators the GUI runs in its workers, with a tqdm bar.
Errors the user can fix are printed as one line (``error: ...``) with exit status 2; nothing
already saved is touched.
"""

from __future__ import annotations

import argparse
import json
import re
import sqlite3
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from napari_alunet import __version__, cli_experiment, cli_ml
from napari_alunet.cli_common import ProgressBars

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def command(name: str) -> Callable[[Callable[[argparse.Namespace], int]], Callable[..., int]]:
    def register(func: Callable[[argparse.Namespace], int]) -> Callable[..., int]:
        COMMANDS[name] = func
        return func

    return register


# -- sample / import / status / export ----------------------------------------------------------
@command("sample")
def cmd_sample(args: argparse.Namespace) -> int:
    from napari_alunet.data.sample_files import write_sample_pool

    shape = tuple(args.shape) if args.shape else None
    _check_sample_args(args, shape)
    if getattr(args, "redundant", False):
        return sample_redundant(args, shape)
    if getattr(args, "test_per_mode", None) is not None:
        raise ValueError("--test-per-mode needs --redundant")
    out = write_sample_pool(args.out, args.n, args.seed, layout=args.layout, shape=shape)
    print(f"wrote {args.n} synthetic blastocysts ({args.layout} layout) to {out}")
    return 0


def _check_sample_args(args: argparse.Namespace, shape: tuple[int, ...] | None) -> None:
    if args.n < 1:
        raise ValueError(f"--n must be >= 1, not {args.n}")
    if args.seed < 0:
        raise ValueError(f"--seed must be >= 0, not {args.seed}")
    if shape is not None and min(shape) < 16:
        raise ValueError(f"--shape {shape[0]} {shape[1]} is too small: both sides must be >= 16")


def sample_redundant(args: argparse.Namespace, shape: tuple[int, int] | None) -> int:
    """``sample --redundant``: embryos filmed several times, rare modes, a stratified test set."""
    from napari_alunet.data.sample_files import pool_summary, read_pool_info, write_redundant_pool

    per_mode = 5 if args.test_per_mode is None else args.test_per_mode
    if per_mode < 0:
        raise ValueError(f"--test-per-mode must be >= 0, not {per_mode}")
    out = write_redundant_pool(args.out, args.n, args.seed, layout=args.layout, shape=shape,
                               n_test_per_mode=per_mode)
    root = out / "binary" if args.layout == "both" else out
    summary = pool_summary(read_pool_info(root) or {})
    pool, test = summary["pool"], summary["test"]
    print(f"wrote {pool['images']} frames of {pool['embryos']} synthetic embryos and "
          f"{test['images']} test embryos ({per_mode} per mode; {args.layout} layout) to {out}; "
          "modes: " + ", ".join(f"{m} {k}" for m, k in pool["modes"].items()))
    return 0


@command("verify")
def cmd_verify(args: argparse.Namespace) -> int:
    """Check a project without changing it: exit 0 when sound, 1 listing every problem."""
    from napari_alunet.store import Project

    with Project.open(args.project, read_only=True) as project:
        problems = project.verify(hashes=not args.quick)
    if args.json:
        print(json.dumps({"project": str(args.project), "problems": problems}, indent=2))
    elif problems:
        print(f"{len(problems)} problem(s) in {args.project}:")
        for problem in problems:
            print(f"  {problem}")
    else:
        print(f"{args.project}: database, files and sizes check out")
    return 1 if problems else 0


@command("import")
def cmd_import(args: argparse.Namespace) -> int:
    from napari_alunet.config import DataConfig
    from napari_alunet.events import drain
    from napari_alunet.importer import import_pool

    data = DataConfig(test_fraction=args.test_fraction, initial_fraction=args.initial_fraction,
                      seed=args.seed)
    bars = ProgressBars(args.quiet)
    try:
        summary = drain(import_pool(args.src, args.project, data=data,
                                    allow_unmatched=args.allow_unmatched), bars)
    finally:
        bars.close()
    print(f"imported {sum(summary.counts.values())} images ({summary.layout} layout) into "
          f"{summary.project}: " + ", ".join(f"{k} {v}" for k, v in summary.counts.items()))
    if summary.without_masks:
        print(f"{len(summary.without_masks)} image(s) had no masks and are unlabelled: "
              + ", ".join(map(shown_name, summary.without_masks[:10])))
    for warning in summary.warnings[:10]:
        print(f"warning: {shown_name(warning)}; check that mask's encoding")
    if summary.ignored:
        print(f"ignored {len(summary.ignored)} non-image file(s): "
              + ", ".join(map(shown_name, summary.ignored[:10])))
    return 0


def project_status(project: Any) -> dict[str, Any]:
    """A JSON-ready summary of a project (pools, classes, rounds and their test metrics)."""
    metrics: dict[int, dict[str, float | None]] = {}
    for row in project.metrics("test"):
        metrics.setdefault(row["round_idx"], {})[row["name"]] = row["value"]
    return {
        "project": str(project.path),
        "images": sum(project.counts().values()),
        "pools": project.counts(),
        "classes": list(project.classes.names),
        "layout": project.get_setting("layout"),
        # The model's input side is chosen by the round's preset, not at import: report the
        # one the newest round trained with (None before the first round).
        "model_input_size": next((r.config["model"].get("input_size")
                                  for r in reversed(project.rounds())
                                  if r.config and "model" in r.config), None),
        "rounds": [
            {"round": r.idx, "status": r.status, "n_labelled": r.n_labelled,
             "test": metrics.get(r.idx, {})}
            for r in project.rounds()
        ],
        "queue": project.queue(),
    }


@command("status")
def cmd_status(args: argparse.Namespace) -> int:
    from napari_alunet.store import Project

    with Project.open(args.project, read_only=True) as project:
        status = project_status(project)
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    pools = status["pools"]
    print(f"project  {status['project']}")
    print(f"images   {status['images']}  (labelled {pools['labelled']}, unlabelled "
          f"{pools['unlabelled']}, test {pools['test']})")
    print(f"classes  {', '.join(status['classes'])}")
    print(f"rounds   {len(status['rounds'])}")
    for r in status["rounds"]:
        dice = r["test"].get("mean_dice")
        shown = "-" if dice is None else f"{dice:.3f}"
        print(f"  round {r['round']:>3}  {r['status']:<10} labelled {r['n_labelled']:>4}  "
              f"test Dice {shown}")
    if status["queue"]:
        print(f"queue    {len(status['queue'])} image(s) waiting for review")
    return 0


@command("export")
def cmd_export(args: argparse.Namespace) -> int:
    from napari_alunet.export import export_labels
    from napari_alunet.store import Project

    with Project.open(args.project, read_only=True) as project:
        written = export_labels(project, args.out, ground_truth=args.ground_truth,
                                colour=args.colour)
    print(f"wrote {len(written)} label image(s) to {args.out}")
    return 0


@command("curve")
def cmd_curve(args: argparse.Namespace) -> int:
    from napari_alunet.curve import write_curve
    from napari_alunet.store import Project

    with Project.open(args.project, read_only=True) as project:
        for out in args.out:
            write_curve(project, out)
            print(f"wrote {out}")
    return 0


COMMANDS.update(cli_ml.COMMANDS)
COMMANDS.update(cli_experiment.COMMANDS)


# -- the GUI ------------------------------------------------------------------------------------
@command("gui")
def cmd_gui(args: argparse.Namespace) -> int:
    """Open napari with the Active learning widget, on ``args.project`` when given.

    napari runs in its own process (``python -m napari_alunet.widgets.launch``, the launcher
    the quick start uses): the CLI imports no GUI code, so it works on a headless install, and
    says what to install when napari is missing.
    """
    import importlib.util
    import subprocess

    from napari_alunet.store import DB_NAME

    # The launcher the quick start uses: napari with the widget docked, on the project.
    command = [sys.executable, "-m", "napari_alunet.widgets.launch"]
    if args.project is not None:
        folder = Path(args.project)
        if not (folder / DB_NAME).is_file():
            raise ValueError(f"{folder} is not a project (no {DB_NAME}): create one with "
                             "'alunet import POOL PROJECT' or in the Project panel")
        command.append(str(folder))
    if importlib.util.find_spec("napari") is None:
        raise RuntimeError("napari is not installed here (a headless install): install the GUI "
                           "with pip install 'napari-alunet[pyqt5]', or use the alunet commands")
    return subprocess.call(command)


# -- parser ---------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alunet",
        description="Active learning for blastocyst segmentation with a Bayesian U-Net "
        "(headless twin of the napari-alunet widgets).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("sample", help="write a synthetic blastocyst pool")
    p.add_argument("out", type=Path)
    p.add_argument("--n", type=int, default=40, help="number of images (default 40)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--layout", choices=("binary", "rgb", "both"), default="binary")
    p.add_argument("--shape", type=int, nargs=2, metavar=("H", "W"), default=None,
                   help="image size (default: drawn like real data, about 377 x 447)")
    p.add_argument("--redundant", action="store_true",
                   help="a pool as in real labs: 3-8 time-lapse frames per embryo, rare modes "
                   "(early, hatching, hatched, collapsed, grade C; ~6 %% each), a stratified test "
                   "set of fresh embryos and pool.csv (name, embryo, frame, mode, split)")
    p.add_argument("--test-per-mode", type=int, default=None, metavar="M",
                   help="with --redundant: test embryos per mode (default 5)")

    p = sub.add_parser("import", help="create a project from a pool folder")
    p.add_argument("src", type=Path, help="folder: images/ + GT_ICM/GT_TE/GT_ZP/, images/ + "
                   "masks/, or images/ only")
    p.add_argument("project", type=Path, help="new project folder")
    p.add_argument("--test-fraction", type=float, default=0.2)
    p.add_argument("--initial-fraction", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--allow-unmatched", action="store_true",
                   help="import images without masks as unlabelled instead of refusing")
    p.add_argument("--quiet", action="store_true")

    p = sub.add_parser("status", help="pools, classes and rounds of a project")
    p.add_argument("project", type=Path)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("curve", help="write the learning curve (test Dice vs labelled images "
                       "and vs annotation effort) as PNG, SVG, PDF or CSV")
    p.add_argument("project", type=Path)
    p.add_argument("out", type=Path, nargs="+",
                   help="output file(s); the suffix picks the format: .png .svg .pdf .csv")

    p = sub.add_parser("verify", help="check a project's database, files, hashes and sizes "
                       "(read-only; exit 1 listing the problems)")
    p.add_argument("project", type=Path)
    p.add_argument("--quick", action="store_true", help="skip the SHA-256 of every file")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("export", help="write label images at each image's original size")
    p.add_argument("project", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--ground-truth", action="store_true",
                   help="also export imported ground truth of unlabelled and test images")
    p.add_argument("--colour", action="store_true", help="also write colour masks")

    p = sub.add_parser("gui", help="open napari with the Active learning widget (on PROJECT)")
    p.add_argument("project", type=Path, nargs="?", default=None)

    cli_ml.add_commands(sub)  # train, round, score, oracle, predict
    cli_experiment.add_commands(sub)  # experiment
    return parser


#: Terminal control characters (C0 but tab/newline/return, DEL, C1): an image named with an
#: escape sequence must not recolour, move or clear the user's terminal when we print it.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_ANY_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def shown_name(name: str) -> str:
    """A file or image name as printed: every control character (newlines too) escaped."""
    return _ANY_CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(name))


class _EscapingStream:
    """Wraps stdout/stderr so that nothing we print carries terminal control sequences
    (error messages quote file names); newlines, tabs and carriage returns (progress bars)
    pass."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        return self._stream.write(_CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # a command that relaunches itself (score --nproc) repeats it
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _EscapingStream(sys.stdout), _EscapingStream(sys.stderr)
    try:
        return _dispatch(args)
    finally:
        sys.stdout, sys.stderr = saved


def _dispatch(args: argparse.Namespace) -> int:
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("interrupted: everything committed so far is saved", file=sys.stderr)
        return 130
    except (ValueError, OSError, RuntimeError, KeyError) as exc:
        if getattr(args, "debug", False):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except sqlite3.Error as exc:  # a database that breaks mid-command (disk full, damaged)
        if getattr(args, "debug", False):
            raise
        print(f"error: the project database failed ({type(exc).__name__}: {exc}); nothing "
              "after the last completed step was saved: check free disk space, then run "
              "'alunet verify PROJECT'", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
