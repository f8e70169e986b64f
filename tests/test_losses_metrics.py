"""Known-answer tests for the losses and metrics (small hand-made cases)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from napari_alunet.training.losses import (
    border_weight_map,
    dice_loss,
    make_loss,
    median_frequency_weights,
    tversky_loss,
    weighted_cross_entropy,
)
from napari_alunet.training.metrics import (
    MetricAccumulator,
    confusion_matrix,
    dice_per_class,
    expected_calibration_error,
    iou_per_class,
    mean_foreground_dice,
    pixel_accuracy,
    summarize,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# Four pixels: truth 0 1 2 2, prediction 0 1 1 2.
TRUTH = np.array([[0, 1], [2, 2]])
PRED = np.array([[0, 1], [1, 2]])


def _hard_logits(pred: np.ndarray, n_classes: int) -> torch.Tensor:
    """(1, C, H, W) logits whose softmax is (numerically) the one-hot of ``pred``."""
    onehot = F.one_hot(torch.as_tensor(pred).long(), n_classes).permute(2, 0, 1)[None]
    return onehot.float() * 100.0


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_confusion_matrix_four_pixels(backend: str) -> None:
    pred, truth = (PRED, TRUTH) if backend == "numpy" else map(torch.as_tensor, (PRED, TRUTH))
    cm = confusion_matrix(pred, truth, 3)
    expected = np.array([[1, 0, 0], [0, 1, 0], [0, 1, 1]])  # rows truth, columns prediction
    np.testing.assert_array_equal(np.asarray(cm), expected)


def test_dice_iou_accuracy_known_answers() -> None:
    cm = confusion_matrix(PRED, TRUTH, 3)
    # class 1: TP 1, FP 1, FN 0; class 2: TP 1, FP 0, FN 1.
    np.testing.assert_allclose(dice_per_class(cm), [1.0, 2 / 3, 2 / 3])
    np.testing.assert_allclose(iou_per_class(cm), [1.0, 1 / 2, 1 / 2])
    assert mean_foreground_dice(cm) == pytest.approx(2 / 3)
    assert pixel_accuracy(cm) == pytest.approx(3 / 4)


def test_absent_class_is_nan_and_excluded_from_the_mean() -> None:
    cm = confusion_matrix(PRED, TRUTH, 4)  # class 3 in neither prediction nor truth
    dice = dice_per_class(cm)
    assert math.isnan(dice[3]) and math.isnan(iou_per_class(cm)[3])
    assert mean_foreground_dice(cm) == pytest.approx(2 / 3)
    # Predicted but absent from the truth is an error (Dice 0), not NaN.
    cm2 = confusion_matrix(np.array([3, 0, 0, 0]), np.array([0, 0, 0, 0]), 4)
    assert dice_per_class(cm2)[3] == 0.0
    only_background = confusion_matrix(np.zeros(4, int), np.zeros(4, int), 3)
    assert math.isnan(mean_foreground_dice(only_background))


def test_dataset_metrics_pool_one_confusion_matrix() -> None:
    # Image A: class 1 perfect on one pixel. Image B: class 1 (3 pixels) entirely missed.
    a_pred, a_truth = np.array([1, 0, 0, 0]), np.array([1, 0, 0, 0])
    b_pred, b_truth = np.array([0, 0, 0, 0]), np.array([1, 1, 1, 0])
    acc = MetricAccumulator(2)
    for pred, truth in ((a_pred, a_truth), (b_pred, b_truth)):
        probs = F.one_hot(torch.as_tensor(pred), 2).T.float()[None, :, None, :]  # (1,2,1,4)
        acc.update(probs, torch.as_tensor(truth)[None, None])
    out = acc.compute()
    # Pooled: TP 1, FN 3 -> 2/5; the mean of per-image Dice would be (1 + 0) / 2.
    assert out["dice_1"] == pytest.approx(2 / 5)
    assert out["mean_dice"] == pytest.approx(2 / 5)
    assert out["pixel_accuracy"] == pytest.approx(5 / 8)
    assert set(out) == {"mean_dice", "mean_iou", "pixel_accuracy", "ece",
                        "dice_0", "iou_0", "dice_1", "iou_1"}


def test_expected_calibration_error_known_answer() -> None:
    # Confidences 0.9 (right), 0.9 (wrong), 0.6 (right), 0.6 (right):
    # bin 0.9: |0.5 - 0.9| * 2/4 = 0.2; bin 0.6: |1.0 - 0.6| * 2/4 = 0.2; ECE = 0.4.
    p1 = torch.tensor([0.9, 0.1, 0.4, 0.4])
    probs = torch.stack([1 - p1, p1]).reshape(1, 2, 2, 2)
    target = torch.tensor([[1, 1], [0, 0]])[None]
    assert expected_calibration_error(probs, target) == pytest.approx(0.4)
    # Perfectly confident and right: zero, with confidence 1.0 in the last bin.
    assert expected_calibration_error(_hard_logits(TRUTH, 3).softmax(1), torch.as_tensor(
        TRUTH)[None]) == pytest.approx(0.0, abs=1e-6)


def test_summarize_keys_by_class_index() -> None:
    out = summarize(confusion_matrix(PRED, TRUTH, 3))
    assert out["dice_2"] == pytest.approx(2 / 3) and out["iou_0"] == 1.0
    assert "ece" not in out


def test_median_frequency_weights_known_answer() -> None:
    labels = np.array([[[0, 0], [0, 1]], [[0, 0], [2, 2]]])
    # freq: class 0 5/8, class 1 1/4 (only image A counts), class 2 2/4; median 0.5.
    w = median_frequency_weights(labels, 4)
    np.testing.assert_allclose(w, [0.8, 2.0, 1.0, 1.0], rtol=1e-6)  # class 3 absent -> 1
    np.testing.assert_allclose(median_frequency_weights(torch.as_tensor(labels), 4), w)
    with pytest.raises(ValueError, match="labels must be in"):
        median_frequency_weights(labels + 3, 4)


def test_weighted_ce_matches_torch_and_border_map_changes_it() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 8, 8, generator=gen)
    target = torch.randint(3, (2, 8, 8), generator=gen)
    cw = torch.tensor([0.5, 2.0, 1.0])
    ours = weighted_cross_entropy(logits, target, cw)
    torch.testing.assert_close(ours, F.cross_entropy(logits, target, weight=cw))
    pixel = torch.ones(2, 8, 8)
    pixel[:, 2:4] = 11.0
    # A map that is multiplied in and divided out again would leave the loss unchanged.
    assert weighted_cross_entropy(logits, target, cw, pixel) > ours * 1.5
    # Zero-weight pixels (augmentation padding) are left out entirely.
    mask = torch.ones(2, 8, 8)
    mask[:, :4] = 0
    torch.testing.assert_close(
        weighted_cross_entropy(logits, target, cw, mask),
        F.cross_entropy(logits[..., 4:, :], target[:, 4:], weight=cw),
    )


def _brute_force_border(labels: np.ndarray, w0: float, sigma: float) -> np.ndarray:
    comps, n = ndimage.label(labels > 0)
    yy, xx = np.mgrid[: labels.shape[0], : labels.shape[1]]
    dists = []
    for k in range(1, n + 1):
        py, px = np.nonzero(comps == k)
        d = np.hypot(yy[..., None] - py, xx[..., None] - px).min(-1)
        dists.append(d)
    d = np.sort(np.stack(dists), axis=0)
    term = w0 * np.exp(-((d[0] + d[1]) ** 2) / (2 * sigma**2))
    return np.where(labels == 0, 1 + term, 1.0)


def test_border_weight_map_matches_brute_force_and_has_effect() -> None:
    labels = np.zeros((24, 24), np.int64)
    labels[4:12, 3:9] = 1
    labels[4:12, 11:18] = 1  # a 2-pixel gap between two objects of class 1
    labels[16:20, 5:9] = 1
    w = border_weight_map(labels, w0=10.0, sigma=5.0)
    np.testing.assert_allclose(w, _brute_force_border(labels, 10.0, 5.0), rtol=1e-5)
    assert w[8, 9] > 8  # in the gap: d1 + d2 = 3 -> 1 + 10 exp(-9/50)
    assert np.all(w[labels > 0] == 1.0)
    single = np.zeros((16, 16), np.int64)
    single[4:8, 4:8] = 2
    assert np.all(border_weight_map(single) == 1.0)  # one object: no second-nearest
    assert border_weight_map(np.stack([labels, labels])).shape == (2, 24, 24)
    # Used as CE pixel weights it changes the loss.
    logits = torch.zeros(1, 2, 24, 24)
    target = torch.as_tensor(labels)[None]
    base = weighted_cross_entropy(logits, target)
    weighted = weighted_cross_entropy(logits, target, None, torch.from_numpy(w)[None])
    assert weighted > base * 1.1


def test_tversky_and_dice_known_answers() -> None:
    truth = torch.tensor([[[1, 1], [0, 0]]])
    missed_one = _hard_logits(np.array([[1, 0], [0, 0]]), 2)  # TP 1, FN 1
    extra_one = _hard_logits(np.array([[1, 1], [1, 0]]), 2)  # TP 2, FP 1
    assert tversky_loss(missed_one, truth, smooth=0) == pytest.approx(1 - 1 / 1.7, abs=1e-5)
    assert tversky_loss(extra_one, truth, smooth=0) == pytest.approx(1 - 2 / 2.3, abs=1e-5)
    # Dice: 1 - 2TP / (2TP + FP + FN).
    assert dice_loss(missed_one, truth) == pytest.approx(1 - (1 + 1) / (1 + 0.5 + 1), abs=1e-5)
    perfect = _hard_logits(truth[0].numpy(), 2)
    assert tversky_loss(perfect, truth) == pytest.approx(0.0, abs=1e-5)


def test_tversky_ignores_background_class() -> None:
    # Background predicted badly but class 1 perfect: the loss is zero.
    truth = torch.tensor([[[1, 0], [0, 0]]])
    pred = np.array([[1, 2], [2, 0]])  # background pixels called class 2
    loss = tversky_loss(_hard_logits(pred, 3), truth, smooth=0.0)
    # class 1 perfect (score 1), class 2: TP 0, FP 2 -> score 0; mean over {1, 2} -> loss 0.5.
    assert loss == pytest.approx(0.5, abs=1e-5)


@pytest.mark.parametrize("name", ["ce", "tversky", "dice", "ce+tversky", "ce+dice"])
def test_make_loss_combinations(name: str) -> None:
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 8, 8, generator=gen, requires_grad=True)
    target = torch.randint(3, (2, 8, 8), generator=gen)
    loss = make_loss(name, class_weights=np.array([0.5, 2.0, 1.0]))(logits, target)
    expected = torch.zeros(())
    if name.startswith("ce"):
        expected = expected + F.cross_entropy(logits, target, weight=torch.tensor([0.5, 2, 1.0]))
    if name.endswith("tversky"):
        expected = expected + tversky_loss(logits, target)
    if name.endswith("dice"):
        expected = expected + dice_loss(logits, target)
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    with pytest.raises(ValueError, match="unknown loss"):
        make_loss("focal")
