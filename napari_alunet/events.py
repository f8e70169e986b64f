"""The core's progress events, and :func:`drain` for the generators that yield them.

Long work is a generator that yields these typed events and returns its result; the CLI, the
tests and the GUI workers consume them with ``isinstance`` (this module imports neither torch
nor Qt, so a consumer can import it cheaply). The modules that emit them re-export them.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

R = TypeVar("R")


def drain(
    generator: Generator[Any, None, R], on_event: Callable[[Any], object] | None = None
) -> R:
    """Run a progress generator to the end and return its result.

    ``on_event`` sees every yielded event (the CLI feeds tqdm with it; tests collect them).
    """
    while True:
        try:
            event = next(generator)
        except StopIteration as stop:
            return stop.value
        if on_event is not None:
            on_event(event)


@dataclass
class StepEvent:
    """After one optimiser step. ``step`` counts from 1 to ``steps`` (the budget); ``passes``
    is how many times the labelled training images have been seen (images drawn / n), the
    epoch as a display unit. ``loss`` is the mean supervised batch loss since the last
    evaluation at the last read-back (every step on the CPU, every :data:`SYNC_EVERY` steps on
    a GPU); ``unlabelled_loss`` / ``confident_fraction`` the same for the consistency term (NaN
    without it); ``seconds`` since the fit started."""

    step: int
    steps: int
    passes: float
    loss: float
    unlabelled_loss: float
    confident_fraction: float
    seconds: float


@dataclass
class EvalEvent:
    """Every ``eval_every`` steps and after the last. ``train_loss`` is the mean supervised loss
    since the previous evaluation; ``val_loss``/``val_dice`` are those of the evaluated (EMA)
    weights on the validation images, NaN without them; ``best_step`` is the step whose weights
    are kept so far (the latest one without validation); ``learning_rate`` is the rate the last
    step used."""

    step: int
    steps: int
    passes: float
    train_loss: float
    unlabelled_loss: float
    confident_fraction: float
    val_loss: float
    val_dice: float
    best_val_dice: float
    best_step: int
    improved: bool
    seconds: float
    learning_rate: float


@dataclass
class HealthEvent:
    """A fit ended with its labelled images' own Dice under the floor (it collapsed)."""

    attempt: int
    attempts: int
    labelled_dice: float
    floor: float
    retrying: bool
    message: str


@dataclass
class StageEvent:
    """A round entered a stage ('train', 'evaluate', 'score', 'queue', 'done'), or says
    something the user must know ('resume': stored settings used; 'queue': unreviewed images
    returned to the pool)."""

    round_idx: int
    stage: str
    message: str


@dataclass
class WorkProgress:
    """Progress of a core job without a more specific event (``done`` of ``total``; total 0:
    not known), with a line for the user."""

    done: int
    total: int
    message: str


@dataclass
class ImportProgress:
    """One image read and stored (``stage`` is 'scan', 'image' or 'split')."""

    done: int
    total: int
    stage: str
    name: str = ""


@dataclass
class ScoreProgress:
    """Progress of :func:`score_pool`, yielded at least once per batch.

    ``stage`` is ``"score"`` while the pool is scored, ``"review"`` while the maps of the
    chosen images are computed and ``"embed"`` while embeddings for a cold start are.
    """

    done: int
    total: int
    seconds: float
    images_per_second: float
    stage: str = "score"


@dataclass
class PredictProgress:
    done: int
    total: int
    name: str


# -- oracle-replay experiments (napari_alunet.experiment.runner) ----------------------------------


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
