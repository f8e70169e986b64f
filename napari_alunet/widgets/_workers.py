"""Run a core progress generator in a worker thread and report it in the GUI thread.

The core's long work (import, a round, scoring, feature maps) is a generator of typed progress
events (``docs/ARCHITECTURE.md``). :func:`start_job` runs such a generator in a napari
``GeneratorWorker`` and hands every event, the result and any error back through Qt signals, so
they arrive in the GUI thread; layers are only ever touched there.

Stop is ``worker.quit()``. superqt's worker only breaks out of its loop on a quit request; it
does not close the generator, which would then be finalised by the garbage collector at some
unknown time, in some unknown thread. :class:`ClosingGeneratorWorker` closes it at once, in the
worker thread, so the core's clean-up (the engine saves the best weights so far) runs off the GUI
thread and before ``finished`` is emitted.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import traceback
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

from napari.qt.threading import GeneratorWorker, create_worker
from napari.utils import progress

from napari_alunet.events import EvalEvent, HealthEvent, StageEvent, StepEvent, WorkProgress

logger = logging.getLogger(__name__)

#: Seconds between two progress updates shown to the user (events may come in much faster).
PROGRESS_INTERVAL = 0.1


class ClosingGeneratorWorker(GeneratorWorker):
    """A ``GeneratorWorker`` that closes its generator when it stops, in the worker thread."""

    def work(self) -> Any:
        try:
            return super().work()
        finally:
            self._gen.close()


@dataclass
class Failure:
    """An exception raised by a job, carried back to the GUI thread as the job's result.

    superqt's worker returns (rather than reports) a ``RuntimeError`` raised by a generator, and
    :class:`~napari_alunet.store.ProjectError` is one; wrapping every exception keeps all errors
    on one path: the job's ``on_error``.
    """

    error: BaseException
    traceback: str


@dataclass
class Progress:
    """What a progress bar shows: a text, and ``done`` of ``total`` (total 0: indeterminate)."""

    text: str
    done: int = 0
    total: int = 0


def _guarded(factory: Callable[[], Generator[Any, None, Any]]) -> Generator[Any, None, Any]:
    # Runs in the worker thread. ``yield from`` forwards close() to the core generator.
    try:
        result = yield from factory()
    except Exception as exc:  # noqa: BLE001 - every error goes back to the GUI as a Failure
        return Failure(exc, traceback.format_exc())
    return result


def gui_torch_threads() -> int:
    """Intra-op threads for torch in GUI jobs: all cores but one.

    With every core busy in torch (its OpenMP threads also spin between operations), the GUI
    thread waits for the OS scheduler and for the GIL and napari stutters; one free core keeps
    it answering within a few milliseconds, for at most 1/cores of the speed.
    """
    return max(1, (os.cpu_count() or 2) - 1)


def leaving_a_core(factory: Callable[[], Generator[Any, None, Any]], threads: int | None = None
                   ) -> Callable[[], Generator[Any, None, Any]]:
    """Wrap a torch job so it runs with :func:`gui_torch_threads` threads (in the worker)."""

    def wrapped() -> Generator[Any, None, Any]:
        import torch

        before = torch.get_num_threads()
        torch.set_num_threads(threads or gui_torch_threads())
        try:
            return (yield from factory())
        finally:
            torch.set_num_threads(before)

    return wrapped


#: Modules napari or the jobs import on first use (first labels layer, first optimiser): imported
#: once in the background when the widgets open, so the first round does not pay for them.
WARM_UP_MODULES = (
    "torch", "torch._dynamo", "pandas", "skimage.color",
    "napari._qt.layer_controls.qt_image_controls", "napari._qt.layer_controls.qt_labels_controls",
    "napari._vispy.layers.image", "napari._vispy.layers.labels",
    "napari_alunet.training.engine", "napari_alunet.scoring", "napari_alunet.model.features",
)
_warmed = threading.Event()


def warm_up() -> None:
    """Import :data:`WARM_UP_MODULES` in a daemon thread (once per process)."""
    if _warmed.is_set():
        return
    _warmed.set()

    def run() -> None:
        import importlib

        for name in WARM_UP_MODULES:
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001 - only a head start; the real import reports
                logger.debug("warm-up import of %s failed", name, exc_info=True)

    threading.Thread(target=run, name="alunet-warm-up", daemon=True).start()


def describe(event: Any) -> Progress | None:
    """A progress line for any core event (None for events that do not move a bar).

    Parameters
    ----------
    event : StageEvent, StepEvent, EvalEvent, HealthEvent, ScoreProgress, ImportProgress or any
        object with ``done``/``total``. Training shows optimiser steps, with passes over the
        labelled images (what used to be epochs) beside them.
    """
    if isinstance(event, Progress):
        return event
    if isinstance(event, StageEvent):
        return Progress(event.message)
    if isinstance(event, StepEvent):
        return Progress(f"training: step {event.step}/{event.steps} ({event.passes:.1f} passes "
                        f"over the labelled images), loss {event.loss:.3f}",
                        event.step, max(1, event.steps))
    if isinstance(event, EvalEvent):
        dice = "" if event.val_dice != event.val_dice else f", val Dice {event.val_dice:.3f}"
        return Progress(f"training: step {event.step}/{event.steps} ({event.passes:.1f} "
                        f"passes){dice}", event.step, max(1, event.steps))
    if isinstance(event, HealthEvent):
        return Progress(event.message)
    if isinstance(event, WorkProgress):
        return Progress(event.message, event.done, event.total)
    done, total = getattr(event, "done", None), getattr(event, "total", None)
    if done is not None and total is not None:
        what = (getattr(event, "stage", "")
                or type(event).__name__.replace("Progress", "").lower() or "working")
        name = getattr(event, "name", "")
        return Progress(f"{what}: {done}/{total}" + (f" ({name})" if name else ""),
                        int(done), int(total))
    return None


class Job:
    """One running worker, its napari progress bar (activity dock) and its callbacks.

    Parameters
    ----------
    name : short name shown in the progress bar ('import', 'round', ...).
    factory : builds the core generator; called in the worker thread.
    on_event : called in the GUI thread with every yielded event.
    on_progress : called (throttled) with a :class:`Progress`.
    on_done : called with the generator's return value when it finished normally.
    on_error : called with a :class:`Failure`.
    on_finished : called when the worker has ended, always (also after Stop), before
        ``on_done``/``on_error``: ``on_finished(cancelled)``.
    """

    def __init__(
        self,
        name: str,
        factory: Callable[[], Generator[Any, None, Any]],
        *,
        on_event: Callable[[Any], None] | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        on_done: Callable[[Any], None] | None = None,
        on_error: Callable[[Failure], None] | None = None,
        on_finished: Callable[[bool], None] | None = None,
    ) -> None:
        self.name = name
        self.cancelled = False
        self._on_event, self._on_progress = on_event, on_progress
        self._on_done, self._on_error, self._on_finished = on_done, on_error, on_finished
        self._last_shown = 0.0
        self._result: Any = None
        self._has_result = False
        self._bar = progress(total=0, desc=name)
        self.worker = create_worker(
            _guarded, factory, _start_thread=False, _worker_class=ClosingGeneratorWorker
        )
        self.worker.yielded.connect(self._event)
        self.worker.returned.connect(self._returned)
        self.worker.errored.connect(lambda exc: self._returned(Failure(exc, "")))
        self.worker.finished.connect(self._finished)
        self.worker.aborted.connect(self._aborted)

    def start(self) -> Job:
        self.worker.start()
        return self

    def stop(self, *, quiet: bool = False) -> None:
        """Ask the job to stop at its next yield (the core then saves what it must).

        ``quiet`` leaves the progress bar alone: napari's bar calls ``processEvents`` when its
        text changes, which must not happen while the window is closing.
        """
        self.cancelled = True
        if not quiet and self._bar is not None:
            self._bar.set_description(f"{self.name}: stopping...")
        self.worker.quit()

    @property
    def running(self) -> bool:
        return self._bar is not None

    # -- GUI-thread slots ----------------------------------------------------------------------
    def _event(self, event: Any) -> None:
        if self._on_event is not None:
            self._on_event(event)
        shown = describe(event)
        if shown is None:
            return
        now = time.monotonic()
        # Throttle: a tiny model yields hundreds of steps a second; a stage change always shows.
        if not isinstance(event, StageEvent) and now - self._last_shown < PROGRESS_INTERVAL \
                and shown.done != shown.total:
            return
        self._last_shown = now
        self._show(shown)

    def _show(self, shown: Progress) -> None:
        bar = self._bar
        if bar is not None:
            if bar.total != shown.total:
                bar.total = shown.total
            bar.set_description(f"{self.name}: {shown.text}")
            if shown.total:
                bar.update(shown.done - bar.n)
        if self._on_progress is not None:
            self._on_progress(shown)

    def _returned(self, result: Any) -> None:
        # Kept until ``finished``: callbacks then see the job over (a follow-up job may start).
        self._result = result
        self._has_result = True

    def _dispatch(self) -> None:
        if not self._has_result:
            return
        result = self._result
        if isinstance(result, Failure):
            logger.error("%s failed: %s\n%s", self.name, result.error, result.traceback)
            if self._on_error is not None:
                self._on_error(result)
        elif self._on_done is not None:
            self._on_done(result)

    def _aborted(self) -> None:
        self.cancelled = True

    def _finished(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._on_finished is not None:
            self._on_finished(self.cancelled)
        self._dispatch()


def error_text(failure: Failure) -> str:
    """A one-line message for a failed job: the core's messages already say what to do."""
    error = failure.error
    text = str(error) or type(error).__name__
    known = ("ProjectError", "InputError", "CheckpointError")
    if type(error).__name__ in known or isinstance(error, (ValueError, FileNotFoundError)):
        return text
    return f"{type(error).__name__}: {text} (details in the log; please report this)"
