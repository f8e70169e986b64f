"""Synthetic pools on disk, in the public blastocyst data layouts.

:func:`write_sample_pool` writes the sample pool (independent embryos,
:mod:`napari_alunet.data.synthetic`), :func:`write_redundant_pool` the benchmark pool with
embryo identity and rare modes (:mod:`napari_alunet.data.redundant`) and its ``pool.csv``,
which :func:`read_pool_info` reads back. Every file is written atomically; the same arguments
write the same bytes.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_alunet.config import DEFAULT_CLASS_COLOURS
from napari_alunet.data.redundant import (
    CSV_COLUMNS,
    MODES,
    POOL_CSV,
    REDUNDANT_VERSION,
    check_frames,
    check_seed,
    generate_redundant_pool,
    generate_test_set,
    mask_jitter_rng,
    mode_probabilities,
    plan_pool,
)
from napari_alunet.data.synthetic import GENERATOR_VERSION, ICM, TE, ZP, generate_pool
from napari_alunet.fileio import atomic_write_bytes, png_bytes

__all__ = ["colour_mask", "layout_roots", "pool_summary", "read_pool_info",
           "write_labelled_image", "write_pool_meta", "write_redundant_pool",
           "write_sample_pool"]


def _bmp_bytes(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8)).save(buffer, format="BMP")
    return buffer.getvalue()


def colour_mask(labels: np.ndarray, rng: np.random.Generator | None = None,
                jitter: int = 6) -> np.ndarray:
    """(H, W, 3) uint8 colour mask in the public palette, with +-``jitter`` per-channel noise
    (like the data set's lossy masks) when ``rng`` is given."""
    rgb = np.asarray(DEFAULT_CLASS_COLOURS, dtype=np.int16)[labels]
    if rng is not None and jitter:
        rgb = rgb + rng.integers(-jitter, jitter + 1, rgb.shape, dtype=np.int16)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def write_sample_pool(
    out_dir: str | Path, n: int, seed: int = 0, *, layout: str = "binary",
    shape: tuple[int, int] | None = None,
) -> Path:
    """Write a synthetic pool in the public data set's layout(s).

    Parameters
    ----------
    out_dir : folder to write into (created).
    n, seed, shape : as :func:`generate_pool`.
    layout : ``"binary"``: ``images/<name>.BMP`` and ``GT_ICM/<name> ICM_Mask.bmp``,
        ``GT_TE/<name> TE_Mask.bmp``, ``GT_ZP/<name> ZP_Mask.bmp`` (0/255; the blastocoel is
        derived by importers); ``"rgb"``: ``images/<name>.png`` and colour masks
        ``masks/<name>.png`` (public palette, +-6 jitter); ``"both"``: ``binary/`` and ``rgb/``.

    Returns
    -------
    Path
        ``out_dir``. It also holds ``generator.json`` (version, seed, n, layout, shape) and
        ``params.json`` (the drawn modes per image name). Same arguments, same bytes.
    """
    roots = layout_roots(out_dir, layout)
    all_params: dict[str, Any] = {}
    for i, (name, image, labels, params) in enumerate(generate_pool(n, seed, shape=shape)):
        all_params[name] = params
        write_labelled_image(roots, name, image, labels, np.random.default_rng([seed, i, 1]))
    meta = {"generator_version": GENERATOR_VERSION, "seed": int(seed), "n": int(n),
            "shape": None if shape is None else [int(v) for v in shape]}
    write_pool_meta(out_dir, roots, meta, all_params)
    return Path(out_dir)


def layout_roots(out_dir: str | Path, layout: str) -> dict[str, Path]:
    """Folder per written layout kind: ``{"binary": out}``, ``{"rgb": out}`` or, for
    ``"both"``, ``{"binary": out / "binary", "rgb": out / "rgb"}``."""
    if layout not in ("binary", "rgb", "both"):
        raise ValueError(f"layout must be 'binary', 'rgb' or 'both', not {layout!r}")
    out = Path(out_dir)
    kinds = ["binary", "rgb"] if layout == "both" else [layout]
    return {k: (out / k if layout == "both" else out) for k in kinds}


def write_labelled_image(roots: dict[str, Path], name: str, image: np.ndarray,
                         labels: np.ndarray, mask_rng: np.random.Generator) -> None:
    """Write one image and its masks into each of ``roots`` (from :func:`layout_roots`).

    Parameters
    ----------
    roots : layout kind -> folder.
    name : file stem.
    image : (h, w) uint8 grayscale.
    labels : (h, w) uint8 class indices.
    mask_rng : draws the colour jitter of the ``rgb`` mask (unused for ``binary``).
    """
    if "binary" in roots:
        root = roots["binary"]
        atomic_write_bytes(root / "images" / f"{name}.BMP", _bmp_bytes(image))
        for cls, tag in ((ICM, "ICM"), (TE, "TE"), (ZP, "ZP")):
            mask = np.where(labels == cls, 255, 0).astype(np.uint8)
            atomic_write_bytes(root / f"GT_{tag}" / f"{name} {tag}_Mask.bmp", _bmp_bytes(mask))
    if "rgb" in roots:
        root = roots["rgb"]
        atomic_write_bytes(root / "images" / f"{name}.png", png_bytes(image))
        colours = colour_mask(labels, mask_rng)
        atomic_write_bytes(root / "masks" / f"{name}.png", png_bytes(colours))


def write_pool_meta(out_dir: str | Path, roots: dict[str, Path], meta: dict[str, Any],
                    all_params: dict[str, Any]) -> None:
    """Write ``generator.json`` (``meta`` plus the layout kind) and ``params.json`` into each of
    ``roots``, and a ``generator.json`` of layout ``"both"`` into ``out_dir`` when there are two."""
    targets = [(root, kind) for kind, root in roots.items()]
    if len(roots) > 1:
        targets.append((Path(out_dir), "both"))
    for root, kind in targets:
        text = json.dumps({**meta, "layout": kind}, indent=2) + "\n"
        atomic_write_bytes(root / "generator.json", text.encode())
        if kind != "both":
            text = json.dumps(all_params, indent=1) + "\n"
            atomic_write_bytes(root / "params.json", text.encode())


def write_redundant_pool(
    out_dir: str | Path, n: int, seed: int = 0, *, layout: str = "binary",
    shape: tuple[int, int] | None = None, n_test_per_mode: int = 5,
    frames: tuple[int, int] = (3, 8),
    mode_p: Mapping[str, float] | Sequence[float] | None = None,
) -> Path:
    """Write a redundant pool and its stratified test set in the public layout(s).

    Parameters
    ----------
    out_dir : folder to write into (created).
    n, seed, shape, frames, mode_p : as :func:`generate_redundant_pool` (``n`` pool images).
    layout : ``"binary"``, ``"rgb"`` or ``"both"``, files as
        :func:`write_sample_pool` writes them.
    n_test_per_mode : test embryos per mode (:func:`generate_test_set`); their images lie
        beside the pool's, marked ``test`` in ``pool.csv``. 0: none.

    Returns
    -------
    Path
        ``out_dir``. Each layout folder also holds ``pool.csv`` (columns name, embryo, frame,
        mode, split ``pool``/``test``; pool rows first), ``params.json`` (each frame's
        parameters) and ``generator.json`` (versions and arguments). Same arguments, same bytes.
    """
    seed = check_seed(seed)
    if int(n_test_per_mode) != n_test_per_mode or n_test_per_mode < 0:
        raise ValueError("the test embryos per mode must be an integer >= 0, "
                         f"not {n_test_per_mode}")
    p = mode_probabilities(mode_p)
    frames = check_frames(frames)
    plan_pool(n, seed, frames=frames, mode_p=mode_p)  # validate n before anything is written
    roots = layout_roots(out_dir, layout)
    rows: list[tuple[Any, ...]] = [CSV_COLUMNS]
    all_params: dict[str, Any] = {}
    items = [(generate_redundant_pool(n, seed, shape=shape, frames=frames, mode_p=mode_p), "pool"),
             (generate_test_set(n_test_per_mode, seed, shape=shape), "test")]
    index = 0
    for iterator, split in items:
        for name, image, labels, info in iterator:
            all_params[name] = info["params"]
            write_labelled_image(roots, name, image, labels, mask_jitter_rng(seed, index))
            rows.append((name, info["embryo"], info["frame"], info["mode"], split))
            index += 1
    meta = {"generator_version": GENERATOR_VERSION, "redundant_version": REDUNDANT_VERSION,
            "kind": "redundant", "seed": seed, "n": int(n), "n_test_per_mode": int(n_test_per_mode),
            "frames": list(frames), "mode_p": {m: round(float(v), 12) for m, v in zip(MODES, p)},
            "shape": None if shape is None else [int(v) for v in shape]}
    write_pool_meta(out_dir, roots, meta, all_params)
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    folders = list(roots.values()) + ([Path(out_dir)] if len(roots) > 1 else [])
    for folder in folders:
        atomic_write_bytes(folder / POOL_CSV, buffer.getvalue().encode())
    return Path(out_dir)


def read_pool_info(folder: str | Path) -> dict[str, dict[str, Any]] | None:
    """Read ``pool.csv`` of a redundant pool folder.

    Returns
    -------
    dict or None
        Image name (file stem) -> ``{"embryo": int, "frame": int, "mode": str, "split": str}``;
        None when ``folder`` has no ``pool.csv`` (e.g. a plain sample pool).
    """
    path = Path(folder) / POOL_CSV
    if not path.is_file():
        return None
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = set(CSV_COLUMNS) - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path} lacks column(s) {', '.join(sorted(missing))}")
        return {row["name"]: {"embryo": int(row["embryo"]), "frame": int(row["frame"]),
                              "mode": row["mode"], "split": row["split"]} for row in reader}


def pool_summary(info: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Counts of a :func:`read_pool_info` result: images and embryos per split and mode."""
    out: dict[str, Any] = {}
    for split in ("pool", "test"):
        rows = [r for r in info.values() if r["split"] == split]
        out[split] = {"images": len(rows), "embryos": len({r["embryo"] for r in rows}),
                      "modes": {m: sum(r["mode"] == m for r in rows) for m in MODES}}
    return out
