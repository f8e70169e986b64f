"""Summary statistics of an oracle-replay experiment: learning-curve area, Dice at fixed labelled
fractions, the fraction needed to reach 95 % of the full-data Dice, and paired tests against
random.

Everything here works on the long-format ``rounds.csv`` table (one row per strategy, seed and
round; see :mod:`napari_alunet.experiment.runner`) and is pure: no torch, no files except
:func:`write_summary`.

Conventions
-----------
* A learning curve is Dice ``y`` against labelled fraction ``x`` (0-1, ascending) of one
  (strategy, seed) run.
* Statistics are computed per seed first and then averaged over seeds, so that the paired tests
  compare like with like (the same seed shares the test split, the initial labelled set and the
  round-0 model across strategies).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

#: Labelled fractions at which the summary reports Dice.
SUMMARY_FRACTIONS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.5)

#: The strategy name of the full-data baseline rows.
FULL = "full"

# numpy >= 2 renamed trapz to trapezoid; the package supports numpy 1.24 too.
# np.trapz is missing from numpy>=2's stubs (but present in numpy 1.x's, hence "unused-ignore").
_trapezoid = getattr(np, "trapezoid", None) or np.trapz  # type: ignore[attr-defined, unused-ignore]


def aulc(fractions: Sequence[float], dice: Sequence[float]) -> float:
    """Normalised area under a learning curve (trapezoid rule).

    The area is divided by the width of the fraction range, so a constant curve at Dice ``d``
    scores ``d`` whatever range it covers, and runs over the same grid compare directly.

    Parameters
    ----------
    fractions : (R,) labelled fractions, ascending.
    dice : (R,) Dice at those fractions; NaN points are dropped.

    Returns
    -------
    float in the units of Dice; NaN with fewer than two valid points or a zero-width range.
    """
    x = np.asarray(fractions, dtype=np.float64)
    y = np.asarray(dice, dtype=np.float64)
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    if x.size < 2:
        return math.nan
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    width = x[-1] - x[0]
    if width <= 0:
        return math.nan
    return float(_trapezoid(y, x) / width)


def dice_at(fractions: Sequence[float], dice: Sequence[float], at: float | Sequence[float]
            ) -> np.ndarray:
    """Dice interpolated linearly at labelled fraction(s) ``at``; NaN outside the covered range.

    No extrapolation: a run that started at 12 % labelled says nothing about Dice at 10 %.

    Returns
    -------
    (len(at),) float64 array (a 1-element array for a scalar ``at``).
    """
    x = np.asarray(fractions, dtype=np.float64)
    y = np.asarray(dice, dtype=np.float64)
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    q = np.atleast_1d(np.asarray(at, dtype=np.float64))
    if x.size == 0:
        return np.full(q.shape, np.nan)
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    out = np.interp(q, x, y)
    # A tolerance so that 0.3 asked of a run recorded at 0.30000000000000004 is "reached".
    eps = 1e-9
    out[(q < x[0] - eps) | (q > x[-1] + eps)] = np.nan
    return out


def fraction_to_reach(fractions: Sequence[float], dice: Sequence[float], target: float) -> float:
    """The smallest labelled fraction at which the curve first reaches ``target`` Dice.

    Linear interpolation between the last point below and the first point at or above the
    target (the curve is not assumed monotone: the first crossing counts). NaN if the target is
    never reached or is NaN; the first fraction if the curve starts at or above it.
    """
    if target is None or math.isnan(target):
        return math.nan
    x = np.asarray(fractions, dtype=np.float64)
    y = np.asarray(dice, dtype=np.float64)
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    hit = np.flatnonzero(y >= target)
    if hit.size == 0:
        return math.nan
    i = int(hit[0])
    if i == 0:
        return float(x[0])
    x0, x1, y0, y1 = x[i - 1], x[i], y[i - 1], y[i]
    return float(x0 + (target - y0) * (x1 - x0) / (y1 - y0))


def _finite_or_nan(value: float) -> float:
    value = float(value)
    return value if math.isfinite(value) else math.nan


def complete_runs(rounds: pd.DataFrame) -> pd.DataFrame:
    """``rounds`` without the (strategy, seed) runs that stopped early (an interrupted or
    still running experiment), so that means over seeds never mix full and partial curves.

    A run is complete when it has as many rounds as the longest run; the full-data rows are
    kept.
    """
    if rounds.empty:
        return rounds
    al = rounds["strategy"] != FULL
    if not al.any():
        return rounds
    n = rounds[al].groupby(["strategy", "seed"])["round"].transform("count")
    keep = ~al
    keep[al] = n == n.max()
    return rounds[keep]


#: The effort axis of the cost curves: cumulative clicks of the corrections that bought a
#: round's labelled set (the initial set drawn from scratch).
COST_AXIS = "cumulative_correction_clicks"
#: The review axis: cumulative pixels a reviewer looked at (whole images, or only the regions
#: of a region arm), the axis on which region-level and image-level review compare.
REVIEW_AXIS = "cumulative_reviewed_pixels"


def aulc_window(
    x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray, lo: float, hi: float
) -> float:
    """Mean of the piecewise-linear curve ``y(x)`` over ``[lo, hi]`` (NaN if not covered).

    For curves whose x-axes differ run to run (annotation cost): every curve is averaged over
    the same window, the cost range that all runs of the experiment cover.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    keep: NDArray[np.bool_] = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    if x.size < 2 or not hi > lo or x.min() > lo + 1e-9 or x.max() < hi - 1e-9:
        return math.nan
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    inside = (x > lo) & (x < hi)
    grid = np.concatenate([[lo], x[inside], [hi]])
    return float(_trapezoid(np.interp(grid, x, y), grid) / (hi - lo))


