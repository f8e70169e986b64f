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

import numpy as np
import pandas as pd

#: Labelled fractions at which the summary reports Dice.
SUMMARY_FRACTIONS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.5)

#: The strategy name of the full-data baseline rows.
FULL = "full"

# numpy >= 2 renamed trapz to trapezoid; the package supports numpy 1.24 too.
_trapezoid = getattr(np, "trapezoid", None) or np.trapz


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


def paired_tests(values: pd.DataFrame, reference: str = "random") -> pd.DataFrame:
    """Paired tests of each strategy's per-seed statistic against ``reference``.

    Parameters
    ----------
    values : one row per seed, one column per strategy (e.g. AULC), NaN where missing.
    reference : the column every other strategy is compared with.

    Returns
    -------
    One row per strategy: ``n_pairs``, ``mean_diff`` (strategy - reference), ``t_pvalue``
    (two-sided paired t-test, ``scipy.stats.ttest_rel``; NaN with fewer than two pairs) and
    ``wilcoxon_pvalue`` (two-sided signed-rank test; only with six or more pairs, because with
    fewer the smallest attainable p-value is above 0.05 and the test cannot reject). The
    reference itself and strategies without pairs get NaN.
    """
    from scipy import stats

    rows = []
    for strategy in values.columns:
        row = {"strategy": strategy, "n_pairs": 0, "mean_diff": math.nan,
               "t_pvalue": math.nan, "wilcoxon_pvalue": math.nan}
        if strategy != reference and reference in values.columns:
            pair = values[[strategy, reference]].dropna()
            n = len(pair)
            row["n_pairs"] = n
            if n:
                diff = (pair[strategy] - pair[reference]).to_numpy()
                row["mean_diff"] = float(diff.mean())
            if n >= 2:
                row["t_pvalue"] = _finite_or_nan(
                    stats.ttest_rel(pair[strategy], pair[reference]).pvalue)
            if n >= 6:
                if np.all(diff == 0):
                    row["wilcoxon_pvalue"] = 1.0  # identical curves: nothing to reject
                else:
                    row["wilcoxon_pvalue"] = _finite_or_nan(
                        stats.wilcoxon(pair[strategy], pair[reference]).pvalue)
        rows.append(row)
    return pd.DataFrame(rows).set_index("strategy")


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


def per_seed_statistics(rounds: pd.DataFrame, metric: str = "mean_dice") -> pd.DataFrame:
    """Per (strategy, seed): AULC, Dice at :data:`SUMMARY_FRACTIONS`, fraction to 95 % of full.

    Parameters
    ----------
    rounds : the ``rounds.csv`` table (columns ``strategy``, ``seed``, ``round``, ``fraction``
        and ``metric``), including the ``'full'`` baseline rows when available.
    metric : the Dice column the curves use.

    Returns
    -------
    One row per complete (strategy, seed) run (:func:`complete_runs`; not ``'full'``), columns
    ``aulc``, ``dice_at_<pct>``, ``full_dice`` (that seed's full-data Dice, NaN without a
    baseline), ``fraction_to_95``, ``n_rounds`` and ``max_fraction``.
    """
    rounds = complete_runs(rounds)
    full = (rounds[rounds["strategy"] == FULL].groupby("seed")[metric].mean()
            if (rounds["strategy"] == FULL).any() else pd.Series(dtype=float))
    rows = []
    curves = rounds[rounds["strategy"] != FULL].sort_values(["strategy", "seed", "round"])
    for (strategy, seed), run in curves.groupby(["strategy", "seed"], sort=True):
        x = run["fraction"].to_numpy(dtype=np.float64)
        y = run[metric].to_numpy(dtype=np.float64)
        full_dice = float(full.get(seed, math.nan))
        row = {"strategy": strategy, "seed": int(seed), "aulc": aulc(x, y),
               "full_dice": full_dice,
               "fraction_to_95": fraction_to_reach(x, y, 0.95 * full_dice),
               "n_rounds": len(run), "max_fraction": float(np.nanmax(x))}
        at = dice_at(x, y, SUMMARY_FRACTIONS)
        for f, value in zip(SUMMARY_FRACTIONS, at):
            row[f"dice_at_{round(f * 100)}"] = float(value)
        rows.append(row)
    return pd.DataFrame(rows)


