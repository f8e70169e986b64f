"""Paired statistics over seeds that can also say "no difference" or "we cannot tell".

A plain paired test answers only "is there a difference?". A benchmark of acquisition strategies
needs three answers per arm compared with the reference (normally ``random``):

* **better / worse**: the paired t-test rejects "no difference" after a Holm-Bonferroni
  correction over all arms compared in the same call (several arms against one reference means
  several chances of a false positive);
* **equivalent**: two one-sided t-tests (TOST) reject "the mean difference is at least
  ``margin`` away from zero", i.e. the arm is shown to be within ``±margin`` of the reference;
* **inconclusive**: neither, which with a handful of seeds is the honest answer for most
  arms; an A/A arm (random with another seed) should land here or in "equivalent", never in
  "better"/"worse" except by the ``alpha`` chance.

Conventions
-----------
* ``values`` has one row per seed and one column per arm (e.g. AULC); a seed is used for an arm
  when both the arm and the reference have a value there (NaN = missing).
* ``diff = arm - reference`` per seed; positive means the arm scored higher.
* Degenerate differences (all identical, so the sample standard deviation is 0) are treated as
  the limit of the t statistic ``mean / se`` as ``se -> 0``: ``+-inf`` when the numerator is
  non-zero (p-values 0 or 1) and ``0`` when it is exactly zero (``0 / 0``; p-values as for
  ``t = 0``). Nothing becomes NaN for this reason, so a table of identical arms does not crash
  the verdicts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

#: Fewest pairs for which :func:`paired_comparison` reports a Wilcoxon signed-rank p-value.
#: The smallest two-sided exact p-value attainable with ``n`` non-zero differences is
#: ``2 / 2**n``: 0.0625 at n = 5, so below 6 pairs the test cannot reject at 0.05 whatever the
#: data; at 6 and 7 it rejects only when (almost) every seed has the same sign, which makes it a
#: sign test in disguise. From 8 pairs it has a usable range, hence this threshold.
WILCOXON_MIN_PAIRS = 8

#: The output columns of :func:`paired_comparison`, in order.
COLUMNS: tuple[str, ...] = (
    "n_pairs", "mean_diff", "sd_diff", "t_ci_low", "t_ci_high", "boot_ci_low", "boot_ci_high",
    "t_pvalue", "holm_pvalue", "wilcoxon_pvalue", "tost_pvalue", "verdict",
)


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm-Bonferroni step-down adjusted p-values, NaN-aware.

    With ``m`` valid p-values sorted ascending ``p_(1) <= ... <= p_(m)``, the adjusted value of
    ``p_(i)`` is ``max_{j <= i} min(1, (m - j + 1) p_(j))`` (the running maximum keeps the
    adjusted values in the order of the raw ones). Rejecting where the adjusted p-value is below
    ``alpha`` controls the family-wise error rate at ``alpha`` under any dependence, which
    matters here because all arms are compared with the same reference column.

    Parameters
    ----------
    pvalues : (m_total,) p-values in [0, 1]; NaN entries (a comparison that could not be made)
        stay NaN and do not count in ``m``.

    Returns
    -------
    (m_total,) float64 array of adjusted p-values in the input order.
    """
    p = np.asarray(pvalues, dtype=np.float64).ravel()
    out = np.full(p.shape, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    m = valid.size
    if m == 0:
        return out
    if np.any((p[valid] < 0) | (p[valid] > 1)):
        raise ValueError("p-values must lie in [0, 1]")
    # Stable sort: tied p-values keep their input order, so the result is deterministic.
    order = valid[np.argsort(p[valid], kind="stable")]
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(scaled)
    return out


def tost_paired(diff: Sequence[float] | np.ndarray, margin: float) -> float:
    """Two one-sided paired t-tests (TOST) for equivalence within ``±margin``.

    Null hypothesis: the true mean difference is ``<= -margin`` or ``>= +margin``. It is
    rejected when both one-sided tests reject, so the TOST p-value is the larger of the two
    one-sided p-values. ``p < alpha`` is the same as the ``1 - 2 alpha`` t interval (90 % for
    ``alpha = 0.05``) lying inside ``(-margin, margin)``.

    Parameters
    ----------
    diff : (n,) paired differences; NaN entries are dropped.
    margin : the equivalence margin, > 0, in the units of ``diff``.

    Returns
    -------
    float p-value; NaN with fewer than two differences. With identical differences (sd 0) the
    one-sided statistics are ``+-inf`` (see the module notes): p = 0 when ``|mean| < margin``
    (e.g. two arms that produced exactly the same numbers are equivalent), p = 1 when it is
    beyond the margin, 0.5 exactly on it.
    """
    _check_margin(margin)
    d = _clean(diff)
    n = d.size
    if n < 2:
        return math.nan
    from scipy import stats

    mean, sd = _mean_sd(d)
    se = sd / math.sqrt(n)
    df = n - 1
    # H0a: mu <= -margin, rejected for large (mean + margin) / se.
    p_low = float(stats.t.sf(_ratio(mean + margin, se), df))
    # H0b: mu >= +margin, rejected for small (mean - margin) / se.
    p_high = float(stats.t.cdf(_ratio(mean - margin, se), df))
    return max(p_low, p_high)


def paired_comparison(values: pd.DataFrame, reference: str = "random", *,
                      margin: float = 0.01, alpha: float = 0.05, n_boot: int = 10000,
                      seed: int = 0) -> pd.DataFrame:
    """Compare every arm with ``reference`` over seeds: intervals, tests and a verdict.

    Parameters
    ----------
    values : (n_seeds, n_arms) one row per seed, one column per arm (e.g. AULC); NaN where a
        run is missing. Each arm uses the seeds where both it and the reference have a value.
    reference : the column every other arm is compared with.
    margin : equivalence margin for TOST, in the units of ``values`` (0.01 = one Dice point of
        AULC).
    alpha : significance level of the tests; the intervals are ``1 - alpha`` (95 % by default).
    n_boot : bootstrap resamples.
    seed : seed of the bootstrap generator. Every arm restarts the generator from ``seed``, so
        an arm's interval does not depend on which other arms are in the table.

    Returns
    -------
    DataFrame indexed by ``strategy`` (one row per arm other than the reference, in column
    order) with the columns of :data:`COLUMNS`:

    * ``n_pairs``: seeds with both values.
    * ``mean_diff``, ``sd_diff``: mean and sample standard deviation (ddof 1) of
      ``arm - reference`` over those seeds.
    * ``t_ci_low``, ``t_ci_high``: ``mean_diff +- t_{1-alpha/2, n-1} sd / sqrt(n)``.
    * ``boot_ci_low``, ``boot_ci_high``: percentile bootstrap interval of the mean difference
      (seeds resampled with replacement). With few seeds it is narrower than the t interval
      (it ignores the uncertainty of the sd), so it is reported as a cross-check of the t
      interval's normality assumption only; verdicts use the t-based tests.
    * ``t_pvalue``: two-sided paired t-test (the same as ``scipy.stats.ttest_rel``).
    * ``holm_pvalue``: ``t_pvalue`` Holm-adjusted over the arms of this call (:func:`holm`).
    * ``wilcoxon_pvalue``: two-sided Wilcoxon signed-rank test, only with at least
      :data:`WILCOXON_MIN_PAIRS` (8) pairs, NaN below: with 5 or fewer pairs the test cannot
      reach p < 0.05 at all and with 6-7 only if every seed agrees in sign. 1.0 when all
      differences are zero.
    * ``tost_pvalue``: :func:`tost_paired` with ``margin``; not multiplicity-adjusted.
    * ``verdict``: ``"better"`` if ``holm_pvalue < alpha`` and ``mean_diff > 0``, ``"worse"``
      if ``holm_pvalue < alpha`` and ``mean_diff < 0``, else ``"equivalent"`` if
      ``tost_pvalue < alpha``, else ``"inconclusive"``. A difference can be both significant
      and inside the margin (tiny but very consistent); it is then reported as better/worse
      and the TOST column shows that it is also negligible.

    With fewer than two pairs every statistic except ``n_pairs`` (and ``mean_diff`` with one
    pair) is NaN and the verdict is ``"inconclusive"``.

    Raises
    ------
    ValueError
        If ``reference`` is not a column of ``values``, or ``margin``/``alpha``/``n_boot`` are
        out of range.
    """
    if reference not in values.columns:
        raise ValueError(f"reference {reference!r} is not a column of values "
                         f"({list(values.columns)})")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha!r}")
    _check_margin(margin)
    if int(n_boot) < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot!r}")
    from scipy import stats

    ref = pd.to_numeric(values[reference], errors="coerce").to_numpy(dtype=np.float64)
    rows = []
    for arm in values.columns:
        if arm == reference:
            continue
        col = pd.to_numeric(values[arm], errors="coerce").to_numpy(dtype=np.float64)
        both = ~(np.isnan(col) | np.isnan(ref))
        diff = col[both] - ref[both]
        n = int(diff.size)
        row: dict[str, object] = {c: math.nan for c in COLUMNS}
        row.update(strategy=arm, n_pairs=n, verdict="inconclusive")
        if n >= 1:
            row["mean_diff"] = float(diff.mean())
        if n >= 2:
            mean, sd = _mean_sd(diff)
            se = sd / math.sqrt(n)
            df = n - 1
            half = float(stats.t.ppf(1 - alpha / 2, df)) * se
            row.update(
                mean_diff=mean, sd_diff=sd,
                t_ci_low=mean - half, t_ci_high=mean + half,
                t_pvalue=float(2 * stats.t.sf(abs(_ratio(mean, se)), df)),
                tost_pvalue=tost_paired(diff, margin),
            )
            row["boot_ci_low"], row["boot_ci_high"] = _bootstrap_ci(
                diff, alpha=alpha, n_boot=int(n_boot), seed=seed)
        if n >= WILCOXON_MIN_PAIRS:
            row["wilcoxon_pvalue"] = _wilcoxon(diff)
        rows.append(row)

    table = pd.DataFrame(rows, columns=["strategy", *COLUMNS]).set_index("strategy")
    table["n_pairs"] = table["n_pairs"].astype(int)
    if table.empty:
        return table
    table["holm_pvalue"] = holm(table["t_pvalue"].to_numpy(dtype=np.float64))
    # NaN compares False, so arms without a test fall through to "inconclusive".
    significant = table["holm_pvalue"].to_numpy() < alpha
    mean = table["mean_diff"].to_numpy(dtype=np.float64)
    equivalent = table["tost_pvalue"].to_numpy(dtype=np.float64) < alpha
    verdict = np.where(significant & (mean > 0), "better",
                       np.where(significant & (mean < 0), "worse",
                                np.where(equivalent, "equivalent", "inconclusive")))
    table["verdict"] = verdict.astype(object)
    return table