def cost_window(rounds: pd.DataFrame, axis: str = COST_AXIS) -> dict[int, tuple[float, float]]:
    """Per seed, the effort range every complete run of that seed covers: (largest first x,
    smallest last x). Paired comparisons are per seed, so each seed's arms share a window."""
    runs = complete_runs(rounds)
    runs = runs[runs["strategy"] != FULL]
    if runs.empty or axis not in runs.columns:
        return {}
    grouped = runs.groupby(["seed", "strategy"])[axis]
    first, last = grouped.min().groupby(level=0).max(), grouped.max().groupby(level=0).min()
    return {int(seed): (float(first[seed]), float(last[seed])) for seed in first.index}


def per_seed_statistics(rounds: pd.DataFrame, metric: str = "mean_dice") -> pd.DataFrame:
    """Per (strategy, seed): AULC on both axes, Dice at :data:`SUMMARY_FRACTIONS`, fraction to
    95 % of full, and the final Dice per embryo mode.

    Parameters
    ----------
    rounds : the ``rounds.csv`` table (columns ``strategy``, ``seed``, ``round``, ``fraction``
        and ``metric``; optionally :data:`COST_AXIS` and ``dice_mode_*``), including the
        ``'full'`` baseline rows when available.
    metric : the Dice column the curves use.

    Returns
    -------
    One row per complete (strategy, seed) run (:func:`complete_runs`; not ``'full'``), columns
    ``aulc`` (Dice vs labelled fraction), ``aulc_cost`` (Dice vs clicks over the seed's
    :func:`cost_window`; NaN without cost columns), ``aulc_worst_mode`` (worst-mode Dice vs
    fraction; NaN without modes), ``dice_at_<pct>``, ``full_dice`` (that seed's full-data
    Dice), ``fraction_to_95``, ``n_rounds``, ``max_fraction``, ``final_<mode column>``.
    """
    rounds = complete_runs(rounds)
    full = (rounds[rounds["strategy"] == FULL].groupby("seed")[metric].mean()
            if (rounds["strategy"] == FULL).any() else pd.Series(dtype=float))
    windows = cost_window(rounds)
    review_windows = cost_window(rounds, REVIEW_AXIS)
    mode_columns = [c for c in rounds.columns if c.startswith("dice_mode_")]
    mode_columns += ["worst_mode_dice"] if "worst_mode_dice" in rounds.columns else []
    rows = []
    curves = rounds[rounds["strategy"] != FULL].sort_values(["strategy", "seed", "round"])
    for (strategy, seed), run in curves.groupby(["strategy", "seed"], sort=True):
        x = run["fraction"].to_numpy(dtype=np.float64)
        y = run[metric].to_numpy(dtype=np.float64)
        full_dice = float(full.get(seed, math.nan))
        row = {"strategy": strategy, "seed": int(seed), "aulc": aulc(x, y),
               "aulc_cost": aulc_window(run[COST_AXIS], y, *windows[int(seed)])
               if int(seed) in windows else math.nan,
               "aulc_worst_mode": aulc(x, run["worst_mode_dice"])
               if "worst_mode_dice" in run.columns else math.nan,
               "aulc_reviewed": aulc_window(run[REVIEW_AXIS], y, *review_windows[int(seed)])
               if int(seed) in review_windows else math.nan,
               "reviewed_to_95": fraction_to_reach(run[REVIEW_AXIS], y, 0.95 * full_dice)
               if REVIEW_AXIS in run.columns else math.nan,
               "full_dice": full_dice,
               "fraction_to_95": fraction_to_reach(x, y, 0.95 * full_dice),
               "n_rounds": len(run), "max_fraction": float(np.nanmax(x))}
        at = dice_at(x, y, SUMMARY_FRACTIONS)
        for f, value in zip(SUMMARY_FRACTIONS, at):
            row[f"dice_at_{round(f * 100)}"] = float(value)
        for column in mode_columns:
            row[f"final_{column}"] = float(run[column].iloc[-1])
        rows.append(row)
    return pd.DataFrame(rows)


