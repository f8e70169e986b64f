"""Export a project's labels as class-index PNGs at each image's original size and name.

A partial label (region-level review) keeps its unreviewed pixels as ``UNKNOWN_LABEL`` (255) in
the class-index PNG, and shows them as :data:`UNKNOWN_COLOUR` (mid grey) in the colour export;
``labels.csv`` gives the count of unreviewed pixels of every file.
"""

from __future__ import annotations

import csv
import io
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from napari_alunet.config import UNKNOWN_LABEL
from napari_alunet.fileio import atomic_write_bytes, atomic_write_png

if TYPE_CHECKING:
    from napari_alunet.store import Project

_UNSAFE = re.compile(r"[\\/\x00]+")
#: Colour of unreviewed pixels in a colour export: a grey no class of the default palette uses.
UNKNOWN_COLOUR = (128, 128, 128)


def export_name(name: str) -> str:
    """The image's own name as a file name that stays inside the output folder."""
    cleaned = _UNSAFE.sub("_", name).strip()
    return "image" if cleaned in ("", ".", "..") else cleaned


def unique_export_name(name: str, used: set[str], tag: int | str) -> str:
    """:func:`export_name`, made unique among ``used`` (case-insensitively) by adding
    ``__id<tag>``; the result is added to ``used``.

    Two names that differ only in characters a file name cannot hold (``a\\b`` and ``a_b``)
    or only in case (on a case-insensitive disk) must not write one file for both.
    """
    cleaned = export_name(name)
    if cleaned.casefold() in used:
        cleaned = f"{cleaned}__id{tag}"
    used.add(cleaned.casefold())
    return cleaned


def colourise(labels: np.ndarray, colours: tuple[tuple[int, int, int], ...]) -> np.ndarray:
    """(H, W) class indices -> (H, W, 3) uint8 colour image with the project's palette;
    ``UNKNOWN_LABEL`` pixels get :data:`UNKNOWN_COLOUR`."""
    palette = np.zeros((UNKNOWN_LABEL + 1, 3), dtype=np.uint8)
    palette[: len(colours)] = np.asarray(colours, dtype=np.uint8)
    palette[UNKNOWN_LABEL] = UNKNOWN_COLOUR
    return palette[labels]


def export_labels(
    project: Project,
    out: str | os.PathLike[str],
    *,
    ground_truth: bool = False,
    colour: bool = False,
) -> list[Path]:
    """Write ``OUT/<image name>.png`` for every labelled image (its current label version).

    With ``ground_truth``, images without a committed label but with imported ground truth
    (unlabelled and test pools) are exported too. ``OUT/labels.csv`` lists what each file is.
    With ``colour``, ``OUT/colour/<name>.png`` holds the same labels in the class colours.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    rows = [("file", "image", "pool", "source", "label_version", "height", "width",
             "unknown_pixels")]
    colours = project.classes.colours
    used: set[str] = set()
    version_id: int | str  # the label version's id, or "" for ground truth
    for record in project.images():
        version = project.current_label(record.id)
        if version is not None:
            labels, source, version_id = project.read_label(record.id), version.source, version.id
        elif ground_truth and record.has_ground_truth:
            labels, source, version_id = project.read_ground_truth(record.id), "ground_truth", ""
        else:
            continue
        assert labels is not None
        name = unique_export_name(record.name, used, record.id) + ".png"
        atomic_write_png(out / name, labels)
        if colour:
            atomic_write_png(out / "colour" / name, colourise(labels, colours))
        written.append(out / name)
        rows.append((name, record.name, record.pool, source, str(version_id),
                     str(record.height), str(record.width),
                     str(int(np.count_nonzero(labels == UNKNOWN_LABEL)))))
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    atomic_write_bytes(out / "labels.csv", buffer.getvalue().encode())
    return written
