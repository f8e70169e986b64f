"""Import a folder of images (and masks) as a new project, all or nothing.

The project is built in a hidden staging folder next to the destination and renamed into place
only when every image and mask has been read, checked and written. Any error (a corrupt file, an
unmatched name, a mask of the wrong size, a full disk) removes the staging folder and leaves no
half-built project behind.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_alunet.config import ClassSpec, DataConfig
from napari_alunet.events import ImportProgress, WorkProgress  # noqa: F401 (re-exported)
from napari_alunet.fileio import TEMP_PREFIX, _fsync_dir, atomic_write_bytes, atomic_write_png
from napari_alunet.store import Project, ProjectError


@dataclass
class ImportSummary:
    project: Path
    layout: str
    counts: dict[str, int]
    n_with_ground_truth: int
    ignored: list[str] = field(default_factory=list)
    without_masks: list[str] = field(default_factory=list)
    #: Masks that decode to no pixel of a class most other images have (a wrongly encoded or
    #: empty mask file?): "name: no ICM (which 9 of 10 other masks have)".
    warnings: list[str] = field(default_factory=list)


def missing_class_warnings(present: dict[str, set[int]], class_names: list[str] | tuple[str, ...],
                           share: float = 0.8) -> list[str]:
    """Masks without a class that at least ``share`` of the other masks have.

    ``present``: image name -> the class indices its mask holds. Background is not checked.
    """
    n = len(present)
    if n < 3:
        return []
    counts = {c: sum(c in classes for classes in present.values())
              for c in range(1, len(class_names))}
    out = []
    for name, classes in present.items():
        missing = [c for c, k in counts.items() if c not in classes and k >= share * (n - 1)]
        if missing:
            what = ", ".join(f"{class_names[c]} (which {counts[c]} of the {n - 1} other masks "
                             "have)" for c in missing)
            out.append(f"{name}: no {what}")
    return out


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_file_name(image_id: int, name: str, suffix: str) -> str:
    """A file name that cannot leave its folder: id prefix, tame characters, bounded length."""
    stem = _UNSAFE.sub("_", name).strip("._")[:80] or "image"
    suffix = _UNSAFE.sub("", suffix.lower())[:8]
    return f"{image_id:06d}_{stem}{suffix}"


def split_pools(
    ids_with_gt: list[int], ids_without_gt: list[int], data: DataConfig
) -> dict[int, str]:
    """Assign pools reproducibly from ``data.seed`` by :func:`~napari_alunet.data.splits
    .split_pool` (the rule the experiment runner uses too).

    Images with ground truth can go to the test pool (``test_fraction`` of them) or the
    initial labelled pool (``initial_fraction`` of the rest, at least one when positive); the
    rest, and every image without ground truth, are unlabelled.
    """
    from napari_alunet.data.splits import initial_size, split_pool

    n = len(ids_with_gt)
    n_init = min(initial_size(n, data.initial_fraction), n - round(data.test_fraction * n))
    split = split_pool(ids_with_gt, test_fraction=data.test_fraction, initial=max(0, n_init),
                       seed=data.seed)
    pools = {i: "unlabelled" for i in ids_without_gt}
    pools.update({i: "unlabelled" for i in split.unlabelled})
    pools.update({i: "test" for i in split.test})
    pools.update({i: "labelled" for i in split.initial})
    return pools


def import_pool(
    src: str | os.PathLike[str],
    project_dir: str | os.PathLike[str],
    *,
    data: DataConfig | None = None,
    classes: ClassSpec | None = None,
    tolerance: float = 40.0,
    allow_unmatched: bool = False,
) -> Generator[ImportProgress, None, ImportSummary]:
    """Create the project ``project_dir`` from the pool folder ``src``.

    Parameters
    ----------
    src : a folder in one of the layouts ``images/ + GT_ICM/ GT_TE/ GT_ZP/`` (binary masks,
        blastocoel derived), ``images/ + masks/`` (colour masks) or ``images/`` alone.
    project_dir : must not exist yet (or be an empty folder).
    allow_unmatched : import images whose masks are missing as unlabelled images without
        ground truth, instead of refusing the whole import.

    Yields
    ------
    ImportProgress, one per image. Returns an :class:`ImportSummary`.

    Raises
    ------
    napari_alunet.data.io.InputError
        for unreadable, corrupt or mismatched input, naming the file.
    ProjectError
        if ``project_dir`` exists and is not empty.
    """
    from napari_alunet.data.io import load_item_labels, read_image
    from napari_alunet.data.naming import scan_pool

    data = data or DataConfig()
    classes = classes or ClassSpec()
    src, project_dir = Path(src), Path(project_dir)
    if project_dir.exists() and (not project_dir.is_dir() or any(project_dir.iterdir())):
        raise ProjectError(
            f"{project_dir} already exists and is not empty; choose a new project folder"
        )
    listing = scan_pool(src)
    if not allow_unmatched:
        listing.raise_if_unmatched()
    total = len(listing.items)
    if total and round(data.test_fraction * total) >= total:
        # Checked before any image is copied (every image may hold ground truth).
        raise ValueError(
            f"test_fraction {data.test_fraction} puts all {total} image(s) in the test pool: "
            "nothing is left to train on; use a smaller --test-fraction (0.2 is usual)")
    yield ImportProgress(0, total, "scan")

    project_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = project_dir.parent / f"{TEMP_PREFIX}import-{project_dir.name}-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    _remove_stale_staging(project_dir)
    project = None
    try:
        project = Project.create(staging, classes=classes, data=data,
                                 settings={"source": str(src.resolve()), "layout": listing.layout})
        rows, with_gt, without_gt, missing = [], [], [], []
        present: dict[str, set[int]] = {}
        for image_id, item in enumerate(listing.items, start=1):
            image = read_image(item.image_path)  # validates: decodable, size limits
            labels = load_item_labels(item, listing.layout, classes.colours, tolerance=tolerance)
            rel = f"images/{safe_file_name(image_id, item.name, item.image_path.suffix)}"
            payload = item.image_path.read_bytes()
            atomic_write_bytes(staging / rel, payload)
            row = {
                "id": image_id, "name": item.name, "source_name": item.image_path.name,
                "rel_path": rel, "sha256": _sha256(payload), "height": image.shape[0],
                "width": image.shape[1], "pool": "unlabelled", "gt_path": None,
                "gt_sha256": None,
            }
            if labels is not None:
                present[item.name] = set(np.unique(labels).tolist())
                gt_rel = f"masks/ground_truth/{image_id:06d}.png"
                row["gt_path"], row["gt_sha256"] = (
                    gt_rel, atomic_write_png(staging / gt_rel, labels))
                with_gt.append(image_id)
            else:
                without_gt.append(image_id)
                if listing.layout != "images":
                    missing.append(item.name)
            rows.append(row)
            yield ImportProgress(image_id, total, "image", item.name)

        pools = split_pools(with_gt, without_gt, data)
        # One transaction: the images, and the initial labelled set's ground truth as its
        # first label versions.
        project.import_rows([{**row, "pool": pools[row["id"]]} for row in rows])
        yield ImportProgress(total, total, "split")
        counts = project.counts()
        project.close()
        project = None
        # Power loss: the files are fsynced as written, but the folders' own entries (images/,
        # masks/, project.db) and the rename itself are only durable once their parent folders
        # are fsynced; without it an 'imported' project could vanish at the next boot.
        for folder in (staging, *(p for p in staging.rglob("*") if p.is_dir())):
            _fsync_dir(folder)
        if project_dir.exists():
            project_dir.rmdir()  # an empty folder the user made for the project
        os.replace(staging, project_dir)
        _fsync_dir(project_dir.parent)
    except BaseException:
        if project is not None:
            project.close()
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ImportSummary(project_dir, listing.layout, counts, len(with_gt),
                         [str(p) for p in listing.ignored], missing,
                         missing_class_warnings(present, classes.names))


def _remove_stale_staging(project_dir: Path) -> None:
    """Delete staging folders of earlier imports into ``project_dir`` whose process is gone.

    An import killed (kill -9, power loss) before its rename leaves its staging folder, a full
    copy of the pool, next to the project; nothing else would ever remove it. A folder whose
    process still runs (another import under way) is left alone.
    """
    prefix = f"{TEMP_PREFIX}import-{project_dir.name}-"
    for old in project_dir.parent.iterdir():
        pid = old.name[len(prefix):]
        if not old.name.startswith(prefix) or not pid.isdigit() or not old.is_dir():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(old, ignore_errors=True)
        except OSError:
            pass  # PermissionError: alive, another user's process


def _sha256(payload: bytes) -> str:
    import hashlib

    return hashlib.sha256(payload).hexdigest()


def import_sample(pool: str | os.PathLike[str], project: str | os.PathLike[str], n: int,
                  seed: int = 0, *, shape: tuple[int, int] | None = None,
                  data: DataConfig | None = None) -> Generator[Any, None, ImportSummary]:
    """Write a synthetic sample pool of ``n`` images into ``pool`` and import it as a new
    project (the Project panel's "sample project"); yields WorkProgress, then the import's
    ImportProgress."""
    from napari_alunet.data.sample_files import write_sample_pool

    yield WorkProgress(0, 0, f"writing {n} synthetic images to {Path(pool).name}")
    write_sample_pool(Path(pool), n, seed, layout="binary", shape=shape)
    return (yield from import_pool(pool, project, data=data))
