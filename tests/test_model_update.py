"""Update model: retrain the round's model on the labels committed so far while the review
goes on; the queue keeps its images and gets the new model's predictions."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from _projects import import_tiny

from napari_alunet.config import AcquisitionConfig, TrainConfig, model_preset
from napari_alunet.events import StepEvent, drain
from napari_alunet.fileio import TEMP_PREFIX, sha256_file
from napari_alunet.loop import RoundSettings, run_round
from napari_alunet.model_update import labelled_for_model, update_model
from napari_alunet.review import oracle_commit, review_item
from napari_alunet.store import RoundStatus


def settings() -> RoundSettings:
    return RoundSettings(
        model=model_preset("tiny"),
        train=TrainConfig(steps=6, batch_size=4, augment=False, seed=0, health_min_dice=0.0,
                          semi_supervised=False),
        acquisition=AcquisitionConfig(strategy="bald", passes=3, k=3, batch_size=8))


@pytest.fixture
def in_review(tmp_path, pool_dir):
    """Round 0 queued (3 images), one of them corrected (oracle) and committed."""
    with import_tiny(pool_dir, tmp_path / "proj") as project:
        drain(run_round(project, settings()))
        oracle_commit(project, project.queue()[:1])
        yield project


def _state(project):
    current = project.current_round()
    caches = {i: project.review_cache_path(current.idx, i).read_bytes() for i in project.queue()}
    return (current.model_version, current.config, project.queue(),
            sha256_file(project.checkpoint_path(current.idx)), caches,
            sorted(r.id for r in project.images("labelled")))


def test_update_retrains_on_the_new_labels_and_refreshes_the_queue(in_review):
    project = in_review
    before = project.current_round()
    pending = project.queue()
    assert len(pending) == 2
    scores = {i: review_item(project, i).score for i in pending}
    old_caches = {i: project.review_cache_path(0, i).read_bytes() for i in pending}
    n_labelled = len(project.images("labelled"))
    assert labelled_for_model(before) == n_labelled - 1

    result = drain(update_model(project))

    assert not result.cancelled and result.n_labelled == n_labelled
    assert result.refreshed == pending and 0.0 <= result.test_dice_after <= 1.0
    after = project.current_round()
    assert after.status == RoundStatus.QUEUED and project.queue() == pending  # same images
    # The round's model is the new one: the record's version is the checkpoint's hash.
    assert after.model_version != before.model_version
    assert sha256_file(project.path / after.checkpoint)[:16] == after.model_version
    # The model that ranked the pool is kept, in its own file, unchanged.
    assert after.checkpoint != before.checkpoint
    assert sha256_file(project.path / before.checkpoint)[:16] == before.model_version
    assert project.verify() == []
    update = after.config["updates"][0]
    assert update["replaced_version"] == before.model_version
    assert update["n_labelled"] == n_labelled and update["fit"]["steps_run"] == 6
    assert after.config["fit"] == before.config["fit"]  # the round's own fit record stays
    assert labelled_for_model(after) == n_labelled
    # The queued images show the new model's prediction; their scores are the ranking's.
    assert all(project.review_cache_path(0, i).read_bytes() != old_caches[i] for i in pending)
    assert {i: review_item(project, i).score for i in pending} == scores
    assert all(s is not None for s in scores.values())
    # The test metrics of the round stay those of the model that ranked the pool.
    assert not list((project.path / "models").glob(f"{TEMP_PREFIX}*"))
    # Nothing new since: a second update is refused with what to do.
    with pytest.raises(ValueError, match="commit a corrected image first"):
        drain(update_model(project))
    # The next round warm-starts from the updated model and runs as usual.
    oracle_commit(project)
    report = drain(run_round(project, settings()))
    assert report.round_idx == 1 and report.status == RoundStatus.QUEUED


def test_a_stopped_update_changes_nothing(in_review):
    project = in_review
    state = _state(project)
    gen = update_model(project)
    for event in gen:
        if isinstance(event, StepEvent) and event.step == 2:
            break
    gen.close()  # Stop in the GUI
    assert _state(project) == state
    assert not list((project.path / "models").glob(f"{TEMP_PREFIX}*"))


def test_images_committed_during_the_update_keep_their_labels(in_review):
    project = in_review
    pending = project.queue()
    gen = update_model(project)
    for event in gen:
        if isinstance(event, StepEvent):
            break
    # The reviewer commits the next image while the model trains (the GUI thread).
    truth = project.read_ground_truth(pending[0])
    oracle_commit(project, pending[:1])
    result = drain(gen)
    assert result.refreshed == pending[1:]
    assert project.queue() == pending[1:]
    assert np.array_equal(project.read_label(pending[0]), truth)
    # The update trained on the labels it read at its start; the new commit counts next time.
    assert labelled_for_model(project.current_round()) == len(project.images("labelled")) - 1
    assert drain(update_model(project)).n_labelled == len(project.images("labelled"))


def test_update_needs_a_round_in_review(tmp_path, pool_dir):
    with import_tiny(pool_dir, tmp_path / "proj") as project:
        with pytest.raises(ValueError, match="no round is in review"):
            drain(update_model(project))
        drain(run_round(project, dataclasses.replace(settings()), stop_after="evaluated"))
        with pytest.raises(ValueError, match="no round is in review"):
            drain(update_model(project))


def test_a_collapsed_update_keeps_the_round_model(in_review, monkeypatch):
    """A fit that fails the health check never replaces a working model."""
    from napari_alunet.training import recipe

    project = in_review
    state = _state(project)
    real = recipe.train_model

    def collapsed(*args, **kwargs):
        trained = yield from real(*args, **kwargs)
        trained.healthy = False
        return trained

    monkeypatch.setattr(recipe, "train_model", collapsed)
    events = []
    result = drain(update_model(project), events.append)
    assert not result.kept and not result.cancelled and result.refreshed == []
    assert any("health check" in getattr(e, "message", "") for e in events)
    assert _state(project) == state
    assert not list((project.path / "models").glob(f"{TEMP_PREFIX}*"))
