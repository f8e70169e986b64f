"""Does active learning pay? The benchmark with headroom and controls (issue 11).

Runs :func:`napari_alunet.experiment.run_experiment` (the product's one active-learning step,
:mod:`napari_alunet.active`, driven on an in-memory pool) on the benchmark pool
(``data="redundant"``: several time-lapse-like frames per embryo, rare modes at low frequency,
a fresh test set with the same number of embryos of every mode), with these arms:

``random``              uniform acquisition: the reference.
``random#2``            random with a second acquisition seed: the A/A control (null spread).
``oracle_error``        the k images whose review prediction has the lowest Dice against the
                        truth, one per embryo: the upper bound. If it does not beat random the
                        pool or the test set is wrong.
``bald+power``          BALD with stochastic power sampling (beta from the scores' range).
``typical:bald+power``  the typicality cold start as initial set, then BALD + power.
``bald+badge``          the uncertainty + diversity hybrid (BADGE on gradient embeddings).

and, with ``--regions`` (issue 14), region-level review on the same seeds and round-0 models:

``bald+power@region``   canvas tiles ranked across the pool by mean BALD, power sampling.
``random@region``       as many tiles at random: its control.

The seeds are split over ``--workers`` processes with one torch thread each (on 2 CPU cores two
1-thread processes train 1.3x faster than one 2-thread process); each writes ``OUT/part<i>/``
(resumable: rerun the same command after an interruption), then the parts are merged into
``OUT/rounds.csv``, ``summary.csv``, ``summary.md`` and the figures, and the harness check is
printed: fit for purpose when |A/A - random| AULC <= 0.015 and oracle - random >= 0.03.

Protocols::

    python benchmarks/al_benchmark.py --out runs/al_benchmark            # CPU, ~2.5 h on 2 cores
    python benchmarks/al_benchmark.py --out runs/al_benchmark --report-only
    python benchmarks/al_benchmark.py --out runs/al_benchmark --rerun oracle_error  # one arm
    python benchmarks/al_benchmark.py --out runs/al_benchmark --regions  # region arms (issue 14)
    python benchmarks/al_benchmark.py --gpu --out runs/al_benchmark_gpu  # GPU: gpu preset, 2000
    python benchmarks/al_benchmark.py --protocol cpu6 --out runs/al_benchmark_v4  # v4 candidate

The CPU protocol (``--protocol cpu``): 240 pool images of realistic size, 4 test embryos per
mode (24), the ``cpu`` preset's network at a 64 x 64 input (documented reduction, for time), 8
seeds, 6 initial images, k = 6, 4 rounds (6 -> 30 labelled, 2.5 -> 12.5 %), 8 MC passes, warm
start, the few-labels recipe with a reduced step budget (200 + 6 per image) and without the
semi-supervised term (it measured no gain: docs/TRAINING.md), full-data baseline per seed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ARMS = ("random", "random#2", "oracle_error", "bald+power", "typical:bald+power", "bald+badge")
#: Region-level review (issue 14): BALD on regions and its control, random regions. Run with
#: ``--regions`` after the main run: they are compared with image-level random on the
#: reviewed-pixels axis, and with each other on the reviewed-pixels and click axes.
REGION_ARMS = ("random@region", "bald+power@region")

PROTOCOLS: dict[str, dict[str, Any]] = {
    "cpu": dict(
        preset="cpu", input_size=64, data="redundant", sample_n=240, test_per_mode=4,
        rare_mode_p=0.03, region_size=16,
        seeds=8, k=6, initial_fraction=0.025, rounds=4, until_fraction=None, passes=8,
        train={"semi_supervised": False, "min_steps": 200, "steps_per_image": 6,
               "device": "cpu"},
        workers=2, threads=1,
    ),
    "gpu": dict(
        preset="gpu", input_size=None, data="redundant", sample_n=2000, test_per_mode=20,
        rare_mode_p=0.03, region_size=32,
        seeds=8, k=20, initial_fraction=0.01, rounds=8, until_fraction=None, passes=20,
        train={"device": "cuda"}, workers=1, threads=0,
    ),
    # For a quick look that the harness runs (minutes); not a result.
    "smoke": dict(
        preset="tiny", input_size=None, data="redundant", sample_n=48, test_per_mode=1,
        rare_mode_p=0.06, region_size=8,
        seeds=2, k=4, initial_fraction=0.1, rounds=2, until_fraction=None, passes=2,
        train={"semi_supervised": False, "steps": 20, "device": "cpu"}, workers=2, threads=1,
    ),
}
# v4 candidate (docs/BENCHMARK.md, "Next"): the cpu protocol with 6 rounds (2.5 -> 17.5 %
# labelled), because the oracle's and the arms' gaps to random grew over v3's window.
PROTOCOLS["cpu6"] = {**PROTOCOLS["cpu"], "rounds": 6}


def make_protocol_config(protocol: dict[str, Any], *, first_seed: int, seeds: int,
                         full_only: bool = False, arms: tuple[str, ...] | None = None) -> Any:
    from napari_alunet.experiment import make_config

    p = dict(protocol)
    if full_only:  # the full-data baseline (and one cheap round 0 the runner needs)
        p.update(rounds=0)
    strategies = ("random",) if full_only else (arms or ARMS)
    return make_config(
        preset=p["preset"], input_size=p["input_size"], train=p["train"],
        threads=p["threads"], data=p["data"], sample_n=p["sample_n"],
        test_per_mode=p["test_per_mode"], rare_mode_p=p["rare_mode_p"],
        strategies=strategies, seeds=seeds, full_baseline=not arms,
        first_seed=first_seed, k=p["k"], initial_fraction=p["initial_fraction"],
        rounds=p["rounds"], until_fraction=p["until_fraction"], passes=p["passes"],
        region_size=p["region_size"],
    )


def worker(protocol_name: str, out: Path, first_seed: int, seeds: int,
           full_only: bool = False, arms: tuple[str, ...] | None = None) -> int:
    """Run seeds ``first_seed .. first_seed + seeds - 1`` into ``out`` (resumable)."""
    from napari_alunet.events import drain
    from napari_alunet.experiment import RoundRecorded, run_experiment

    config = make_protocol_config(PROTOCOLS[protocol_name], first_seed=first_seed, seeds=seeds,
                                  full_only=full_only, arms=arms)
    start = time.perf_counter()

    def show(event: Any) -> None:
        if isinstance(event, RoundRecorded):
            row = event.row
            print(f"[{time.perf_counter() - start:6.0f} s] seed {event.seed} "
                  f"{event.strategy:<20} round {event.round}: {row['n_labelled']:>3} labelled, "
                  f"Dice {row['mean_dice']:.3f}, worst mode "
                  f"{row.get('worst_mode_dice', float('nan')):.3f}, "
                  f"{row['train_seconds']:.0f} s train, {row['score_seconds']:.0f} s score",
                  flush=True)

    drain(run_experiment(config, out, command=" ".join(sys.argv)), show)
    return 0


def _settings_key(record: dict[str, Any]) -> str:
    """What must agree between parts: everything but the seeds, arms and thread count."""
    exp = dict(record["experiment"])
    # Region settings only shape the region arms, which come from their own rerun parts.
    for name in ("seeds", "first_seed", "strategies", "full_baseline", "region_size",
                 "region_budget"):
        exp.pop(name, None)
    exp["train"] = {k: v for k, v in exp["train"].items() if k != "num_threads"}
    # Acquisition's region fields (added with issue 14, absent from configs written before it)
    # only act in region arms, whose unit comes from the arm name.
    exp["acquisition"] = {k: v for k, v in exp.get("acquisition", {}).items()
                          if k not in ("unit", "region_size", "region_cost")}
    return json.dumps({"experiment": exp, "pool": record["pool"]["names"]}, sort_keys=True)


def _seed_range(seeds: list[int]) -> str:
    if seeds and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}-{seeds[-1]}"
    return ", ".join(map(str, seeds))


def merge(out: Path, parts: list[Path]) -> Any:
    """Concatenate the parts' rounds.csv (same settings but the seeds) into OUT/rounds.csv.

    Rows of ``OUT/full_part*`` (``--refit-full``) replace the parts' full-data rows, and rows
    of ``OUT/rerun_part*`` (``--rerun``) replace those of the arms they reran; each must have
    been run with the parts' settings. The rows of ``OUT/regions_part*`` (``--regions``) go
    to ``OUT/regions/rounds.csv`` with the full-data rows, apart from the main table.
    Returns (table, record, notes, region rows or None): notes say what was replaced and
    whether a rerun reproduced the parts' round 0 (same seed, same initial set).
    """
    import pandas as pd

    from napari_alunet.experiment.records import read_rounds

    records = [json.loads((p / "config.json").read_text()) for p in parts]
    same_arms = len({json.dumps(r["experiment"]["strategies"]) for r in records}) == 1
    if not same_arms or len({_settings_key(r) for r in records}) != 1:
        raise SystemExit("the parts were run with different settings: use a new --out")
    table = pd.concat([read_rounds(p / "rounds.csv") for p in parts], ignore_index=True)
    notes: list[str] = []
    regions = _region_rows(out, records[0], table, notes)
    for pattern, what in (("full_part*", None), ("rerun_part*", "arms")):
        extra = sorted(d for d in out.glob(pattern) if (d / "rounds.csv").exists())
        if not extra:
            continue
        for d in extra:
            if _settings_key(json.loads((d / "config.json").read_text())) != _settings_key(
                    records[0]):
                raise SystemExit(f"{d} was run with other settings than the parts")
        new = pd.concat([read_rounds(d / "rounds.csv") for d in extra], ignore_index=True)
        if what is None:
            # The full run depends on nothing else, so this equals running the parts with
            # today's budget.
            replaced = ["full"]
            new = new[new["strategy"] == "full"]
        else:
            replaced = sorted(set(new["strategy"]) - {"full"})
            new = new[new["strategy"].isin(replaced)]
            old0 = table[table["strategy"].isin(replaced) & (table["round"] == 0)]
            new0 = new[new["round"] == 0]
            paired = old0.merge(new0, on=["strategy", "seed"], suffixes=("_old", "_new"))
            if not paired.empty:
                gap = float((paired["mean_dice_old"] - paired["mean_dice_new"]).abs().max())
                notes.append(f"rerun of {', '.join(replaced)}: round 0 (no acquisition yet) "
                             f"reproduces the original run's within {gap:.4f} Dice over "
                             f"{len(paired)} seeds")
        # Replace (arm, seed) pairs, so parts with seeds the replacement did not run keep
        # their own rows.
        pairs = set(zip(new["strategy"], new["seed"]))
        keep = [(a, s) not in pairs for a, s in zip(table["strategy"], table["seed"])]
        notes.append(f"rows of {', '.join(replaced)} for seeds "
                     f"{_seed_range(sorted(set(new['seed'])))} come from "
                     f"{', '.join(d.name for d in extra)}")
        table = pd.concat([table[keep], new], ignore_index=True)
    # The parts' arm order (the report lists arms in table order).
    order = {name: i for i, name in enumerate(["full", *records[0]["experiment"]["strategies"]])}
    table = table.sort_values(["strategy", "seed", "round"], key=lambda c: c.map(order)
                              if c.name == "strategy" else c, kind="stable")
    table.to_csv(out / "rounds.csv", index=False)
    (out / "config.json").write_text(json.dumps({"parts": [str(p) for p in parts],
                                                 "record": records[0]}, indent=2))
    if regions is not None:
        full = table[table["strategy"] == "full"]
        regions = pd.concat([full, regions], ignore_index=True)
        (out / "regions").mkdir(exist_ok=True)
        regions.to_csv(out / "regions" / "rounds.csv", index=False)
    return table, records[0], notes, regions


def clicks_after_initial_section(table: Any) -> list[str]:
    """The click axis counted from the end of round 0: does an arm save clicks in the rounds
    it acquires, or only through a cheaper initial set (the typicality start draws other
    images first)? Paired over seeds against random, Holm-corrected across arms; each seed's
    window is the range of clicks after round 0 that all its arms cover."""
    import pandas as pd

    from napari_alunet.experiment.report import (
        COST_AXIS,
        aulc_window,
        complete_runs,
        cost_window,
    )
    from napari_alunet.experiment.stats import paired_comparison

    runs = complete_runs(table)
    runs = runs[runs["strategy"] != "full"].sort_values(["strategy", "seed", "round"])
    if runs.empty or COST_AXIS not in runs.columns or "random" not in set(runs["strategy"]):
        return []
    runs = runs.assign(after=runs[COST_AXIS] - runs.groupby(["strategy", "seed"])[COST_AXIS]
                       .transform("first"))
    windows = cost_window(runs, "after")  # the report's per-seed window, on this axis
    values = {(arm, int(seed)): aulc_window(run["after"], run["mean_dice"], *windows[int(seed)])
              for (arm, seed), run in runs.groupby(["strategy", "seed"])}
    wide = pd.Series(values).unstack(0)
    wide = wide[[arm for arm in table["strategy"].unique() if arm in wide.columns]]
    if wide.shape[1] < 2:
        return []
    test = paired_comparison(wide, "random", margin=0.01)
    lines = ["## Clicks after the initial set (sensitivity)", "",
             "Dice against the correction clicks spent after round 0, so a cheaper initial "
             "set does not count:", "",
             "| arm | ΔAULC vs random [95 % CI] | Holm p | seeds better | verdict |",
             "|---|---|---|---|---|"]
    for arm, t in test.iterrows():
        if arm == "random":
            continue
        better = int((wide[arm] > wide["random"]).sum())
        lines.append(f"| {arm} | {t['mean_diff']:+.4f} [{t['t_ci_low']:+.4f}, "
                     f"{t['t_ci_high']:+.4f}] | {t['holm_pvalue']:.3f} | {better}/{len(wide)} | "
                     f"{t['verdict']} |")
    return lines


def _region_rows(out: Path, record: dict[str, Any], table: Any, notes: list[str]) -> Any:
    """The rows of ``OUT/regions_part*`` (``--regions``), or None. They never replace the main
    table's rows (its summary and Holm correction stay those of the main arms); the image-level
    random they ran again is checked against the main run's."""
    import pandas as pd

    from napari_alunet.experiment.records import read_rounds

    found = sorted(d for d in out.glob("regions_part*") if (d / "rounds.csv").exists())
    if not found:
        return None
    for d in found:
        if _settings_key(json.loads((d / "config.json").read_text())) != _settings_key(record):
            raise SystemExit(f"{d} was run with other settings than the parts")
    rows = pd.concat([read_rounds(d / "rounds.csv") for d in found], ignore_index=True)
    rows = rows[rows["strategy"] != "full"]
    again = rows[rows["strategy"] == "random"].merge(
        table[table["strategy"] == "random"], on=["seed", "round"], suffixes=("_new", "_old"))
    if not again.empty:
        gap = float((again["mean_dice_new"] - again["mean_dice_old"]).abs().max())
        notes.append(f"region arms: image-level random run again with them reproduces the main "
                     f"run's random within {gap:.4f} Dice ({len(again)} rounds, seeds "
                     f"{_seed_range(sorted(set(again['seed'])))})")
    return rows


