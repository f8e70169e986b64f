"""The queue as a strip of thumbnails above the Review controls (issue 17).

One small picture per image waiting for review, in queue order, the one on screen selected;
a click shows that image. Thumbnails are made once per image (the image read and shrunk to
:data:`SIDE` pixels) and kept while the project is open, so redrawing the strip after a commit
reads nothing from disk.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from qtpy.QtCore import QSize, Qt
from qtpy.QtGui import QIcon, QImage, QPixmap
from qtpy.QtWidgets import QListView, QListWidget, QListWidgetItem, QWidget

from napari_alunet.widgets._common import listen
from napari_alunet.widgets._state import AppState

#: Side of a thumbnail, pixels.
SIDE = 64
#: Thumbnails shown at most (a queue is k images a round; a long one ends with "...").
MAX_SHOWN = 40


def thumbnail(image: np.ndarray, side: int = SIDE) -> np.ndarray:
    """(side', side'') uint8: ``image`` (h, w) shrunk by striding to at most ``side`` a side,
    contrast-stretched between its 1st and 99th percentiles (vectorised, no resampling
    library: this runs on the GUI thread)."""
    image = np.asarray(image, dtype=np.float32)
    step = max(1, int(np.ceil(max(image.shape) / side)))
    small = image[::step, ::step]
    lo, hi = np.percentile(small, [1, 99]) if small.size else (0.0, 1.0)
    scaled = (small - lo) / max(float(hi - lo), 1e-6)
    return (np.clip(scaled, 0.0, 1.0) * 255).astype(np.uint8)


class QueueStrip(QListWidget):
    """Thumbnails of the pending review queue; a click shows the image (GUI thread only)."""

    def __init__(self, state: AppState, display: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.app_state = state
        self.display = display
        self._cache: dict[int, QIcon] = {}
        self.setViewMode(QListView.ViewMode.IconMode)
        self.setFlow(QListView.Flow.LeftToRight)
        self.setWrapping(False)
        self.setIconSize(QSize(SIDE, SIDE))
        self.setFixedHeight(SIDE + 38)
        self.setMovement(QListView.Movement.Static)
        self.setToolTip("The images waiting for review, in queue order: click one to show it")
        self.itemClicked.connect(self._clicked)
        listen(self, state.project_changed, self._project_changed)
        listen(self, state.queue_changed, self.refresh)
        listen(self, state.labels_changed, self.refresh)
        listen(self, display.changed, self._select_shown)
        self._project_changed()

    def _items(self) -> list[QListWidgetItem]:
        return [item for i in range(self.count()) if (item := self.item(i)) is not None]

    def ids(self) -> list[int]:
        """The image ids shown, left to right."""
        return [int(item.data(Qt.ItemDataRole.UserRole)) for item in self._items()
                if item.data(Qt.ItemDataRole.UserRole) is not None]

    def _project_changed(self) -> None:
        self._cache.clear()
        self.refresh()

    def refresh(self) -> None:
        """Rebuild the strip from the pending queue (thumbnails from the cache)."""
        project = self.app_state.project
        self.clear()
        if project is None:
            self.setVisible(False)
            return
        pending = project.queue()
        self.setVisible(bool(pending))
        for image_id in pending[:MAX_SHOWN]:
            name = project.image(image_id).name
            item = QListWidgetItem(self._icon(project, image_id), _short(name))
            item.setData(Qt.ItemDataRole.UserRole, image_id)
            item.setToolTip(name)
            self.addItem(item)
        if len(pending) > MAX_SHOWN:
            more = QListWidgetItem(f"+{len(pending) - MAX_SHOWN} more")
            more.setFlags(Qt.ItemFlag.NoItemFlags)
            self.addItem(more)
        self._select_shown()

    def _icon(self, project: Any, image_id: int) -> QIcon:
        icon = self._cache.get(image_id)
        if icon is None:
            try:
                pixels = np.ascontiguousarray(thumbnail(project.read_image(image_id)))
            except (OSError, ValueError):
                pixels = np.zeros((SIDE, SIDE), np.uint8)  # unreadable now: a dark tile
            h, w = pixels.shape
            image = QImage(pixels.tobytes(), w, h, w, QImage.Format.Format_Grayscale8)
            icon = QIcon(QPixmap.fromImage(image.copy()))
            self._cache[image_id] = icon
        return icon

    def _select_shown(self) -> None:
        shown = self.display.current
        self.blockSignals(True)
        try:
            self.clearSelection()
            for item in self._items():
                if shown is not None and item.data(Qt.ItemDataRole.UserRole) == shown.image_id:
                    item.setSelected(True)
                    self.scrollToItem(item)
        finally:
            self.blockSignals(False)

    def _clicked(self, item: QListWidgetItem) -> None:
        image_id = item.data(Qt.ItemDataRole.UserRole)
        if image_id is not None and self.app_state.project is not None:
            self.app_state.image_requested.emit(int(image_id))


def _short(name: str, limit: int = 12) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"
