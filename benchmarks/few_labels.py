"""Few-labels benchmark: test Dice of one fit against the number of labelled images, per recipe.

Arms (all through :func:`napari_alunet.training.recipe.train_model`, the product's one recipe):

``recipe``      the default ``TrainConfig``: step budget, warm-up + cosine, EMA, validation only
                when >= 8 images, semi-supervised term on the unlabelled rest of the training
                pool, health check with retries.
``supervised``  the same without the semi-supervised term (``semi_supervised=False``).
``legacy``      the recipe before 0.2 (``config.LEGACY_RECIPE``): 60 epochs, patience 10 epochs
                on a validation split of >= 1 image, constant LR, no EMA, no unlabelled images,
                no health check.
``full``        reference: the default recipe with every training-pool image labelled.

Data: the synthetic sample (``--pool`` images, sample seed 0, realistic sizes), a fixed test set
of ``--test`` images drawn once; the labelled sets of a seed are nested (the first n of the
seed's permutation of the training pool), so every arm and n of a seed shares its images and
its initial weights. The semi-supervised term sees the rest of the training pool, never the
test set.

Usage (2 CPU cores, ``cpu`` preset; about 12 min per seed for the default n and arms)::

    python benchmarks/few_labels.py --out runs/few_labels              # n 2 4 8 12 16, 10 seeds
    python benchmarks/few_labels.py --out runs/few_labels --seeds 5 --n 4 8
    python benchmarks/few_labels.py --out runs/few_labels --report-only

Every fit is appended to ``OUT/fits.csv`` as soon as it ends (a rerun skips finished fits, so an
interrupted run resumes). Prints and writes per arm and n: median / min / max test Dice (mean
over ICM, TE, ZP, BL), collapsed fits (Dice < 0.5), seconds per fit; the paired test of the
semi-supervised gain at each n; ``summary.csv``, ``summary.md`` and ``few_labels.png/.svg``.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from napari_alunet.config import LEGACY_RECIPE, ExperimentConfig, TrainConfig, model_preset  # noqa: E402

ARMS = ("recipe", "supervised", "legacy")
COLLAPSE = 0.5
FIELDS = ["arm", "n", "seed", "test_dice", "dice_ICM", "dice_TE", "dice_ZP", "dice_BL",
          "per_image_dice_sd", "labelled_dice", "attempts", "selection", "n_val", "n_unlabelled",
          "steps", "passes", "seconds", "threads"]


def arm_config(arm: str, seed: int, steps: int | None) -> TrainConfig:
    config = TrainConfig(seed=seed, device="cpu")
    if arm == "supervised":
        config = dataclasses.replace(config, semi_supervised=False)
    elif arm == "legacy":
        config = dataclasses.replace(config, **LEGACY_RECIPE)
    if steps is not None and arm != "legacy":
        config = dataclasses.replace(config, steps=steps)
    return config


def per_image_dice(model, images, labels, n_classes: int) -> np.ndarray:
    """(N,) mean foreground Dice of each image (the spread a validation split averages)."""
    from napari_alunet.inference import predict_labels
    from napari_alunet.training.metrics import confusion_matrix, mean_foreground_dice

    predictions = predict_labels(model, images)
    return np.array([mean_foreground_dice(confusion_matrix(p, t, n_classes))
                     for p, t in zip(predictions, labels)])


def fit_once(pool, labelled, unlabelled, config: TrainConfig, preset: str, seed: int):
    """One fit through the product's recipe on the in-memory pool: (model, TrainedModel, s)."""
    from napari_alunet.model import build_model
    from napari_alunet.training.engine import reset_parameters
    from napari_alunet.training.recipe import plan_fit, train_model

    model = reset_parameters(build_model(model_preset(preset)), seed=seed)
    plan = plan_fit(labelled, unlabelled, config, seed=seed)

    def load(ids, with_labels):
        rows = np.asarray(ids, dtype=np.intp)
        return pool.images[rows], pool.labels[rows] if with_labels else None

    start = time.perf_counter()
    gen = train_model(model, plan, load, config, n_classes=5, device="cpu")
    while True:
        try:
            event = next(gen)
        except StopIteration as stop:
            return model, stop.value, time.perf_counter() - start
        if type(event).__name__ == "HealthEvent":
            print(f"    health check: {event.message}", flush=True)