def report(out: Path, table: Any, record: dict[str, Any], protocol: str,
           seconds: float | None, notes: list[str] = (), regions: Any = None) -> str:
    from napari_alunet.experiment.plots import report_subtitle as _subtitle
    from napari_alunet.experiment.plots import write_report
    from napari_alunet.experiment.records import load_experiment_config
    from napari_alunet.experiment.report import markdown_table

    config, _ = load_experiment_config(Path(record_parts(out)[0]))
    subtitle = _subtitle(config, record["pool"]["n_images"], len(record["pool"]["test_ids"]))
    write_report(out, class_names=record["pool"]["class_names"], subtitle=subtitle)
    import pandas as pd

    summary = pd.read_csv(out / "summary.csv").set_index("strategy")
    lines = [f"# Active-learning benchmark ({protocol} protocol)", "", subtitle, "",
             markdown_table(summary.reset_index()), ""]
    diff = summary["aulc_diff_vs_random"]
    aa = float(diff.get("random#2", float("nan")))
    oracle = float(diff.get("oracle_error", float("nan")))
    fit = abs(aa) <= 0.015 and oracle >= 0.03
    lines += [
        "## Harness check",
        f"- |A/A - random| AULC = {abs(aa):.4f} (must be <= 0.015)",
        f"- oracle-error - random AULC = {oracle:+.4f} (must be >= 0.03)",
        f"- fit for purpose: {'YES' if fit else 'NO'}", "",
        "## Per arm", "",
        "| arm | ΔAULC vs random (image axis) | verdict | ΔAULC (clicks) | verdict (clicks) "
        "| worst-mode AULC | final Dice per mode |",
        "|---|---|---|---|---|---|---|",
    ]
    modes = [c for c in summary.columns if c.startswith("final_dice_mode_")]
    for arm, r in summary.iterrows():
        if arm == "full":
            continue
        if arm == "random":
            lines.append("| random | reference | – | reference | – | "
                         f"{r.get('aulc_worst_mode_mean', float('nan')):.3f} | "
                         + ", ".join(f"{c.removeprefix('final_dice_mode_')} {r[c]:.2f}"
                                     for c in modes) + " |")
            continue
        per_mode = ", ".join(f"{c.removeprefix('final_dice_mode_')} {r[c]:.2f}" for c in modes)
        lines.append(f"| {arm} | {r['aulc_diff_vs_random']:+.4f} | {r['verdict']} | "
                     f"{r['cost_diff']:+.4f} | {r['cost_verdict']} | "
                     f"{r.get('aulc_worst_mode_mean', float('nan')):.3f} | {per_mode} |")
    lines += ["", *clicks_after_initial_section(table)]
    full = table[table["strategy"] == "full"]
    if not full.empty:
        stopped = (full["best_step"] < full["steps"]).sum()
        lines += ["", f"Full-data baseline: Dice {full['mean_dice'].mean():.3f} ± "
                  f"{full['mean_dice'].std():.3f} over {len(full)} seeds; its best step was "
                  f"before its last in {stopped}/{len(full)} fits (selection "
                  f"{', '.join(sorted(set(full['selection'].astype(str))))})."]
    if regions is not None:
        from napari_alunet.experiment.plots import plot_dice_vs_reviewed, plot_learning_curves

        lines += ["", *region_section(regions)]
        plot_dice_vs_reviewed(regions, out / "regions" / "dice_vs_reviewed",
                              title="Region vs image review: test Dice vs review cost "
                              f"(mean ± std over seeds)\n{subtitle}")
        plot_learning_curves(regions, out / "regions" / "learning_curves",
                             class_names=record["pool"]["class_names"],
                             title="Test Dice vs share of the pool's pixels reviewed"
                             f"\n{subtitle}")
    if notes:
        lines += ["", "## Merged", ""] + [f"- {n}" for n in notes]
    if seconds is not None:
        lines += ["", f"Wall time of this call: {seconds / 60:.1f} min."]
    text = "\n".join(lines) + "\n"
    (out / "summary.md").write_text(text)
    return text


