"""A matplotlib figure embedded in a dock widget, styled like napari, redrawn at most 4x/second.

Redraws happen in the GUI thread, so they are throttled: :meth:`PlotCanvas.request_draw` only
marks the figure dirty and a timer draws it, so a fast stream of epochs costs at most one draw
per :data:`DRAW_INTERVAL_MS`.
"""

from __future__ import annotations

from typing import Any

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QSizePolicy, QVBoxLayout, QWidget

DRAW_INTERVAL_MS = 250

#: Line colours readable on napari's dark and light themes.
COLOURS = {"train": "#4fa3ff", "val": "#ffa23a", "dice": "#5fd068", "effort": "#c792ea"}

_LIGHT = {"background": "#ffffff", "text": "#202124", "grid": "#d0d4da"}


def theme_colours(viewer: Any = None) -> dict[str, str]:
    """Figure background, text and grid colours of the viewer's napari theme."""
    try:
        from napari.utils.theme import get_theme

        theme = get_theme(viewer.theme if viewer is not None else "dark")
        return {"background": theme.background.as_hex(), "text": theme.text.as_hex(),
                "grid": theme.primary.as_hex()}
    except Exception:  # noqa: BLE001 - a custom theme without these keys: plain light style
        return dict(_LIGHT)


def light_colours() -> dict[str, str]:
    """Colours for exported figures (papers and slides want a white background)."""
    return dict(_LIGHT)


def style_axes(ax: Any, colours: dict[str, str]) -> None:
    ax.set_facecolor(colours["background"])
    for spine in ax.spines.values():
        spine.set_color(colours["grid"])
    ax.tick_params(colors=colours["text"], labelsize=8)
    ax.xaxis.label.set_color(colours["text"])
    ax.yaxis.label.set_color(colours["text"])
    ax.title.set_color(colours["text"])
    ax.grid(True, color=colours["grid"], linewidth=0.6, alpha=0.8)


def style_legend(legend: Any, colours: dict[str, str]) -> None:
    if legend is None:
        return
    legend.get_frame().set_facecolor(colours["background"])
    legend.get_frame().set_edgecolor(colours["grid"])
    for text in legend.get_texts():
        text.set_color(colours["text"])


class PlotCanvas(QWidget):
    """A figure with ``ncols`` axes side by side, themed, with throttled redraws."""

    def __init__(self, ncols: int = 2, *, viewer: Any = None, height: float = 2.6,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.colours = theme_colours(viewer)
        self.figure = Figure(figsize=(4.8, height), dpi=90, facecolor=self.colours["background"])
        self.axes = [self.figure.add_subplot(1, ncols, i + 1) for i in range(ncols)]
        self.figure.subplots_adjust(left=0.13, right=0.97, bottom=0.2, top=0.86, wspace=0.42)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.canvas.setMinimumHeight(int(height * 72))
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.canvas)
        self._dirty = False
        self._timer = QTimer(self)
        self._timer.setInterval(DRAW_INTERVAL_MS)
        self._timer.timeout.connect(self._draw_if_dirty)
        self._timer.start()
        for ax in self.axes:
            style_axes(ax, self.colours)

    def request_draw(self) -> None:
        """Redraw at the next timer tick (coalescing any number of requests)."""
        self._dirty = True

    def draw_now(self) -> None:
        self._dirty = False
        self.canvas.draw_idle()

    def _draw_if_dirty(self) -> None:
        if self._dirty and self.isVisible():
            self.draw_now()