def summarise(rounds: pd.DataFrame, *, metric: str = "mean_dice",
              reference: str = "random", margin: float = 0.01) -> pd.DataFrame:
    """The ``summary.csv`` table: one row per strategy, statistics over seeds.

    Columns: ``strategy``, ``n_seeds``, ``aulc_mean``, ``aulc_std`` (sample std, ddof 1; NaN
    with one seed), ``dice_at_10`` ... ``dice_at_50`` (means over seeds; NaN when any seed did
    not cover that fraction), ``full_dice`` (mean full-data Dice over the same seeds),
    ``fraction_to_95`` (mean over the seeds that reached 95 % of their full-data Dice; NaN if
    none did) and ``reached_95`` (how many seeds did); then the paired comparison of AULC with
    ``reference`` (:func:`napari_alunet.experiment.stats.paired_comparison`, TOST margin
    ``margin``): ``aulc_diff_vs_<reference>``, ``ci_low``, ``ci_high`` (95 % t interval),
    ``boot_ci_low``, ``boot_ci_high``, ``t_pvalue``, ``holm_pvalue``, ``wilcoxon_pvalue`` (8+
    seeds), ``tost_pvalue``, ``verdict``; the same on the cost axis (Dice vs clicks):
    ``aulc_cost_mean``, ``cost_diff``, ``cost_ci_low``, ``cost_ci_high``, ``cost_holm_pvalue``,
    ``cost_tost_pvalue``, ``cost_verdict``; ``aulc_worst_mode_mean`` and the mean final Dice
    per mode (``final_dice_mode_*``, ``final_worst_mode_dice``) when the pool has modes. The
    full-data baseline is the last row (its Dice in ``full_dice``; curve statistics NaN).
    """
    from napari_alunet.experiment.stats import paired_comparison

    per_seed = per_seed_statistics(rounds, metric)
    pct = [f"dice_at_{round(f * 100)}" for f in SUMMARY_FRACTIONS]
    diff = f"aulc_diff_vs_{reference}"
    columns = ["strategy", "n_seeds", "aulc_mean", "aulc_std", *pct, "full_dice",
               "fraction_to_95", "reached_95", diff, "ci_low", "ci_high", "boot_ci_low",
               "boot_ci_high", "t_pvalue", "holm_pvalue", "wilcoxon_pvalue", "tost_pvalue",
               "verdict", "aulc_cost_mean", "cost_diff", "cost_ci_low", "cost_ci_high",
               "cost_holm_pvalue", "cost_tost_pvalue", "cost_verdict", "aulc_reviewed_mean",
               "reviewed_diff", "reviewed_ci_low", "reviewed_ci_high", "reviewed_holm_pvalue",
               "reviewed_tost_pvalue", "reviewed_verdict", "reviewed_to_95", "reviewed_reached_95"]
    if per_seed.empty:
        return pd.DataFrame(columns=columns)
    finals = [c for c in per_seed.columns if c.startswith("final_")]
    if finals:
        columns += ["aulc_worst_mode_mean", *finals]
    tests = {}
    for axis in ("aulc", "aulc_cost", "aulc_reviewed"):
        wide = per_seed.pivot(index="seed", columns="strategy", values=axis)
        if reference in wide.columns and wide.shape[1] > 1 and wide.notna().any().any():
            tests[axis] = paired_comparison(wide, reference, margin=margin)
    # Table rows in the order the strategies were given (rounds.csv order), random first.
    present = set(per_seed["strategy"])
    order = _strategy_order([s for s in rounds["strategy"].unique() if s in present], reference)
    rows = []
    for strategy in order:
        s = per_seed[per_seed["strategy"] == strategy]
        reached = s["fraction_to_95"].notna()
        row = {
            "strategy": strategy,
            "n_seeds": len(s),
            "aulc_mean": float(s["aulc"].mean()),
            "aulc_std": float(s["aulc"].std(ddof=1)) if len(s) > 1 else math.nan,
            # skipna=False: a mean over only the seeds that got there would be biased upwards.
            **{c: float(s[c].mean(skipna=False)) for c in pct},
            "full_dice": float(s["full_dice"].mean(skipna=False)),
            "fraction_to_95": float(s.loc[reached, "fraction_to_95"].mean())
            if reached.any() else math.nan,
            "reached_95": int(reached.sum()),
            "aulc_cost_mean": float(s["aulc_cost"].mean()),
            "aulc_reviewed_mean": float(s["aulc_reviewed"].mean()),
            "reviewed_to_95": float(s["reviewed_to_95"].mean())
            if s["reviewed_to_95"].notna().any() else math.nan,
            "reviewed_reached_95": int(s["reviewed_to_95"].notna().sum()),
            **{c: float(s[c].mean()) for c in finals},
        }
        if finals:
            row["aulc_worst_mode_mean"] = float(s["aulc_worst_mode"].mean())
        for axis, prefix in (("aulc", ""), ("aulc_cost", "cost_"),
                             ("aulc_reviewed", "reviewed_")):
            test = tests.get(axis)
            if test is None or strategy not in test.index:
                continue
            t = test.loc[strategy]
            if prefix:
                row.update({f"{prefix}diff": t["mean_diff"], f"{prefix}ci_low": t["t_ci_low"],
                            f"{prefix}ci_high": t["t_ci_high"],
                            f"{prefix}holm_pvalue": t["holm_pvalue"],
                            f"{prefix}tost_pvalue": t["tost_pvalue"],
                            f"{prefix}verdict": t["verdict"]})
            else:
                row.update({diff: t["mean_diff"], "ci_low": t["t_ci_low"],
                            "ci_high": t["t_ci_high"], "boot_ci_low": t["boot_ci_low"],
                            "boot_ci_high": t["boot_ci_high"], "t_pvalue": t["t_pvalue"],
                            "holm_pvalue": t["holm_pvalue"],
                            "wilcoxon_pvalue": t["wilcoxon_pvalue"],
                            "tost_pvalue": t["tost_pvalue"], "verdict": t["verdict"]})
        rows.append(row)
    full_rows = rounds[rounds["strategy"] == FULL]
    if not full_rows.empty:
        rows.append({"strategy": FULL, "n_seeds": int(full_rows["seed"].nunique()),
                     "full_dice": float(full_rows.groupby("seed")[metric].mean().mean()),
                     "reached_95": 0})
    return pd.DataFrame(rows, columns=columns)


