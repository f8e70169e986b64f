"""Rankings of hand-made scores: top-k, ties, random, power sampling, feature diversity."""

from __future__ import annotations

import numpy as np
import pytest

from napari_alunet.acquisition import STRATEGIES, choose_subset, rank, strategy_map


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def test_top_k_highest_first_ties_by_id_and_input_order_irrelevant() -> None:
    scores = {7: 0.2, 3: 0.9, 5: 0.5, 1: 0.5, 9: 0.9, 2: 0.0}
    assert rank(scores, 4, strategy="bald", rng=_rng()) == [3, 9, 1, 5]
    reordered = dict(reversed(list(scores.items())))
    assert rank(reordered, 4, strategy="bald", rng=_rng()) == [3, 9, 1, 5]
    ids, values = zip(*scores.items())
    assert rank((list(ids), list(values)), 6, strategy="entropy", rng=_rng()) == [3, 9, 1, 5, 7, 2]
    assert rank(scores, 100, strategy="kl", rng=_rng()) == [3, 9, 1, 5, 7, 2]  # k clipped
    assert rank(scores, 0, strategy="js", rng=_rng()) == []
    assert rank({4: float("inf"), 6: 1.0}, 1, strategy="kl", rng=_rng()) == [4]


def test_every_strategy_names_a_map() -> None:
    assert strategy_map("random") is None
    assert {strategy_map(s) for s in STRATEGIES if s != "random"} == {
        "entropy", "bald", "kl", "js", "margin", "variation_ratio"}
    with pytest.raises(ValueError, match="unknown strategy"):
        rank({1: 1.0}, 1, strategy="bold", rng=_rng())


def test_random_ignores_scores_and_is_deterministic_given_rng() -> None:
    scores = {i: float(i) for i in range(50)}
    flat = {i: 0.0 for i in range(50)}
    a = rank(scores, 5, strategy="random", rng=_rng(1))
    assert a == rank(flat, 5, strategy="random", rng=_rng(1))  # scores do not matter
    assert a == rank(dict(reversed(list(scores.items()))), 5, strategy="random", rng=_rng(1))
    assert len(set(a)) == 5 and a != list(range(45, 50))
    assert a != rank(scores, 5, strategy="random", rng=_rng(2))


def test_power_sampling_follows_score_to_the_beta() -> None:
    scores = {0: 8.0, 1: 4.0, 2: 2.0, 3: 1.0, 4: 0.0}
    rng = _rng(0)
    firsts = np.bincount([rank(scores, 1, strategy="bald", rng=rng, diversity="power")[0]
                          for _ in range(3000)], minlength=5) / 3000
    np.testing.assert_allclose(firsts, [8 / 15, 4 / 15, 2 / 15, 1 / 15, 0], atol=0.03)
    # A zero score is drawn only after every positive one.
    assert rank(scores, 5, strategy="bald", rng=_rng(3), diversity="power")[-1] == 4
    # beta -> large approaches top-k; reproducible with the same seed.
    assert rank(scores, 3, strategy="bald", rng=_rng(5), diversity="power", power_beta=50) \
        == [0, 1, 2]
    assert rank(scores, 3, strategy="bald", rng=_rng(7), diversity="power") == \
        rank(scores, 3, strategy="bald", rng=_rng(7), diversity="power")


def test_feature_diversity_skips_near_duplicates() -> None:
    # Ids 1-3 are near-copies of one hard case; 4 and 5 are different and less uncertain.
    scores = {1: 0.9, 2: 0.89, 3: 0.88, 4: 0.5, 5: 0.4}
    features = {1: np.array([0.0, 0.0]), 2: np.array([0.01, 0.0]), 3: np.array([0.0, 0.01]),
                4: np.array([1.0, 0.0]), 5: np.array([0.0, 1.0])}
    plain = rank(scores, 3, strategy="bald", rng=_rng())
    diverse = rank(scores, 3, strategy="bald", rng=_rng(), diversity="feature",
                   features=features, min_distance=0.5)
    assert plain == [1, 2, 3] and diverse == [1, 4, 5]
    # Not enough distinct images: the skipped duplicates fill up in score order.
    assert rank(scores, 4, strategy="bald", rng=_rng(), diversity="feature", features=features,
                min_distance=0.5) == [1, 4, 5, 2]
    # The default threshold also separates the clusters here.
    assert rank(scores, 2, strategy="bald", rng=_rng(), diversity="feature",
                features=features) == [1, 4]
    with pytest.raises(ValueError, match="no feature vector"):
        rank(scores, 2, strategy="bald", rng=_rng(), diversity="feature", features={1: [0.0]})


def test_choose_subset() -> None:
    ids = [10, 4, 7, 1, 30, 22]
    sub = choose_subset(ids, 3, _rng(4))
    assert len(sub) == 3 and set(sub) <= set(ids) and sub == sorted(sub)
    assert sub == choose_subset(list(reversed(ids)), 3, _rng(4))  # order of ids irrelevant
    assert choose_subset(ids, None, _rng()) == sorted(ids)
    assert choose_subset(ids, 99, _rng()) == sorted(ids)


def test_bad_input_is_reported() -> None:
    with pytest.raises(ValueError, match="NaN"):
        rank({1: float("nan"), 2: 1.0}, 1, strategy="bald", rng=_rng())
    with pytest.raises(ValueError, match=">= 0"):
        rank({1: -1.0, 2: 1.0}, 1, strategy="bald", rng=_rng(), diversity="power")
    with pytest.raises(ValueError, match="unknown diversity"):
        rank({1: 1.0}, 1, strategy="bald", rng=_rng(), diversity="coreset")