def summarise(rounds: pd.DataFrame, *, metric: str = "mean_dice",
              reference: str = "random") -> pd.DataFrame:
    """The ``summary.csv`` table: one row per strategy, statistics over seeds.

    Columns: ``strategy``, ``n_seeds``, ``aulc_mean``, ``aulc_std`` (sample std, ddof 1; NaN
    with one seed), ``dice_at_10`` ... ``dice_at_50`` (means over seeds; NaN when any seed did not
    cover that fraction), ``full_dice`` (mean full-data Dice over the same seeds),
    ``fraction_to_95`` (mean over the seeds that reached 95 % of their full-data Dice; NaN if
    none did) and ``reached_95`` (how many seeds did), ``aulc_diff_vs_<reference>``,
    ``t_pvalue``, ``wilcoxon_pvalue`` (paired over seeds, see :func:`paired_tests`). The
    full-data baseline is the last row (its Dice in ``full_dice``; curve statistics NaN).
    """
    per_seed = per_seed_statistics(rounds, metric)
    pct = [f"dice_at_{round(f * 100)}" for f in SUMMARY_FRACTIONS]
    columns = ["strategy", "n_seeds", "aulc_mean", "aulc_std", *pct, "full_dice",
               "fraction_to_95", "reached_95", f"aulc_diff_vs_{reference}", "t_pvalue",
               "wilcoxon_pvalue"]
    if per_seed.empty:
        return pd.DataFrame(columns=columns)
    wide = per_seed.pivot(index="seed", columns="strategy", values="aulc")
    tests = paired_tests(wide, reference)
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
            f"aulc_diff_vs_{reference}": float(tests.loc[strategy, "mean_diff"]),
            "t_pvalue": float(tests.loc[strategy, "t_pvalue"]),
            "wilcoxon_pvalue": float(tests.loc[strategy, "wilcoxon_pvalue"]),
        }
        rows.append(row)
    full_rows = rounds[rounds["strategy"] == FULL]
    if not full_rows.empty:
        row = {c: math.nan for c in columns}
        row.update(strategy=FULL, n_seeds=int(full_rows["seed"].nunique()),
                   full_dice=float(full_rows.groupby("seed")[metric].mean().mean()),
                   reached_95=0)
        rows.append(row)
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
    """The summary as a GitHub-flavoured Markdown table (mean ± std AULC, p-values)."""
    pct = [c for c in summary.columns if c.startswith("dice_at_")]
    diff = next((c for c in summary.columns if c.startswith("aulc_diff_vs_")), None)
    head = ["strategy", "seeds", "AULC (mean ± std)", *[f"Dice @{c[8:]} %" for c in pct],
            "fraction to 95 % of full", "seeds reaching 95 %", "ΔAULC vs random", "paired t p",
            "Wilcoxon p"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def f(v: float, d: int = digits) -> str:
        return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{d}f}"

    for _, r in summary.iterrows():
        if r["strategy"] == FULL:
            cells = ["full data", str(int(r["n_seeds"])), f"Dice {f(r['full_dice'])}",
                     *["–"] * len(pct), "–", "–", "–", "–", "–"]
        else:
            std = "" if math.isnan(r["aulc_std"]) else f" ± {f(r['aulc_std'])}"
            cells = [str(r["strategy"]), str(int(r["n_seeds"])), f(r["aulc_mean"]) + std,
                     *[f(r[c]) for c in pct], f(r["fraction_to_95"], 2),
                     f"{int(r['reached_95'])}/{int(r['n_seeds'])}",
                     f(r[diff], 4) if diff else "–", f(r["t_pvalue"]),
                     f(r["wilcoxon_pvalue"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


__all__ = ["FULL", "SUMMARY_FRACTIONS", "aulc", "complete_runs", "dice_at", "fraction_to_reach",
           "markdown_table", "paired_tests", "per_seed_statistics", "summarise",
           "write_summary"]
