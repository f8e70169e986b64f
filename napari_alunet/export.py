"""Export a project's labels as class-index PNGs at each image's original size and name."""

from __future__ import annotations

import csv
import io
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from napari_alunet.fileio import atomic_write_bytes, atomic_write_png

if TYPE_CHECKING:
    from napari_alunet.store import Project

_UNSAFE = re.compile(r"[\\/\x00]+")


def export_name(name: str) -> str:
    """The image's own name as a file name that stays inside the output folder."""
    cleaned = _UNSAFE.sub("_", name).strip()
    return "image" if cleaned in ("", ".", "..") else cleaned


def colourise(labels: np.ndarray, colours: tuple[tuple[int, int, int], ...]) -> np.ndarray:
    """(H, W) class indices -> (H, W, 3) uint8 colour image with the project's palette."""
    return np.asarray(colours, dtype=np.uint8)[labels]


def export_labels(
    project: "Project",
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
    rows = [("file", "image", "pool", "source", "label_version", "height", "width")]
    colours = project.classes.colours
    used: set[str] = set()
    for record in project.images():
        version = project.current_label(record.id)
        if version is not None:
            labels, source, version_id = project.read_label(record.id), version.source, version.id
        elif ground_truth and record.has_ground_truth:
            labels, source, version_id = project.read_ground_truth(record.id), "ground_truth", ""
        else:
            continue
        assert labels is not None
        name = export_name(record.name)
        if name.casefold() in used:
            # Two image names that differ only in characters a file name cannot hold (or only in
            # case, on a case-insensitive disk) must not overwrite each other: add the id.
            name = f"{name}__id{record.id}"
        used.add(name.casefold())
        name += ".png"
        atomic_write_png(out / name, labels)
        if colour:
            atomic_write_png(out / "colour" / name, colourise(labels, colours))
        written.append(out / name)
        rows.append((name, record.name, record.pool, source, str(version_id),
                     str(record.height), str(record.width)))
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    atomic_write_bytes(out / "labels.csv", buffer.getvalue().encode())
    return written
