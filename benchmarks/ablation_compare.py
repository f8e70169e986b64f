"""Paired comparison of finished ``alunet experiment`` runs across output folders.

Every arm is ``LABEL=OUT:STRATEGY`` (e.g. ``warm-bald=runs/warm:bald``). Arms are paired by
seed; only seeds complete in every arm count. The folders must share the pool and the test
split (checked from config.json), so that the only differences are the ones being ablated.

    python benchmarks/ablation_compare.py --reference warm-random=runs/warm:random \\
        warm-bald=runs/warm:bald scratch-random=runs/scratch:random

Prints a markdown table (AULC mean ± std, ΔAULC vs the reference, paired t and Wilcoxon p,
the smallest effect the paired t-test detects with 80 % power at this n and this spread),
the per-seed AULC, and per-seed diagnostics (round-0 Dice, rounds whose fit was retried by the
health check). Needs rounds.csv files written since the step-counted recipe (0.2).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pandas as pd
from scipy import optimize, stats

from napari_alunet.experiment import read_rounds
from napari_alunet.experiment.report import complete_runs, per_seed_statistics
from napari_alunet.experiment.stats import paired_comparison


def detectable_effect(n: int, sd: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest mean paired difference a two-sided paired t-test detects with ``power``."""
    if n < 2 or not math.isfinite(sd) or sd == 0:
        return math.nan
    df = n - 1
    crit = stats.t.ppf(1 - alpha / 2, df)

    def gap(d: float) -> float:
        nc = d * math.sqrt(n)
        value = stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc)
        return (1.0 if math.isnan(value) else value) - power  # nct gives NaN far in the tail

    try:
        return float(optimize.brentq(gap, 1e-6, 20.0)) * sd
    except ValueError:  # n too small for 80 % power at any plausible effect
        return math.nan


def markdown(table: pd.DataFrame) -> str:
    """A DataFrame as a markdown table (index first), without the optional tabulate package."""
    head = [str(table.index.name or ""), *map(str, table.columns)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for index, row in table.iterrows():
        cells = [f"{v:.3f}" if isinstance(v, float) else str(v) for v in row]
        lines.append("| " + " | ".join([str(index), *cells]) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reference", required=True, help="LABEL=OUT:STRATEGY of the reference")
    p.add_argument("arms", nargs="+", help="LABEL=OUT:STRATEGY")
    args = p.parse_args()
    arms = [args.reference, *args.arms]
    per_seed, diag, splits = {}, {}, {}
    for arm in arms:
        label, spec = arm.split("=", 1)
        out, strategy = spec.rsplit(":", 1)
        record = json.loads((Path(out) / "config.json").read_text())
        splits[label] = (record["pool"]["test_ids"], record["pool"].get("initial_ids"))
        rounds = complete_runs(read_rounds(Path(out) / "rounds.csv"))
        stats_ = per_seed_statistics(rounds)
        per_seed[label] = stats_[stats_["strategy"] == strategy].set_index("seed")["aulc"]
        run = rounds[rounds["strategy"] == strategy]
        diag[label] = run.groupby("seed").agg(
            dice_r0=("mean_dice", lambda s: s.iloc[0]),
            final=("mean_dice", lambda s: s.iloc[-1]),
            low_rounds=("mean_dice", lambda s: int((s < 0.6).sum())),
            retried_rounds=("attempts", lambda s: int((s > 1).sum())),
        )
    if len({json.dumps(v) for v in splits.values()}) != 1:
        raise SystemExit("the folders do not share the test split / initial sets")
    values = pd.DataFrame(per_seed).dropna()
    ref = values.columns[0]
    tests = paired_comparison(values, reference=ref)
    n = len(values)
    print(f"{n} paired seeds: {list(values.index)}\n")
    print("| arm | AULC (mean ± std) | ΔAULC vs " + ref + " | sd of Δ | wins | paired t p "
          "| Wilcoxon p | detectable Δ (80 % power) |")
    print("|---|---|---|---|---|---|---|---|")
    for label in values.columns:
        col = values[label]
        if label == ref:
            print(f"| {label} | {col.mean():.3f} ± {col.std():.3f} | – | – | – | – | – | – |")
            continue
        diff = col - values[ref]
        t = tests.loc[label]
        w = "–" if math.isnan(t.wilcoxon_pvalue) else f"{t.wilcoxon_pvalue:.2f}"
        print(f"| {label} | {col.mean():.3f} ± {col.std():.3f} | {diff.mean():+.4f} | "
              f"{diff.std():.3f} | {int((diff > 0).sum())}/{n} | {t.t_pvalue:.2f} | {w} | "
              f"±{detectable_effect(n, diff.std()):.3f} |")
    print("\nper-seed AULC\n")
    print(markdown(values))
    print("\nper-seed diagnostics: Dice of the last round (rounds with test Dice < 0.6 / "
          "rounds whose fit failed the health check and was retried); round-0 Dice is shared "
          "by a seed\n")
    cells = {label: [f"{d.final:.3f} ({int(d.low_rounds)}/{int(d.retried_rounds)})"
                     for d in diag[label].loc[values.index].itertuples()] for label in diag}
    table = pd.DataFrame(cells, index=values.index)
    table.insert(0, "round-0 Dice", [f"{v:.3f}" for v in diag[ref].loc[values.index, "dice_r0"]])
    print(markdown(table))

if __name__ == "__main__":
    main()
