"""The napari theme colours of the live charts (painted with QPainter, see :mod:`._chart`).

Exported figures are drawn by :mod:`napari_alunet.figures` (core, no Qt).
"""

from __future__ import annotations

from typing import Any

from napari_alunet.figures import light_colours

#: Line colours readable on napari's dark and light themes.
COLOURS = {"train": "#4fa3ff", "val": "#ffa23a", "dice": "#5fd068", "effort": "#c792ea",
           "unlabelled": "#b0b7c3"}


def theme_colours(viewer: Any = None) -> dict[str, str]:
    """Figure background, text and grid colours of the viewer's napari theme."""
    try:
        from napari.utils.theme import get_theme

        theme = get_theme(viewer.theme if viewer is not None else "dark")
        return {"background": theme.background.as_hex(), "text": theme.text.as_hex(),
                "grid": theme.primary.as_hex()}
    except Exception:  # noqa: BLE001 - a custom theme without these keys: plain light style
        return light_colours()