def run_fit(pool, arm: str, n: int, seed: int, train_pool: np.ndarray, test: np.ndarray,
            preset: str, steps: int | None) -> dict:
    import torch

    from napari_alunet.inference import evaluate

    order = np.random.default_rng([seed, 31]).permutation(train_pool)
    labelled = [int(i) for i in (order if n <= 0 else order[:n])]
    unlabelled = sorted(set(int(i) for i in train_pool) - set(labelled))
    assert not set(unlabelled) & set(int(i) for i in test)  # the test set never trains
    config = arm_config("recipe" if arm == "full" else arm, seed, steps)
    model, trained, seconds = fit_once(pool, labelled, unlabelled, config, preset, seed)
    metrics = evaluate(model, pool.images[test], pool.labels[test], n_classes=5)
    spread = per_image_dice(model, pool.images[test], pool.labels[test], 5)
    return {
        "arm": arm, "n": len(labelled), "seed": seed, "test_dice": metrics["mean_dice"],
        **{f"dice_{name}": metrics[f"dice_{i}"] for i, name in
           enumerate(("ICM", "TE", "ZP", "BL"), 1)},
        "per_image_dice_sd": float(np.nanstd(spread, ddof=1)),
        "labelled_dice": trained.labelled_dice, "attempts": len(trained.attempt_dice),
        "selection": trained.plan.selection, "n_val": len(trained.plan.val_ids),
        "n_unlabelled": trained.fit.n_unlabelled, "steps": trained.fit.steps_run,
        "passes": round(trained.fit.passes, 1), "seconds": round(seconds, 1),
        "threads": torch.get_num_threads(),
    }


def read_fits(path: Path):
    import pandas as pd

    if not path.is_file():
        return pd.DataFrame(columns=FIELDS)
    return pd.read_csv(path)


def append(path: Path, row: dict) -> None:
    new = not path.is_file()
    with open(path, "a", newline="") as handle:
        writer = csv.DictWriter(handle, FIELDS)
        if new:
            writer.writeheader()
        writer.writerow(row)
        handle.flush()
        os.fsync(handle.fileno())


def summarise(fits):
    """Per (arm, n): median / min / max test Dice, collapsed fits, seconds per fit."""
    import pandas as pd

    rows = []
    for (arm, n), group in fits.groupby(["arm", "n"], sort=False):
        dice = group["test_dice"].astype(float)
        rows.append({"arm": arm, "n": int(n), "seeds": len(group), "median": dice.median(),
                     "min": dice.min(), "max": dice.max(),
                     "collapsed": int((dice < COLLAPSE).sum()),
                     "retried": int((group["attempts"] > 1).sum()),
                     "seconds_median": group["seconds"].median(),
                     "steps": int(group["steps"].median())})
    table = pd.DataFrame(rows)
    order = {a: i for i, a in enumerate((*ARMS, "full"))}
    return table.sort_values(["arm", "n"], key=lambda c: c.map(order) if c.name == "arm" else c)


def paired_gain(fits, a: str = "recipe", b: str = "supervised"):
    """Per n: mean and median of Dice(a) - Dice(b) over seeds in both, paired t and Wilcoxon."""
    from scipy import stats

    out = []
    for n in sorted(fits["n"].unique()):
        left = fits[(fits.arm == a) & (fits.n == n)].set_index("seed")["test_dice"]
        right = fits[(fits.arm == b) & (fits.n == n)].set_index("seed")["test_dice"]
        seeds = left.index.intersection(right.index)
        if len(seeds) < 2:
            continue
        diff = (left[seeds] - right[seeds]).astype(float)
        t_p = stats.ttest_rel(left[seeds], right[seeds]).pvalue
        w_p = stats.wilcoxon(diff).pvalue if np.any(diff != 0) else math.nan
        out.append({"n": int(n), "pairs": len(seeds), "mean_gain": diff.mean(),
                    "median_gain": diff.median(), "wins": int((diff > 0).sum()),
                    "t_p": t_p, "wilcoxon_p": w_p})
    import pandas as pd

    return pd.DataFrame(out)


