"""The training engine on tiny synthetic data (CPU), device selection and augmentation."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from torch import nn

from napari_alunet.config import TrainConfig
from napari_alunet.inference import evaluate, predict_labels, predict_probabilities
from napari_alunet.model import build_model
from napari_alunet.training.augment import Augmenter, AugmentSettings
from napari_alunet.training.checkpoint import load_checkpoint
from napari_alunet.training.device import resolve_device
from napari_alunet.training.engine import (
    EvalEvent,
    FitResult,
    StepEvent,
    fit,
    reset_parameters,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

N_CLASSES = 3


def make_shapes(n: int, size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A disk of class 1 inside a ring of class 2 at random positions, plus noise.

    Returns (n, 1, size, size) float32 standardised images and (n, size, size) uint8 labels.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    cy, cx = rng.uniform(10, size - 10, (2, n, 1, 1))
    radius = rng.uniform(4, 7, (n, 1, 1))
    dist = np.hypot(yy - cy, xx - cx)
    labels = np.where(dist < radius, 1, np.where(dist < radius + 3, 2, 0)).astype(np.uint8)
    images = np.choose(labels, [0.0, 1.0, -1.0]) + rng.normal(0, 0.3, labels.shape)
    images = (images - images.mean((1, 2), keepdims=True)) / images.std((1, 2), keepdims=True)
    return images[:, None].astype(np.float32), labels


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, ...]:
    xt, yt = make_shapes(24, seed=0)
    xv, yv = make_shapes(8, seed=1)
    return xt, yt, xv, yv


def _tiny(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("tiny", n_classes=N_CLASSES)


def drain(gen):  # type: ignore[no-untyped-def]
    """All events and the FitResult of a fit generator."""
    events = []
    while True:
        try:
            events.append(next(gen))
        except StopIteration as stop:
            return events, stop.value


def test_smoke_fit_improves_validation_dice(data, tmp_path) -> None:  # type: ignore[no-untyped-def]
    xt, yt, xv, yv = data
    model = _tiny()
    before = evaluate(model, xv, yv, n_classes=N_CLASSES)["mean_dice"]
    config = TrainConfig(steps=36, eval_every=3, patience=4, batch_size=8, learning_rate=3e-3)
    path = tmp_path / "best.pt"
    events, result = drain(
        fit(model, xt, yt, xv, yv, config, n_classes=N_CLASSES, checkpoint_path=str(path),
            checkpoint_meta={"class_names": ["bg", "disk", "ring"], "round": 1})
    )
    after = evaluate(model, xv, yv, n_classes=N_CLASSES)
    assert after["mean_dice"] > max(0.7, before + 0.3), (before, after)
    assert isinstance(result, FitResult) and not result.cancelled
    assert result.selection == "validation" and "validation" in result.note
    assert after["mean_dice"] == pytest.approx(result.best_val_dice)  # best weights restored
    steps = [e for e in events if isinstance(e, StepEvent)]
    evals = [e for e in events if isinstance(e, EvalEvent)]
    assert len(evals) == len(result.history) and len(steps) == result.steps_run
    assert [s.step for s in steps] == list(range(1, result.steps_run + 1))
    assert all(s.steps == 36 for s in steps) and result.steps_planned == 36
    # 24 images in batches of 8: a pass every 3 steps (the epoch, as a display unit).
    assert steps[2].passes == pytest.approx(1.0) and result.passes == pytest.approx(
        result.steps_run / 3)
    assert all(math.isfinite(s.loss) for s in steps)
    assert [e.step for e in evals] == list(range(3, result.steps_run + 1, 3))
    loaded, meta = load_checkpoint(path, expected_class_names=["bg", "disk", "ring"])
    assert meta["epoch"] == result.best_step
    assert meta["extra"] == {"round": 1, "monitor": "val_dice"}
    assert meta["best_metric"] == pytest.approx(result.best_val_dice)
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key


def test_same_seed_gives_identical_losses(data) -> None:  # type: ignore[no-untyped-def]
    xt, yt, xv, yv = data
    config = TrainConfig(steps=6, eval_every=3, batch_size=8, seed=7, border_weight=True,
                         loss="ce+dice")
    runs = []
    for _ in range(2):
        events, _ = drain(fit(_tiny(), xt, yt, xv, yv, config, n_classes=N_CLASSES,
                              unlabelled_images=xv))
        runs.append([(type(e).__name__, getattr(e, "loss", None), getattr(e, "val_dice", None))
                     for e in events])
    assert runs[0] == runs[1]
    other, _ = drain(fit(_tiny(), xt, yt, xv, yv, dataclasses.replace(config, seed=8),
                         n_classes=N_CLASSES, unlabelled_images=xv))
    assert [getattr(e, "loss", None) for e in other] != [r[1] for r in runs[0]]


def test_cancel_mid_fit_restores_and_saves_best(data, tmp_path) -> None:  # type: ignore[no-untyped-def]
    xt, yt, xv, yv = data
    model = _tiny()
    path = tmp_path / "ckpt.pt"
    # Without EMA the evaluated weights are the model's own, which the test can copy.
    config = TrainConfig(steps=60, eval_every=3, batch_size=8, learning_rate=3e-3,
                         ema_decay=0.0)
    gen = fit(model, xt, yt, xv, yv, config, n_classes=N_CLASSES, checkpoint_path=str(path))
    best_state, best_step = None, 0
    for event in gen:
        if isinstance(event, EvalEvent) and event.improved:
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
            best_step = event.step
        if isinstance(event, StepEvent) and event.step == 11:
            break  # the model now holds weights between evaluations
    assert best_state is not None
    changed = any(not torch.equal(v, best_state[k]) for k, v in model.state_dict().items())
    assert changed
    gen.close()  # what a GUI Stop does; must not raise
    for key, value in model.state_dict().items():
        assert torch.equal(value, best_state[key]), key
    loaded, meta = load_checkpoint(path)
    assert meta["epoch"] == best_step
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, best_state[key]), key


def test_cancel_without_validation_keeps_the_current_ema_weights(data, tmp_path) -> None:  # type: ignore[no-untyped-def]
    xt, yt, _, _ = data
    model = _tiny()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    path = tmp_path / "ckpt.pt"
    gen = fit(model, xt, yt, None, None, TrainConfig(steps=50, batch_size=8),
              n_classes=N_CLASSES, checkpoint_path=str(path))
    for event in gen:
        if isinstance(event, StepEvent) and event.step == 5:
            break
    ema = {k: v.clone() for k, v in gen.gi_frame.f_locals["evaluated"].state_dict().items()}
    gen.close()
    assert all(torch.equal(v, ema[k]) for k, v in model.state_dict().items())
    assert any(not torch.equal(v, start[k]) for k, v in model.state_dict().items())
    assert load_checkpoint(path)[1]["epoch"] == 5


def test_cancel_before_the_first_step_keeps_incoming_weights(data, tmp_path) -> None:  # type: ignore[no-untyped-def]
    xt, yt, xv, yv = data
    model = _tiny()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    gen = fit(model, xt, yt, xv, yv, TrainConfig(steps=9, eval_every=3, batch_size=8),
              n_classes=N_CLASSES, checkpoint_path=str(tmp_path / "none.pt"))
    next(gen)
    next(gen)
    gen.close()  # stopped before the first evaluation with validation: nothing better known
    assert all(torch.equal(v, start[k]) for k, v in model.state_dict().items())
    assert not (tmp_path / "none.pt").exists()


def test_early_stopping_and_no_validation_fallback(data) -> None:  # type: ignore[no-untyped-def]
    xt, yt, xv, yv = data
    model = _tiny()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 0.0  # running stats frozen: with lr 0 every evaluation scores the same
    config = TrainConfig(steps=90, eval_every=3, patience=2, batch_size=8, learning_rate=0.0,
                         augment=False)
    _, result = drain(fit(model, xt, yt, xv, yv, config, n_classes=N_CLASSES))
    assert result.stopped_early and result.best_step == 3 and result.steps_run == 9

    config = TrainConfig(steps=6, batch_size=8)
    events, result = drain(fit(_tiny(), xt, yt, None, None, config, n_classes=N_CLASSES))
    assert result.selection == "final" and "no validation" in result.note
    assert math.isnan(result.best_val_dice) and result.best_step == result.steps_run == 6
    assert not result.stopped_early
    assert all(math.isnan(e.val_dice) for e in events if isinstance(e, EvalEvent))


def test_budget_in_epochs_partitions_the_images_per_pass(data) -> None:  # type: ignore[no-untyped-def]
    # The recipe before 0.2 (LEGACY_RECIPE) is still expressible, for comparisons.
    xt, yt, xv, yv = data
    config = TrainConfig(epochs=2, batch_size=8)
    events, result = drain(fit(_tiny(), xt[:5], yt[:5], xv, yv, config, n_classes=N_CLASSES))
    assert result.steps_planned == result.steps_run == 2  # one batch of 5 per epoch
    assert [e.step for e in events if isinstance(e, EvalEvent)] == [1, 2]
    assert result.passes == pytest.approx(2.0)


def test_warmup_cosine_schedule(data) -> None:  # type: ignore[no-untyped-def]
    xt, yt, xv, yv = data
    config = TrainConfig(steps=40, eval_every=1, batch_size=8, learning_rate=1e-2,
                         warmup_fraction=0.1, min_lr_fraction=0.0)
    events, _ = drain(fit(_tiny(), xt, yt, None, None, config, n_classes=N_CLASSES))
    lrs = [e.learning_rate for e in events if isinstance(e, EvalEvent)]
    # Rises linearly over 4 warm-up steps to the peak, then falls as a cosine to ~0.
    assert lrs[:4] == pytest.approx([2.5e-3, 5e-3, 7.5e-3, 1e-2])
    assert lrs[3:] == sorted(lrs[3:], reverse=True) and lrs[-1] < 1e-4
    config = dataclasses.replace(config, scheduler="cosine")
    events, _ = drain(fit(_tiny(), xt, yt, None, None, config, n_classes=N_CLASSES))
    lrs = [e.learning_rate for e in events if isinstance(e, EvalEvent)]
    assert lrs[0] == pytest.approx(1e-2) and lrs == sorted(lrs, reverse=True) and lrs[-1] < 1e-3


def test_bf16_precision_trains_on_cpu(data) -> None:  # type: ignore[no-untyped-def]
    # CPUs with native bf16 train ~1.7x faster this way; on any CPU it must stay correct.
    xt, yt, xv, yv = data
    config = TrainConfig(steps=6, eval_every=3, batch_size=8, learning_rate=3e-3,
                         precision="bf16")
    events, _ = drain(fit(_tiny(), xt, yt, xv, yv, config, n_classes=N_CLASSES,
                          unlabelled_images=xv))
    losses = [e.train_loss for e in events if isinstance(e, EvalEvent)]
    assert all(math.isfinite(v) for v in losses) and losses[1] < losses[0]
    config.precision = "fp16"
    with pytest.raises(ValueError, match="precision"):
        drain(fit(_tiny(), xt, yt, xv, yv, config, n_classes=N_CLASSES))


def test_fit_rejects_bad_inputs(data) -> None:  # type: ignore[no-untyped-def]
    xt, yt, xv, yv = data
    with pytest.raises(ValueError, match="train_labels must have shape"):
        next(fit(_tiny(), xt, yt[:, :16], xv, yv, TrainConfig(), n_classes=N_CLASSES))
    with pytest.raises(ValueError, match="outside"):
        next(fit(_tiny(), xt, yt + 3, xv, yv, TrainConfig(), n_classes=N_CLASSES))
    # Metadata the checkpoint could not hold is refused before any training, not after it.
    with pytest.raises(TypeError, match="checkpoint_meta"):
        next(fit(_tiny(), xt, yt, xv, yv, TrainConfig(), n_classes=N_CLASSES,
                 checkpoint_path="never.pt", checkpoint_meta={"x": object()}))


def test_predict_and_evaluate_are_deterministic(data) -> None:  # type: ignore[no-untyped-def]
    _, _, xv, yv = data
    model = _tiny()
    model.train()
    probs = predict_probabilities(model, xv, batch_size=3)
    assert probs.shape == (8, N_CLASSES, 32, 32) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(probs, predict_probabilities(model, torch.from_numpy(xv)))
    labels = predict_labels(model, xv, batch_size=5)
    assert labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, probs.argmax(1))
    assert all(m.training for m in model.modules())  # modes restored
    metrics = evaluate(model, xv, yv, n_classes=N_CLASSES, batch_size=3)
    assert {"mean_dice", "pixel_accuracy", "ece", "dice_1", "iou_2"} <= set(metrics)
    assert metrics["pixel_accuracy"] == pytest.approx((labels == yv).mean())


def test_reset_parameters_is_seeded_and_resets_bn() -> None:
    model = _tiny()
    model.train()
    model(torch.randn(2, 1, 32, 32) + 3)
    reset_parameters(model, seed=3)
    a = {k: v.clone() for k, v in model.state_dict().items()}
    reset_parameters(model, seed=3)
    assert all(torch.equal(v, a[k]) for k, v in model.state_dict().items())
    bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    auto = resolve_device("auto")
    assert auto.type == ("cuda" if torch.cuda.is_available() else auto.type)
    if not torch.cuda.is_available():
        assert auto.type in ("cpu", "mps")
        with pytest.raises(ValueError, match="no CUDA"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu9")


def _dihedral(t: torch.Tensor) -> list[torch.Tensor]:
    rots = [torch.rot90(t, k, dims=(-2, -1)) for k in range(4)]
    return rots + [torch.flip(r, dims=(-1,)) for r in rots]


def test_flips_and_rot90_are_exact_and_aligned() -> None:
    _, labels = make_shapes(6, seed=3)
    masks = torch.from_numpy(labels).long()
    images = masks[:, None].float() * 1.5 - 0.5
    settings = AugmentSettings(affine_p=0.0, elastic_p=0.0)
    out_i, out_m, out_w = Augmenter(settings, seed=0)(images, masks, intensity=False)
    used = set()
    for i in range(6):
        matches = [k for k, t in enumerate(_dihedral(masks[i])) if torch.equal(t, out_m[i])]
        assert matches, i
        used.add(matches[0])
        torch.testing.assert_close(out_i[i, 0], _dihedral(images[i, 0])[matches[0]])
    assert len(used) > 1 and torch.all(out_w == 1)


def test_affine_and_elastic_keep_image_and_mask_aligned() -> None:
    _, labels = make_shapes(8, seed=4)
    masks = torch.from_numpy(labels).long()
    settings = AugmentSettings(affine_p=1.0, elastic_p=1.0, elastic_alpha=0.08)
    out_i, out_m, out_w = Augmenter(settings, seed=1)(masks[:, None].float(), masks,
                                                      intensity=False)
    assert not torch.equal(out_m, masks)
    agree = out_i[:, 0].round().long() == out_m
    assert agree.float().mean() > 0.95
    # Disagreement only where bilinear mixes two classes: next to a class boundary.
    edge = torch.nn.functional.max_pool2d(out_m[:, None].float(), 3, 1, 1)[:, 0] != (
        -torch.nn.functional.max_pool2d(-out_m[:, None].float(), 3, 1, 1)[:, 0])
    assert bool((~agree <= edge).all())
    # Padding from outside the image carries zero weight and background.
    assert bool((out_w == 0).any()) and bool((out_m[out_w == 0] == 0).all())


def test_augmentation_is_seeded_and_changes_intensity() -> None:
    images, labels = make_shapes(4, seed=5)
    x, y = torch.from_numpy(images), torch.from_numpy(labels).long()
    a = Augmenter(seed=9)(x, y)
    b = Augmenter(seed=9)(x, y)
    c = Augmenter(seed=10)(x, y)
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    assert not torch.equal(a[0], c[0])
    settings = AugmentSettings(flip=False, rot90=False, affine_p=0, elastic_p=0,
                               intensity_p=1.0, noise_p=1.0)
    out, out_m, _ = Augmenter(settings, seed=0)(x, y)
    assert torch.equal(out_m, y) and not torch.allclose(out, x)


def test_a_diverged_fit_is_reported_and_never_saved(tmp_path):
    """Issue 12: NaN/inf loss is detected during training, named, and no checkpoint is written;
    the model keeps finite weights."""
    from napari_alunet.training.engine import TrainingDiverged

    x, y = make_shapes(4, size=32)
    model = _tiny()
    config = TrainConfig(steps=6, batch_size=2, learning_rate=1e30, augment=False,
                         semi_supervised=False, device="cpu", eval_every=2, ema_decay=0.0)
    path = tmp_path / "model.pt"
    with pytest.raises(TrainingDiverged, match="diverged at step"):
        drain(fit(model, x, y, None, None, config, n_classes=3, checkpoint_path=path,
                  checkpoint_meta={"class_names": ["a", "b", "c"]}))
    assert not path.exists()
    assert all(bool(torch.isfinite(v).all()) for v in model.state_dict().values()
               if v.is_floating_point())
