"""Paired statistics over seeds (napari_alunet.experiment.stats): Holm, TOST, intervals,
verdicts and the degenerate cases."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from napari_alunet.experiment.stats import (
    COLUMNS,
    WILCOXON_MIN_PAIRS,
    holm,
    paired_comparison,
    tost_paired,
)


def _values(diffs: dict[str, np.ndarray], seed: int = 1) -> pd.DataFrame:
    """A per-seed table: a random reference around 0.7 plus each arm = reference + diff."""
    n = len(next(iter(diffs.values())))
    ref = 0.7 + np.random.default_rng(seed).normal(0, 0.02, n)
    return pd.DataFrame({"random": ref, **{k: ref + d for k, d in diffs.items()}})


# ---------------------------------------------------------------------------------------------
# holm


def test_holm_hand_computed():
    # sorted: 0.01, 0.02, 0.03, 0.04 (m = 4) -> 0.04, 0.06, 0.06 (running max of 0.06), 0.06
    p = [0.04, 0.01, 0.03, 0.02]
    np.testing.assert_allclose(holm(p), [0.06, 0.04, 0.06, 0.06])


def test_holm_running_max_and_cap():
    # sorted 0.001, 0.2, 0.3: 3*0.001 = 0.003, 2*0.2 = 0.4, 1*0.3 = 0.3 -> max(0.4, 0.3) = 0.4
    np.testing.assert_allclose(holm([0.3, 0.001, 0.2]), [0.4, 0.003, 0.4])
    np.testing.assert_allclose(holm([0.6, 0.7]), [1.0, 1.0])


def test_holm_nan_aware():
    out = holm([0.01, math.nan, 0.04])
    # m = 2, not 3: 2 * 0.01 = 0.02, 1 * 0.04 = 0.04
    assert math.isnan(out[1])
    np.testing.assert_allclose(out[[0, 2]], [0.02, 0.04])
    assert np.isnan(holm([math.nan, math.nan])).all()
    assert holm([]).shape == (0,)
    with pytest.raises(ValueError):
        holm([1.5])


# ---------------------------------------------------------------------------------------------
# tost


def test_tost_equivalent_small_noise():
    d = np.random.default_rng(0).normal(0, 0.002, 10)
    assert tost_paired(d, 0.01) < 0.05


def test_tost_not_equivalent_when_shifted():
    d = np.random.default_rng(0).normal(0.03, 0.005, 10)
    assert tost_paired(d, 0.01) > 0.5


def test_tost_matches_two_one_sided_scipy_tests():
    d = np.random.default_rng(3).normal(0.002, 0.01, 12)
    low = stats.ttest_1samp(d, -0.01, alternative="greater").pvalue
    high = stats.ttest_1samp(d, 0.01, alternative="less").pvalue
    assert tost_paired(d, 0.01) == pytest.approx(max(low, high), rel=1e-10)


def test_tost_degenerate_and_small():
    assert tost_paired(np.zeros(5), 0.01) == 0.0       # identical arms: equivalent
    assert tost_paired(np.full(5, 0.02), 0.01) == 1.0  # constant shift beyond the margin
    assert math.isnan(tost_paired([0.001], 0.01))
    assert math.isnan(tost_paired([0.001, math.nan], 0.01))  # NaN dropped -> one value
    with pytest.raises(ValueError):
        tost_paired([0.0, 0.1], 0.0)


# ---------------------------------------------------------------------------------------------
# paired_comparison


def test_verdicts_on_synthetic_differences():
    rng = np.random.default_rng(42)
    table = _values({"aa": rng.normal(0, 0.002, 10), "good": rng.normal(0.03, 0.005, 10),
                     "bad": rng.normal(-0.03, 0.005, 10)})
    out = paired_comparison(table, margin=0.01)
    assert list(out.index) == ["aa", "good", "bad"]
    assert list(out.columns) == list(COLUMNS)
    assert out.loc["aa", "verdict"] == "equivalent"
    assert out.loc["aa", "tost_pvalue"] < 0.05
    assert out.loc["good", "verdict"] == "better"
    assert out.loc["good", "tost_pvalue"] > 0.05
    assert out.loc["bad", "verdict"] == "worse"
    assert (out["n_pairs"] == 10).all()


def test_noisy_few_seeds_is_inconclusive():
    table = _values({"noisy": np.random.default_rng(7).normal(0, 0.05, 5)})
    row = paired_comparison(table).loc["noisy"]
    assert row["verdict"] == "inconclusive"
    assert row["tost_pvalue"] > 0.05 and row["holm_pvalue"] > 0.05


def test_t_interval_and_pvalue_match_scipy():
    d = np.random.default_rng(5).normal(0.01, 0.02, 9)
    table = _values({"arm": d})
    row = paired_comparison(table, alpha=0.05).loc["arm"]
    diff = (table["arm"] - table["random"]).to_numpy()
    lo, hi = stats.t.interval(0.95, len(diff) - 1, loc=diff.mean(), scale=stats.sem(diff))
    assert row["t_ci_low"] == pytest.approx(lo, rel=1e-10)
    assert row["t_ci_high"] == pytest.approx(hi, rel=1e-10)
    assert row["t_ci_low"] < row["mean_diff"] < row["t_ci_high"]
    assert row["mean_diff"] == pytest.approx(diff.mean())
    assert row["sd_diff"] == pytest.approx(diff.std(ddof=1))
    assert row["t_pvalue"] == pytest.approx(
        stats.ttest_rel(table["arm"], table["random"]).pvalue, rel=1e-10)
    # One arm: Holm changes nothing.
    assert row["holm_pvalue"] == pytest.approx(row["t_pvalue"])


def test_holm_applied_across_arms():
    rng = np.random.default_rng(11)
    table = _values({"a": rng.normal(0.01, 0.02, 10), "b": rng.normal(0.0, 0.02, 10)})
    out = paired_comparison(table)
    np.testing.assert_allclose(out["holm_pvalue"], holm(out["t_pvalue"]))


def test_bootstrap_deterministic_and_sensible():
    table = _values({"arm": np.random.default_rng(2).normal(0.01, 0.02, 10)})
    a = paired_comparison(table, seed=3, n_boot=2000)
    b = paired_comparison(table, seed=3, n_boot=2000)
    c = paired_comparison(table, seed=4, n_boot=2000)
    assert a.loc["arm", "boot_ci_low"] == b.loc["arm", "boot_ci_low"]
    assert a.loc["arm", "boot_ci_high"] == b.loc["arm", "boot_ci_high"]
    assert a.loc["arm", "boot_ci_low"] != c.loc["arm", "boot_ci_low"]
    row = a.loc["arm"]
    assert row["boot_ci_low"] < row["mean_diff"] < row["boot_ci_high"]
    # An arm's interval does not depend on the other arms in the table.
    more = table.assign(other=table["random"] + 0.05)
    d = paired_comparison(more, seed=3, n_boot=2000)
    assert d.loc["arm", "boot_ci_low"] == row["boot_ci_low"]


def test_wilcoxon_only_from_eight_pairs():
    assert WILCOXON_MIN_PAIRS == 8
    rng = np.random.default_rng(9)
    few = paired_comparison(_values({"arm": rng.normal(0.01, 0.01, 7)})).loc["arm"]
    assert math.isnan(few["wilcoxon_pvalue"])
    assert not math.isnan(few["t_pvalue"])
    d = rng.normal(0.01, 0.01, 8)
    table = _values({"arm": d})
    enough = paired_comparison(table).loc["arm"]
    expected = stats.wilcoxon(table["arm"] - table["random"]).pvalue
    assert enough["wilcoxon_pvalue"] == pytest.approx(expected)


def test_nan_rows_are_dropped_pairwise():
    rng = np.random.default_rng(4)
    table = _values({"a": rng.normal(0.0, 0.002, 10), "b": rng.normal(0.0, 0.002, 10)})
    table.loc[[0, 1], "a"] = np.nan
    table.loc[9, "random"] = np.nan
    out = paired_comparison(table)
    assert out.loc["a", "n_pairs"] == 7
    assert out.loc["b", "n_pairs"] == 9
    keep = table[["a", "random"]].dropna()
    assert out.loc["a", "mean_diff"] == pytest.approx((keep["a"] - keep["random"]).mean())
    assert not out[["t_pvalue", "tost_pvalue", "boot_ci_low"]].isna().any().any()


def test_fewer_than_two_pairs_is_inconclusive_nan():
    table = pd.DataFrame({"random": [0.7, 0.71, np.nan], "one": [0.72, np.nan, 0.8],
                          "none": [np.nan, np.nan, 0.9]})
    out = paired_comparison(table)
    assert out.loc["one", "n_pairs"] == 1
    assert out.loc["none", "n_pairs"] == 0
    assert out.loc["one", "mean_diff"] == pytest.approx(0.02)
    assert math.isnan(out.loc["none", "mean_diff"])
    for arm in ("one", "none"):
        assert out.loc[arm, "verdict"] == "inconclusive"
        assert out.loc[arm, ["sd_diff", "t_ci_low", "t_pvalue", "holm_pvalue", "tost_pvalue",
                             "boot_ci_low", "wilcoxon_pvalue"]].isna().all()


def test_identical_differences():
    ref = np.linspace(0.6, 0.7, 10)
    table = pd.DataFrame({"random": ref, "same": ref.copy(), "shifted": ref + 0.02,
                          "tiny": ref + 0.001})
    out = paired_comparison(table)
    same = out.loc["same"]
    assert same["sd_diff"] == 0 and same["mean_diff"] == 0
    assert same["t_pvalue"] == 1.0 and same["tost_pvalue"] == 0.0
    assert same["wilcoxon_pvalue"] == 1.0
    assert same["t_ci_low"] == same["t_ci_high"] == 0.0
    assert same["boot_ci_low"] == same["boot_ci_high"] == 0.0
    assert same["verdict"] == "equivalent"
    shifted = out.loc["shifted"]
    # ref + 0.02 - ref is 0.02 up to rounding: the sd is ~1e-17 or exactly 0; either way the
    # shift is "certain": p ~ 0, better, and not equivalent.
    assert shifted["t_pvalue"] < 1e-6 and shifted["verdict"] == "better"
    assert shifted["tost_pvalue"] > 0.5
    # A tiny but perfectly consistent gain is significant and also inside the margin: the
    # verdict says "better" and the TOST column says it is negligible.
    tiny = out.loc["tiny"]
    assert tiny["verdict"] == "better" and tiny["tost_pvalue"] < 0.05
    assert not out[["t_pvalue", "holm_pvalue", "tost_pvalue"]].isna().any().any()


def test_exact_constant_shift():
    table = pd.DataFrame({"random": [0.5, 0.25, 0.75], "up": [0.75, 0.5, 1.0]})  # exact 0.25
    row = paired_comparison(table).loc["up"]
    assert row["sd_diff"] == 0.0 and row["mean_diff"] == 0.25
    assert row["t_pvalue"] == 0.0 and row["verdict"] == "better"
    assert row["tost_pvalue"] == 1.0


def test_input_checks():
    table = pd.DataFrame({"random": [0.1, 0.2], "a": [0.1, 0.3]})
    with pytest.raises(ValueError):
        paired_comparison(table, reference="missing")
    with pytest.raises(ValueError):
        paired_comparison(table, margin=-1)
    with pytest.raises(ValueError):
        paired_comparison(table, alpha=1.5)
    empty = paired_comparison(table[["random"]])
    assert empty.empty and list(empty.columns) == list(COLUMNS)