def fmt(table) -> str:
    head = list(table.columns)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in table.itertuples(index=False):  # keeps each column's type (ints stay ints)
        cells = []
        for v in row:
            if isinstance(v, float):
                cells.append("–" if math.isnan(v) else f"{v:.3f}")
            else:
                cells.append(str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(fits, full_median: float, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"recipe": "#1f77b4", "supervised": "#2ca02c", "legacy": "#d62728"}
    labels = {"recipe": "new recipe (semi-supervised)", "supervised": "new recipe, supervised only",
              "legacy": "old recipe (epochs, tiny validation)"}
    fig, ax = plt.subplots(figsize=(5.6, 3.8), dpi=150)
    for arm in ARMS:
        part = fits[fits.arm == arm]
        if part.empty:
            continue
        stats = part.groupby("n")["test_dice"].agg(["median", "min", "max"]).sort_index()
        ax.plot(stats.index, stats["median"], "o-", color=colours[arm], label=labels[arm], lw=1.6)
        ax.fill_between(stats.index, stats["min"], stats["max"], color=colours[arm], alpha=0.15,
                        lw=0)
    if math.isfinite(full_median):
        ax.axhline(full_median, color="0.3", ls="--", lw=1, label="all training images labelled")
        ax.axhline(0.95 * full_median, color="0.6", ls=":", lw=1, label="95 % of that")
    ax.set_xlabel("labelled images (seeds)")
    ax.set_ylabel("test Dice (mean of ICM, TE, ZP, BL)")
    ax.set_ylim(0, 1)
    ns = sorted(fits[fits.arm != "full"]["n"].unique())
    seeds_at = fits[fits.arm != "full"].groupby("n")["seed"].nunique()
    ax.set_xticks(ns, [f"{n}\n{seeds_at[n]} seed{'s' if seeds_at[n] > 1 else ''}" for n in ns],
                  fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    seeds = fits.groupby(["arm", "n"]).size()
    ax.set_title(f"One fit per seed: median and min–max over {seeds.min()}–{seeds.max()} seeds",
                 fontsize=9)
    fig.tight_layout()
    paths = [out / "few_labels.png", out / "few_labels.svg"]
    for path in paths:
        fig.savefig(path)
    plt.close(fig)
    return paths


def report(out: Path) -> None:
    fits = read_fits(out / "fits.csv")
    if fits.empty:
        print("no fits recorded yet")
        return
    summary = summarise(fits)
    gain = paired_gain(fits)
    full = fits[fits.arm == "full"]["test_dice"]
    full_median = float(full.median()) if len(full) else math.nan
    summary.to_csv(out / "summary.csv", index=False)
    spread = fits[fits.arm == "recipe"]["per_image_dice_sd"].median()
    n_full = int(fits[fits.arm == "full"]["n"].max()) if len(full) else 0
    text = [
        "## Test Dice per arm and labelled images", "", fmt(summary), "",
        f"Full data (all {n_full} training images, default recipe): median {full_median:.3f} "
        f"over {len(full)} seed(s); "
        f"95 % of it: {0.95 * full_median:.3f}.", "",
        "## Semi-supervised gain (recipe - supervised), paired over seeds", "",
        fmt(gain) if not gain.empty else "(not enough paired seeds yet)", "",
        f"Per-image Dice spread (SD over the test images, recipe arm, median over fits): "
        f"{spread:.3f}; the standard error of a k-image validation mean is that / sqrt(k).",
    ]
    (out / "summary.md").write_text("\n".join(text) + "\n")
    print("\n".join(text))
    paths = plot(fits, full_median, out)
    print("wrote " + ", ".join(str(p) for p in [out / "summary.csv", out / "summary.md", *paths]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--n", type=int, nargs="+", default=[2, 4, 8, 12, 16])
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    p.add_argument("--full-seeds", type=int, default=2,
                   help="seeds of the full-data reference (default 2)")
    p.add_argument("--pool", type=int, default=100, help="synthetic images in all (default 100)")
    p.add_argument("--test", type=int, default=40, help="fixed test images (default 40)")
    p.add_argument("--preset", default="cpu")
    p.add_argument("--steps", type=int, default=None, help="override the automatic budget")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--report-only", action="store_true")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.report_only:
        report(args.out)
        return

    import torch

    from napari_alunet.experiment.pool import load_pool

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    pool = load_pool(ExperimentConfig(model=model_preset(args.preset), sample_n=args.pool,
                                      sample_seed=0))
    ids = np.random.default_rng([0, 7]).permutation(len(pool))
    test, train_pool = np.sort(ids[: args.test]), np.sort(ids[args.test:])
    print(f"pool: {len(pool)} synthetic images ({time.perf_counter() - start:.0f} s), "
          f"test {len(test)}, training pool {len(train_pool)}; torch threads {args.threads}",
          flush=True)
    fits_path = args.out / "fits.csv"
    done = {(r.arm, int(r.n), int(r.seed)) for r in read_fits(fits_path).itertuples()}
    plan = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        # Seed-major: an interrupted run holds complete, paired seeds.
        plan += [(arm, n, seed) for n in args.n for arm in args.arms]
        if seed < args.first_seed + args.full_seeds:
            plan.append(("full", len(train_pool), seed))
    for arm, n, seed in plan:
        if (arm, n, seed) in done:
            continue
        row = run_fit(pool, arm, 0 if arm == "full" else n, seed, train_pool, test,
                      args.preset, args.steps)
        append(fits_path, row)
        print(f"{arm:>10} n={n:<3} seed={seed}: test Dice {row['test_dice']:.3f} "
              f"(labelled {row['labelled_dice']:.3f}, {row['attempts']} attempt(s), "
              f"{row['selection']}, {row['steps']} steps, {row['seconds']:.0f} s)", flush=True)
    report(args.out)


if __name__ == "__main__":
    main()