def region_section(table: Any) -> list[str]:
    """Region-level review against image-level random and against random regions.

    Per seed: AULC of Dice against cumulative reviewed pixels and against cumulative clicks,
    each over the window all three arms of that seed cover; the reviewed pixels at which each
    arm first reaches 95 % of that seed's full-data Dice. Paired comparisons as in the main
    table (t interval, Holm, Wilcoxon, TOST +-0.01).
    """
    import math

    import numpy as np
    import pandas as pd

    from napari_alunet.experiment.report import (
        COST_AXIS,
        REVIEW_AXIS,
        aulc_window,
        complete_runs,
        cost_window,
        fraction_to_reach,
    )
    from napari_alunet.experiment.stats import paired_comparison

    arms = ["random", *REGION_ARMS]
    runs = complete_runs(table[table["strategy"].isin([*arms, "full"])])
    if REVIEW_AXIS not in runs.columns or runs.loc[runs["strategy"] == "random",
                                                   REVIEW_AXIS].isna().any():
        return ["## Region-level review", "",
                "image-level random has no reviewed-pixel counts in this run: rerun it with "
                "the region arms (--regions)"]
    full = runs[runs["strategy"] == "full"].groupby("seed")["mean_dice"].mean()
    per_seed = []
    windows = {axis: cost_window(runs, axis) for axis in (REVIEW_AXIS, COST_AXIS)}
    for (arm, seed), run in runs[runs["strategy"] != "full"].groupby(["strategy", "seed"]):
        run = run.sort_values("round")
        y = run["mean_dice"].to_numpy(float)
        row = {"strategy": arm, "seed": int(seed)}
        for axis, key in ((REVIEW_AXIS, "aulc_reviewed"), (COST_AXIS, "aulc_clicks")):
            window = windows[axis].get(int(seed))
            row[key] = aulc_window(run[axis], y, *window) if window else math.nan
        target = 0.95 * float(full.get(seed, math.nan))
        row["reviewed_to_95"] = fraction_to_reach(run[REVIEW_AXIS], y, target)
        row["final_dice"] = float(y[-1])
        row["max_reviewed"] = float(run[REVIEW_AXIS].max())
        per_seed.append(row)
    per_seed = pd.DataFrame(per_seed)
    present = [a for a in arms if a in set(per_seed["strategy"])]
    lines = ["## Region-level review (issue 14)", "",
             "Dice against the pixels a reviewer looked at (whole images for image-level "
             "random; only the regions for the region arms), per seed over the window every "
             "arm covers.", "",
             "| arm | seeds | AULC (reviewed px) | AULC (clicks) | final Dice | reviewed px to "
             "95 % of full (seeds reaching) |", "|---|---|---|---|---|---|"]
    for arm in present:
        s = per_seed[per_seed["strategy"] == arm]
        reached = s["reviewed_to_95"].dropna()
        to95 = (f"{reached.mean():,.0f} ({len(reached)}/{len(s)})" if len(reached)
                else f"not reached (0/{len(s)}; max {s['max_reviewed'].mean():,.0f})")
        lines.append(f"| {arm} | {len(s)} | {s['aulc_reviewed'].mean():.3f} | "
                     f"{s['aulc_clicks'].mean():.3f} | {s['final_dice'].mean():.3f} | {to95} |")
    lines.append("")
    for reference, axis, label in (("random", "aulc_reviewed", "reviewed pixels"),
                                   ("random@region", "aulc_reviewed", "reviewed pixels"),
                                   ("random@region", "aulc_clicks", "clicks")):
        wide = per_seed.pivot(index="seed", columns="strategy", values=axis)
        cols = [c for c in present if c in wide.columns and c != reference
                and (reference == "random" or c.endswith("@region"))]
        if reference not in wide.columns or not cols:
            continue
        test = paired_comparison(wide[[reference, *cols]].dropna(), reference, margin=0.01)
        for arm, t in test.iterrows():
            if arm == reference:
                continue
            lines.append(f"- {arm} vs {reference} on {label}: ΔAULC {t['mean_diff']:+.4f} "
                         f"[{t['t_ci_low']:+.4f}, {t['t_ci_high']:+.4f}], Holm p "
                         f"{t['holm_pvalue']:.3g}, Wilcoxon p {t['wilcoxon_pvalue']:.3g}, "
                         f"TOST p {t['tost_pvalue']:.3g}: {t['verdict']}")
    image95 = per_seed.loc[per_seed["strategy"] == "random"].set_index("seed")["reviewed_to_95"]
    bald95 = per_seed.loc[per_seed["strategy"] == "bald+power@region"].set_index(
        "seed")["reviewed_to_95"] if "bald+power@region" in present else pd.Series(dtype=float)
    both = pd.concat([image95.rename("image"), bald95.rename("region")], axis=1).dropna()
    if len(both):
        ratio = both["region"] / both["image"]
        lines.append(f"- reviewed pixels to 95 % of full, bald+power@region / image-level "
                     f"random: median {np.median(ratio):.2f} over the {len(both)} seed(s) where "
                     f"both reached it (target: <= 0.33)")
    else:
        lines.append("- reviewed pixels to 95 % of full: no seed where both image-level random "
                     "and bald+power@region reached it")
    return lines


