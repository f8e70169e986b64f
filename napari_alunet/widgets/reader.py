"""Drop a folder on napari: a project opens in the widgets, a pool folder shows its images.

``napari_get_reader`` claims only what it can read: a folder holding ``project.db`` (a
project) or an ``images/`` sub-folder with at least one image file (a pool). Anything else gets
None, so other readers can try. The manifest's pattern is ``*`` because napari matches
directories by name only and a project folder can have any name; the check is here.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from napari_alunet.store import DB_NAME

LayerData = list[tuple[Any, ...]]


def napari_get_reader(path: str | list[str]) -> Callable[[Any], LayerData] | None:
    """Return a reader for a project or pool folder, or None."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    folder = Path(path)
    if not folder.is_dir():
        return None
    if (folder / DB_NAME).is_file():
        return read_project
    if _pool_images(folder):
        return read_pool
    return None


def read_project(path: str | list[str]) -> LayerData:
    """Open the project in the current viewer's widgets (its image, labels and maps appear).

    Without a viewer (scripts), returns the images of the review queue instead.
    """
    from napari import current_viewer

    folder = Path(path[0] if isinstance(path, list) else path)
    viewer = current_viewer()
    if viewer is None:
        return _project_layers(folder)
    from napari_alunet.widgets._display import get_display
    from napari_alunet.widgets._state import get_state

    get_display(viewer)
    try:
        viewer.window.add_plugin_dock_widget("napari-alunet", "Active learning")
    except (KeyError, ValueError, RuntimeError):
        pass  # the plugin is not registered with napari (e.g. a development checkout)
    state = get_state(viewer)
    if state.project is None or state.project.path.resolve() != folder.resolve():
        open_or_read_only(state, folder)
    # The widgets added the real layers (image, labels, uncertainty), which stay tied to the
    # project's state: commits, the queue, the next image. ``[(None,)]`` is napari's own
    # sentinel for "read, no layers to add" (napari.plugins.io._is_null_layer_sentinel), so
    # napari adds no second, unmanaged copy of them.
    return [(None,)]


def open_or_read_only(state: Any, folder: Path) -> Any:
    """Open ``folder``; if another process holds it, say so and open it read-only."""
    from napari_alunet.store import ProjectLockedError
    from napari_alunet.widgets._state import notify_warning

    try:
        return state.open_project(folder)
    except ProjectLockedError as exc:
        notify_warning(f"{exc}. Opened read-only instead.")
        return state.open_project(folder, read_only=True)


def _project_layers(folder: Path) -> LayerData:
    from napari_alunet.store import Project

    with Project.open(folder, read_only=True) as project:
        ids = project.queue() or [r.id for r in project.images()][:1]
        return [(project.read_image(i), {"name": project.image(i).name}, "image") for i in ids]


def read_pool(path: str | list[str]) -> LayerData:
    """The pool's images as one stack (padded to the largest size, names in metadata)."""
    import numpy as np

    from napari_alunet.data.io import read_image

    folder = Path(path[0] if isinstance(path, list) else path)
    files = _pool_images(folder)
    images = [read_image(f) for f in files]
    height = max(i.shape[0] for i in images)
    width = max(i.shape[1] for i in images)
    stack = np.zeros((len(images), height, width), dtype=np.float32)
    for index, image in enumerate(images):
        stack[index, : image.shape[0], : image.shape[1]] = image
    meta = {"name": f"{folder.name} images",
            "metadata": {"names": [f.name for f in files], "source": str(folder)}}
    return [(stack, meta, "image")]


def _pool_images(folder: Path) -> list[Path]:
    from napari_alunet.data.io import IMAGE_EXTENSIONS

    try:
        subs = {p.name.lower(): p for p in folder.iterdir() if p.is_dir()}
    except OSError:
        return []
    for name in ("images", "image", "imgs", "img"):
        sub = subs.get(name)
        if sub is not None:
            try:
                entries = sorted(os.scandir(sub), key=lambda e: e.name)
            except OSError:
                return []
            return [Path(e.path) for e in entries if e.is_file()
                    and Path(e.name).suffix.lower() in IMAGE_EXTENSIONS
                    and not e.name.startswith(".")]
    return []