def _strategy_order(strategies: Sequence[str], reference: str) -> list[str]:
    """The reference first, then the others in their order of appearance (stable tables)."""
    strategies = list(dict.fromkeys(strategies))
    return ([reference] if reference in strategies else []) + [
        s for s in strategies if s != reference]


def write_summary(rounds: pd.DataFrame, path: str, **kwargs: object) -> pd.DataFrame:
    """Compute :func:`summarise` and write it as CSV (atomically); returns the table."""
    from pathlib import Path

    from napari_alunet.fileio import atomic_write_bytes

    table = summarise(rounds, **kwargs)  # type: ignore[arg-type]
    atomic_write_bytes(Path(path), table.to_csv(index=False, float_format="%.6g").encode())
    return table


def markdown_table(summary: pd.DataFrame, digits: int = 3) -> str:
    """The summary as a GitHub-flavoured Markdown table: AULC on the image and cost axes,
    each against random with its 95 % CI, Holm-corrected p and verdict, and the worst mode."""
    diff = next((c for c in summary.columns if c.startswith("aulc_diff_vs_")), None)
    modes = "aulc_worst_mode_mean" in summary.columns
    head = ["arm", "seeds", "AULC (mean ± std)", "ΔAULC vs random [95 % CI]", "Holm p",
            "TOST p (±0.01)", "verdict", "ΔAULC on clicks [95 % CI]", "verdict (clicks)",
            "fraction to 95 % of full", *(["worst-mode AULC"] if modes else [])]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def f(v: object, d: int = digits) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "–"
        return f"{v:+.{d}f}" if d < 0 else f"{float(v):.{d}f}"  # type: ignore[arg-type]

    def ci(mean: Any, low: Any, high: Any) -> str:
        if mean is None or (isinstance(mean, float) and math.isnan(mean)):
            return "–"
        return f"{float(mean):+.{digits}f} [{float(low):+.{digits}f}, {float(high):+.{digits}f}]"

    for _, r in summary.iterrows():
        if r["strategy"] == FULL:
            cells = ["full data", str(int(r["n_seeds"])), f"Dice {f(r['full_dice'])}",
                     *["–"] * (len(head) - 3)]
        else:
            std = "" if math.isnan(r["aulc_std"]) else f" ± {f(r['aulc_std'])}"
            reached = f"{f(r['fraction_to_95'], 2)} ({int(r['reached_95'])}/{int(r['n_seeds'])})"
            cells = [str(r["strategy"]), str(int(r["n_seeds"])), f(r["aulc_mean"]) + std,
                     ci(r[diff], r["ci_low"], r["ci_high"]) if diff else "–",
                     f(r["holm_pvalue"]), f(r["tost_pvalue"]),
                     str(r["verdict"]) if isinstance(r["verdict"], str) else "–",
                     ci(r["cost_diff"], r["cost_ci_low"], r["cost_ci_high"]),
                     str(r["cost_verdict"]) if isinstance(r["cost_verdict"], str) else "–",
                     reached, *([f(r["aulc_worst_mode_mean"])] if modes else [])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


__all__ = ["COST_AXIS", "FULL", "SUMMARY_FRACTIONS", "aulc", "aulc_window", "complete_runs",
           "cost_window", "dice_at", "fraction_to_reach", "markdown_table",
           "per_seed_statistics", "summarise", "write_summary"]
