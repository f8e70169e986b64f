"""Known-answer tests of the uncertainty maps against a float64 numpy reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_alunet import uncertainty as U

T, B, C, H, W = 6, 3, 5, 7, 9


def _random_mc(seed: int = 0, sharp: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=sharp, size=(T + 1, B, C, H, W))
    probs = np.exp(logits - logits.max(2, keepdims=True))
    probs /= probs.sum(2, keepdims=True)
    return probs[:T], probs[T]


def _xlogx(p: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(p > 0, p * np.log(p), 0.0)


def _reference(mc: np.ndarray, det: np.ndarray) -> dict[str, np.ndarray]:
    """Textbook float64 definitions, written independently of the module."""
    mean = mc.mean(0)
    h_mean = -_xlogx(mean).sum(1)
    mean_h = -_xlogx(mc).sum(2).mean(0)
    kl = (det * (np.log(det) - np.log(mean))).sum(1)
    mid = (det + mean) / 2
    js = 0.5 * (det * np.log(det / mid)).sum(1) + 0.5 * (mean * np.log(mean / mid)).sum(1)
    srt = np.sort(mean, axis=1)
    votes = mc.argmax(2)
    modal = np.stack([(votes == c).sum(0) for c in range(C)]).max(0)
    return {
        "entropy": h_mean,
        "bald": h_mean - mean_h,
        "kl": kl,
        "js": js,
        "margin": 1 - (srt[:, -1] - srt[:, -2]),
        "variation_ratio": 1 - modal / T,
    }


@pytest.mark.parametrize("seed", [0, 1])
def test_every_map_matches_float64_reference(seed: int) -> None:
    mc, det = _random_mc(seed)
    ref = _reference(mc, det)
    maps = U.compute_maps(torch.tensor(mc, dtype=torch.float32),
                          torch.tensor(det, dtype=torch.float32))
    assert list(maps) == list(U.MAP_NAMES)
    for name, value in maps.items():
        assert value.dtype == torch.float32 and value.shape == (B, H, W)
        np.testing.assert_allclose(value.numpy(), ref[name], atol=1e-5, rtol=0, err_msg=name)
    # The single-map functions agree with compute_maps, and numpy input is accepted.
    singles = {
        "entropy": U.entropy_map(mc), "bald": U.bald_map(mc), "kl": U.kl_map(mc, det),
        "js": U.js_map(mc, det), "margin": U.margin_map(mc),
        "variation_ratio": U.variation_ratio_map(mc),
    }
    for name, value in singles.items():
        np.testing.assert_allclose(value.numpy(), ref[name], atol=1e-12, err_msg=name)


def test_per_class_terms_sum_to_the_map() -> None:
    mc, det = _random_mc(2)
    mc32, det32 = torch.tensor(mc, dtype=torch.float32), torch.tensor(det, dtype=torch.float32)
    pairs = [
        (U.per_class_entropy(mc32), U.entropy_map(mc32)),
        (U.per_class_bald(mc32), U.bald_map(mc32)),
        (U.per_class_kl(mc32, det32), U.kl_map(mc32, det32)),
        (U.per_class_js(mc32, det32), U.js_map(mc32, det32)),
    ]
    for per_class, total in pairs:
        assert per_class.shape == (B, C, H, W)
        torch.testing.assert_close(per_class.sum(1), total, atol=1e-6, rtol=0)
    assert (U.per_class_bald(mc32) >= 0).all() and (U.per_class_js(mc32, det32) >= 0).all()


def _passes(*rows: list[float]) -> torch.Tensor:
    """(T, 1, C, 1, 1) from one probability vector per pass."""
    return torch.tensor(rows, dtype=torch.float64)[:, None, :, None, None]


def test_known_ranking_of_hand_made_cases() -> None:
    confident_agree = _passes(*[[1.0, 0.0, 0.0]] * 6)
    # Every class wins two of six passes: the mean is uniform, exactly like ``uniform``'s.
    confident_disagree = _passes(*[[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]] * 2)
    uniform = _passes(*[[1 / 3] * 3] * 6)
    bald = {k: float(U.bald_map(v)) for k, v in
            [("agree", confident_agree), ("disagree", confident_disagree), ("uniform", uniform)]}
    ent = {k: float(U.entropy_map(v)) for k, v in
           [("agree", confident_agree), ("disagree", confident_disagree), ("uniform", uniform)]}
    assert bald["agree"] == 0.0 and ent["agree"] == 0.0
    # Uniform passes: maximal entropy (log 3) but no disagreement, so BALD is 0.
    assert ent["uniform"] == pytest.approx(np.log(3)) and bald["uniform"] == pytest.approx(0.0)
    # Confident disagreement: BALD equals the entropy of the mean (each pass has entropy 0).
    assert bald["disagree"] == pytest.approx(ent["disagree"]) == pytest.approx(np.log(3))
    assert ent["uniform"] == pytest.approx(ent["disagree"])  # entropy cannot tell them apart...
    assert bald["disagree"] > bald["uniform"] + 1.0  # ...BALD can.
    vr = U.variation_ratio_map(confident_disagree)
    assert float(vr) == pytest.approx(2 / 3)  # the modal class wins 2 of 6 votes
    assert float(U.variation_ratio_map(confident_agree)) == 0.0
    assert float(U.margin_map(confident_agree)) == 0.0
    assert float(U.margin_map(uniform)) == pytest.approx(1.0)


def test_one_hot_probabilities_give_finite_maps() -> None:
    rng = np.random.default_rng(3)
    labels = rng.integers(0, C, size=(T, B, H, W))
    mc = torch.nn.functional.one_hot(torch.tensor(labels), C).permute(0, 1, 4, 2, 3).float()
    det = mc.mean(0)  # soft but with exact zeros where no pass voted for a class
    maps = U.compute_maps(mc, det)
    for name, value in maps.items():
        assert torch.isfinite(value).all(), name
    torch.testing.assert_close(maps["kl"], torch.zeros(B, H, W))  # det == mean
    # One-hot det against a mean that gives its class probability 0: KL is +inf, not NaN.
    mean_zero = _passes([0.0, 1.0, 0.0], [0.0, 0.5, 0.5])
    one_hot_det = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)[None, :, None, None]
    kl = U.kl_map(mean_zero, one_hot_det)
    assert torch.isinf(kl).all() and not torch.isnan(kl).any()
    assert float(U.js_map(mean_zero, torch.tensor([1.0, 0, 0]).double()[None, :, None, None])) \
        == pytest.approx(np.log(2))  # disjoint supports: JS is log 2


def test_scores_are_means_and_invariant_to_image_size() -> None:
    small = torch.full((1, 8, 8), 0.25)
    large = torch.full((1, 64, 64), 0.25)
    for reduction in U.REDUCTIONS:
        probs_s = torch.zeros(1, 3, 8, 8)
        probs_s[:, 1] = 1.0
        probs_l = torch.zeros(1, 3, 64, 64)
        probs_l[:, 1] = 1.0
        s = U.image_scores(small, reduction, probs=probs_s)
        big = U.image_scores(large, reduction, probs=probs_l)
        assert s.shape == (1,) and float(s) == pytest.approx(0.25) == float(big)


def test_foreground_and_class_weighted_reductions() -> None:
    maps = torch.zeros(2, 4, 4)
    maps[:, :2] = 1.0  # top half uncertain
    probs = torch.zeros(2, 3, 4, 4)
    probs[0, 0] = 1.0  # image 0: all background -> foreground falls back to all pixels
    probs[1, 0] = 1.0
    probs[1, 0, 0, 0] = 0.0
    probs[1, 2, 0, 0] = 1.0  # image 1: one class-2 pixel, on an uncertain row
    fg = U.image_scores(maps, "foreground", probs=probs)
    torch.testing.assert_close(fg, torch.tensor([0.5, 1.0]))
    # Balanced: image 1 has class 0 (15 px, mean 7/15) and class 2 (1 px, mean 1).
    bal = U.image_scores(maps, "class_weighted", probs=probs)
    torch.testing.assert_close(bal, torch.tensor([0.5, (7 / 15 + 1.0) / 2]))
    weighted = U.image_scores(maps, "class_weighted", probs=probs,
                              class_weights=torch.tensor([1.0, 0.0, 3.0]))
    torch.testing.assert_close(weighted, torch.tensor([0.5, (7 + 3) / (15 + 3)]))
    # inf in a map stays inf (no NaN from a mask product).
    maps[:, 3, 3] = float("inf")  # image 0 has no foreground, image 1 has it on background
    assert torch.isinf(U.image_scores(maps, "foreground", probs=probs))[0]
    assert float(U.image_scores(maps, "foreground", probs=probs)[1]) == 1.0


def test_errors_name_the_problem() -> None:
    mc, _ = _random_mc()
    with pytest.raises(ValueError, match="det_probs"):
        U.compute_maps(mc, names=["kl"])
    with pytest.raises(ValueError, match="unknown map"):
        U.compute_maps(mc, names=["mutual"])
    with pytest.raises(ValueError, match="T, B, C, H, W"):
        U.entropy_map(mc[0])
    with pytest.raises(ValueError, match="needs probs"):
        U.image_scores(torch.zeros(1, 2, 2), "foreground")
    assert list(U.compute_maps(mc)) == ["entropy", "bald", "margin", "variation_ratio"]
