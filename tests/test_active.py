"""One active-learning step (napari_alunet/active.py): the project round and the in-memory pool
take the same decisions, the oracle-error control, cold starts and the one split rule."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from napari_alunet import active
from napari_alunet.config import AcquisitionConfig, DataConfig, TrainConfig, model_preset
from napari_alunet.data.sample_files import write_sample_pool
from napari_alunet.data.splits import split_pool
from napari_alunet.events import drain
from napari_alunet.importer import import_pool
from napari_alunet.loop import RoundSettings, run_round
from napari_alunet.review import oracle_commit, review_item
from napari_alunet.store import Project


def _settings() -> RoundSettings:
    return RoundSettings(
        model=model_preset("tiny"),
        train=TrainConfig(steps=12, batch_size=4, augment=False, seed=3, health_min_dice=0.0,
                          semi_supervised=True, unlabelled_batch_size=2),
        acquisition=AcquisitionConfig(strategy="bald", passes=3, k=2, batch_size=8, seed=5,
                                      diversity="power"),
    )


@pytest.fixture(scope="module")
def project_path(tmp_path_factory):
    root = tmp_path_factory.mktemp("active")
    write_sample_pool(root / "pool", 14, seed=2, layout="binary", shape=(40, 48))
    drain(import_pool(root / "pool", root / "proj"))
    return root / "proj"


def _memory_pool(project: Project, size: int) -> active.MemoryPool:
    """The project's images as an in-memory pool whose rows are the project's ids."""
    source = active.ProjectPool(project, size)
    records = project.images()
    n = max(r.id for r in records) + 1
    images = np.zeros((n, 1, size, size), np.float32)
    labels = np.zeros((n, size, size), np.uint8)
    truths: list = [np.zeros((1, 1), np.uint8)] * n
    boxes: list = [None] * n
    for r in records:
        images[r.id] = source.load_images([r.id])[0]
        labels[r.id] = source.load_truth([r.id])[0]
        truths[r.id] = project.read_ground_truth(r.id)
        boxes[r.id] = source.letterbox(r.id)
    train_pool = sorted(source.labelled_ids() + source.unlabelled_ids())
    return active.MemoryPool(images, labels, truths, boxes, train_pool, source.test_ids(),
                             source.labelled_ids(), tuple(project.classes.names))


def test_project_round_and_memory_pool_take_the_same_decisions(project_path):
    """Two rounds (fresh, then warm start) driven by the project and by the memory pool."""
    settings = _settings()
    size = settings.model.input_size
    with Project.open(project_path) as project:
        memory = _memory_pool(project, size)
        model = active.fresh_model(settings.model, settings.train.seed)
        for round_idx in range(2):
            report = drain(run_round(project, settings))
            assert report.round_idx == round_idx and report.status == "queued"
            trained = drain(active.train(memory, model, settings.train, round_idx=round_idx,
                                         n_classes=settings.model.n_classes))
            metrics = active.evaluate(memory, model, n_classes=settings.model.n_classes)
            acquired = drain(active.acquire(memory, model, settings.acquisition,
                                            k=settings.acquisition.k, round_idx=round_idx))
            fit = project.round(round_idx).config["fit"]
            assert trained.record(settings.train)["steps_run"] == fit["steps_run"]
            assert trained.labelled_dice == pytest.approx(fit["labelled_dice"], abs=1e-6)
            assert metrics["mean_dice"] == pytest.approx(report.test_metrics["mean_dice"],
                                                         abs=1e-6)
            assert acquired.ids == report.queue
            for image_id in acquired.ids:
                shown = review_item(project, image_id)
                np.testing.assert_array_equal(shown.prediction, acquired.predictions[image_id])
                assert shown.score == pytest.approx(acquired.scores[image_id], rel=1e-6)
            # The oracle labels the queue on both sides.
            oracle_commit(project)
            memory = memory.with_labelled(memory.labelled_ids() + acquired.ids)


def _blob_pool(n: int = 8, size: int = 32) -> active.MemoryPool:
    rng = np.random.default_rng(0)
    images = rng.normal(size=(n, 1, size, size)).astype(np.float32)
    labels = np.zeros((n, size, size), np.uint8)
    from napari_alunet.data.geometry import Letterbox

    boxes = [Letterbox.fit(size, size, size) for _ in range(n)]
    return active.MemoryPool(images, labels, [labels[i].copy() for i in range(n)], boxes,
                             list(range(n - 2)), [n - 2, n - 1], [0],
                             ("background", "a", "b", "c", "d"))


def test_oracle_error_takes_the_obviously_wrong_image_first():
    pool = _blob_pool()
    model = active.fresh_model(model_preset("tiny"), 0)
    acq = AcquisitionConfig(strategy="bald", passes=2, k=3, batch_size=4, seed=1)
    # Make every truth equal to the model's own review prediction (error 0) ...
    shown = drain(active.acquire(pool, model, acq, k=len(pool.unlabelled_ids()), round_idx=0))
    for image_id, prediction in shown.predictions.items():
        pool.labels[image_id] = pool.boxes[image_id].apply_labels(prediction)
        pool.truths[image_id] = prediction
    # ... except one, whose truth is one class everywhere the model says something else.
    wrong = 4
    pool.labels[wrong] = np.where(pool.labels[wrong] == 1, 2, 1)
    oracle = dataclasses.replace(acq, strategy="oracle_error")
    taken = drain(active.acquire(pool, model, oracle, k=1, round_idx=0))
    assert taken.ids == [wrong]
    assert taken.scores[wrong] == pytest.approx(1.0)
    assert all(v == 0.0 for i, v in taken.scores.items() if i != wrong)


def test_cold_starts():
    pool = _blob_pool(n=12)
    pool = pool.with_labelled([])
    model = active.fresh_model(model_preset("tiny"), 0)
    typical = drain(active.cold_start(pool, k=3, method="typical", seed=0, model=model))
    again = drain(active.cold_start(pool, k=3, method="typical", seed=0, model=model))
    assert typical == again and len(set(typical)) == 3
    assert set(typical) <= set(pool.unlabelled_ids())
    rand = drain(active.cold_start(pool, k=3, method="random", seed=0))
    assert len(set(rand)) == 3 and set(rand) <= set(pool.unlabelled_ids())
    with pytest.raises(ValueError, match="cold start"):
        drain(active.cold_start(pool, k=3, method="densest", seed=0))


def test_project_without_labels_queues_the_typical_cold_start(tmp_path):
    write_sample_pool(tmp_path / "pool", 8, seed=1, layout="binary", shape=(40, 48))
    drain(import_pool(tmp_path / "pool", tmp_path / "proj",
                      data=DataConfig(initial_fraction=0.0)))
    settings = _settings()
    with Project.open(tmp_path / "proj") as project:
        assert not project.images("labelled")
        report = drain(run_round(project, settings))
        pool = active.ProjectPool(project, settings.model.input_size)
        expected = drain(active.cold_start(
            pool, k=2, method="typical", seed=active.round_seed(5, 0),
            model=active.fresh_model(settings.model, settings.train.seed)))
        assert report.queue == expected and report.status == "queued"


def test_split_pool_keeps_embryos_together_and_covers_every_mode():
    ids = list(range(60))
    groups = {i: i // 5 for i in ids}  # 12 embryos of 5 frames
    strata = {i: ("rare" if i // 5 in (0, 1, 2) else "common") for i in ids}
    split = split_pool(ids, test_fraction=0.25, initial=4, seed=0, groups=groups,
                       strata=strata)
    test_embryos = {groups[i] for i in split.test}
    assert not test_embryos & {groups[i] for i in split.train_pool}
    assert {strata[i] for i in split.test} == {"rare", "common"}
    assert len(split.initial) == 4 and not set(split.initial) & set(split.test)
    assert split == split_pool(ids, test_fraction=0.25, initial=4, seed=0, groups=groups,
                               strata=strata)
    other = split_pool(ids, test_fraction=0.25, initial=4, seed=0, initial_seed=1,
                       groups=groups, strata=strata)
    assert other.test == split.test and other.initial != split.initial


def test_oracle_error_is_one_minus_dice_and_takes_one_frame_per_embryo():
    pool = _blob_pool(n=8)
    model = active.fresh_model(model_preset("tiny"), 0)
    acq = AcquisitionConfig(strategy="bald", passes=2, k=3, batch_size=4, seed=1)
    shown = drain(active.acquire(pool, model, acq, k=len(pool.unlabelled_ids()), round_idx=0))
    for image_id, prediction in shown.predictions.items():
        pool.labels[image_id] = pool.boxes[image_id].apply_labels(prediction)
        pool.truths[image_id] = prediction
    # Images 2 and 3 are two frames of one embryo, both badly wrong; 5 is a little wrong.
    for wrong in (2, 3):
        pool.labels[wrong] = np.where(pool.labels[wrong] == 1, 2, 1)
    pool.labels[5][:4, :4] = 3
    pool = dataclasses.replace(pool, embryo_ids=[0, 1, 2, 2, 3, 4, 5, 6])
    oracle = dataclasses.replace(acq, strategy="oracle_error")
    taken = drain(active.acquire(pool, model, oracle, k=2, round_idx=0))
    assert taken.ids[0] in (2, 3) and taken.ids[1] == 5
    # Without embryo identity it is plain top k: both frames.
    plain = drain(active.acquire(dataclasses.replace(pool, embryo_ids=None), model, oracle, k=2,
                                 round_idx=0))
    assert sorted(plain.ids) == [2, 3]


def test_dice_error_known_answers():
    truth = np.zeros((4, 4), np.uint8)
    truth[:2] = 1
    assert active.dice_error(truth, truth, 3) == 0.0
    assert active.dice_error(np.zeros_like(truth), np.zeros_like(truth), 3) == 0.0
    half = truth.copy()
    half[:, 2:] = 0  # predicts 4 of the 8 class-1 pixels: Dice 2*4 / (4 + 8)
    assert active.dice_error(half, truth, 3) == pytest.approx(1 - 8 / 12)
    assert active.dice_error(np.where(truth == 1, 2, 0).astype(np.uint8), truth) == 1.0


def test_region_rounds_take_the_same_regions_in_a_project_and_in_memory(tmp_path):
    """Region-level review (issue 14) through the one step: the project round queues images
    with their regions, the oracle commits partial labels (unknown outside the regions), the
    next round trains on them, and the memory pool with the same reviewed pixels takes the
    same decisions."""
    from napari_alunet.config import UNKNOWN_LABEL
    from napari_alunet.regions import tile_mask

    write_sample_pool(tmp_path / "pool", 14, seed=2, layout="binary", shape=(40, 48))
    drain(import_pool(tmp_path / "pool", tmp_path / "proj"))
    settings = _settings()
    settings.acquisition = dataclasses.replace(settings.acquisition, unit="region",
                                               region_size=16, k=5)
    size = settings.model.input_size
    with Project.open(tmp_path / "proj") as project:
        memory = _memory_pool(project, size)
        known: dict[int, np.ndarray] = {}
        model = active.fresh_model(settings.model, settings.train.seed)
        for round_idx in range(2):
            report = drain(run_round(project, settings))
            drain(active.train(memory, model, settings.train, round_idx=round_idx,
                               n_classes=settings.model.n_classes))
            metrics = active.evaluate(memory, model, n_classes=settings.model.n_classes)
            assert metrics["mean_dice"] == pytest.approx(report.test_metrics["mean_dice"],
                                                         abs=1e-6)
            acquired = drain(active.acquire(memory, model, settings.acquisition,
                                            k=settings.acquisition.k, round_idx=round_idx))
            assert acquired.ids == report.queue
            assert sum(len(t) for t in acquired.tiles.values()) == 5
            for image_id in acquired.ids:
                shown = review_item(project, image_id)
                np.testing.assert_array_equal(shown.region, acquired.regions[image_id])
                assert shown.region.any() and not shown.region.all()
            versions = oracle_commit(project)
            for version, image_id in zip(versions, acquired.ids):
                label = project.read_label(image_id)
                region = acquired.regions[image_id]
                truth = project.read_ground_truth(image_id)
                np.testing.assert_array_equal(label[region], truth[region])
                assert version.partial and (label[~region] == UNKNOWN_LABEL).all() or \
                    round_idx > 0  # a second review of the same image merges into the first
            # The memory pool reveals the same tiles (padding counts as known background).
            for image_id, tiles in acquired.tiles.items():
                if image_id not in known:
                    known[image_id] = ~active.content_mask(memory.letterbox(image_id))
                known[image_id] |= tile_mask(size, 16, tiles)
            memory = memory.with_labelled(sorted(set(memory.labelled_ids()) | set(known)),
                                          known)
            project_labels = active.ProjectPool(project, size).load_labels(sorted(known))
            np.testing.assert_array_equal(project_labels, memory.load_labels(sorted(known)))
