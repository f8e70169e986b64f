"""The few-labels recipe: step budget, validation rule, consistency term, EMA, health check.

Known-answer and behaviour tests on tiny CPU data; how well the recipe learns is measured by
``benchmarks/few_labels.py``, not here.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from test_engine import N_CLASSES, drain, make_shapes
from torch import nn

from napari_alunet.config import LEGACY_RECIPE, TrainConfig, from_dict, steps_per_pass, to_dict
from napari_alunet.model import build_model
from napari_alunet.model.mc import mc_predict
from napari_alunet.training.augment import StrongAugmenter
from napari_alunet.training.ema import WeightEMA, batchnorm_statistics_frozen
from napari_alunet.training.engine import EvalEvent, StepEvent, fit
from napari_alunet.training.losses import consistency_loss
from napari_alunet.training.recipe import HealthEvent, plan_fit, retry_seed, train_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _tiny(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("tiny", n_classes=N_CLASSES)


def _bn_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()
            if "running_" in k or "num_batches" in k}


# -- budget ---------------------------------------------------------------------------------------
def test_step_budget_has_a_floor_that_does_not_shrink_with_the_labelled_set() -> None:
    config = TrainConfig()
    budgets = [config.planned_steps(n) for n in range(0, 400)]
    assert budgets[1] == budgets[0] + config.steps_per_image >= config.min_steps
    assert budgets == sorted(budgets) and max(budgets) == config.max_steps
    # Without the per-image term the budget is the floor whatever the labelled count; the
    # old epoch budget gave 4 images one step per epoch.
    flat = TrainConfig(steps_per_image=0, min_steps=123)
    assert {flat.planned_steps(n) for n in (1, 2, 4, 8, 50)} == {123}
    assert TrainConfig(epochs=60).planned_steps(4) == 60
    assert TrainConfig(steps=77).planned_steps(1000) == 77
    assert [steps_per_pass(n, 8) for n in (1, 2, 8, 9, 10, 17)] == [1, 1, 1, 1, 2, 2]


def test_fit_runs_the_whole_budget_in_full_batches_whatever_the_labelled_count() -> None:
    xt, yt = make_shapes(8, seed=0)
    config = TrainConfig(steps_per_image=0, min_steps=6, batch_size=4, semi_supervised=False)
    for n in (2, 8):
        events, result = drain(fit(_tiny(), xt[:n], yt[:n], None, None, config,
                                   n_classes=N_CLASSES))
        steps = [e for e in events if isinstance(e, StepEvent)]
        assert result.steps_run == len(steps) == 6
        # Full batches of 4 drawn pass after pass: 24 images seen.
        assert result.passes == pytest.approx(24 / n)


def test_bad_settings_are_refused_with_the_option_named() -> None:
    for field, value in (("steps", -1), ("batch_size", 0), ("learning_rate", float("nan")),
                         ("ema_decay", 1.0), ("confidence_threshold", 0.0),
                         ("scheduler", "linear"), ("validation_min_images", 0)):
        with pytest.raises(ValueError, match=field):
            TrainConfig(**{field: value})


def test_configs_of_earlier_versions_still_load() -> None:
    old = to_dict(TrainConfig())
    old["min_validation_images"] = 1  # a 0.1 field, retired
    assert from_dict(TrainConfig, old) == TrainConfig()
    with pytest.raises(ValueError, match="unknown TrainConfig field"):
        from_dict(TrainConfig, {"epochz": 3})


# -- validation rule ------------------------------------------------------------------------------
def test_validation_split_only_from_the_threshold_on() -> None:
    config = TrainConfig(validation_fraction=0.5, validation_min_images=8)
    for n in range(2, 40):
        plan = plan_fit(range(n), [], config, seed=3)
        if plan.selection == "validation":
            assert len(plan.val_ids) >= 8
            assert sorted(plan.train_ids + plan.val_ids) == list(range(n))
            assert not set(plan.train_ids) & set(plan.val_ids)
        else:
            # Every labelled image trains; nothing is held out for a meaningless selection.
            assert plan.train_ids == list(range(n)) and plan.val_ids == []
            assert "whole budget" in plan.rule
    small = [plan_fit(range(n), [], config, seed=3) for n in range(2, 40)]
    switch = next(i for i, p in enumerate(small) if p.selection == "validation")
    assert len(small[switch - 1].val_ids) == 0 and len(small[switch].val_ids) == 8
    # The legacy recipe validates on whatever the split holds (at least one image).
    legacy = TrainConfig(**LEGACY_RECIPE)
    plan = plan_fit(range(4), [], legacy, seed=0)
    assert plan.selection == "validation" and len(plan.val_ids) == 1


def test_unlabelled_images_are_the_pool_minus_the_labelled_and_capped() -> None:
    config = TrainConfig(max_unlabelled_images=5)
    plan = plan_fit([1, 2], range(20), config, seed=0)
    assert len(plan.unlabelled_ids) == 5 and not {1, 2} & set(plan.unlabelled_ids)
    assert plan.unlabelled_ids != plan_fit([1, 2], range(20), config, seed=0,
                                           unlabelled_seed=1).unlabelled_ids
    off = dataclasses.replace(config, semi_supervised=False)
    assert plan_fit([1, 2], range(20), off, seed=0).unlabelled_ids == []


# -- consistency term -----------------------------------------------------------------------------
def test_consistency_loss_is_zero_without_confident_pixels_and_positive_with() -> None:
    torch.manual_seed(0)
    student = torch.randn(2, 3, 8, 8, requires_grad=True)
    unsure = torch.full((2, 3, 8, 8), 1 / 3)
    loss, fraction = consistency_loss(student, unsure, 0.9)
    assert float(loss.detach()) == 0.0 and float(fraction) == 0.0
    sure = torch.zeros(2, 3, 8, 8)
    sure[:, 1] = 1.0
    loss, fraction = consistency_loss(student, sure, 0.9)
    assert float(loss.detach()) > 0 and float(fraction) == 1.0
    loss.backward()
    assert student.grad is not None and float(student.grad.abs().sum()) > 0
    # Known answer: the mean cross-entropy towards class 1 over the counted pixels, divided
    # by all pixels; pixels marked invalid do not count.
    valid = torch.zeros(2, 8, 8, dtype=torch.bool)
    valid[:, :4] = True
    loss, fraction = consistency_loss(student, sure, 0.9, valid)
    expected = nn.functional.cross_entropy(student, torch.ones(2, 8, 8, dtype=torch.long),
                                           reduction="none")[:, :4].sum() / 128
    assert (float(loss.detach()) == pytest.approx(float(expected.detach()))
            and float(fraction) == 0.5)


def test_strong_view_keeps_geometry_and_marks_the_cut_out() -> None:
    images = torch.randn(16, 1, 32, 32)
    out, keep = StrongAugmenter(seed=0)(images)
    assert out.shape == images.shape and keep.shape == (16, 32, 32)
    assert torch.isfinite(out).all()
    assert (~keep).any() and keep.any()
    assert torch.all(out[:, 0][~keep] == 0)  # the cut-out holds the image mean


def test_strongly_augmented_batches_do_not_move_batchnorm_statistics() -> None:
    model = _tiny()
    model.train()
    before = _bn_state(model)
    with batchnorm_statistics_frozen(model):
        model(torch.randn(4, 1, 32, 32) * 5 + 3)
    after = _bn_state(model)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(m.momentum == 0.1 for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    model(torch.randn(4, 1, 32, 32) * 5 + 3)  # outside the context they move again
    assert not torch.equal(before["encoders.0.1.running_mean"],
                           model.state_dict()["encoders.0.1.running_mean"])


def test_semi_supervised_fit_keeps_mc_predict_frozen_bn_contract() -> None:
    xt, yt = make_shapes(4, seed=0)
    xu, _ = make_shapes(12, seed=5)
    model = _tiny()
    config = TrainConfig(steps=12, batch_size=4, unlabelled_batch_size=4, learning_rate=3e-3,
                         confidence_threshold=0.34, warmup_fraction=0.0)
    events, result = drain(fit(model, xt, yt, None, None, config, n_classes=N_CLASSES,
                               unlabelled_images=xu))
    assert result.n_unlabelled == 12
    used = [e for e in events
            if isinstance(e, EvalEvent) and e.unlabelled_loss == e.unlabelled_loss]
    assert used and any(e.confident_fraction > 0 for e in used)  # the term took part
    before = _bn_state(model)
    mc_predict(model, torch.from_numpy(xu), passes=3)
    after = _bn_state(model)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_ema_follows_the_weights_with_warm_up() -> None:
    model = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = WeightEMA(model, decay=0.9)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)  # first update: d = min(0.9, 2/11)
    assert float(ema.model.weight[0, 0]) == pytest.approx(1 - 2 / 11)
    for _ in range(200):
        ema.update(model)
    assert float(ema.model.weight[0, 0]) == pytest.approx(1.0, abs=1e-6)
    assert ema.current_decay() == 0.9 and not ema.model.weight.requires_grad


# -- health check ---------------------------------------------------------------------------------
def _loader(images: np.ndarray, labels: np.ndarray):
    def load(ids, with_labels):
        rows = np.asarray(ids, dtype=np.intp)
        return images[rows], labels[rows] if with_labels else None
    return load


def test_health_check_retries_a_collapsed_fit_from_fresh_weights(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    images, labels = make_shapes(6, seed=0)
    # Learning rate 0: the weights never move, every attempt "collapses" below the floor.
    config = TrainConfig(steps=3, batch_size=4, learning_rate=0.0, health_min_dice=0.99,
                         health_retries=2, semi_supervised=False)
    model = _tiny()
    plan = plan_fit(range(4), [4, 5], config, seed=0)
    inits = []
    original_fit = fit

    def spy(model, *args, **kwargs):  # type: ignore[no-untyped-def]
        inits.append({k: v.clone() for k, v in model.state_dict().items()})
        return original_fit(model, *args, **kwargs)

    monkeypatch.setattr("napari_alunet.training.engine.fit", spy)
    events, trained = drain(train_model(model, plan, _loader(images, labels), config,
                                        n_classes=N_CLASSES, checkpoint_path=tmp_path / "m.pt",
                                        checkpoint_meta={"class_names": ["a", "b", "c"]}))
    health = [e for e in events if isinstance(e, HealthEvent)]
    assert [e.attempt for e in health] == [1, 2, 3] and [e.retrying for e in health] == [
        True, True, False]
    assert len(inits) == 3 and not trained.healthy and len(trained.attempt_dice) == 3
    # Each retry starts from a fresh initialisation (another seed), not the collapsed weights.
    assert not torch.equal(inits[0]["head.weight"], inits[1]["head.weight"])
    assert not torch.equal(inits[1]["head.weight"], inits[2]["head.weight"])
    record = trained.record(config)
    assert record["attempts"] == 3 and record["healthy"] is False
    assert record["labelled_dice"] == pytest.approx(max(trained.attempt_dice))
    assert retry_seed(0, 1) != retry_seed(0, 2) and retry_seed(5, 0) == 5


def test_health_check_passes_a_healthy_fit_without_retrying() -> None:
    images, labels = make_shapes(12, seed=0)
    config = TrainConfig(steps=40, batch_size=4, learning_rate=3e-3, health_min_dice=0.3,
                         semi_supervised=False)
    plan = plan_fit(range(12), [], config, seed=0)
    events, trained = drain(train_model(_tiny(), plan, _loader(images, labels), config,
                                        n_classes=N_CLASSES))
    assert not [e for e in events if isinstance(e, HealthEvent)]
    assert trained.healthy and len(trained.attempt_dice) == 1
    assert trained.labelled_dice >= 0.3 and trained.record(config)["selection"] == "final"
