"""Rounds: run the next round, follow the learning curve, export it.

The curve plots test mean Dice against the number of labelled images and against annotation
effort (pixels changed by the annotator, summed over the label versions a round trained on; see
:mod:`napari_alunet.curve`). Exports: PNG and SVG (white background, for papers: 0-1 Dice axes,
per-class curves, the run's metadata) and CSV (one row per round, per-class metrics named by
class), the same files ``alunet curve`` writes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from qtpy.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from napari_alunet.curve import CurvePoint, curve_points, write_curve
from napari_alunet.store.records import RoundStatus
from napari_alunet.widgets._chart import LineChart, Series
from napari_alunet.widgets._common import JobBar, group, guarded, listen, row
from napari_alunet.widgets._display import get_display
from napari_alunet.widgets._guide import next_action, round_button_text, status_text
from napari_alunet.widgets._plot import COLOURS, theme_colours
from napari_alunet.widgets._state import get_state, notify_info


def confirm_unreviewed(parent: QWidget, project: Any, confirm: Any = None) -> bool:
    """True when a new round may start: nothing waits for review, or the user agrees to
    return the unreviewed images to the pool (a dialog, or ``confirm(message)`` in tests)."""
    from qtpy.QtWidgets import QMessageBox

    current = project.current_round()
    if current is None or current.status != RoundStatus.QUEUED:
        return True
    pending = project.queue(current.idx)
    if not pending:
        return True
    button = round_button_text(project)
    message = (f"{len(pending)} image(s) of round {current.idx} still wait for review. "
               f"{button} returns them to the unlabelled pool unreviewed. {button} anyway?")
    if confirm is None:
        go = QMessageBox.question(parent, button, message) == \
            QMessageBox.StandardButton.Yes
    else:
        go = bool(confirm(message))
    if go:
        notify_info(f"{len(pending)} unreviewed image(s) returned to the pool")
    return go


class RoundsWidget(QWidget):
    """The round button (same name as Train's), the rounds so far, and the learning curve
    with exports."""

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.state = get_state(napari_viewer)
        get_display(napari_viewer)
        self.points: list[CurvePoint] = []

        self.next_button = QPushButton(round_button_text(None))
        self.next_button.setToolTip("Train on all labels so far, evaluate on the test pool, "
                                    "score the pool and queue new images for review")
        self.next_button.clicked.connect(lambda: self.next_round())
        self.restart_button = QPushButton("Restart round")
        self.restart_button.setToolTip(
            "Abandon the unfinished current round (it stays in the history; its model is never "
            "reused) so that the next round starts with the settings of the panels now: the "
            "way out of a round stuck on the settings it was started with")
        self.restart_button.clicked.connect(lambda: self.restart_round())
        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        self.job_bar = JobBar(self.state, {"round"})

        self.table = QTableWidget(0, 5)
        self.table.setHorizontalHeaderLabels(["round", "status", "labelled", "effort (px)",
                                              "test Dice"])
        # cast: the stubs type the headers optional; a QTableWidget always has both.
        cast(QHeaderView, self.table.verticalHeader()).setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        cast(QHeaderView, self.table.horizontalHeader()).setSectionResizeMode(
            QHeaderView.ResizeMode.ResizeToContents)
        cast(QHeaderView, self.table.horizontalHeader()).setStretchLastSection(True)
        self.table.setMaximumHeight(150)

        colours = theme_colours(napari_viewer)
        self.by_labelled = LineChart("Test Dice / labelled images", "labelled images",
                                     colours, ylim=(0.0, 1.0), height=180)
        self.by_effort = LineChart("Test Dice / annotation effort", "pixels changed", colours,
                                   ylim=(0.0, 1.0), height=180)
        for chart in (self.by_labelled, self.by_effort):
            chart.placeholder = "no evaluated round yet"
        self.png_button = QPushButton("PNG...")
        self.svg_button = QPushButton("SVG...")
        self.csv_button = QPushButton("CSV...")
        self.png_button.clicked.connect(lambda: self.export("png"))
        self.svg_button.clicked.connect(lambda: self.export("svg"))
        self.csv_button.clicked.connect(lambda: self.export("csv"))

        layout = QVBoxLayout(self)
        layout.addWidget(self.summary)
        layout.addWidget(row(self.next_button, self.restart_button))
        layout.addWidget(self.job_bar)
        # One above the other at the dock's full width: side by side each was ~130 px wide.
        layout.addWidget(group("Learning curve", self.by_labelled, self.by_effort,
                               row(QLabel("Export"), self.png_button, self.svg_button,
                                   self.csv_button, stretch=True)))
        # Shown instead of an empty table.
        self.table_empty = QLabel("No round yet: the round button above trains the first one.")
        self.table_empty.setWordWrap(True)
        layout.addWidget(group("Rounds", self.table_empty, self.table))
        layout.addStretch(1)

        listen(self, self.state.project_changed, self.refresh)
        listen(self, self.state.round_finished, self.refresh)
        listen(self, self.state.labels_changed, self.refresh)
        listen(self, self.state.busy_changed, self._busy_changed)
        listen(self, self.state.queue_changed, self.refresh)
        self.refresh()

    @guarded
    def next_round(self, *, confirm: Any = None) -> Any:
        """Start the next round (or resume the unfinished one) in a worker.

        With images still waiting for review, asks first (they would return to the pool
        unreviewed); ``confirm`` (tests) answers instead of the dialog.
        """
        project = self.state.require_project(writable=True)
        if not confirm_unreviewed(self, project, confirm):
            return None
        return self.state.run_round()

    @guarded
    def restart_round(self, *, confirm: Any = None) -> Any:
        """Abandon the current unfinished round; asks first when its queue has images.

        ``confirm`` (tests) answers the question instead of a dialog: a callable taking the
        message and returning True to go on.
        """
        from qtpy.QtWidgets import QMessageBox

        from napari_alunet.loop import restart_round

        project = self.state.require_project(writable=True)
        current = project.current_round()
        pending = project.queue(current.idx) if current is not None else []
        drop = False
        if pending:
            assert current is not None  # pending is [] without a round
            message = (f"Round {current.idx} has {len(pending)} image(s) waiting for review. "
                       "Restarting returns them to the unlabelled pool. Restart anyway?")
            if confirm is None:
                answer = QMessageBox.question(self, "Restart round", message)
                drop = answer == QMessageBox.StandardButton.Yes
            else:
                drop = bool(confirm(message))
            if not drop:
                return None
        abandoned = restart_round(project, drop_queue=drop)
        notify_info(f"round {abandoned.idx} abandoned; {round_button_text(project)} starts "
                    "afresh with the current settings")
        self.state.queue_changed.emit()
        self.refresh()
        return abandoned

    def _busy_changed(self, _name: str) -> None:
        self.refresh()  # the next action changes with the job (and texts must not go stale)

    def _busy(self, name: str) -> None:
        project = self.state.project
        self.next_button.setText(round_button_text(project))
        self.next_button.setEnabled(not name and project is not None and not project.read_only)
        self.restart_button.setEnabled(not name and project is not None
                                       and not project.read_only)
        for button in (self.png_button, self.svg_button, self.csv_button):
            button.setEnabled(project is not None)

    # -- curve --------------------------------------------------------------------------------
    def refresh(self) -> None:
        project = self.state.project
        self._busy(self.state.job.name if self.state.job else "")
        self.points = curve_points(project) if project is not None else []
        dice = [p.mean_dice for p in self.points]
        names = [f"r{p.round_idx}" for p in self.points]
        self.by_labelled.set_series([Series("", [float(p.n_labelled) for p in self.points],
                                            dice, COLOURS["dice"], markers=True, labels=names)])
        self.by_effort.set_series([Series("", [float(p.pixels_changed) for p in self.points],
                                          dice, COLOURS["dice"], markers=True, labels=names)])
        self._fill_table()
        # The same next step as the status line above the tabs, in the same words.
        action = next_action(project, self.state.job.name if self.state.job else "")
        current = project.current_round() if project is not None else None
        where = ("" if current is None else
                 f"Round <b>{current.idx}</b>: {status_text(current.status)}.<br>")
        self.summary.setText(f"{where}Next: {action.text}")

    def _fill_table(self) -> None:
        project = self.state.project
        rounds = project.rounds() if project is not None else []
        by_round = {p.round_idx: p for p in self.points}
        self.table.setRowCount(len(rounds))
        self.table.setVisible(bool(rounds))
        self.table_empty.setVisible(not rounds)
        for row_index, rnd in enumerate(reversed(rounds)):
            point = by_round.get(rnd.idx)
            cells = (str(rnd.idx), status_text(rnd.status), str(rnd.n_labelled or 0),
                     "" if point is None else f"{point.pixels_changed:,}",
                     "" if point is None or point.mean_dice != point.mean_dice
                     else f"{point.mean_dice:.3f}")
            for column, text in enumerate(cells):
                self.table.setItem(row_index, column, QTableWidgetItem(text))

    # -- export -------------------------------------------------------------------------------
    @guarded
    def export(self, kind: str, path: str | Path | None = None) -> Path | None:
        """Export the curve as 'png', 'svg' or 'csv' to ``path`` (asks when None)."""
        project = self.state.require_project()
        if path is None:
            default = str(project.path / f"learning_curve.{kind}")
            path, _ = QFileDialog.getSaveFileName(self, f"Export the learning curve ({kind})",
                                                  default, f"{kind.upper()} (*.{kind})")
            if not path:
                return None
        path = Path(path)
        if path.suffix.lower() != f".{kind}":  # a name typed without its suffix
            path = path.with_name(f"{path.name}.{kind}")
        write_curve(project, path)  # the same files as 'alunet curve'
        notify_info(f"wrote {path}")
        return path
