"""A small line chart painted with QPainter: the live plots of the dock widgets.

Why not matplotlib's ``FigureCanvasQTAgg``: drawing even a small two-axes figure costs matplotlib
~100-150 ms of pure-Python CPU (tick and text layout). In the GUI thread that froze napari for
100-300 ms at every epoch while a round trained; rendered in a helper thread it held the GIL
against the GUI thread and still caused 100-250 ms stalls on two cores
(``benchmarks/bench_gui_stall.py``). Painting a few polylines, ticks and labels with QPainter
takes well under a millisecond, so the live plots cost the GUI thread nothing measurable.
Matplotlib is still used for the exported figures (PNG/SVG), where quality matters and a click
may take a moment.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from qtpy.QtCore import QPointF, QRectF, Qt
from qtpy.QtGui import QColor, QFont, QPainter, QPainterPath, QPen
from qtpy.QtWidgets import QSizePolicy, QWidget


@dataclass
class Series:
    """One line: ``xs``/``ys`` (NaN points are skipped), colour, optional point markers."""

    name: str
    xs: list[float]
    ys: list[float]
    colour: str
    markers: bool = False
    labels: list[str] = field(default_factory=list)  # text next to each point (optional)


def nice_ticks(low: float, high: float, count: int = 4) -> list[float]:
    """About ``count`` round tick values covering [low, high] (1, 2, 2.5, 5 x 10^k steps)."""
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        return [low]
    raw = (high - low) / max(count, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.ceil(low / step - 1e-9) * step
    ticks, value = [], first
    while value <= high + 1e-9 * step:
        ticks.append(round(value, 10))
        value += step
    return ticks


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value / 1000:g}k"
    return f"{value:.3g}"


class LineChart(QWidget):
    """Title, axes with ticks, lines with optional markers, a legend and a placeholder text.

    Parameters
    ----------
    title, xlabel : texts.
    colours : 'background', 'text', 'grid' (napari theme colours, see ``_plot.theme_colours``).
    ylim : fixed y range (e.g. (0, 1) for Dice), else from the data.
    """

    def __init__(self, title: str, xlabel: str, colours: dict[str, str], *,
                 ylim: tuple[float, float] | None = None, height: int = 190,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.title, self.xlabel = title, xlabel
        self.colours = colours
        self.ylim = ylim
        self.series: list[Series] = []
        self.vline: float | None = None
        self.placeholder = "no data yet"
        self.setMinimumHeight(height)
        self.setMinimumWidth(150)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def set_series(self, series: list[Series], *, vline: float | None = None) -> None:
        self.series = series
        self.vline = vline
        self.update()  # a paint is queued; the GUI thread paints when it is free

    # -- geometry -----------------------------------------------------------------------------
    def _ranges(self) -> tuple[float, float, float, float] | None:
        xs = [x for s in self.series for x, y in zip(s.xs, s.ys) if _finite(x, y)]
        ys = [y for s in self.series for x, y in zip(s.xs, s.ys) if _finite(x, y)]
        if not xs:
            return None
        x0, x1 = min(xs), max(xs)
        if x1 - x0 < 1e-9:
            # One x value: a small span around it, never below 0 for data that is never
            # negative (pixels changed 0 drew an axis from -1 to 1).
            span = max(1.0, abs(x0) * 0.05)
            x0, x1 = x0 - span, x1 + span
            if min(xs) >= 0:
                x0 = max(0.0, x0)
        if self.ylim is not None:
            y0, y1 = self.ylim
        else:
            y0, y1 = min(0.0, min(ys)), max(ys)
            y1 = y1 + 0.08 * (y1 - y0 or 1.0)
        return x0, x1, y0, y1

    def paintEvent(self, _event: Any) -> None:  # noqa: N802 - Qt API
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        text = QColor(self.colours["text"])
        grid = QColor(self.colours["grid"])
        painter.fillRect(self.rect(), QColor(self.colours["background"]))
        font = QFont(self.font())
        font.setPointSizeF(max(7.0, font.pointSizeF() * 0.85))
        painter.setFont(font)
        metrics = painter.fontMetrics()
        line_h = metrics.height()
        named = [s for s in self.series if s.name]
        # The legend gets its own line under the title: drawn inside the plot it covered the
        # curves (issue 17).
        legend_h = line_h + 2 if len(named) > 1 else 0
        plot = QRectF(8 + metrics.horizontalAdvance("0.000"), line_h + 8 + legend_h,
                      0, 0)
        plot.setRight(self.width() - 10)
        plot.setBottom(self.height() - 2 * line_h - 6)
        painter.setPen(text)
        title = metrics.elidedText(self.title, Qt.TextElideMode.ElideRight, self.width() - 8)
        painter.drawText(QRectF(0, 2, self.width(), line_h + 4),
                         Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop, title)
        painter.drawText(QRectF(plot.left(), self.height() - line_h - 2, plot.width(), line_h),
                         Qt.AlignmentFlag.AlignHCenter, self.xlabel)
        if legend_h:
            self._draw_legend(painter, named, plot.left(), line_h + 6, text)
        ranges = self._ranges()
        painter.setPen(QPen(grid, 1))
        painter.drawRect(plot)
        if ranges is None or plot.width() < 20 or plot.height() < 20:
            painter.setPen(text)
            # Wrapped: a placeholder can explain why there is no curve in a sentence.
            painter.drawText(plot.adjusted(4, 0, -4, 0),
                             int(Qt.AlignmentFlag.AlignCenter) | int(Qt.TextFlag.TextWordWrap),
                             self.placeholder)
            painter.end()
            return
        x0, x1, y0, y1 = ranges

        def to_px(x: float, y: float) -> QPointF:
            return QPointF(plot.left() + (x - x0) / (x1 - x0) * plot.width(),
                           plot.bottom() - (y - y0) / (y1 - y0) * plot.height())

        whole_x = all(float(x).is_integer() for s in self.series for x in s.xs)
        xticks = [t for t in nice_ticks(x0, x1) if not whole_x or float(t).is_integer()]
        for tick in xticks:
            point = to_px(tick, y0)
            painter.setPen(QPen(grid, 1, Qt.PenStyle.DotLine))
            painter.drawLine(QPointF(point.x(), plot.top()), QPointF(point.x(), plot.bottom()))
            painter.setPen(text)
            painter.drawText(QRectF(point.x() - 30, plot.bottom() + 2, 60, line_h),
                             Qt.AlignmentFlag.AlignHCenter, _fmt(tick))
        for tick in nice_ticks(y0, y1):
            point = to_px(x0, tick)
            painter.setPen(QPen(grid, 1, Qt.PenStyle.DotLine))
            painter.drawLine(QPointF(plot.left(), point.y()), QPointF(plot.right(), point.y()))
            painter.setPen(text)
            painter.drawText(QRectF(0, point.y() - line_h / 2, plot.left() - 4, line_h),
                             Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter,
                             _fmt(tick))
        if self.vline is not None and x0 <= self.vline <= x1:
            painter.setPen(QPen(text, 1, Qt.PenStyle.DashLine))
            top, bottom = to_px(self.vline, y1), to_px(self.vline, y0)
            painter.drawLine(top, bottom)
        painter.setClipRect(plot.adjusted(-4, -4, 4, 4))
        for series in self.series:
            colour = QColor(series.colour)
            points = [to_px(x, y) for x, y in zip(series.xs, series.ys) if _finite(x, y)]
            if not points:
                continue
            path = QPainterPath(points[0])
            for point in points[1:]:
                path.lineTo(point)
            painter.setPen(QPen(colour, 2))
            painter.drawPath(path)
            if series.markers or len(points) == 1:
                painter.setBrush(colour)
                for point in points:
                    painter.drawEllipse(point, 3, 3)
                painter.setBrush(Qt.BrushStyle.NoBrush)
            painter.setPen(text)
            for point, label in zip(points, series.labels):
                painter.drawText(point + QPointF(4, -4), label)
        painter.setClipping(False)
        painter.end()

    def _draw_legend(self, painter: QPainter, named: list[Series], left: float, top: float,
                     text: QColor) -> None:
        """Series names side by side on one line (from ``left``, at ``top``)."""
        metrics = painter.fontMetrics()
        x = left
        for series in named:
            middle = top + metrics.height() / 2
            painter.setPen(QPen(QColor(series.colour), 2))
            painter.drawLine(QPointF(x, middle), QPointF(x + 14, middle))
            painter.setPen(text)
            painter.drawText(QPointF(x + 18, top + metrics.ascent()), series.name)
            x += 18 + metrics.horizontalAdvance(series.name) + 12


def _finite(x: float, y: float) -> bool:
    return x is not None and y is not None and math.isfinite(x) and math.isfinite(y)
