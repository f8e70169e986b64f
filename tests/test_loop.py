"""Active-learning rounds on a project: stages, resume, review, oracle, and the CLI around them."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _projects import import_tiny

from napari_alunet.cli import main
from napari_alunet.config import AcquisitionConfig, DataConfig, TrainConfig, model_preset
from napari_alunet.events import drain
from napari_alunet.importer import import_pool
from napari_alunet.loop import RoundSettings, StageEvent, run_round
from napari_alunet.review import commit_review, oracle_commit, review_item
from napari_alunet.store import Project


def tiny_settings(strategy: str = "bald", epochs: int = 2) -> RoundSettings:
    return RoundSettings(
        model=model_preset("tiny"),
        train=TrainConfig(epochs=epochs, patience=5, batch_size=4, augment=False, seed=0,
                          health_min_dice=0.0),
        acquisition=AcquisitionConfig(strategy=strategy, passes=3, k=2, batch_size=8),
    )


@pytest.fixture
def project(tmp_path, pool_dir):
    proj = import_tiny(pool_dir, tmp_path / "proj")
    yield proj
    proj.close()


def test_round_runs_every_stage_and_queues(project):
    events = []
    report = drain(run_round(project, tiny_settings()), events.append)
    stages = [e.stage for e in events if isinstance(e, StageEvent)]
    assert stages == ["train", "evaluate", "score", "done"]
    assert any(type(e).__name__ == "EvalEvent" for e in events)
    assert report.status == "queued" and len(report.queue) == 2
    assert set(report.queue) <= {r.id for r in project.images("unlabelled")}
    assert 0.0 <= report.test_metrics["mean_dice"] <= 1.0
    assert project.checkpoint_path(0).is_file()
    current = project.current_round()
    assert current.model_version and current.config["acquisition"]["strategy"] == "bald"
    scores = project.load_scores(0, current.model_version, "bald")
    assert set(scores) == {r.id for r in project.images("unlabelled")}
    # The reviewer's data is at the original image size.
    item = review_item(project, report.queue[0])
    record = project.image(report.queue[0])
    assert item.prediction.shape == (record.height, record.width)
    assert set(item.maps) >= {"entropy", "bald"}
    assert item.maps["bald"].shape == (record.height, record.width)
    assert item.score == pytest.approx(scores[report.queue[0]])


def test_round_trains_with_the_recipe_and_never_on_the_test_pool(project, recipe_plans):
    settings = tiny_settings()
    drain(run_round(project, settings))
    (plan,) = recipe_plans
    test = {r.id for r in project.images("test")}
    labelled = {r.id for r in project.images("labelled")}
    assert set(plan.unlabelled_ids) == {r.id for r in project.images("unlabelled")}
    assert plan.unlabelled_ids and not test & set(plan.unlabelled_ids)
    assert not test & set(plan.train_ids + plan.val_ids)
    assert set(plan.train_ids) == labelled  # 3 labelled: too few for a validation split
    # The round's record says how the model was chosen and what the fit used.
    fit = project.current_round().config["fit"]
    assert fit["selection"] == "final" and "whole budget" in fit["rule"]
    assert fit["semi_supervised"] is True and fit["n_unlabelled"] == len(plan.unlabelled_ids)
    assert fit["steps_run"] == settings.train.planned_steps(len(labelled)) and fit["healthy"]
    # ...and the stored settings still load as settings.
    assert RoundSettings.from_dict(project.current_round().config).train == settings.train
    # Scoring again with another strategy keeps the record of how the model was trained.
    from napari_alunet.loop import rescore

    drain(rescore(project, AcquisitionConfig(strategy="entropy", passes=2, k=1, batch_size=8)))
    assert project.current_round().config["fit"] == fit
    assert project.current_round().config["acquisition"]["strategy"] == "entropy"


def test_queue_images_adds_the_users_pick_with_a_fresh_prediction(project):
    from napari_alunet import active
    from napari_alunet.loop import load_round_model, queue_images

    with pytest.raises(ValueError, match="no round is in review"):
        drain(queue_images(project, [project.images("unlabelled")[0].id]))
    report = drain(run_round(project, tiny_settings()))
    others = [r.id for r in project.images("unlabelled") if r.id not in report.queue]
    pick = others[-1]
    added = drain(queue_images(project, [pick, report.queue[0]]))
    assert added == [pick]  # an image pending already is not queued twice
    assert project.queue() == report.queue + [pick]  # after the strategy's own picks
    item = review_item(project, pick)
    record = project.image(pick)
    assert item.prediction.shape == (record.height, record.width)
    assert set(item.maps) >= {"entropy", "bald"}
    # The same numbers the round's acquisition gives an image it takes (same seeded pass).
    settings = tiny_settings()
    model = load_round_model(project, project.current_round(), settings)
    pool = active.ProjectPool(project, settings.model.input_size)
    again = drain(active.predict_for_review(pool, model, report.queue[:1],
                                            settings.acquisition))
    cached = review_item(project, report.queue[0])
    assert np.array_equal(again.predictions[report.queue[0]], cached.prediction)
    np.testing.assert_allclose(again.maps[report.queue[0]]["bald"], cached.maps["bald"],
                               atol=2e-3)  # the cache stores float16
    for wrong in (project.images("labelled")[0], project.images("test")[0]):
        with pytest.raises(ValueError, match="only unlabelled images"):
            drain(queue_images(project, [wrong.id]))
    assert project.queue() == report.queue + [pick]  # a refused call changes nothing


def test_margin_queue_caches_the_margin_map_review_shows(project):
    """The map the Review panel shows for a strategy is the one its score reduces, and it is
    cached with the queued images (margin was shown as entropy)."""
    from napari_alunet.config import REVIEW_MAPS, STRATEGY_MAPS
    from napari_alunet.loop import rescore

    drain(run_round(project, tiny_settings()))
    drain(rescore(project, AcquisitionConfig(strategy="margin", passes=2, k=1, batch_size=8)))
    item = review_item(project, project.queue()[0])
    assert set(item.maps) == {*REVIEW_MAPS, "margin"}
    pytest.importorskip("napari")
    from napari_alunet.widgets._layers import STRATEGY_MAP

    assert STRATEGY_MAP["margin"] == STRATEGY_MAPS["margin"] == "margin"


def test_commit_undo_oracle_and_next_round(project):
    first = drain(run_round(project, tiny_settings()))
    top = first.queue[0]
    item = review_item(project, top)
    corrected = item.prediction.copy()
    corrected[:4, :4] = 3
    version = commit_review(project, top, corrected, seconds_spent=12.0)
    assert version.round_index == 1 and version.source == "human"
    assert version.pixels_changed == int(np.count_nonzero(corrected != item.prediction))
    assert project.image(top).pool == "labelled"
    project.undo_last_commit()
    assert project.image(top).pool == "unlabelled" and project.queue() == first.queue
    oracle = oracle_commit(project)
    assert [v.source for v in oracle] == ["oracle", "oracle"]
    n_labelled = len(project.images("labelled"))
    second = drain(run_round(project, tiny_settings()))
    assert second.round_idx == 1 and second.n_labelled == n_labelled
    assert project.round(0).status == "complete"
    assert not set(second.queue) & set(first.queue)


def test_interrupted_training_resumes(project):
    gen = run_round(project, tiny_settings(epochs=3))
    for event in gen:
        if type(event).__name__ == "StepEvent":
            break
    gen.close()  # the user pressed Stop mid-epoch
    assert project.current_round().status == "started"
    report = drain(run_round(project))  # resumes with the settings the round started with
    assert report.round_idx == 0 and report.status == "queued"
    assert project.current_round().config["train"]["epochs"] == 3


def test_stop_after_evaluation(project):
    report = drain(run_round(project, tiny_settings(), stop_after="evaluated"))
    assert report.status == "evaluated" and report.queue == []
    assert drain(run_round(project)).status == "queued"  # continues at scoring


def test_cold_start_without_labels(tmp_path):
    (tmp_path / "only" / "images").mkdir(parents=True)
    from PIL import Image

    for i in range(5):
        Image.fromarray(np.full((20, 24), 40 * i, np.uint8)).save(
            tmp_path / "only" / "images" / f"e{i}.png")
    drain(import_pool(tmp_path / "only", tmp_path / "p", data=DataConfig(input_size=32)))
    with Project.open(tmp_path / "p") as project:
        report = drain(run_round(project, tiny_settings()))
        assert report.status == "queued" and len(report.queue) == 2
        assert review_item(project, report.queue[0]).prediction is None
        with pytest.raises(ValueError, match="no stored ground truth"):
            oracle_commit(project)


def test_cli_round_score_oracle_predict(tmp_path, pool_dir, capsys):
    proj = tmp_path / "cli_proj"
    assert main(["import", str(pool_dir), str(proj), "--quiet",
                 "--initial-fraction", "0.25"]) == 0
    capsys.readouterr()
    assert main(["train", str(proj), "--preset", "tiny", "--epochs", "1", "--json"]) == 0
    trained = json.loads(capsys.readouterr().out)
    assert trained["status"] == "evaluated" and "mean_dice" in trained["test"]
    assert main(["score", str(proj), "--strategy", "entropy", "--batch", "none", "--top", "3",
                 "--passes", "2", "--json"]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert len(scored["queue"]) == 3
    ranked = sorted(scored["scores"].values(), reverse=True)
    assert [scored["scores"][n] for n in scored["queue"]] == ranked[:3]
    assert main(["oracle", str(proj)]) == 0
    assert main(["predict", str(proj / "models" / "round_000.pt"), str(pool_dir),
                 str(tmp_path / "pred"), "--uncertainty", "tta", "--quiet"]) == 0
    masks = sorted((tmp_path / "pred" / "masks").glob("*.png"))
    assert len(masks) == 12
    rows = (tmp_path / "pred" / "scores.csv").read_text().splitlines()
    assert len(rows) == 13 and rows[0].startswith("image,mask,uncertainty,mean_uncertainty")
    import tifffile

    umap = tifffile.imread(next((tmp_path / "pred" / "uncertainty").glob("*.tif")))
    assert umap.dtype == np.float32 and umap.shape == (40, 48)


def test_bad_options_are_refused_before_anything_is_saved_and_a_stuck_round_restarts(
        tmp_path, capsys):
    """Issue 12, class 2: a typo never stalls a project; a resumed round says whose settings
    it uses; restart abandons a round (never a pending queue without --drop-queue)."""
    from napari_alunet.cli import main
    from napari_alunet.store import Project

    assert main(["sample", str(tmp_path / "pool"), "--n", "10", "--seed", "1",
                 "--shape", "48", "56"]) == 0
    assert main(["import", str(tmp_path / "pool"), str(tmp_path / "p"), "--seed", "2",
                 "--quiet"]) == 0
    project = str(tmp_path / "p")
    common = ["--preset", "tiny", "--steps", "3", "--passes", "2", "--device", "cpu", "--quiet"]
    for bad, named in ((["--top", "-1"], "k must be"), (["--passes", "0"], "passes must be"),
                       (["--subset", "-1"], "subset must be"), (["--lr", "nan"], "learning_rate"),
                       (["--lr", "-1"], "learning_rate"), (["--seed", "-5"], "seed must be"),
                       (["--beta", "-2"], "power_beta")):
        assert main(["round", project, *common, *bad]) == 2, bad
        assert named in capsys.readouterr().err, bad
        with Project.open(project, read_only=True) as p:
            assert p.rounds() == [], bad  # nothing saved
    # A round stopped after training keeps its settings; a resume with other options says so.
    assert main(["train", project, "--preset", "tiny", "--steps", "3", "--device", "cpu",
                 "--quiet"]) == 0
    capsys.readouterr()
    assert main(["round", project, "--preset", "tiny", "--steps", "5", "--passes", "2",
                 "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "resuming round 0" in out and "train.steps: 3 -> 5" in out
    # The round is queued now: restart refuses to drop its queue unless asked.
    assert main(["round", project, *common, "--restart"]) == 2
    assert "waiting for review" in capsys.readouterr().err
    with Project.open(project, read_only=True) as p:
        queued = p.queue()
        assert queued and p.current_round().status == "queued"
    assert main(["round", project, *common, "--restart", "--drop-queue"]) == 0
    with Project.open(project, read_only=True) as p:
        statuses = [r.status for r in p.rounds()]
        assert statuses == ["abandoned", "queued"]
        assert p.queue(0) == []  # the abandoned round's queue is not pending any more


def test_the_panels_jobs_are_core_generators(project, tmp_path):
    """The jobs the widgets run in workers (oracle over the queue, feature maps, a sample
    project) are core generators with progress, usable headless."""
    from napari_alunet.events import WorkProgress
    from napari_alunet.importer import import_sample
    from napari_alunet.loop import feature_maps
    from napari_alunet.review import oracle_commit_each

    drain(run_round(project, tiny_settings()))
    queue = project.queue()
    assert len(queue) == 2
    # Closing the oracle after the first image keeps that commit and leaves the other queued.
    job = oracle_commit_each(project)
    first = next(job)
    assert isinstance(first, WorkProgress) and (first.done, first.total) == (0, 2)
    next(job)
    job.close()
    assert project.queue() == queue[1:]
    assert project.label_history(queue[0])[-1].source == "oracle"
    events: list = []
    versions = drain(oracle_commit_each(project), events.append)
    assert [v.image_id for v in versions] == queue[1:] and project.queue() == []
    # Feature maps of a block of round 0's model, for an image at its letter-boxed size.
    activations, box = drain(feature_maps(project, 0, queue[0], "enc0"), events.append)
    assert activations.ndim == 3 and activations.shape[0] == 8  # tiny preset: 8 channels
    assert box.size == 32
    # A sample project: the pool is written, then imported.
    summary = drain(import_sample(tmp_path / "sample_pool", tmp_path / "sample_proj", 6, 1,
                                  shape=(40, 48), data=DataConfig(test_fraction=0.2)),
                    events.append)
    assert sum(summary.counts.values()) == 6 and (tmp_path / "sample_pool" / "images").is_dir()
    assert any(isinstance(e, WorkProgress) and "synthetic" in e.message for e in events)


def test_one_click_region_edits_are_exact():
    from napari_alunet.config import UNKNOWN_LABEL
    from napari_alunet.review import accept_region, component_at, erase_region

    prediction = np.zeros((20, 30), np.uint8)
    prediction[2:6, 2:6] = 1
    prediction[2:6, 10:14] = 1  # the same class, not connected
    prediction[10:18, 5:25] = 2
    labels = np.full((20, 30), UNKNOWN_LABEL, np.uint8)  # "confident" start: nothing known
    labels[12, 8] = 2  # one pixel already right
    mask, cls = accept_region(labels, prediction, (3, 3))
    assert cls == 1 and mask.sum() == 16 and mask[2:6, 2:6].all()  # one blob, not the other
    mask, cls = accept_region(labels, prediction, (11.4, 7.6))  # napari's data coordinates
    assert cls == 2 and mask.sum() == 8 * 20 - 1  # the pixel already 2 needs no change
    labels[10:18, 5:25] = 2
    assert erase_region(labels, (15, 15)).sum() == 160
    assert not erase_region(labels, (0, 0)).any()  # unknown stays unknown
    labels[0, 0] = 0
    assert not erase_region(labels, (0, 0)).any()  # background: nothing to erase
    assert component_at(prediction, (0, 0)).sum() == 20 * 30 - 16 - 16 - 160
    with pytest.raises(ValueError, match="outside"):
        component_at(prediction, (-1, 3))