# --------------------------------------------------------------------------------------------
# helpers


def _clean(diff: Sequence[float] | np.ndarray) -> np.ndarray:
    d = np.asarray(diff, dtype=np.float64).ravel()
    return d[~np.isnan(d)]


def _check_margin(margin: float) -> None:
    try:
        ok = math.isfinite(float(margin)) and float(margin) > 0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"margin must be a finite number > 0, got {margin!r}")


def _mean_sd(d: np.ndarray) -> tuple[float, float]:
    """Mean and sample sd (ddof 1) of ``d`` (n >= 2), exactly 0 sd when all values are equal.

    ``np.std`` of identical values can come out as 1e-17 instead of 0 (rounding in the mean),
    which would turn "all seeds agree" into an arbitrary huge t; checking the range first makes
    the degenerate case exactly the documented limit.
    """
    if np.ptp(d) == 0:
        return float(d[0]), 0.0
    return float(d.mean()), float(d.std(ddof=1))


def _ratio(num: float, se: float) -> float:
    """``num / se`` with the limits of the module notes for ``se == 0``."""
    if se > 0:
        return num / se
    if num == 0:
        return 0.0
    return math.copysign(math.inf, num)


def _bootstrap_ci(d: np.ndarray, *, alpha: float, n_boot: int, seed: int
                  ) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``d`` (resampling seeds), deterministic."""
    if np.ptp(d) == 0:
        return float(d[0]), float(d[0])
    rng = np.random.default_rng(seed)
    # One (n_boot, n) index draw: vectorised, and n (seeds) is small.
    idx = rng.integers(0, d.size, size=(n_boot, d.size))
    means = d[idx].mean(axis=1)
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def _wilcoxon(d: np.ndarray) -> float:
    from scipy import stats

    if np.all(d == 0):
        return 1.0  # every seed identical: nothing to reject (scipy would refuse)
    try:
        p = float(stats.wilcoxon(d, alternative="two-sided").pvalue)
    except ValueError:
        return math.nan
    return p if math.isfinite(p) else math.nan


__all__ = ["COLUMNS", "WILCOXON_MIN_PAIRS", "holm", "paired_comparison", "tost_paired"]
