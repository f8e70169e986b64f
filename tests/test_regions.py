"""Regions and partial labels: known-answer scores, selection, merging, and unknown pixels that
training and metrics never see."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_alunet.config import UNKNOWN_LABEL, TrainConfig
from napari_alunet.regions import (
    boundary_cost,
    decode,
    encode,
    merge_partial,
    n_tiles,
    region_means,
    region_scores,
    select_regions,
    superpixel_regions,
    tile_mask,
    tile_regions,
)


def test_tile_regions_numbers_tiles_row_by_row_and_clips_the_border():
    grid = tile_regions(5, 7, 3)  # 2 rows x 3 columns of tiles
    assert grid.shape == (5, 7)
    assert grid[0, 0] == 0 and grid[0, 3] == 1 and grid[0, 6] == 2
    assert grid[3, 0] == 3 and grid[4, 6] == 5
    assert n_tiles(64, 16) == 16 and n_tiles(65, 16) == 25
    mask = tile_mask(4, 2, [1, 2])
    assert mask.tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [1, 1, 0, 0], [1, 1, 0, 0]]


def test_region_scores_known_answers():
    # A 4x4 map cut into four 2x2 tiles with means 1, 2, 3, 4.
    score_map = np.array([[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 8], [3, 3, 4, 0]], float)
    regions = tile_regions(4, 4, 2)
    np.testing.assert_allclose(region_scores(score_map, regions), [1, 2, 3, 4])
    # Weights leave out pixels (padding, labelled): the last tile's 8 and 0 do not count.
    weights = np.ones((4, 4))
    weights[2:, 3] = 0
    np.testing.assert_allclose(region_scores(score_map, regions, weights=weights), [1, 2, 3, 4])
    # A region with no counted pixel is NaN (never proposed); n_regions pads the result.
    weights[:2, :2] = 0
    scores = region_scores(score_map, regions, weights=weights, n_regions=5)
    assert np.isnan(scores[0]) and np.isnan(scores[4])
    # Divided by the mean cost: tile 1 costs twice as much, so its score halves.
    cost = np.ones((4, 4))
    cost[:2, 2:] = 2.0
    np.testing.assert_allclose(region_scores(score_map, regions, cost=cost), [1, 1, 3, 4])


def test_region_means_on_irregular_regions():
    values = np.arange(6, dtype=float).reshape(2, 3)  # 0 1 2 / 3 4 5
    regions = np.array([[0, 0, 1], [2, 2, 1]])
    np.testing.assert_allclose(region_means(values, regions), [0.5, 3.5, 3.5])
    with pytest.raises(ValueError, match="shape"):
        region_means(values, regions[:, :2])


def test_boundary_cost_marks_both_sides_of_a_class_edge():
    prediction = np.array([[0, 0, 1, 1]] * 2)
    cost = boundary_cost(prediction)
    assert cost[0].tolist() == [1.0, 5.0, 5.0, 1.0]


def test_superpixels_follow_intensity_edges():
    image = np.zeros((40, 40))
    image[:, 20:] = 1.0
    labels = superpixel_regions(image, n_segments=4, compactness=0.01)
    assert labels.shape == (40, 40) and labels.min() == 0
    # No superpixel straddles the intensity step.
    left, right = set(np.unique(labels[:, :20])), set(np.unique(labels[:, 20:]))
    assert not left & right


def test_select_regions_top_k_random_and_power():
    scores = {3: np.array([0.1, 0.9, np.nan, 0.2]), 7: np.array([0.8, 0.05, 0.3, np.nan])}
    rng = np.random.default_rng(0)
    top = select_regions(scores, 3, strategy="bald", rng=rng, diversity="none")
    assert top == {3: [1], 7: [0, 2]}
    # The encoding round-trips; NaN tiles are never candidates, whatever the rule.
    assert decode(encode(7, 2, 4), 4) == (7, 2)
    for diversity in ("none", "power"):
        for seed in range(20):
            chosen = select_regions(scores, 6, strategy="bald", diversity=diversity,
                                    rng=np.random.default_rng(seed))
            assert 2 not in chosen.get(3, []) and 3 not in chosen.get(7, [])
            assert sum(map(len, chosen.values())) == 6
    uniform = select_regions(scores, 2, strategy="random", rng=np.random.default_rng(1))
    assert sum(map(len, uniform.values())) == 2
    with pytest.raises(ValueError, match="features"):
        select_regions(scores, 2, strategy="bald", diversity="badge", rng=rng)
    # Power sampling with an infinite beta is top-k.
    assert select_regions(scores, 3, strategy="bald", diversity="power", power_beta=np.inf,
                          rng=rng) == top


def test_merging_two_partial_reviews_gives_their_union():
    u = UNKNOWN_LABEL
    first = np.array([[1, 1, u], [u, u, u]], np.uint8)
    second = np.array([[u, 2, 2], [u, 0, u]], np.uint8)
    merged = merge_partial(first, second)
    assert merged.tolist() == [[1, 2, 2], [u, 0, u]]  # union; the newer review wins overlaps
    assert merge_partial(None, second).tolist() == second.tolist()
    full = np.zeros((2, 3), np.uint8)
    assert merge_partial(first, full).tolist() == full.tolist()  # a full label replaces


def test_a_fit_on_partial_labels_never_learns_from_unknown_pixels():
    """The full training path (class weights, border weights, augmentation, validation) on
    partial labels: no gradient reaches the logits of unknown pixels, and the fit runs."""
    from napari_alunet.config import ModelConfig
    from napari_alunet.model import build_model
    from napari_alunet.training.engine import _criterion, fit, reset_parameters
    from napari_alunet.training.tensors import split_unknown as _split_unknown

    rng = np.random.default_rng(0)
    images = rng.normal(size=(3, 1, 32, 32)).astype(np.float32)
    labels = rng.integers(0, 3, size=(3, 32, 32)).astype(np.uint8)
    labels[:, :, 16:] = UNKNOWN_LABEL
    config = TrainConfig(steps=4, batch_size=2, semi_supervised=False, device="cpu",
                         border_weight=True)
    y, known = _split_unknown(torch.from_numpy(labels).long())
    loss_fn = _criterion(config, torch.from_numpy(labels).long(), 3, torch.device("cpu"))
    logits = torch.randn(3, 3, 32, 32, requires_grad=True)
    loss_fn(logits, y, known).backward()
    assert logits.grad is not None
    assert float(logits.grad[..., 16:].abs().max()) == 0.0
    assert float(logits.grad[..., :16].abs().max()) > 0.0
    model = reset_parameters(build_model(ModelConfig(base_width=4, depth=2, n_classes=3,
                                                     input_size=32)), seed=0)
    gen = fit(model, images[:2], labels[:2], images[2:], labels[2:], config, n_classes=3)
    try:
        while True:
            next(gen)
    except StopIteration as stop:
        result = stop.value
    assert np.isfinite(result.best_val_dice) or np.isnan(result.best_val_dice)
    assert result.history and all(np.isfinite(h["train_loss"]) for h in result.history)
    assert all(np.isfinite(h["val_loss"]) for h in result.history)


def test_weighted_losses_ignore_unknown_pixels_exactly():
    from napari_alunet.training.losses import make_loss
    from napari_alunet.training.tensors import split_unknown as _split_unknown

    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 8)
    target = torch.randint(0, 3, (2, 8, 8))
    partial = target.clone()
    partial[:, :4] = UNKNOWN_LABEL
    for name in ("ce", "ce+tversky", "ce+dice"):
        loss = make_loss(name)
        y, known = _split_unknown(partial)
        assert known is not None
        base = loss(logits, y, known)
        # Changing the logits under unknown pixels changes nothing.
        changed = logits.clone()
        changed[:, :, :4] = torch.randn(2, 3, 4, 8) * 10
        assert torch.allclose(loss(changed, y, known), base)
        # Whatever class values sit under the unknown pixels, the loss is the same.
        refilled = y.clone()
        refilled[:, :4] = torch.randint(0, 3, (2, 4, 8))
        assert torch.allclose(loss(logits, refilled, known), base)
        # And it equals the loss of the known part alone.
        alone = loss(logits[:, :, 4:], target[:, 4:])
        assert torch.allclose(base, alone, atol=1e-6), name


def test_metrics_and_class_weights_count_known_pixels_only():
    from napari_alunet.training.losses import median_frequency_weights
    from napari_alunet.training.metrics import calibration_bins, confusion_matrix

    truth = np.array([[0, 1], [UNKNOWN_LABEL, 2]], np.uint8)
    pred = np.array([[0, 1], [2, 2]], np.uint8)
    cm = confusion_matrix(pred, truth, 3)
    assert cm.sum() == 3 and np.trace(cm) == 3
    cm_t = confusion_matrix(torch.from_numpy(pred), torch.from_numpy(truth), 3)
    assert torch.equal(cm_t, torch.from_numpy(cm))
    probs = torch.nn.functional.one_hot(torch.from_numpy(pred).long(), 3).permute(2, 0, 1)[None]
    bins = calibration_bins(probs.float(), torch.from_numpy(truth)[None].long())
    assert float(bins[0].sum()) == 3 and float(bins[2].sum()) == 3
    full = np.array([[[0, 0], [1, 1]]], np.uint8)
    partial = full.copy()
    partial[0, 0, 1] = UNKNOWN_LABEL
    # freq(0) = 1 / 3 and freq(1) = 2 / 3 of the known pixels: weights median / freq.
    np.testing.assert_allclose(median_frequency_weights(partial, 2), [1.5, 0.75])
    np.testing.assert_allclose(median_frequency_weights(full, 2), [1.0, 1.0])
