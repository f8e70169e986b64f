"""Print-ready figures of an oracle-replay experiment (matplotlib, Agg backend, no GUI).

* :func:`plot_learning_curves`: mean foreground Dice against labelled fraction, mean ± std over
  seeds per strategy, with the full-data Dice and 95 % of it dashed, and one small panel per
  foreground class.
* :func:`plot_dice_vs_effort`: Dice against the cumulative annotation effort that bought it,
  counted as pixels corrected in the model's proposal versus pixels drawn from scratch.

Both write a 300 dpi PNG and an SVG next to each other and return their paths. Colours are the
Okabe-Ito palette (distinguishable with the common colour-vision deficiencies) and every
strategy also has its own marker and line style, so a greyscale print still separates them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from napari_alunet.config import ExperimentConfig
from napari_alunet.experiment.records import (
    CONFIG_FILE,
    ROUNDS_FILE,
    SUMMARY_FILE,
    load_experiment_config,
    read_rounds,
)
from napari_alunet.experiment.report import FULL, complete_runs

#: Okabe & Ito (2008) colour-blind-safe palette.
OKABE_ITO = ("#000000", "#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00",
             "#CC79A7")
#: Fixed styles for the known strategies so that figures of different runs agree; random is
#: the black reference.
STYLES: dict[str, tuple[str, str, str]] = {
    "random": ("#000000", "o", "-"),
    "entropy": ("#E69F00", "s", "-"),
    "bald": ("#0072B2", "^", "-"),
    "kl": ("#D55E00", "v", "--"),
    "js": ("#009E73", "D", "--"),
    "margin": ("#CC79A7", "P", "-."),
    "variation_ratio": ("#56B4E9", "X", "-."),
    # The benchmark's arms (README "Does active learning pay"): controls in grey and purple.
    "random#2": ("#888888", "o", ":"),
    "oracle_error": ("#CC79A7", "*", "--"),
    "bald+power": ("#0072B2", "^", "-"),
    "typical:bald+power": ("#009E73", "D", "-"),
    "bald+badge": ("#D55E00", "s", "-."),
}
FULL_COLOUR = "#555555"
DPI = 300


def _style(strategy: str, i: int) -> tuple[str, str, str]:
    return STYLES.get(strategy, (OKABE_ITO[i % len(OKABE_ITO)], "o", ":"))


def _figure(**kwargs: object):
    # A bare Figure, not pyplot: no global figure registry and no GUI backend, so this is safe
    # from a worker thread inside napari; savefig renders PNG with Agg and SVG with the SVG
    # backend whatever backend the caller has selected.
    from matplotlib.figure import Figure

    return Figure(**kwargs)  # type: ignore[arg-type]


def _curves(rounds: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """Mean and sample std over seeds per (strategy, round) of columns ``x`` and ``y``."""
    al = complete_runs(rounds)
    al = al[al["strategy"] != FULL]
    g = al.groupby(["strategy", "round"], sort=True)
    out = pd.DataFrame({
        "x": g[x].mean(), "y": g[y].mean(), "y_std": g[y].std(ddof=1).fillna(0.0),
        "n": g[y].count(),
    }).reset_index()
    return out


def _strategies(rounds: pd.DataFrame) -> list[str]:
    names = [s for s in dict.fromkeys(rounds["strategy"]) if s != FULL]
    return (["random"] if "random" in names else []) + [s for s in names if s != "random"]


def _full_dice(rounds: pd.DataFrame, column: str) -> float:
    full = rounds[rounds["strategy"] == FULL]
    if full.empty or column not in full:
        return math.nan
    return float(full.groupby("seed")[column].mean().mean())


def class_columns(rounds: pd.DataFrame, class_names: Sequence[str] | None = None) -> list[str]:
    """The per-class Dice columns of foreground classes (``dice_<name>``, background left out)."""
    if class_names is not None:
        return [f"dice_{n}" for n in list(class_names)[1:] if f"dice_{n}" in rounds]
    return [c for c in rounds.columns
            if c.startswith("dice_") and not c.startswith("dice_at") and c != "dice_background"]


def _save(fig, stem: Path) -> list[Path]:
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".svg")]
    # metadata without a date: rerunning on the same numbers gives the same SVG bytes.
    fig.savefig(paths[0], dpi=DPI, bbox_inches="tight")
    fig.savefig(paths[1], bbox_inches="tight", metadata={"Date": None})
    return paths


def _draw(ax, curves: pd.DataFrame, strategies: list[str], *, scale: float = 1.0,
          markersize: float = 4.0, band: bool = True, linewidth: float = 1.6) -> None:
    for i, strategy in enumerate(strategies):
        c = curves[curves["strategy"] == strategy]
        if c.empty:
            continue
        colour, marker, ls = _style(strategy, i)
        x = c["x"].to_numpy() * scale
        y = c["y"].to_numpy()
        n = int(c["n"].max())
        ax.plot(x, y, color=colour, marker=marker, ls=ls, lw=linewidth, ms=markersize,
                label=f"{strategy} (n={n})")
        if band and n > 1:
            s = c["y_std"].to_numpy()
            ax.fill_between(x, y - s, y + s, color=colour, alpha=0.15, lw=0)


def _full_lines(ax, full: float, *, label: bool) -> None:
    if math.isnan(full):
        return
    ax.axhline(full, color=FULL_COLOUR, ls="--", lw=1.1,
               label="full training pool" if label else None)
    ax.axhline(0.95 * full, color=FULL_COLOUR, ls=(0, (2, 2)), lw=0.9,
               label="95 % of full" if label else None)


def plot_learning_curves(rounds: pd.DataFrame, stem: str | Path, *,
                         class_names: Sequence[str] | None = None, title: str | None = None,
                         metric: str = "mean_dice") -> list[Path]:
    """Learning curves (Dice vs labelled fraction), mean ± std over seeds, per strategy.

    Parameters
    ----------
    rounds : the ``rounds.csv`` table.
    stem : output path without suffix; ``.png`` (300 dpi) and ``.svg`` are written.
    class_names : all class names in index order (index 0, background, gets no panel); by
        default taken from the ``dice_<name>`` columns.
    title : figure title.
    metric : the Dice column of the main panel.

    Returns
    -------
    [png path, svg path]
    """
    strategies = _strategies(rounds)
    per_class = class_columns(rounds, class_names)
    n_small = len(per_class)
    small_cols = max(1, math.ceil(n_small / 2))
    fig = _figure(figsize=(5.2 + 2.3 * small_cols, 4.8), layout="constrained")
    grid = fig.add_gridspec(2, 2 + small_cols, width_ratios=[1.15, 1.15] + [1.0] * small_cols)
    ax = fig.add_subplot(grid[:, :2])
    curves = _curves(rounds, "fraction", metric)
    _draw(ax, curves, strategies, scale=100)
    _full_lines(ax, _full_dice(rounds, metric), label=True)
    ax.set_xlabel("labelled fraction of the training pool (%)")
    ax.set_ylabel("test Dice, mean over foreground classes")
    names = [c[5:] for c in per_class]
    ax.set_title("mean over " + ", ".join(names) if names else "foreground classes", fontsize=10)
    ax.grid(True, alpha=0.3, lw=0.5)
    ax.legend(fontsize=8, loc="lower right", framealpha=0.9)
    share = None
    for j, column in enumerate(per_class):
        # Reading order ICM, TE / ZP, BL; a shared 0-1 scale so class difficulty compares.
        sub = fig.add_subplot(grid[j // small_cols, 2 + j % small_cols], sharex=ax,
                              sharey=share)
        if share is None:
            share = sub
            sub.set_ylim(0.0, 1.02)
        _draw(sub, _curves(rounds, "fraction", column), strategies, scale=100, markersize=2.5,
              linewidth=1.1)
        _full_lines(sub, _full_dice(rounds, column), label=False)
        sub.set_title(f"{column[5:]} Dice", fontsize=9)
        sub.tick_params(labelsize=7)
        sub.grid(True, alpha=0.3, lw=0.5)
        if j // small_cols == 1 or j + small_cols >= n_small:
            sub.set_xlabel("labelled (%)", fontsize=8)
    fig.suptitle(title or "Active learning: test Dice vs labelled fraction "
                 "(mean ± std over seeds)", fontsize=11)
    return _save(fig, Path(stem))


def _pixel_unit(max_value: float) -> tuple[float, str]:
    if max_value >= 1e6:
        return 1e-6, "million pixels"
    if max_value >= 1e3:
        return 1e-3, "thousand pixels"
    return 1.0, "pixels"


def _effort_panels(rounds: pd.DataFrame, columns: tuple[str, str], whats: tuple[str, str], *,
                   xlabel: str | tuple[str, str], scale: float, metric: str,
                   scales: tuple[float, float] | None = None):
    """Two panels: Dice against two effort columns (correct / scratch). They share the x axis
    unless ``scales`` gives each its own unit (then ``xlabel`` is one label per panel)."""
    strategies = _strategies(rounds)
    fig = _figure(figsize=(10, 4.4), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True, sharex=scales is None)
    full = _full_dice(rounds, metric)
    labels = (xlabel, xlabel) if isinstance(xlabel, str) else xlabel
    for ax, column, what, x_scale, label in zip(axes, columns, whats, scales or (scale, scale),
                                                labels):
        _draw(ax, _curves(rounds, column, metric), strategies, scale=x_scale)
        _full_lines(ax, full, label=ax is axes[0])
        ax.set_xlabel(label)
        ax.set_title(f"effort = {what}", fontsize=10)
        ax.grid(True, alpha=0.3, lw=0.5)
    axes[0].set_ylabel("test Dice, mean over foreground classes")
    axes[0].legend(fontsize=8, loc="lower right", framealpha=0.9)
    return fig, axes


def plot_dice_vs_effort(rounds: pd.DataFrame, stem: str | Path, *, title: str | None = None,
                        metric: str = "mean_dice") -> list[Path]:
    """Dice against the cumulative annotation effort that produced each round's labelled set.

    Left: effort counted as pixels corrected in the model's proposals (the initial set is drawn
    from scratch). Right: effort counted as every foreground pixel drawn from scratch. Both
    panels share their axes, so the horizontal gap between them is what correcting saves.

    Returns
    -------
    [png path, svg path]
    """
    xmax = float(np.nanmax(rounds["cumulative_scratch_pixels"].to_numpy(dtype=float)))
    al = rounds[rounds["strategy"] != FULL]
    xmax_al = float(np.nanmax(al["cumulative_scratch_pixels"].to_numpy(dtype=float))) \
        if not al.empty else xmax
    scale, unit = _pixel_unit(xmax_al)
    full = _full_dice(rounds, metric)
    fig, axes = _effort_panels(
        rounds, ("cumulative_correction_pixels", "cumulative_scratch_pixels"),
        ("correcting the model's proposals", "drawing every mask from scratch"),
        xlabel=f"cumulative annotated pixels ({unit})", scale=scale, metric=metric)
    if not math.isnan(full) and xmax > xmax_al:
        # Off the plotted range (it would squash the curves): say it in a corner instead.
        axes[1].text(0.98, 0.02, f"labelling the full training pool from scratch: "
                     f"{xmax * scale:.3g} {unit}", transform=axes[1].transAxes, ha="right",
                     va="bottom", fontsize=7, color=FULL_COLOUR)
    fig.suptitle(title or "Test Dice vs annotation effort (mean ± std over seeds)", fontsize=11)
    return _save(fig, Path(stem))


def plot_dice_vs_clicks(rounds: pd.DataFrame, stem: str | Path, *, title: str | None = None,
                        metric: str = "mean_dice") -> list[Path]:
    """Dice against the cumulative clicks that bought each round's labelled set.

    Left: correcting the model's proposals (one click per connected error region of a class,
    :func:`napari_alunet.experiment.cost.correction_clicks`); right: drawing every outline
    from scratch (polygon vertices). The initial set is drawn from scratch in both.

    Returns
    -------
    [png path, svg path]
    """
    # Each panel its own x-axis: correcting costs a fraction of drawing, and on a shared axis
    # the correction curves were squashed against the left edge.
    fig, _axes = _effort_panels(
        rounds, ("cumulative_correction_clicks", "cumulative_scratch_clicks"),
        ("correcting the model's proposals", "drawing every outline from scratch"),
        xlabel=("cumulative correction clicks", "cumulative clicks drawing from scratch"),
        scale=1.0, metric=metric, scales=(1.0, 1.0))
    fig.suptitle(title or "Test Dice vs clicks (mean ± std over seeds)", fontsize=11)
    return _save(fig, Path(stem))


def plot_dice_vs_reviewed(rounds: pd.DataFrame, stem: str | Path, *, title: str | None = None,
                          metric: str = "mean_dice") -> list[Path]:
    """Dice against what region-level and image-level review cost: the pixels a reviewer
    looked at (left, in millions) and the correction clicks (right).

    Returns
    -------
    [png path, svg path]
    """
    fig, _axes = _effort_panels(
        rounds, ("cumulative_reviewed_pixels", "cumulative_correction_clicks"),
        ("pixels reviewed", "correction clicks"),
        xlabel=("cumulative pixels reviewed (millions)", "cumulative correction clicks"),
        scale=1.0, metric=metric, scales=(1e-6, 1.0))
    fig.suptitle(title or "Test Dice vs review cost (mean ± std over seeds)", fontsize=11)
    return _save(fig, Path(stem))


def plot_modes(rounds: pd.DataFrame, stem: str | Path, *, title: str | None = None) -> list[Path]:
    """Dice per embryo mode against labelled fraction: one panel per mode, plus the worst.

    Returns
    -------
    [png path, svg path], or [] when the table has no per-mode columns.
    """
    columns = [c for c in rounds.columns if c.startswith("dice_mode_")]
    if not columns:
        return []
    columns.append("worst_mode_dice")
    strategies = _strategies(rounds)
    ncols = 4
    nrows = math.ceil(len(columns) / ncols)
    fig = _figure(figsize=(3.2 * ncols, 2.9 * nrows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, sharex=True, sharey=True)).ravel()
    for ax, column in zip(axes, columns):
        _draw(ax, _curves(rounds, "fraction", column), strategies, scale=100.0,
              markersize=2.5, band=False, linewidth=1.1)
        ax.set_title(column.removeprefix("dice_mode_").replace("_", " "), fontsize=9)
        ax.grid(True, alpha=0.3, lw=0.5)
        ax.set_xlabel("labelled (%)", fontsize=8)
    for ax in axes[len(columns):]:
        ax.set_visible(False)
    axes[0].set_ylabel("test Dice", fontsize=8)
    axes[0].legend(fontsize=6, loc="lower right", framealpha=0.9)
    fig.suptitle(title or "Test Dice per embryo mode (mean over seeds)", fontsize=11)
    return _save(fig, Path(stem))


__all__ = ["OKABE_ITO", "STYLES", "class_columns", "plot_dice_vs_clicks", "plot_dice_vs_effort",
           "plot_learning_curves", "plot_modes"]


def report_subtitle(config: ExperimentConfig, n_images: int, n_test: int) -> str:
    """The figures' second title line: data, size, preset, k, passes, warm start."""
    data = {"sample": "synthetic sample", "redundant": "synthetic benchmark pool (frames of "
            "embryos, rare modes)"}.get(config.data, Path(config.data).name)
    return (f"{data}, {n_images} images ({n_test} test), {config.preset} preset "
            f"{config.model.input_size}², k={config.k}, {config.passes} MC passes, "
            f"{'warm start' if config.train.warm_start else 'reset each round'}")


