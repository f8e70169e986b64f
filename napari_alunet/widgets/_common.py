"""Small Qt building blocks shared by the dock widgets."""

from __future__ import annotations

import functools
import logging
import weakref
from collections.abc import Callable
from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtGui import QColor, QIcon, QPixmap
from qtpy.QtWidgets import (
    QComboBox,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_alunet.widgets._state import AppState, notify_error
from napari_alunet.widgets._workers import Progress

logger = logging.getLogger(__name__)

#: Errors whose message is written for the user (the core says what to do).
USER_ERRORS = (ValueError, RuntimeError, OSError, KeyError)


def guarded(method: Callable[..., Any]) -> Callable[..., Any]:
    """Run a button slot; show a user error as a napari notification instead of raising.

    A failed step changes nothing (the core's actions are transactions), so the notification
    only needs to say what to do.
    """

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except USER_ERRORS as exc:
            logger.info("%s: %s", method.__name__, exc, exc_info=True)
            notify_error(str(exc).strip("'\"") or type(exc).__name__)
            return None

    return wrapper


def listen(widget: QWidget, signal: Any, callback: Callable[..., Any]) -> None:
    """Connect a state signal to a widget's method until the widget is destroyed.

    psygnal holds bound methods weakly, but a Qt widget whose C++ side napari already deleted
    (its window closed) can still have a live Python wrapper; calling it raises and would stop
    the signal reaching the other listeners. So disconnect when Qt destroys the widget, holding
    only weak references meanwhile (a closed viewer must stay collectable).
    """
    signal.connect(callback)
    method = weakref.WeakMethod(callback)
    signal_ref = signal

    def disconnect(*_: Any) -> None:
        live = method()
        if live is not None:
            signal_ref.disconnect(live, missing_ok=True)

    widget.destroyed.connect(disconnect)


def group(title: str, *widgets: QWidget, layout: Any = None) -> QGroupBox:
    """A titled box holding ``widgets`` (or ``layout``)."""
    box = QGroupBox(title)
    inner = layout or QVBoxLayout()
    for widget in widgets:
        inner.addWidget(widget)
    box.setLayout(inner)
    return box


def row(*items: QWidget | int, stretch: bool = False) -> QWidget:
    """Widgets side by side (an int adds that much spacing)."""
    widget = QWidget()
    layout = QHBoxLayout(widget)
    layout.setContentsMargins(0, 0, 0, 0)
    for item in items:
        if isinstance(item, int):
            layout.addSpacing(item)
        else:
            layout.addWidget(item)
    if stretch:
        layout.addStretch(1)
    return widget


_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def format_score(value: float | None) -> str:
    """A score as a person reads it: ``0.0421``, ``3.18``, or ``9.32×10⁻⁶`` for very small or
    large values (never ``9.318e-06``); '–' for None/NaN."""
    if value is None or value != value:
        return "–"
    if value == 0:
        return "0"
    magnitude = abs(value)
    if 1 <= magnitude < 1e5:
        return f"{value:.3g}"
    if 0.01 <= magnitude < 1:
        return f"{value:.3f}"
    if 1e-3 <= magnitude < 0.01:
        return f"{value:.4f}"
    mantissa, exponent = f"{value:.2e}".split("e")
    return f"{mantissa}×10{str(int(exponent)).translate(_SUPERSCRIPT)}"


def hint(text: str) -> QLabel:
    """A small, wrapped explanatory label."""
    label = QLabel(text)
    label.setWordWrap(True)
    label.setTextFormat(Qt.TextFormat.RichText)
    label.setStyleSheet("font-size: 11px;")
    return label


def swatch(rgb: tuple[int, int, int], size: int = 12) -> QIcon:
    pixmap = QPixmap(size, size)
    pixmap.fill(QColor(*rgb))
    return QIcon(pixmap)


class JobBar(QWidget):
    """Progress of the state's running job: text, bar and a Stop button.

    Parameters
    ----------
    jobs : names of the jobs this bar follows (others leave it idle), e.g. ``{"round"}``.
    """

    def __init__(self, state: AppState, jobs: set[str], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.jobs = set(jobs)
        self.text = QLabel("")
        self.text.setWordWrap(True)
        self.bar = QProgressBar()
        self.bar.setTextVisible(False)
        self.bar.setMaximumHeight(10)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("Stop at the next step; everything saved so far is kept")
        self.stop_button.clicked.connect(state.stop)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.bar_row = row(self.bar, self.stop_button)
        layout.addWidget(self.bar_row)
        layout.addWidget(self.text)
        self._following = False
        listen(self, state.busy_changed, self._busy)
        listen(self, state.progress, self._progress)
        self._busy(state.job.name if state.job else "")

    def _busy(self, name: str) -> None:
        # Idle: only the last outcome ('done: ...') shows; the bar and Stop appear with a job.
        self._following = name in self.jobs
        self.stop_button.setEnabled(self._following)
        self.bar_row.setVisible(self._following)
        if self._following:
            self.bar.setRange(0, 0)
            self.text.setText(f"{name}: starting...")
        elif name:
            self.text.setText(f"waiting: {name} is running")
        elif not self.text.text().startswith(("done", "stopped", "failed")):
            self.text.setText("")
        self.text.setVisible(bool(self.text.text()))

    def _progress(self, shown: Progress) -> None:
        if not self._following:
            return
        if shown.total:
            self.bar.setRange(0, shown.total)
            self.bar.setValue(min(shown.done, shown.total))
        else:
            self.bar.setRange(0, 0)  # indeterminate
        self.text.setText(shown.text)
        self.text.setVisible(True)

    def finish(self, text: str) -> None:
        """Show a closing line (e.g. 'done: round 2 queued 4 images')."""
        self.text.setText(text)
        self.text.setVisible(True)


def ramp_pixmap(rgba: Any, height: int = 12) -> QPixmap:
    """A colour bar: the (width, 4) RGBA ramp ``rgba`` over a dark grey, as the canvas shows
    it over a dark image."""
    import numpy as np
    from qtpy.QtGui import QImage

    rgba = np.asarray(rgba, dtype=np.float32)
    width = rgba.shape[0]
    under = np.full(3, 0.25, np.float32)
    rgb = rgba[:, :3] * rgba[:, 3:] + under * (1.0 - rgba[:, 3:])
    line = (np.clip(rgb, 0.0, 1.0) * 255).astype(np.uint8)
    pixels = np.ascontiguousarray(np.repeat(line[None], height, axis=0))
    image = QImage(pixels.tobytes(), width, height, 3 * width, QImage.Format.Format_RGB888)
    return QPixmap.fromImage(image.copy())


def combo(items: Any, tooltip: str = "", item_tips: Any = None) -> QComboBox:
    """A combo box of ``items`` with a tooltip, and one per item from ``item_tips`` (a mapping
    item -> text, or texts in item order)."""
    box = QComboBox()
    items = list(items)
    box.addItems(items)
    if isinstance(item_tips, dict):
        item_tips = [item_tips.get(item, "") for item in items]
    for i, tip in enumerate(item_tips or ()):
        if tip:
            box.setItemData(i, tip, Qt.ItemDataRole.ToolTipRole)
    if tooltip:
        box.setToolTip(tooltip)
    return box
