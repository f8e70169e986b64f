"""The state the dock widgets of one viewer share: the open project, the settings, the job.

Every widget of a viewer gets the same :class:`AppState` from :func:`get_state`, edits it and
listens to its psygnal signals, so a project opened in one widget shows in all of them and only
one long job runs at a time per project (one writer, and two trainings would compete for the same
cores anyway).

The state holds no reference to the viewer (a viewer must be free to be garbage collected when
it closes); :func:`get_state` keys states by ``id(viewer)`` and drops them with the viewer.
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Callable, Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from psygnal import Signal

from napari_alunet.events import HealthEvent
from napari_alunet.loop import RoundSettings
from napari_alunet.store import Project, ProjectError
from napari_alunet.store.records import RoundStatus
from napari_alunet.widgets._workers import (
    Failure,
    Job,
    Progress,
    error_text,
    leaving_a_core,
    warm_up,
)

if TYPE_CHECKING:
    from napari_alunet.widgets._display import Display


class AppState:
    """Open project, round settings and the one running job of a viewer.

    Signals
    -------
    project_changed : a project was opened or closed (``state.project`` may be None).
    busy_changed(str) : a job started (its name) or ended ('').
    progress(Progress) : the running job moved (throttled).
    round_event(object) : every event of a running round (StageEvent, StepEvent, EvalEvent,
        HealthEvent, ...).
    round_finished(object) : a round ended: its RoundReport, or None if stopped or failed.
    labels_changed : a label was committed or withdrawn (pool counts, effort, queue).
    queue_changed : the review queue changed (new round, re-scoring, skip).
    scores_changed : acquisition scores were (re)computed.
    image_requested(int) : show this image id in the viewer (Review does).
    """

    project_changed = Signal()
    busy_changed = Signal(str)
    progress = Signal(object)
    round_event = Signal(object)
    round_finished = Signal(object)
    labels_changed = Signal()
    queue_changed = Signal()
    scores_changed = Signal()
    image_requested = Signal(int)

    #: The viewer's Display: not set here, but on first use by ``_display.get_display``.
    display: Display

    def __init__(self) -> None:
        self.project: Project | None = None
        self.settings = RoundSettings()
        self.job: Job | None = None
        #: Latest re-scoring from Acquire: {'strategy', 'round', 'scores': {id: score}}.
        self.scores: dict[str, Any] | None = None
        self.last_report: Any = None
        #: torch threads of GUI jobs (None: all cores but one, see gui_torch_threads).
        self.torch_threads: int | None = None

    # -- project ------------------------------------------------------------------------------
    def open_project(self, path: str | Path, *, read_only: bool = False) -> Project:
        """Open ``path`` (closing the project open before). Raises ProjectError/LockedError."""
        if self.busy:
            assert self.job is not None  # busy means a job
            raise ProjectError(f"wait for '{self.job.name}' to finish (or Stop it) first")
        project = Project.open(path, read_only=read_only)
        self.close_project(notify=False)
        self.project = project
        self.scores = None
        self.last_report = None
        self._restore_settings(project)
        self.project_changed.emit()
        return project

    def close_project(self, *, notify: bool = True) -> None:
        if self.project is not None:
            self.project.close()
            self.project = None
            if notify:
                self.project_changed.emit()

    def _restore_settings(self, project: Project) -> None:
        # A project reopens with the settings of its newest round, so the next round matches.
        current = project.current_round()
        if current is not None and current.config:
            try:
                self.settings = RoundSettings.from_dict(current.config)
            except (KeyError, ValueError, TypeError):
                pass  # an older or hand-edited config: keep the widgets' settings

    def require_project(self, *, writable: bool = False) -> Project:
        """The open project, or ProjectError saying what to do."""
        if self.project is None:
            raise ProjectError("no project is open: open or create one in the Project tab")
        if writable and self.project.read_only:
            raise ProjectError(
                f"{self.project.path} is open read-only; close it in the other napari or "
                "'alunet' session and open it again to make changes"
            )
        return self.project

    # -- jobs -----------------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return self.job is not None

    def start_job(
        self,
        name: str,
        factory: Callable[[], Generator[Any, None, Any]],
        *,
        on_event: Callable[[Any], None] | None = None,
        on_done: Callable[[Any], None] | None = None,
        on_error: Callable[[Failure], None] | None = None,
        uses_torch: bool = False,
    ) -> Job:
        """Run ``factory()`` (a core generator) in a worker; one job at a time.

        Errors are shown as a napari notification (and passed to ``on_error``). A job that
        ``uses_torch`` leaves a core to the GUI thread (:attr:`torch_threads`).
        """
        if self.job is not None:
            raise ProjectError(f"'{self.job.name}' is still running: wait for it or press Stop")

        def failed(failure: Failure) -> None:
            notify_error(f"{name} failed: {error_text(failure)}")
            if on_error is not None:
                on_error(failure)

        def finished(cancelled: bool) -> None:
            self.job = None
            self.busy_changed.emit("")
            if cancelled:
                notify_info(f"{name} stopped; everything saved so far is kept")
            if self._closing:
                self.close_project()

        if uses_torch:
            factory = leaving_a_core(factory, self.torch_threads)
        self.job = Job(name, factory, on_event=on_event, on_progress=self.progress.emit,
                       on_done=on_done, on_error=failed, on_finished=finished)
        self.busy_changed.emit(name)
        self.progress.emit(Progress(f"{name}: starting..."))
        return self.job.start()

    def stop(self) -> None:
        if self.job is not None:
            self.job.stop()

    _closing = False

    def shutdown(self) -> None:
        """The viewer is closing: stop the job (the round resumes on reopening), release the
        project lock once nothing runs any more."""
        self._closing = True
        if self.job is not None:
            self.job.stop(quiet=True)
        else:
            self.close_project()

    # -- rounds ---------------------------------------------------------------------------------
    def run_round(self) -> Job:
        """Start (or resume) the next round: train -> evaluate -> score -> queue."""
        from napari_alunet.loop import run_round

        project = self.require_project(writable=True)
        settings = copy.deepcopy(self.settings)

        def done(report: Any) -> None:
            self.last_report = report
            self.scores = None
            self.round_finished.emit(report)
            self.queue_changed.emit()
            if report.status == RoundStatus.STARTED:
                notify_info(f"round {report.round_idx} stopped during training; Resume round "
                            f"{report.round_idx} (Train) trains it again")
            else:
                notify_info(_report_text(report))

        def failed(_failure: Failure) -> None:
            self.round_finished.emit(None)
            self.queue_changed.emit()

        def on_event(event: Any) -> None:
            if isinstance(event, HealthEvent):
                # A collapsed fit is retried; the researcher should know why it takes longer
                # (and, with no retries left, that the model to correct from is poor).
                notify_warning(f"round training: {event.message}")
            self.round_event.emit(event)

        return self.start_job(
            "round", lambda: run_round(project, settings), on_event=on_event,
            on_done=done, on_error=failed, uses_torch=True,
        )


def _report_text(report: Any) -> str:
    dice = report.test_metrics.get("mean_dice")
    shown = "" if dice is None else f", test mean Dice {dice:.3f}"
    return (f"round {report.round_idx} ready{shown}: {len(report.queue)} image(s) queued for "
            "review")


# -- notifications ----------------------------------------------------------------------------
def notify_error(message: str) -> None:
    from napari.utils.notifications import show_error

    show_error(message)


def notify_info(message: str) -> None:
    from napari.utils.notifications import show_info

    show_info(message)


def notify_warning(message: str) -> None:
    from napari.utils.notifications import show_warning

    show_warning(message)


# -- one state per viewer -----------------------------------------------------------------------
_STATES: dict[int, AppState] = {}


def get_state(viewer: Any) -> AppState:
    """The shared state of ``viewer`` (created on first use, dropped when the viewer goes).

    ``viewer`` may be the public proxy napari hands to plugins (``current_viewer()``, widget
    injection); states are keyed by the viewer behind it.
    """
    viewer = getattr(viewer, "__wrapped__", viewer)
    key = id(viewer)
    state = _STATES.get(key)
    if state is None:
        state = _STATES[key] = AppState()
        warm_up()
        weakref.finalize(viewer, _STATES.pop, key, None)
        _watch_close(viewer, state)
    return state


def _watch_close(viewer: Any, state: AppState) -> None:
    """Stop the job and release the project lock when the viewer's window closes."""
    window = getattr(getattr(viewer, "window", None), "_qt_window", None)
    if window is None:
        return
    from qtpy.QtCore import QEvent, QObject, QTimer

    state_ref = weakref.ref(state)

    def after_close(window_ref: Any) -> None:
        live, win = state_ref(), window_ref()
        try:
            visible = win is not None and win.isVisible()
        except RuntimeError:  # the window is already deleted
            visible = False
        if live is not None and not visible:
            live.shutdown()

    class _CloseWatcher(QObject):
        def eventFilter(self, obj: Any, event: Any) -> bool:  # noqa: N802 - Qt API
            if event.type() == QEvent.Type.Close:
                if event.spontaneous():
                    # The user clicked the close button: napari may still ask for confirmation
                    # and keep the window, so decide once the event is handled. Only weak
                    # references wait in the timer, so a closed viewer can be collected.
                    window_ref = weakref.ref(obj)
                    QTimer.singleShot(0, lambda: after_close(window_ref))
                else:
                    live = state_ref()
                    if live is not None:
                        live.shutdown()
            return False

    watcher = _CloseWatcher(window)
    window.installEventFilter(watcher)