def write_report(out: str | os.PathLike[str], *, class_names: Sequence[str] | None = None,
                 subtitle: str | None = None) -> list[Path]:
    """(Re)write summary.csv and the figures from ``out/rounds.csv``; returns all paths."""
    from napari_alunet.experiment.report import write_summary

    out = Path(out)
    if not (out / ROUNDS_FILE).is_file():
        raise FileNotFoundError(f"{out / ROUNDS_FILE} does not exist: run the experiment first")
    table = read_rounds(out / ROUNDS_FILE)
    if (out / CONFIG_FILE).is_file() and (class_names is None or subtitle is None):
        config, record = load_experiment_config(out)
        class_names = class_names or record["pool"]["class_names"]
        subtitle = subtitle or report_subtitle(config, record["pool"]["n_images"],
                                         len(record["pool"]["test_ids"]))
    write_summary(table, str(out / SUMMARY_FILE))
    paths = [out / SUMMARY_FILE]
    if table.empty:
        return paths
    extra = f"\n{subtitle}" if subtitle else ""
    paths += plot_learning_curves(
        table, out / "learning_curves", class_names=class_names,
        title="Test Dice vs labelled fraction (mean ± std over seeds)" + extra)
    paths += plot_dice_vs_effort(
        table, out / "dice_vs_effort",
        title="Test Dice vs annotation effort (mean ± std over seeds)" + extra)
    if "cumulative_correction_clicks" in table.columns:
        paths += plot_dice_vs_clicks(
            table, out / "dice_vs_clicks",
            title="Test Dice vs clicks (mean ± std over seeds)" + extra)
    paths += plot_modes(table, out / "dice_per_mode",
                        title="Test Dice per embryo mode (mean over seeds)" + extra)
    return paths
