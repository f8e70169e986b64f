"""Active learning: every panel in one dock widget, as tabs (the widget to open first).

The tabs share the viewer's state (:func:`~napari_alunet.widgets._state.get_state`), so they
can also be docked one by one from the Plugins menu.
"""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QLabel, QScrollArea, QTabWidget, QVBoxLayout, QWidget

from napari_alunet.widgets._common import listen
from napari_alunet.widgets._guide import next_action, status_text
from napari_alunet.widgets._state import get_state
from napari_alunet.widgets.acquire import AcquireWidget
from napari_alunet.widgets.features import FeaturesWidget
from napari_alunet.widgets.project import ProjectWidget
from napari_alunet.widgets.review import ReviewWidget
from napari_alunet.widgets.rounds import RoundsWidget
from napari_alunet.widgets.train import TrainWidget

#: Tab title -> panel, in the order of a round.
PANELS = (("Project", ProjectWidget), ("Train", TrainWidget), ("Acquire", AcquireWidget),
          ("Review", ReviewWidget), ("Rounds", RoundsWidget), ("Model", FeaturesWidget))


class ActiveLearningWidget(QWidget):
    """Project, Train, Acquire, Review, Rounds and Model panels as tabs."""

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.state = get_state(napari_viewer)
        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        self.panels: dict[str, QWidget] = {}
        for title, cls in PANELS:
            panel = cls(napari_viewer)
            self.panels[title] = panel
            scroll = QScrollArea()
            scroll.setWidget(panel)
            scroll.setWidgetResizable(True)
            scroll.setFrameShape(QScrollArea.Shape.NoFrame)
            scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
            self.tabs.addTab(scroll, title)
        self.status = QLabel()
        self.status.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.status)
        layout.addWidget(self.tabs)
        self.setMinimumWidth(450)  # forms, tables and the charts stay readable
        listen(self, self.state.project_changed, self._project_changed)
        listen(self, self.state.queue_changed, self._update_status)
        listen(self, self.state.labels_changed, self._update_status)
        listen(self, self.state.busy_changed, self._update_status)
        listen(self, self.state.round_finished, self._update_status)
        self._update_status()

    def panel(self, title: str) -> Any:
        """The panel of a tab ('Project', 'Train', 'Acquire', 'Review', 'Rounds', 'Model')."""
        return self.panels[title]

    def show_tab(self, title: str) -> None:
        self.tabs.setCurrentIndex([t for t, _ in PANELS].index(title))

    def _project_changed(self) -> None:
        project = self.state.project
        if project is not None and project.queue():
            self.show_tab("Review")  # a reopened project continues where the user left it
        self._update_status()

    def _update_status(self, *_: Any) -> None:
        project = self.state.project
        action = next_action(project, self.state.job.name if self.state.job else "")
        if project is None:
            self.status.setText(f"<b>ALU-Net active learning</b><br>Next: {action.text}")
            return
        current = project.current_round()
        counts = project.counts()
        round_text = "no round yet" if current is None else \
            f"round {current.idx} {status_text(current.status)}"
        self.status.setText(
            f"<b>{project.path.name}</b>{' (read-only)' if project.read_only else ''} | "
            f"{round_text} | {counts['labelled']} labelled, {len(project.queue())} to review"
            f"<br>Next: {action.text}")
