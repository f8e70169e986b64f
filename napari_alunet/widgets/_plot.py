"""Matplotlib helpers for exported figures, and the napari theme colours of the live charts.

The live charts in the dock widgets are painted with QPainter (:mod:`._chart`, which explains
why); matplotlib draws the figures users export, on a white background.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from matplotlib.figure import Figure

DPI = 100

#: Line colours readable on napari's dark and light themes.
COLOURS = {"train": "#4fa3ff", "val": "#ffa23a", "dice": "#5fd068", "effort": "#c792ea",
           "unlabelled": "#b0b7c3"}

_LIGHT = {"background": "#ffffff", "text": "#202124", "grid": "#d0d4da"}

#: ``draw(figure, axes, data, colours)`` fills a figure's axes from plain data.
DrawFunction = Callable[[Figure, list[Any], Any, dict[str, str]], None]


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


def build_figure(draw: DrawFunction, data: Any, colours: dict[str, str], *, ncols: int,
                 size: tuple[float, float], dpi: float = DPI) -> Figure:
    """A new figure (no pyplot) with ``ncols`` axes drawn by ``draw``; ``size`` in inches."""
    figure = Figure(figsize=size, dpi=dpi, facecolor=colours["background"])
    axes = [figure.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    for ax in axes:
        style_axes(ax, colours)
    draw(figure, axes, data, colours)
    figure.subplots_adjust(left=0.12, right=0.97, bottom=0.2, top=0.86, wspace=0.38)
    return figure
