"""Matplotlib figures without pyplot (no GUI state): the helpers exported figures share.

The CLI (``alunet curve``) and the Rounds panel's export both draw with these, on a white
background, so a figure looks the same from either.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from matplotlib.figure import Figure

DPI = 100

_LIGHT = {"background": "#ffffff", "text": "#202124", "grid": "#d0d4da"}

#: ``draw(figure, axes, data, colours)`` fills a figure's axes from plain data.
DrawFunction = Callable[[Figure, list[Any], Any, dict[str, str]], None]


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
