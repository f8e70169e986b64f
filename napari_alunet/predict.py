"""Segment a folder of images with a trained checkpoint, with per-pixel uncertainty.

Writes, for every image, ``masks/<name>.png`` (class indices at the original size) and
``uncertainty/<name>.tif`` (float32 entropy of the mean prediction, original size), and
``scores.csv`` with one row per image (mean uncertainty and class fractions).
"""

from __future__ import annotations

import csv
import io
import os
import time
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_alunet.data.dataset import prepare_image
from napari_alunet.events import PredictProgress  # noqa: F401 (re-exported)
from napari_alunet.export import unique_export_name
from napari_alunet.fileio import atomic_write_bytes, atomic_write_png


@dataclass
class PredictSummary:
    out: Path
    n_images: int
    method: str
    seconds: float


def predict_folder(
    checkpoint: str | os.PathLike[str],
    images_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    method: str = "mc",
    passes: int = 20,
    device: Any = None,
    batch_size: int = 8,
) -> Generator[PredictProgress, None, PredictSummary]:
    """Predict every image of ``images_dir`` (a folder of images, or a pool with ``images/``).

    Parameters
    ----------
    method : 'mc' (MC dropout), 'tta' (test-time augmentation) or 'softmax' (one pass).
    passes : MC samples for 'mc'.
    """
    import tifffile

    from napari_alunet.data.io import read_image
    from napari_alunet.data.naming import scan_pool
    from napari_alunet.inference import predict_with_uncertainty
    from napari_alunet.training.checkpoint import load_checkpoint
    from napari_alunet.training.device import resolve_device

    if method not in ("mc", "tta", "softmax"):
        raise ValueError(f"method must be 'mc', 'tta' or 'softmax', not {method!r}")
    start = time.perf_counter()
    torch_device = resolve_device(device or "auto")
    model, meta = load_checkpoint(checkpoint)
    model_config = meta["model_config"]
    size = model_config.input_size
    class_names = meta.get("class_names") or [str(i) for i in range(model_config.n_classes)]
    items = scan_pool(images_dir).items
    out = Path(out)
    rows: list[list[Any]] = [["image", "mask", "uncertainty", "mean_uncertainty"]
                             + [f"fraction_{n}" for n in class_names]]
    used: set[str] = set()  # output names taken (a\\b and a_b must not share a file)
    for first in range(0, len(items), batch_size):
        chunk = items[first : first + batch_size]
        originals = [read_image(item.image_path) for item in chunk]
        prepared = [prepare_image(image, size) for image in originals]
        batch = np.stack([canvas for canvas, _box in prepared])[:, None]
        labels, uncertainty, _probs = predict_with_uncertainty(
            model, batch, method=method, passes=passes, device=torch_device,
            batch_size=batch_size)
        for item, (_canvas, box), lab, unc in zip(chunk, prepared, labels, uncertainty):
            name = unique_export_name(item.name, used, len(rows))
            mask = box.invert_labels(lab)
            umap = box.invert_map(unc).astype(np.float32)
            atomic_write_png(out / "masks" / f"{name}.png", mask)
            buffer = io.BytesIO()
            tifffile.imwrite(buffer, umap)
            atomic_write_bytes(out / "uncertainty" / f"{name}.tif", buffer.getvalue())
            fractions = np.bincount(mask.ravel(), minlength=len(class_names)) / mask.size
            rows.append([item.name, f"masks/{name}.png", f"uncertainty/{name}.tif",
                         f"{float(umap.mean()):.6f}"] + [f"{f:.6f}" for f in fractions])
            yield PredictProgress(len(rows) - 1, len(items), item.name)
    text = io.StringIO()
    csv.writer(text).writerows(rows)
    atomic_write_bytes(out / "scores.csv", text.getvalue().encode())
    return PredictSummary(out, len(items), method, time.perf_counter() - start)
