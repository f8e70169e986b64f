"""Oracle-replay experiment runner: known-answer tests of the summary statistics, then a tiny
end-to-end experiment (tiny preset, 16 images of 48 x 56, 2 strategies, 2 seeds, 2 rounds) and
its resume paths."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from napari_alunet.events import drain
from napari_alunet.experiment import (
    aulc,
    dice_at,
    fraction_to_reach,
    load_pool,
    make_config,
    make_splits,
    parse_ids,
    planned_sizes,
    read_rounds,
    round_columns,
    run_experiment,
    summarise,
)
from napari_alunet.experiment.records import config_differences, load_experiment_config
from napari_alunet.experiment.report import per_seed_statistics
from napari_alunet.experiment.runner import ExperimentPlan, RoundRecorded


# -- known answers --------------------------------------------------------------------------------
def test_aulc_known_answers():
    assert aulc([0.1, 0.3, 0.5], [0.7, 0.7, 0.7]) == pytest.approx(0.7)
    assert aulc([0.0, 1.0], [0.0, 1.0]) == pytest.approx(0.5)
    # Uneven spacing: area (0.2*(0.2+0.4)/2 + 0.6*(0.4+0.8)/2) / 0.8 = (0.06 + 0.36) / 0.8
    assert aulc([0.2, 0.4, 1.0], [0.2, 0.4, 0.8]) == pytest.approx(0.525)
    assert aulc([0.4, 0.2, 1.0], [0.4, 0.2, 0.8]) == pytest.approx(0.525)  # order-free
    assert aulc([0.2, np.nan, 1.0], [0.2, 0.5, 0.8]) == pytest.approx(0.5)  # NaN point dropped
    assert math.isnan(aulc([0.5], [0.9]))
    assert math.isnan(aulc([0.5, 0.5], [0.1, 0.9]))


def test_dice_at_interpolates_without_extrapolating():
    x, y = [0.1, 0.2, 0.4], [0.5, 0.7, 0.8]
    out = dice_at(x, y, [0.05, 0.1, 0.15, 0.3, 0.4, 0.5])
    np.testing.assert_allclose(out[1:5], [0.5, 0.6, 0.75, 0.8])
    assert np.isnan(out[0]) and np.isnan(out[5])
    # Float noise at the ends counts as reached.
    assert dice_at([0.1, 0.30000000000000004], [0.2, 0.4], 0.3)[0] == pytest.approx(0.4)
    assert np.isnan(dice_at([], [], 0.2)).all()


def test_fraction_to_reach_first_crossing():
    x = [0.1, 0.2, 0.3, 0.4]
    assert fraction_to_reach(x, [0.5, 0.6, 0.8, 0.9], 0.7) == pytest.approx(0.25)
    assert fraction_to_reach(x, [0.5, 0.6, 0.8, 0.9], 0.8) == pytest.approx(0.3)
    assert fraction_to_reach(x, [0.9, 0.6, 0.8, 0.9], 0.7) == pytest.approx(0.1)  # starts there
    # Not monotone: the first crossing counts, not a later one.
    assert fraction_to_reach(x, [0.5, 0.9, 0.6, 0.95], 0.85) == pytest.approx(0.1 + 0.1 * 0.875)
    assert math.isnan(fraction_to_reach(x, [0.5, 0.6, 0.65, 0.6], 0.7))
    assert math.isnan(fraction_to_reach(x, [0.5, 0.6, 0.65, 0.6], math.nan))


def test_summarise_hand_made_table():
    rows = []
    for seed, full in ((0, 0.8), (1, 1.0)):
        rows.append({"strategy": "full", "seed": seed, "round": 0, "fraction": 1.0,
                     "mean_dice": full})
        for r, (x, y) in enumerate(zip([0.1, 0.2, 0.3], [0.5, 0.7, 0.78])):
            rows.append({"strategy": "random", "seed": seed, "round": r, "fraction": x,
                         "mean_dice": y})
            rows.append({"strategy": "bald", "seed": seed, "round": r, "fraction": x,
                         "mean_dice": y + 0.1 * seed + 0.05})
    table = pd.DataFrame(rows)
    summary = summarise(table).set_index("strategy")
    assert list(summary.index) == ["random", "bald", "full"]
    r = summary.loc["random"]
    assert r["aulc_mean"] == pytest.approx(aulc([0.1, 0.2, 0.3], [0.5, 0.7, 0.78]))
    assert r["aulc_std"] == pytest.approx(0.0)
    assert r["dice_at_10"] == pytest.approx(0.5)
    assert r["dice_at_20"] == pytest.approx(0.7)
    assert np.isnan(r["dice_at_50"])
    # Seed 0: 95 % of 0.8 = 0.76, reached between 0.2 (0.7) and 0.3 (0.78) at 0.275; seed 1
    # (target 0.95) never: mean over the seeds that reached, and the count.
    assert r["fraction_to_95"] == pytest.approx(0.275)
    assert r["reached_95"] == 1
    assert r["full_dice"] == pytest.approx(0.9)
    b = summary.loc["bald"]
    assert b["aulc_diff_vs_random"] == pytest.approx(0.1)  # 0.05 and 0.15
    assert b["t_pvalue"] == pytest.approx(
        stats.ttest_rel([0.05 + a for a in (0, 0.1)], [0, 0]).pvalue)
    assert summary.loc["full", "full_dice"] == pytest.approx(0.9)
    per_seed = per_seed_statistics(table)
    assert set(per_seed["strategy"]) == {"random", "bald"}


def test_planned_sizes():
    assert planned_sizes(4, 3, 38, rounds=None, until_fraction=0.5) == [4, 7, 10, 13, 16, 19]
    assert planned_sizes(4, 3, 38, rounds=2, until_fraction=0.5) == [4, 7, 10]
    assert planned_sizes(4, 3, 38, rounds=10, until_fraction=0.2) == [4, 7, 10]
    assert planned_sizes(2, 4, 9, rounds=None, until_fraction=None) == [2, 6, 9]
    assert planned_sizes(2, 2, 10, rounds=0, until_fraction=None) == [2]


def test_splits_are_shared_and_seeded():
    config = make_config(preset="tiny", seeds=3, sample_n=30)
    a, b = make_splits(30, config), make_splits(30, config)
    assert a == b
    assert len(a.test) == 6 and not set(a.test) & set(a.train_pool)
    assert all(len(v) == 2 and not set(v) & set(a.test) for v in a.initial.values())
    assert a.initial[0] != a.initial[1] or a.initial[1] != a.initial[2]
    other = make_splits(30, make_config(preset="tiny", seeds=3, sample_n=30, sample_seed=1))
    assert other.test != a.test  # the test split follows sample_seed, not the run seed
    assert parse_ids("3 17 5") == [3, 17, 5] and parse_ids("") == [] and parse_ids(np.nan) == []


def test_complete_runs_leave_out_unfinished_curves():
    from napari_alunet.experiment.report import complete_runs

    table = pd.DataFrame({"strategy": ["full", "a", "a", "b", "b", "a"],
                          "seed": [0, 0, 0, 0, 0, 1], "round": [0, 0, 1, 0, 1, 0],
                          "fraction": [1, 0.1, 0.2, 0.1, 0.2, 0.1],
                          "mean_dice": [0.9, 0.5, 0.6, 0.5, 0.6, 0.5]})
    kept = complete_runs(table)
    assert list(kept.index) == [0, 1, 2, 3, 4]  # 'a' seed 1 has one round of two
    assert summarise(table).set_index("strategy").loc["a", "n_seeds"] == 1


def test_folder_pool_matches_the_generator(tmp_path):
    from napari_alunet.data.sample_files import write_sample_pool
    from napari_alunet.data.synthetic import generate_pool

    write_sample_pool(tmp_path / "pool", 6, 3, layout="binary", shape=(40, 44))
    config = tiny_config(data=str(tmp_path / "pool"), sample_n=6, sample_seed=3)
    assert config.data == str((tmp_path / "pool").resolve())
    folder = load_pool(config)
    sample = load_pool(tiny_config(sample_n=6, sample_seed=3), sample_shape=(40, 44))
    assert folder.names == sample.names == [n for n, *_ in generate_pool(6, 3, shape=(40, 44))]
    np.testing.assert_array_equal(folder.labels, sample.labels)
    np.testing.assert_allclose(folder.images, sample.images)
    assert folder.foreground.tolist() == sample.foreground.tolist()
    with pytest.raises(ValueError, match="at least 4"):
        load_pool(tiny_config(sample_n=3))


def test_config_differences_names_fields():
    old = {"experiment": {"k": 2, "train": {"epochs": 1, "device": "cpu"}}, "pool": {"n": 1}}
    new = {"experiment": {"k": 3, "train": {"epochs": 1, "device": "cuda"}}, "pool": {"n": 1}}
    assert config_differences(old, new) == ["experiment.k: 2 -> 3"]  # device may change
    # A field added to TrainConfig since the experiment was saved, at its default: no difference.
    new["experiment"]["k"] = 2
    new["experiment"]["train"]["added_later"] = 1
    assert config_differences(old, new) == ["experiment.train.added_later: '<absent>' -> 1"]
    new["experiment"]["train"] = {"epochs": 1, "scheduler": "warmup_cosine"}
    assert config_differences(old, new) == []
    new["experiment"]["train"]["scheduler"] = "cosine"
    assert config_differences(old, new) == ["experiment.train.scheduler: '<absent>' -> 'cosine'"]
    # Saved before the number of processes was recorded: it ran as one process.
    new["experiment"]["train"] = {"epochs": 1}
    assert config_differences(old, {**new, "processes": 1}) == []
    assert config_differences(old, {**new, "processes": 2}) == ["processes: None -> 2"]
    assert config_differences({**old, "processes": 2}, {**new, "processes": 1}) == \
        ["processes: 2 -> 1"]


# -- a tiny experiment, end to end ----------------------------------------------------------------
SHAPE = (48, 56)
STRATEGIES = ("random", "bald")


def tiny_config(**overrides):
    # One torch thread: the test machines have two busy cores, where two spinning OpenMP
    # threads per process run several times slower.
    fields = {"preset": "tiny", "device": "cpu", "threads": 1,
              "train": {"epochs": 2, "patience": 2, "health_min_dice": 0.0},
              "strategies": STRATEGIES, "seeds": 2, "k": 2, "rounds": 2,
              "until_fraction": None, "sample_n": 16, "passes": 3}
    fields.update(overrides)
    return make_config(**fields)


@pytest.fixture(scope="module")
def pool():
    return load_pool(tiny_config(), sample_shape=SHAPE)


@pytest.fixture(scope="module")
def finished(tmp_path_factory, pool):
    out = tmp_path_factory.mktemp("experiment")
    events = []
    result = drain(run_experiment(tiny_config(), out, sample_shape=SHAPE, pool=pool,
                                  command="pytest"), events.append)
    return out, result, events


def test_semi_supervised_term_never_sees_the_test_pool(tmp_path, pool, recipe_plans):
    plans = recipe_plans
    config = tiny_config(strategies=("random",), seeds=1, rounds=1)
    drain(run_experiment(config, tmp_path / "x", sample_shape=SHAPE, pool=pool,
                         command="pytest"))
    test_ids = set(make_splits(len(pool), config).test)
    assert len(plans) == 3  # full run, round 0, round 1
    for plan in plans:
        assert not test_ids & set(plan.unlabelled_ids + plan.train_ids + plan.val_ids)
    assert plans[1].unlabelled_ids and plans[0].unlabelled_ids == []  # full: nothing left


def test_rounds_csv_columns_and_values(finished, pool):
    out, result, events = finished
    table = read_rounds(out / "rounds.csv")
    assert list(table.columns) == round_columns(pool.class_names)
    assert "dice_ICM" in table and "cumulative_scratch_pixels" in table
    assert len(table) == 2 * (len(STRATEGIES) * 3 + 1)
    assert not table.duplicated(["strategy", "seed", "round"]).any()
    assert result.rows_written == len(table) and result.rows_resumed == 0
    record = json.loads((out / "config.json").read_text())
    test_ids = set(record["pool"]["test_ids"])
    assert record["generator_version"] and record["sample_shape"] == list(SHAPE)
    assert record["versions"]["torch"] and record["command"] == "pytest"
    n_train_pool = 16 - len(test_ids)
    assert (table["n_train_pool"] == n_train_pool).all()
    for (_, seed), run in table[table["strategy"] != "full"].groupby(["strategy", "seed"]):
        run = run.sort_values("round")
        assert list(run["round"]) == [0, 1, 2]
        assert np.all(np.diff(run["fraction"]) > 0)
        assert list(run["n_labelled"]) == [2, 4, 6]
        np.testing.assert_allclose(run["fraction"], run["n_labelled"] / n_train_pool)
        labelled = set(record["pool"]["initial_ids"][str(seed)])
        cum = int(pool.foreground[sorted(labelled)].sum())
        for row in run.itertuples():
            acquired = parse_ids(row.acquired_ids)
            assert len(acquired) == (2 if row.round < 2 else 0)
            assert not labelled & set(acquired), "acquired an already labelled image"
            assert not test_ids & set(acquired), "acquired a test image"
            assert row.scratch_pixels == int(pool.foreground[acquired].sum())
            assert 0 <= row.correction_pixels <= sum(pool.truth[i].size for i in acquired)
            assert row.cumulative_scratch_pixels == cum
            assert 0 <= row.mean_dice <= 1 and 0 <= row.pixel_accuracy <= 1
            assert row.steps >= 1 and row.train_seconds >= 0
            labelled |= set(acquired)
            cum += row.scratch_pixels
    full = table[table["strategy"] == "full"]
    assert len(full) == 2 and (full["fraction"] == 1.0).all()
    assert (full["n_labelled"] == n_train_pool).all()
    assert isinstance(events[0], ExperimentPlan) and events[0].total_rows == len(table)
    assert sum(isinstance(e, RoundRecorded) for e in events) == len(table)


def test_pairing_round0_shared_and_test_split_fixed(finished):
    out, _, _ = finished
    table = read_rounds(out / "rounds.csv")
    round0 = table[(table["strategy"] != "full") & (table["round"] == 0)]
    for _, same_seed in round0.groupby("seed"):
        # Same initial labels, weights and test pool: the same round-0 model and metrics for
        # every strategy (what makes the comparison paired).
        metrics = same_seed[["mean_dice", "pixel_accuracy", "ece", "n_labelled"]]
        assert (metrics.nunique() == 1).all()
    record = json.loads((out / "config.json").read_text())
    config, _ = load_experiment_config(out)
    assert make_splits(16, config).test == record["pool"]["test_ids"]


def test_summary_csv_and_figures(finished):
    out, _, _ = finished
    summary = pd.read_csv(out / "summary.csv")
    expected = ["strategy", "n_seeds", "aulc_mean", "aulc_std", "dice_at_10", "dice_at_20",
                "dice_at_30", "dice_at_50", "full_dice", "fraction_to_95", "reached_95",
                "aulc_diff_vs_random", "ci_low", "ci_high", "boot_ci_low", "boot_ci_high",
                "t_pvalue", "holm_pvalue", "wilcoxon_pvalue", "tost_pvalue", "verdict",
                "aulc_cost_mean", "cost_diff", "cost_ci_low", "cost_ci_high",
                "cost_holm_pvalue", "cost_tost_pvalue", "cost_verdict", "aulc_reviewed_mean",
                "reviewed_diff", "reviewed_ci_low", "reviewed_ci_high", "reviewed_holm_pvalue",
                "reviewed_tost_pvalue", "reviewed_verdict", "reviewed_to_95",
                "reviewed_reached_95"]
    assert list(summary.columns) == expected
    assert list(summary["strategy"]) == ["random", "bald", "full"]
    al = summary[summary["strategy"] != "full"]
    assert (al["n_seeds"] == 2).all()
    assert ((al["aulc_mean"] >= 0) & (al["aulc_mean"] <= 1)).all()
    assert np.isnan(summary.loc[0, "t_pvalue"])  # random vs itself
    assert summary["wilcoxon_pvalue"].isna().all()  # 2 seeds < 8
    for name in ("learning_curves", "dice_vs_effort", "dice_vs_clicks"):
        for suffix in (".png", ".svg"):
            path = out / f"{name}{suffix}"
            assert path.is_file() and path.stat().st_size > 1000
    assert (out / "learning_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (out / "resume_model.pt").exists()


def test_rerun_after_deleting_rows_resumes(finished, tmp_path, pool):
    src, _, _ = finished
    out = tmp_path / "resumed"
    shutil.copytree(src, out)
    lines = (out / "rounds.csv").read_text().splitlines(keepends=True)
    # Drop the last two rounds (bald seed 1 rounds 1, 2) and leave half a line, as a crash
    # in the middle of a write would.
    (out / "rounds.csv").write_text("".join(lines[:-2]) + "bald,1,1,6,13")
    result = drain(run_experiment(tiny_config(), out, sample_shape=SHAPE, pool=pool))
    table = read_rounds(out / "rounds.csv")
    raw = pd.read_csv(out / "rounds.csv")
    assert len(raw) == len(lines) - 1 and not raw.duplicated(["strategy", "seed", "round"]).any()
    assert result.rows_written == 2 and result.rows_resumed == len(lines) - 3
    before = read_rounds(src / "rounds.csv")
    assert list(table["init"].tail(2)) == ["fresh (resumed)", "warm"]
    run = table[(table["strategy"] == "bald") & (table["seed"] == 1)].sort_values("round")
    seen = set(json.loads((out / "config.json").read_text())["pool"]["initial_ids"]["1"])
    for ids in run["acquired_ids"]:
        assert not seen & set(parse_ids(ids))
        seen |= set(parse_ids(ids))
    # The recorded rounds are untouched.
    pd.testing.assert_frame_equal(table.head(len(lines) - 3), before.head(len(lines) - 3))
    # Nothing left to do: a third call writes nothing.
    again = drain(run_experiment(tiny_config(), out, sample_shape=SHAPE, pool=pool))
    assert again.rows_written == 0 and len(read_rounds(out / "rounds.csv")) == len(table)


def test_resume_rows_written_before_the_reviewed_pixels_column(finished, tmp_path, pool):
    """Rows from before ``reviewed_pixels`` existed (blank there) resume an image arm with the
    same cumulative reviewed pixels as the uninterrupted run: the value follows from the
    acquired ids. A blank click count cannot be recovered, and says so."""
    src, _, _ = finished
    out = tmp_path / "old_rows"
    shutil.copytree(src, out)
    raw = pd.read_csv(out / "rounds.csv")
    old = raw.iloc[:-2].copy()  # bald seed 1 rounds 1 and 2 still to run
    old[["reviewed_pixels", "cumulative_reviewed_pixels"]] = np.nan
    old.to_csv(out / "rounds.csv", index=False)
    drain(run_experiment(tiny_config(), out, sample_shape=SHAPE, pool=pool))
    resumed = read_rounds(out / "rounds.csv").tail(2)
    before = read_rounds(src / "rounds.csv").tail(2)
    assert list(resumed["cumulative_reviewed_pixels"]) == list(
        before["cumulative_reviewed_pixels"])
    assert list(resumed["reviewed_pixels"]) == list(before["reviewed_pixels"])

    broken = raw.iloc[:-2].copy()
    broken["correction_clicks"] = np.nan
    broken.to_csv(out / "rounds.csv", index=False)
    with pytest.raises(ValueError, match="no correction_clicks"):
        drain(run_experiment(tiny_config(), out, sample_shape=SHAPE, pool=pool))


def test_close_generator_then_resume(tmp_path, pool, finished):
    config = tiny_config(seeds=1, rounds=2)
    out = tmp_path / "interrupted"
    gen = run_experiment(config, out, sample_shape=SHAPE, pool=pool)
    recorded = 0
    for event in gen:
        if isinstance(event, RoundRecorded):
            recorded += 1
            if recorded == 3:  # full, random r0, random r1
                break
    gen.close()
    assert len(read_rounds(out / "rounds.csv")) == 3
    assert (out / "resume_model.pt").is_file()
    result = drain(run_experiment(config, out, sample_shape=SHAPE, pool=pool))
    table = read_rounds(out / "rounds.csv")
    assert len(table) == 1 + 2 * 3 and result.rows_written == 4 and result.rows_resumed == 3
    assert not pd.read_csv(out / "rounds.csv").duplicated(["strategy", "seed", "round"]).any()
    random_r2 = table[(table["strategy"] == "random") & (table["round"] == 2)].iloc[0]
    assert random_r2["init"] == "warm (resumed)"  # continued from the saved weights
    # Interrupted and resumed, seed 0 is the same experiment as seed 0 of the uninterrupted
    # two-seed run: same acquisitions, same scores (splits and seeds depend on the seed only).
    reference = read_rounds(finished[0] / "rounds.csv")
    columns = ["strategy", "round", "n_labelled", "acquired_ids", "mean_dice", "steps"]
    pd.testing.assert_frame_equal(
        table[table["seed"] == 0][columns].reset_index(drop=True),
        reference[reference["seed"] == 0][columns].reset_index(drop=True))
    assert (out / "summary.csv").is_file() and (out / "learning_curves.png").is_file()


def test_different_settings_are_refused(finished, pool):
    out, _, _ = finished
    with pytest.raises(ValueError) as info:
        drain(run_experiment(tiny_config(k=3), out, sample_shape=SHAPE, pool=pool))
    assert "experiment.k: 2 -> 3" in str(info.value)
    assert "new --out" in str(info.value)


def test_cli_runs_and_reports(tmp_path, capsys):
    from napari_alunet.cli import main

    out = tmp_path / "cli"
    argv = ["experiment", "--preset", "tiny", "--strategies", "random", "entropy", "--seeds",
            "1", "--rounds", "1", "--sample-n", "10", "--sample-shape", "40", "40", "--epochs",
            "1", "--passes", "2", "--device", "cpu", "--threads", "1", "--quiet", "--out",
            str(out)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "| random |" in text and "| entropy |" in text
    saved = json.loads((out / "config.json").read_text())
    assert saved["experiment"]["strategies"] == ["random", "entropy"]
    assert "experiment" in saved["command"]
    assert main(argv + ["--epochs", "2"]) == 2  # the last --epochs wins
    assert "train.epochs: 1 -> 2" in capsys.readouterr().err
    assert main(["experiment", "--report-only", "--out", str(out)]) == 0


def test_split_strategy_names_and_errors():
    from napari_alunet.experiment import split_strategy

    assert split_strategy("bald") == ("bald", "none")
    assert split_strategy("bald", "power") == ("bald", "power")  # --diversity default
    assert split_strategy("bald+power") == ("bald", "power")
    assert split_strategy("entropy+feature", "power") == ("entropy", "feature")  # suffix wins
    assert split_strategy("random", "power") == ("random", "none")  # random never diversifies
    for bad in ("bald+foo", "foo+power", "random+power"):
        with pytest.raises(ValueError):
            split_strategy(bad)


def test_cli_diversity_reaches_the_scorer(tmp_path, capsys, monkeypatch):
    from napari_alunet import scoring
    from napari_alunet.cli import main

    seen = []
    real = scoring.score_pool

    def spy(model, ids, load, config, **kwargs):
        seen.append((config.strategy, config.diversity, config.power_beta))
        return (yield from real(model, ids, load, config, **kwargs))

    monkeypatch.setattr(scoring, "score_pool", spy)
    out = tmp_path / "div"
    argv = ["experiment", "--preset", "tiny", "--strategies", "random", "bald", "bald+power",
            "entropy+feature", "--diversity", "none", "--power-beta", "2", "--seeds", "1",
            "--rounds", "1", "--sample-n", "10", "--sample-shape", "40", "40", "--epochs", "1",
            "--passes", "2", "--device", "cpu", "--threads", "1", "--quiet", "--out", str(out)]
    assert main(argv) == 0
    assert "| bald+power |" in capsys.readouterr().out
    assert set(seen) >= {("bald", "none", 2.0), ("bald", "power", 2.0),
                         ("entropy", "feature", 2.0)}
    table = read_rounds(out / "rounds.csv")
    assert {"bald+power", "entropy+feature"} <= set(table["strategy"])
    saved = json.loads((out / "config.json").read_text())
    assert saved["experiment"]["strategies"] == ["random", "bald", "bald+power", "entropy+feature"]
    assert saved["experiment"]["acquisition"]["power_beta"] == 2.0
    assert "--power-beta 2.0" in saved["command"] and "--diversity none" in saved["command"]
    with pytest.raises(SystemExit):  # argparse rejects an unknown diversity suffix
        main(argv[:-2] + ["--strategies", "bald+foo", "--out", str(out)])


def test_arm_grammar():
    from napari_alunet.experiment.settings import Arm, parse_arm

    assert parse_arm("random#2") == Arm("random#2", "random", "none", "random", 2)
    assert parse_arm("typical:bald+power") == Arm("typical:bald+power", "bald", "power",
                                                  "typical", 1)
    assert parse_arm("bald", "softrank").diversity == "softrank"
    # The oracle takes k by the same batch rule as the other arms; it differs by its score.
    assert parse_arm("oracle_error", "power") == Arm("oracle_error", "oracle_error", "power")
    assert parse_arm("oracle_error+none").diversity == "none"
    assert parse_arm("bald+badge").diversity == "badge"
    for bad in ("densest:bald", "bald#0", "bald#x", "oracle_error+badge", "random+badge"):
        with pytest.raises(ValueError):
            parse_arm(bad)


def test_cost_axis_windows_are_per_seed():
    from napari_alunet.experiment.report import aulc_window, cost_window, per_seed_statistics

    assert aulc_window([0, 10, 20], [0.2, 0.4, 0.4], 0, 20) == pytest.approx(0.35)
    assert aulc_window([0, 10, 20], [0.2, 0.4, 0.4], 5, 15) == pytest.approx(0.375)
    assert math.isnan(aulc_window([5, 10], [0.2, 0.4], 0, 10))  # not covered: no extrapolation
    rows = []
    for seed, scale in ((0, 1.0), (1, 10.0)):  # seed 1 pays ten times more clicks
        for arm, dice in (("random", (0.5, 0.6)), ("bald", (0.5, 0.7))):
            for r in range(2):
                rows.append({"strategy": arm, "seed": seed, "round": r, "fraction": 0.1 * (r + 1),
                             "mean_dice": dice[r],
                             "cumulative_correction_clicks": scale * (10 + 10 * r)})
    table = pd.DataFrame(rows)
    assert cost_window(table) == {0: (10.0, 20.0), 1: (100.0, 200.0)}
    per_seed = per_seed_statistics(table).set_index(["strategy", "seed"])
    assert per_seed.loc[("bald", 1), "aulc_cost"] == pytest.approx(0.6)
    assert per_seed.loc[("random", 0), "aulc_cost"] == pytest.approx(0.55)


def test_redundant_pool_experiment_reports_modes_and_splits_over_seeds(tmp_path):
    """The benchmark pool: a fresh test set with every mode, per-mode Dice, clicks; running
    seeds 0-1 in two calls (first_seed) gives the rows of running them in one."""
    common = dict(preset="tiny", data="redundant", sample_n=24, test_per_mode=1,
                  strategies=("random", "oracle_error"), k=3, rounds=1, until_fraction=None,
                  passes=2, train={"steps": 4, "semi_supervised": False}, threads=1)
    shape = (40, 48)
    whole = drain(run_experiment(make_config(seeds=2, **common), tmp_path / "whole",
                                 sample_shape=shape))
    parts = [drain(run_experiment(make_config(seeds=1, first_seed=s, **common),
                                  tmp_path / f"part{s}", sample_shape=shape)) for s in (0, 1)]
    table = whole.rounds
    modes = [c for c in table.columns if c.startswith("dice_mode_")]
    assert len(modes) == 6 and "worst_mode_dice" in table.columns
    assert (table["worst_mode_dice"] <= table[modes].min(axis=1) + 1e-12).all()
    assert (table.loc[table["round"] == 0, "cumulative_correction_clicks"] > 0).all()
    record = json.loads((tmp_path / "whole" / "config.json").read_text())
    test_modes = {record["pool"]["modes"][i] for i in record["pool"]["test_ids"]}
    assert len(test_modes) == 6  # every mode in the test set
    merged = pd.concat([p.rounds for p in parts]).sort_values(["seed", "strategy", "round"])
    ours = table.sort_values(["seed", "strategy", "round"])
    for column in ("mean_dice", "acquired_ids", "correction_clicks"):
        assert list(merged[column]) == list(ours[column])
    # One arm again without the full-data baseline (a rerun): the same rows, no full rows.
    rerun = drain(run_experiment(make_config(seeds=2, full_baseline=False, **{
        **common, "strategies": ("oracle_error",)}), tmp_path / "rerun", sample_shape=shape))
    assert set(rerun.rounds["strategy"]) == {"oracle_error"}
    again = rerun.rounds.sort_values(["seed", "round"])
    first = ours[ours["strategy"] == "oracle_error"]
    for column in ("mean_dice", "acquired_ids"):
        assert list(again[column]) == list(first[column])


def test_full_baseline_budget():
    from napari_alunet.experiment.settings import full_budget

    config = make_config(preset="tiny", train={"min_steps": 100, "steps_per_image": 2,
                                               "max_steps": 1000})
    assert full_budget(config, 50) == 3 * 200  # three times an active fit of 50 images
    assert full_budget(config, 400) == 1000  # capped
    assert full_budget(make_config(preset="tiny", train={"steps": 7}), 50) is None
    assert full_budget(make_config(preset="tiny", full_steps_factor=1.0), 50) is None
    with pytest.raises(ValueError, match="full_steps_factor"):
        from napari_alunet.experiment.settings import check_config

        check_config(make_config(preset="tiny", full_steps_factor=0.5))


def test_region_arms_review_only_their_regions_and_resume_identically(tmp_path):
    """Region-level arms (issue 14): tiles across the pool, partial labels, costs counted in
    the regions only, the reviewed-pixels axis in the summary, and an interrupted run resumes
    to the same rows."""
    from napari_alunet.experiment.records import parse_regions

    common = dict(preset="tiny", data="redundant", sample_n=24, test_per_mode=1,
                  strategies=("random", "random@region", "bald+power@region"), k=2, rounds=2,
                  until_fraction=None, passes=2, region_size=16, seeds=1, warm_start=False,
                  train={"steps": 4, "semi_supervised": False}, threads=1)
    shape = (40, 48)
    whole = drain(run_experiment(make_config(**common), tmp_path / "whole", sample_shape=shape))
    table = whole.rounds
    first = table[(table["round"] == 0) & (table["strategy"] != "full")]
    assert first["cumulative_reviewed_pixels"].nunique() == 1  # the same initial set
    assert first["mean_dice"].nunique() == 1  # and the same shared round-0 model
    regions = table[table["strategy"].str.endswith("@region")]
    seen: dict[tuple[str, int], set[int]] = {}
    for _, row in regions.sort_values(["strategy", "round"]).iterrows():
        tiles = parse_regions(row["acquired_regions"])
        if row["round"] < 2:
            assert tiles and row["reviewed_pixels"] > 0
            assert row["correction_pixels"] <= row["reviewed_pixels"]
            assert row["scratch_pixels"] <= row["reviewed_pixels"]
        for image_id, ts in tiles.items():
            key = (row["strategy"], image_id)
            assert not seen.get(key, set()) & set(ts)  # a tile is never reviewed twice
            seen.setdefault(key, set()).update(ts)
    # Same reviewed budget per round as the image arm, up to tiles that are part padding.
    image = table[table["strategy"] == "random"].set_index("round")["reviewed_pixels"]
    for arm in ("random@region", "bald+power@region"):
        per_round = table[table["strategy"] == arm].set_index("round")["reviewed_pixels"]
        assert 0.3 * image[0] < per_round[0] < 2.0 * image[0]
    summary = whole.summary.set_index("strategy")
    assert np.isfinite(summary.loc["bald+power@region", "aulc_reviewed_mean"])
    assert "reviewed_diff" in summary.columns
    # Interrupted after the first region round: resuming replays the reviewed regions and
    # gives the uninterrupted rows (cold starts each round, so no weights need to survive).
    out = tmp_path / "resumed"
    shutil.copytree(tmp_path / "whole", out)
    lines = (out / "rounds.csv").read_text().splitlines(keepends=True)
    header, rows = lines[0], lines[1:]
    keep = [r for r in rows if not (r.startswith("bald+power@region") and ",0,1," in r[:40])]
    keep = [r for r in keep if not (r.startswith("bald+power@region,0,2,"))]
    (out / "rounds.csv").write_text(header + "".join(keep))
    resumed = drain(run_experiment(make_config(**common), out, sample_shape=shape))
    assert resumed.rows_written == len(rows) - len(keep)
    a = table.sort_values(["strategy", "seed", "round"]).reset_index(drop=True)
    b = resumed.rounds.sort_values(["strategy", "seed", "round"]).reset_index(drop=True)
    for column in ("mean_dice", "acquired_regions", "reviewed_pixels", "correction_clicks"):
        assert list(a[column]) == list(b[column]), column


def test_a_run_recorded_before_the_region_columns_resumes(tmp_path):
    """rounds.csv of an older version (without the columns added at the end) is upgraded in
    place, its rows kept, instead of refusing the resume."""
    from napari_alunet.experiment.records import RoundsFile

    columns = round_columns(("background", "a"))
    old = columns[:-3]
    path = tmp_path / "rounds.csv"
    path.write_text(",".join(old) + "\n" + ",".join(["x"] * len(old)) + "\n")
    rounds = RoundsFile(path, columns)
    rounds.append({"strategy": "random", "seed": 1, "acquired_regions": "3:1.2"})
    lines = path.read_text().splitlines()
    assert lines[0] == ",".join(columns)
    assert lines[1] == ",".join(["x"] * len(old)) + ",,,"
    assert lines[2].startswith("random,1,") and lines[2].endswith(",3:1.2")
    path.write_text("other,header\n")
    with pytest.raises(ValueError, match="new --out"):
        RoundsFile(path, columns)
