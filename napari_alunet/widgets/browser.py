"""The image browser: every image of the project, filtered by pool, to jump to any image and
to add unlabelled ones to the review queue (issue 17).

The queue holds what the strategy chose; a researcher often knows better (an odd embryo, a
stage the model has not seen). Clicking a row shows the image (with its committed label, or
the model's prediction and maps if it is queued); "Add to review queue" computes the round
model's prediction and uncertainty maps for the selected unlabelled images in a worker
(:func:`napari_alunet.loop.queue_images`) and appends them to the queue.
"""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_alunet.store.records import RoundStatus
from napari_alunet.widgets._common import guarded, listen, row
from napari_alunet.widgets._guide import round_button_text
from napari_alunet.widgets._state import AppState, notify_info

#: Filter label -> what it keeps ('to review' is the pending queue, whatever the pool says).
FILTERS = ("all", "to review", "unlabelled", "labelled", "test")


class ImageBrowser(QWidget):
    """All images of the project in a filterable list (GUI thread only)."""

    def __init__(self, state: AppState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.filter = QComboBox()
        self.filter.addItems(FILTERS)
        self.filter.setToolTip("Which images to list")
        self.filter.currentTextChanged.connect(lambda _text: self.refresh())
        self.count = QLabel("")
        self.list = QListWidget()
        self.list.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.list.setMinimumHeight(120)
        self.list.setMaximumHeight(200)
        self.list.setToolTip("Click to show an image; Ctrl/Shift-click to select several")
        self.list.itemClicked.connect(self._clicked)
        self.list.itemSelectionChanged.connect(self._update)
        self.add_button = QPushButton("Add to review queue")
        self.add_button.setToolTip("Predict the selected unlabelled images with this round's "
                                   "model and queue them after the strategy's picks")
        self.add_button.clicked.connect(lambda: self.add_selected())
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(row(self.filter, self.count, stretch=True))
        layout.addWidget(self.list)
        layout.addWidget(self.add_button)
        listen(self, state.project_changed, self.refresh)
        listen(self, state.queue_changed, self.refresh)
        listen(self, state.labels_changed, self.refresh)
        listen(self, state.busy_changed, self._busy)
        self.refresh()

    # -- listing ------------------------------------------------------------------------------
    def refresh(self) -> None:
        """List the project's images under the current filter (keeps the selection)."""
        project = self.state.project
        selected = set(self.selected_ids())
        self.list.clear()
        if project is None:
            self.count.setText("")
            self._update()
            return
        pending = set(project.queue())
        wanted = self.filter.currentText()
        shown = 0
        for record in project.images():
            status = "to review" if record.id in pending else record.pool
            if wanted != "all" and status != wanted:
                continue
            item = QListWidgetItem(f"{record.name}    ({status})")
            item.setData(Qt.ItemDataRole.UserRole, record.id)
            item.setData(Qt.ItemDataRole.UserRole + 1, status)
            self.list.addItem(item)
            item.setSelected(record.id in selected)
            shown += 1
        self.count.setText(f"{shown} image(s)")
        if shown == 0:
            placeholder = QListWidgetItem(f"no {wanted} images" if wanted != "all"
                                          else "no images")
            placeholder.setFlags(Qt.ItemFlag.NoItemFlags)
            self.list.addItem(placeholder)
        self._update()

    def selected_ids(self, status: str | None = None) -> list[int]:
        """Ids of the selected rows (only those with ``status``, if given)."""
        out = []
        for item in self.list.selectedItems():
            image_id = item.data(Qt.ItemDataRole.UserRole)
            if image_id is None:
                continue
            if status is None or item.data(Qt.ItemDataRole.UserRole + 1) == status:
                out.append(int(image_id))
        return out

    def select(self, image_ids: list[int]) -> None:
        """Select these ids in the list (tests and keyboard users)."""
        wanted = set(image_ids)
        for index in range(self.list.count()):
            item = self.list.item(index)
            assert item is not None  # index < count()
            image_id = item.data(Qt.ItemDataRole.UserRole)
            item.setSelected(image_id is not None and int(image_id) in wanted)

    # -- actions ------------------------------------------------------------------------------
    @guarded
    def add_selected(self) -> Any:
        """Queue the selected unlabelled images for review (in a worker)."""
        project = self.state.require_project(writable=True)
        ids = self.selected_ids("unlabelled")
        if not ids:
            raise ValueError("select one or more unlabelled images first (filter: unlabelled)")
        current = project.current_round()
        if current is None or current.status != RoundStatus.QUEUED:
            raise ValueError("no round is in review: press "
                             f"{round_button_text(project)} (Train) first")

        def done(added: list[int]) -> None:
            self.state.queue_changed.emit()
            notify_info(f"added {len(added)} image(s) to the review queue")
            if added:
                self.state.image_requested.emit(added[0])

        from napari_alunet.loop import queue_images

        return self.state.start_job("add to queue", lambda: queue_images(project, ids),
                                    on_done=done, uses_torch=True)

    def _clicked(self, item: QListWidgetItem) -> None:
        image_id = item.data(Qt.ItemDataRole.UserRole)
        if image_id is not None and self.state.project is not None:
            self.state.image_requested.emit(int(image_id))

    def _busy(self, _name: str) -> None:
        self._update()

    def _update(self) -> None:
        project = self.state.project
        writable = project is not None and not project.read_only
        self.add_button.setEnabled(writable and not self.state.busy
                                   and bool(self.selected_ids("unlabelled")))