def record_parts(out: Path) -> list[str]:
    return json.loads((out / "config.json").read_text())["parts"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--protocol", choices=tuple(PROTOCOLS), default="cpu")
    ap.add_argument("--gpu", action="store_true", help="the GPU protocol (--protocol gpu)")
    ap.add_argument("--seeds", type=int, default=None, help="override the protocol's seeds")
    ap.add_argument("--workers", type=int, default=None, help="override the worker processes")
    ap.add_argument("--region-size", type=int, default=None, metavar="PX",
                    help="override the protocol's region tile side (model-input pixels) for "
                    "--regions; use another --out holding copies of the main parts")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--refit-full", action="store_true",
                    help="(re)fit only the full-data baselines into OUT/full_part<i> with the "
                    "current full_steps_factor; they replace the parts' full rows in the report "
                    "(for runs made before the baseline's budget rule)")
    ap.add_argument("--regions", action="store_true",
                    help="the region-level arms (issue 14): run image-level random again "
                    f"with {' and '.join(REGION_ARMS)} into OUT/regions_part<i> (no full "
                    "baseline: the main run's is used); the report adds their section")
    ap.add_argument("--rerun", nargs="+", choices=ARMS + REGION_ARMS, default=None, metavar="ARM",
                    help="rerun only these arms (no full baseline) into OUT/rerun_part<i>; "
                    "their rows replace the arms' rows in the report (after a change to one "
                    "arm, e.g. a control, that leaves the others as they were)")
    ap.add_argument("--worker", nargs=2, type=int, metavar=("FIRST_SEED", "SEEDS"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.regions:
        args.rerun = sorted(set(args.rerun or ()) | {"random", *REGION_ARMS},
                            key=(ARMS + REGION_ARMS).index)
    protocol = "gpu" if args.gpu else args.protocol
    settings = dict(PROTOCOLS[protocol])
    if args.seeds is not None:
        settings["seeds"] = args.seeds
    if args.workers is not None:
        settings["workers"] = args.workers
    if args.region_size is not None:
        settings["region_size"] = args.region_size
    PROTOCOLS[protocol] = settings
    if args.worker:
        return worker(protocol, args.out, *args.worker, full_only=args.refit_full,
                      arms=tuple(args.rerun) if args.rerun else None)

    args.out.mkdir(parents=True, exist_ok=True)
    workers = max(1, min(settings["workers"], settings["seeds"]))
    shares = [settings["seeds"] // workers + (i < settings["seeds"] % workers)
              for i in range(workers)]
    firsts = [sum(shares[:i]) for i in range(workers)]
    parts = [args.out / f"part{i}" for i in range(workers)]
    targets = parts
    if args.refit_full or args.rerun:
        stem = ("full_part" if args.refit_full else "regions_part" if args.regions
                else "rerun_part")
        targets = [args.out / f"{stem}{i}" for i in range(workers)]
    start = time.perf_counter()
    if not args.report_only:
        env = {**os.environ, "OMP_NUM_THREADS": str(max(1, settings["threads"])),
               "PYTHONUNBUFFERED": "1"}
        procs = []
        for part, first, n in zip(targets, firsts, shares):
            cmd = [sys.executable, __file__, "--out", str(part), "--protocol", protocol,
                   "--seeds", str(settings["seeds"]), "--worker", str(first), str(n)]
            cmd += ["--refit-full"] if args.refit_full else []
            cmd += ["--rerun", *args.rerun] if args.rerun else []
            cmd += ["--region-size", str(args.region_size)] if args.region_size else []
            procs.append(subprocess.Popen(cmd, env=env))
        codes = [p.wait() for p in procs]
        if any(codes):
            print(f"worker exit codes {codes}: rerun the same command to resume", file=sys.stderr)
            return 1
    table, record, notes, regions = merge(args.out, parts)
    print(report(args.out, table, record, protocol,
                 None if args.report_only else time.perf_counter() - start, notes, regions))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
