"""The starter model (issue 13): a synthetic-only network a project without a model starts
from; tested with a tiny-preset starter put where the package keeps its own."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from napari_alunet import starter
from napari_alunet.active import predict_for_review
from napari_alunet.config import AcquisitionConfig, DataConfig, TrainConfig, model_preset
from napari_alunet.data.sample_files import write_sample_pool
from napari_alunet.events import StageEvent, drain
from napari_alunet.importer import import_pool
from napari_alunet.loop import RoundSettings, run_round
from napari_alunet.model import build_model
from napari_alunet.pools import ProjectPool
from napari_alunet.review import review_item
from napari_alunet.store import Project
from napari_alunet.training.checkpoint import CheckpointError, save_checkpoint
from napari_alunet.training.engine import reset_parameters

CLASSES = ("background", "ICM", "TE", "ZP", "BL")


@pytest.fixture
def tiny_starter(tmp_path, monkeypatch):
    """A tiny-preset starter (float16 weights, as shipped) in a stand-in package folder."""
    folder = tmp_path / "models"
    monkeypatch.setattr(starter, "STARTER_DIR", folder)
    model = reset_parameters(build_model(model_preset("tiny")), seed=123)
    save_checkpoint(folder / "starter_tiny.pt", model.half(), model_config=model_preset("tiny"),
                    class_names=CLASSES)
    (folder / "starter_tiny.json").write_text(json.dumps({"class_names": list(CLASSES)}))
    return reset_parameters(build_model(model_preset("tiny")), seed=123)


def settings(use_starter=True):
    return RoundSettings(
        model=model_preset("tiny"),
        train=TrainConfig(steps=3, batch_size=4, augment=False, seed=0, health_min_dice=0.0,
                          semi_supervised=False, starter=use_starter),
        acquisition=AcquisitionConfig(strategy="bald", passes=2, k=3, batch_size=8))


@pytest.fixture(scope="module")
def pool_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("pool")
    write_sample_pool(root, 10, seed=4, layout="binary", shape=(40, 48))
    return root


def _project(tmp_path, pool_dir, initial_fraction):
    drain(import_pool(pool_dir, tmp_path / "proj",
                      data=DataConfig(test_fraction=0.2, initial_fraction=initial_fraction,
                                      seed=0, input_size=32)))
    return Project.open(tmp_path / "proj")


def test_a_starter_fits_only_its_own_architecture_and_classes(tiny_starter):
    assert starter.starter_for(model_preset("tiny"), CLASSES) == starter.starter_path("tiny")
    assert starter.starter_for(model_preset("cpu"), CLASSES) is None
    assert starter.starter_for(model_preset("tiny"), ("background", "cell", "a", "b", "c")) is None
    assert starter.starter_for(model_preset("tiny", n_classes=3), CLASSES[:3]) is None
    model = starter.load_starter(model_preset("tiny"), CLASSES)
    assert next(model.parameters()).dtype == torch.float32  # stored in float16, used in 32
    for a, b in zip(model.state_dict().values(), tiny_starter.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-2)


def test_without_a_starter_file_nothing_changes(tmp_path, monkeypatch):
    monkeypatch.setattr(starter, "STARTER_DIR", tmp_path / "nothing")
    assert starter.load_starter(model_preset("tiny"), CLASSES) is None
    assert starter.starter_record("tiny") is None


def test_round_0_starts_from_the_starter_and_says_so(tiny_starter, tmp_path, pool_dir):
    with _project(tmp_path, pool_dir, 0.4) as project:
        events = []
        drain(run_round(project, settings()), events.append)
        assert any(isinstance(e, StageEvent) and "starter model" in e.message for e in events)
        assert project.rounds()[0].config["fit"]["init"] == "starter"


def test_the_switch_turns_the_starter_off(tiny_starter, tmp_path, pool_dir):
    with _project(tmp_path, pool_dir, 0.4) as project:
        drain(run_round(project, settings(use_starter=False)))
        assert project.rounds()[0].config["fit"]["init"] == "fresh"


def test_a_project_without_labels_gets_the_starters_proposals(tiny_starter, tmp_path, pool_dir):
    with _project(tmp_path, pool_dir, 0.0) as project:
        assert not project.images("labelled")
        report = drain(run_round(project, settings()))
        assert len(report.queue) == 3
        expected = drain(predict_for_review(ProjectPool(project, 32),
                                            starter.load_starter(model_preset("tiny"), CLASSES),
                                            report.queue, settings().acquisition))
        for image_id in report.queue:
            item = review_item(project, image_id)
            assert item.prediction is not None and item.maps  # a mask to correct, and its doubt
            assert np.array_equal(item.prediction, expected.predictions[image_id])


def test_without_the_starter_a_new_project_draws_from_scratch(tiny_starter, tmp_path, pool_dir):
    with _project(tmp_path, pool_dir, 0.0) as project:
        report = drain(run_round(project, settings(use_starter=False)))
        assert all(review_item(project, i).prediction is None for i in report.queue)


def test_a_damaged_starter_says_what_is_wrong(tiny_starter, tmp_path):
    path = starter.starter_path("tiny")
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="truncated or is not a checkpoint"):
        starter.load_starter(model_preset("tiny"), CLASSES)


def test_a_damaged_starter_does_not_stop_the_round(tiny_starter, tmp_path, pool_dir):
    path = starter.starter_path("tiny")
    path.write_bytes(path.read_bytes()[:200])
    with _project(tmp_path, pool_dir, 0.4) as project:
        events = []
        report = drain(run_round(project, settings()), events.append)
        assert report.status == "queued"
        assert project.rounds()[0].config["fit"]["init"] == "fresh"
        assert any(isinstance(e, StageEvent) and "could not be used" in e.message
                   for e in events)


def test_only_a_projects_first_model_starts_from_the_starter(tiny_starter, tmp_path, pool_dir):
    """With warm start off, round 1 starts from scratch, not from the starter."""
    import dataclasses

    from napari_alunet.review import oracle_commit

    with _project(tmp_path, pool_dir, 0.4) as project:
        drain(run_round(project, settings()))
        oracle_commit(project)
        cold = settings()
        cold.train = dataclasses.replace(cold.train, warm_start=False)
        drain(run_round(project, cold))
        assert [r.config["fit"]["init"] for r in project.rounds()] == ["starter", "fresh"]
