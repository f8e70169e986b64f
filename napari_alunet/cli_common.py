"""What every ``alunet`` command module shares: progress bars and the training options.

The command modules (:mod:`napari_alunet.cli`, :mod:`.cli_ml`, :mod:`.cli_experiment`) import
this; :mod:`napari_alunet.cli` imports the other two and builds the one parser from their
``add_commands`` and ``COMMANDS``, so no module fills another's registry by being imported.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def progress_bar(total: int | None, desc: str, *, quiet: bool = False) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=quiet, leave=False, file=sys.stderr)


# -- training options and progress, shared by train / round / experiment --------------------------
def add_train_options(p: argparse.ArgumentParser) -> None:
    """The recipe's options (``TrainConfig``); unset ones keep the recipe's defaults."""
    from napari_alunet.config import TrainConfig

    d = TrainConfig()
    p.add_argument("--steps", type=int, default=None,
                   help=f"optimiser steps per fit (default: automatic, {d.min_steps} + "
                   f"{d.steps_per_image} per training image, at most {d.max_steps})")
    p.add_argument("--epochs", type=int, default=None,
                   help="count the budget in passes over the labelled images instead (the "
                   "recipe before 0.2; for comparisons)")
    p.add_argument("--patience", type=int, default=None,
                   help="evaluations without improvement before early stopping (only with a "
                   f"validation split of >= {d.validation_min_images} images; 0: off)")
    p.add_argument("--batch-size", type=int, default=None, metavar="N",
                   help=f"labelled images per optimiser step (default {d.batch_size}; per "
                   "process with --nproc)")
    p.add_argument("--lr", type=float, default=None,
                   help=f"peak learning rate (default {d.learning_rate:g})")
    p.add_argument("--starter", action=argparse.BooleanOptionalAction, default=None,
                   help="start a round that has no model of its own (round 0) from the shipped "
                   "starter model, and show its predictions on a project without labels, when "
                   "one fits the preset and classes (default on)")
    p.add_argument("--domain-randomisation", action=argparse.BooleanOptionalAction,
                   default=None, help="strong photometric perturbations of every batch (gamma, "
                   "illumination, focus, texture, relief, noise) for a model trained on "
                   "synthetic images that must work on real ones (default off)")
    p.add_argument("--semi-supervised", action=argparse.BooleanOptionalAction, default=None,
                   help="consistency training on the unlabelled pool (default on)")


def train_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """TrainConfig fields given on the command line (for ``dataclasses.replace``)."""
    given = {"steps": getattr(args, "steps", None), "epochs": getattr(args, "epochs", None),
             "patience": getattr(args, "patience", None),
             "learning_rate": getattr(args, "lr", None),
             "batch_size": getattr(args, "batch_size", None),
             "semi_supervised": getattr(args, "semi_supervised", None),
             "domain_randomisation": getattr(args, "domain_randomisation", None),
             "starter": getattr(args, "starter", None)}
    return {k: v for k, v in given.items() if v is not None}


class ProgressBars:
    """The one adapter from the core's progress events to tqdm bars on stderr.

    Every command drains its generator with ``drain(gen, bars)``. One bar is shown at a time, one
    per kind of work (training steps, scoring, the review pass, import, prediction); a new kind
    closes the last bar. ``label`` prefixes the bar (an experiment's arm, seed and round);
    :class:`~napari_alunet.events.StageEvent` messages and the recipe's health warnings are
    printed. ``__call__`` returns False for an event it does not know, so a command can handle
    its own events first (the experiment's overall bar).
    """

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.bar: Any = None
        self.kind = ""
        self.label = ""

    def bar_for(self, kind: str, total: int | None) -> Any:
        """The bar of ``kind`` (made, with ``total``, when the kind changes)."""
        if self.kind != kind or self.bar is None:
            if self.bar is not None:
                self.bar.close()
            desc = f"{self.label} {kind}" if self.label else kind
            self.bar = progress_bar(total, desc, quiet=self.quiet)
            self.kind = kind
        return self.bar

    def _advance(self, kind: str, done: int, total: int | None) -> None:
        bar = self.bar_for(kind, total)
        bar.total, bar.n = total, done
        bar.refresh()

    def __call__(self, event: Any) -> bool:
        from napari_alunet.events import (
            EvalEvent,
            HealthEvent,
            ImportProgress,
            PredictProgress,
            ScoreProgress,
            StageEvent,
            StepEvent,
        )

        if isinstance(event, StageEvent):
            self.close()
            if not self.quiet:
                print(f"[round {event.round_idx}] {event.message}", flush=True)
        elif isinstance(event, StepEvent):
            shown = self.bar_for("steps", event.steps)
            shown.n = event.step
            if event.step == 1 or event.step % 10 == 0 or event.step == event.steps:
                shown.set_postfix_str(f"passes {event.passes:.1f}, loss {event.loss:.3f}")
        elif isinstance(event, EvalEvent):
            shown = self.bar_for("steps", event.steps)
            shown.n = event.step
            val = "" if event.val_dice != event.val_dice else f", val Dice {event.val_dice:.3f}"
            shown.set_postfix_str(f"passes {event.passes:.1f}, loss {event.train_loss:.3f}{val}")
        elif isinstance(event, HealthEvent):
            if not self.quiet:
                print(f"warning: {event.message} (attempt {event.attempt}/{event.attempts})",
                      file=sys.stderr, flush=True)
        elif isinstance(event, ScoreProgress):
            self._advance("scoring" if event.stage == "score" else event.stage, event.done,
                          event.total)
        elif isinstance(event, ImportProgress):
            self._advance("import", event.done, event.total)
        elif isinstance(event, PredictProgress):
            self._advance("predict", event.done, event.total)
        else:
            return False
        return True

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.bar, self.kind = None, ""
