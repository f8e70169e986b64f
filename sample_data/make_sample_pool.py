"""Write a synthetic blastocyst pool, the preview montage, or the realism table.

Examples
--------
    python sample_data/make_sample_pool.py pool/ --n 60 --seed 0 --layout binary
    python sample_data/make_sample_pool.py --preview sample_data/preview.png
    python sample_data/make_sample_pool.py --stats 20
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from napari_alunet.config import DEFAULT_CLASS_COLOURS
from napari_alunet.data import sample_files
from napari_alunet.data import synthetic as syn

REAL = {  # real-image figures (sample_data/README.md), order background, ICM, TE, ZP, BL
    "fraction": (0.40, 0.10, 0.16, 0.20, 0.15),
    "mean intensity": (128, 107, 106, 122, 111),
    "5x5 local std": (5.2, 15.6, 21.2, 9.7, 12.8),
}


def overlay(image: np.ndarray, labels: np.ndarray, alpha: float = 0.35) -> np.ndarray:
    """Grey image with the class colours blended in (background left as is)."""
    rgb = np.repeat(image[..., None], 3, axis=2).astype(float)
    colours = np.asarray(DEFAULT_CLASS_COLOURS, dtype=float)[labels]
    out = np.where(labels[..., None] > 0, rgb * (1 - alpha) + colours * alpha, rgb)
    return out.astype(np.uint8)


def preview(path: Path, seed: int = 0) -> Path:
    """A 3 x 2 montage (image | overlay, half size) of different stages, palette PNG."""
    from PIL import Image

    wanted = ["full", "expanded", "blastocyst", "hatching", "collapsed", "hatched"]
    found: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    i = 0
    while len(found) < len(wanted) and i < 500:
        rng = np.random.default_rng([seed, i])
        params = syn.draw_params(rng, (377, 447))
        key = "collapsed" if params.collapsed else params.stage_name
        if key in wanted and key not in found:
            image, labels, _ = syn.generate_blastocyst(rng, params=params)
            found[key] = (image[::2, ::2], labels[::2, ::2])
        i += 1
    tiles = [np.concatenate([np.repeat(im[..., None], 3, 2), overlay(im, lab)], axis=1)
             for im, lab in (found[k] for k in wanted if k in found)]
    rows = [np.concatenate(tiles[j:j + 2], axis=1) for j in range(0, len(tiles) - 1, 2)]
    montage = Image.fromarray(np.concatenate(rows, axis=0)).quantize(colors=256, dither=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    montage.save(path, optimize=True)
    return path


def stats_table(n: int = 20, seed: int = 123) -> str:
    """Markdown table: mean over ``n`` full-size images vs the real figures."""
    from scipy import ndimage as ndi

    acc: dict[str, list] = {k: [] for k in REAL}
    whole = []
    for i in range(n):
        image, labels, _ = syn.generate_blastocyst(np.random.default_rng([seed, i]))
        x = image.astype(float)
        m = ndi.uniform_filter(x, 5)
        sd = np.sqrt(np.maximum(ndi.uniform_filter(x * x, 5) - m * m, 0))
        acc["fraction"].append(np.bincount(labels.ravel(), minlength=5) / labels.size)
        acc["mean intensity"].append([x[labels == k].mean() for k in range(5)])
        acc["5x5 local std"].append([sd[labels == k].mean() for k in range(5)])
        whole.append((x.mean(), x.std()))
    lines = ["| figure | background | ICM | TE | ZP | BL |", "|---|---|---|---|---|---|"]
    for key, real in REAL.items():
        got = np.mean(acc[key], axis=0)
        fmt = "{:.2f}" if key == "fraction" else "{:.1f}"
        cells = [f"{fmt.format(g)} ({r})" for g, r in zip(got, real)]
        lines.append(f"| {key}: synthetic (real) | " + " | ".join(cells) + " |")
    wm, ws = np.mean(whole, axis=0)
    lines.append(f"\nWhole image: mean {wm:.1f} (real 119), std {ws:.1f} (real 25).")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", type=Path, help="pool folder to write")
    parser.add_argument("--n", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--layout", choices=("binary", "rgb", "both"), default="binary")
    parser.add_argument("--preview", type=Path, help="write the preview montage here")
    parser.add_argument("--stats", type=int, metavar="N", help="print the realism table")
    args = parser.parse_args(argv)
    if args.out is not None:
        sample_files.write_sample_pool(args.out, args.n, args.seed, layout=args.layout)
        print(f"wrote {args.n} images ({args.layout}) to {args.out}")
    if args.preview is not None:
        print(f"wrote {preview(args.preview)}")
    if args.stats:
        print(stats_table(args.stats))
    if args.out is None and args.preview is None and not args.stats:
        parser.print_help()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
