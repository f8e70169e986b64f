"""Rankings of hand-made scores: top-k, ties, random, power sampling, feature diversity;
stochastic batch acquisition, typicality cold start, k-means++ (BADGE) and k-center."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_alunet.acquisition import (
    DIVERSITY,
    STRATEGIES,
    auto_beta,
    choose_subset,
    rank,
    strategy_map,
)
from napari_alunet.diversity import greedy_k_center, kmeans_pp_select, typical_start


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


# --- stochastic batch acquisition (Kirsch et al. 2021) ----------------------------------------

_SCORES = {11: 0.9, 4: 0.7, 8: 0.5, 2: 0.3, 6: 0.1, 9: 0.05}
_TOP = [11, 4, 8, 2, 6, 9]


@pytest.mark.parametrize("mode", ["power", "softrank", "softmax"])
def test_infinite_beta_is_top_k_and_huge_beta_approaches_it(mode: str) -> None:
    for k in (1, 3, 6):
        assert rank(_SCORES, k, strategy="bald", rng=_rng(k), diversity=mode,
                    power_beta=math.inf) == _TOP[:k]
        assert rank(_SCORES, k, strategy="bald", rng=_rng(k), diversity=mode,
                    power_beta=1e9) == _TOP[:k]
    # Ties at beta = inf go to the smaller id, as plain top-k.
    tied = {5: 1.0, 3: 1.0, 7: 0.5, 1: 1.0}
    assert rank(tied, 3, strategy="bald", rng=_rng(), diversity=mode, power_beta=math.inf) == \
        rank(tied, 3, strategy="bald", rng=_rng()) == [1, 3, 5]


@pytest.mark.parametrize("mode", ["power", "softrank", "softmax"])
def test_zero_beta_is_uniform(mode: str) -> None:
    scores = {3: 100.0, 1: 10.0, 4: 1.0, 5: 0.1, 9: 0.0}  # a zero score too: s ** 0 = 1
    rng = _rng(0)
    firsts = [rank(scores, 1, strategy="bald", rng=rng, diversity=mode, power_beta=0.0)[0]
              for _ in range(4000)]
    freq = np.array([firsts.count(i) for i in sorted(scores)]) / 4000
    assert np.all(np.abs(freq - 0.2) <= 0.15 * 0.2), freq
    # Whole batches are uniform too: every id equally often among k = 2 of 5.
    rng = _rng(1)
    pairs = [i for _ in range(4000)
             for i in rank(scores, 2, strategy="bald", rng=rng, diversity=mode, power_beta=0)]
    freq = np.array([pairs.count(i) for i in sorted(scores)]) / 4000
    assert np.all(np.abs(freq - 0.4) <= 0.15 * 0.4), freq


@pytest.mark.parametrize("mode", ["power", "softrank", "softmax"])
@pytest.mark.parametrize("beta", [0.5, 1.0, 3.0, None])
def test_finite_beta_prefers_higher_scores(mode: str, beta: float | None) -> None:
    scores = {1: 1.0, 2: 1.5, 3: 2.0, 4: 2.5}
    rng = _rng(2)
    firsts = [rank(scores, 1, strategy="bald", rng=rng, diversity=mode, power_beta=beta)[0]
              for _ in range(3000)]
    counts = [firsts.count(i) for i in (1, 2, 3, 4)]
    assert counts == sorted(counts) and counts[0] > 0 and counts[-1] < 3000, counts
    # Reproducible with the same seed, independent of the input order; every id once.
    a = rank(scores, 4, strategy="bald", rng=_rng(9), diversity=mode, power_beta=beta)
    assert a == rank(dict(reversed(list(scores.items()))), 4, strategy="bald", rng=_rng(9),
                     diversity=mode, power_beta=beta)
    assert sorted(a) == [1, 2, 3, 4]


def test_softrank_and_softmax_follow_their_weights() -> None:
    scores = {0: 5.0, 1: 4.0, 2: 2.0, 3: -1.0}  # softmax and softrank take any real score
    n = 4000
    rng = _rng(3)
    firsts = np.bincount([rank(scores, 1, strategy="margin", rng=rng, diversity="softrank")[0]
                          for _ in range(n)], minlength=4) / n
    w = 1 / np.arange(1, 5)
    np.testing.assert_allclose(firsts, w / w.sum(), atol=0.03)
    rng = _rng(4)
    firsts = np.bincount([rank(scores, 1, strategy="margin", rng=rng, diversity="softmax",
                               power_beta=0.5)[0] for _ in range(n)], minlength=4) / n
    w = np.exp(0.5 * np.array([5.0, 4.0, 2.0, -1.0]))
    np.testing.assert_allclose(firsts, w / w.sum(), atol=0.03)


def test_power_sampling_keeps_its_old_draws() -> None:
    # The shared Gumbel-top-k helper reproduces the former power sampling bit for bit.
    scores = {0: 8.0, 1: 4.0, 2: 2.0, 3: 1.0, 4: 0.0}
    ids = np.arange(5)
    values = np.array([8.0, 4.0, 2.0, 1.0, 0.0])
    for seed, beta in [(0, 1.0), (1, 2.5), (2, 0.3)]:
        gumbel = _rng(seed).gumbel(size=5)
        with np.errstate(divide="ignore"):
            keys = beta * np.log(values) + gumbel
        expected = [int(i) for i in ids[np.lexsort((ids, -gumbel, -keys))]]
        assert rank(scores, 5, strategy="bald", rng=_rng(seed), diversity="power",
                    power_beta=beta) == expected


def test_auto_beta_rule_and_invariances() -> None:
    rng = _rng(5)
    scores = rng.gamma(2.0, size=200)
    beta = auto_beta(scores, "power")
    q10, q90 = np.quantile(scores, [0.1, 0.9])
    assert beta == pytest.approx(math.log(10) / math.log(q90 / q10))
    # The 90th-percentile score is 10 times as likely as the 10th-percentile one.
    assert (q90 / q10) ** beta == pytest.approx(10)
    assert auto_beta(scores * 7, "power") == pytest.approx(beta, rel=1e-12)  # scale-free
    assert auto_beta(np.append(scores, [0.0, 0.0]), "power") == pytest.approx(
        auto_beta(scores[scores > 0], "power"))  # zero weights do not set the range
    soft = auto_beta(scores, "softmax")
    assert soft == pytest.approx(math.log(10) / (q90 - q10))
    assert auto_beta(scores + 123.0, "softmax") == pytest.approx(soft, rel=1e-9)  # shift-free
    assert auto_beta(scores * 7, "softmax") == pytest.approx(soft / 7)
    assert auto_beta(scores, "softrank") == 1.0
    assert auto_beta({i: float(v) for i, v in enumerate(scores)}, "power") == beta
    # Clamps and fall-backs.
    assert auto_beta([1.0, 1.001, 1.002, 1.003], "power") == 20.0
    assert auto_beta(np.logspace(-6, 6, 50), "power") == 0.25
    assert auto_beta([0.0, 0.0, 2.0], "power") == 1.0
    assert auto_beta([3.0, 3.0, 3.0], "power") == 1.0
    assert auto_beta([3.0, 3.0, 3.0], "softmax") == 1.0
    with pytest.raises(ValueError, match="unknown mode"):
        auto_beta(scores, "feature")


def test_automatic_beta_in_rank_is_scale_free() -> None:
    rng = _rng(6)
    scores = {int(i): float(v) for i, v in enumerate(rng.gamma(2.0, size=30))}
    scaled = {i: 7.0 * v for i, v in scores.items()}
    shifted = {i: v - 50.0 for i, v in scores.items()}
    for seed in range(5):
        a = rank(scores, 5, strategy="bald", rng=_rng(seed), diversity="power", power_beta=None)
        assert a == rank(scaled, 5, strategy="bald", rng=_rng(seed), diversity="power",
                         power_beta=None)
        b = rank(scores, 5, strategy="bald", rng=_rng(seed), diversity="softmax",
                 power_beta=None)
        assert b == rank(shifted, 5, strategy="bald", rng=_rng(seed), diversity="softmax",
                         power_beta=None)
        assert b == rank(scores, 5, strategy="bald", rng=_rng(seed), diversity="softmax",
                         power_beta=auto_beta(list(scores.values()), "softmax"))


def test_stochastic_bad_input() -> None:
    assert {"softrank", "softmax", "power"} <= set(DIVERSITY)
    with pytest.raises(ValueError, match="power_beta"):
        rank({1: 1.0, 2: 2.0}, 1, strategy="bald", rng=_rng(), diversity="softmax",
             power_beta=-1.0)
    with pytest.raises(ValueError, match="power_beta"):
        rank({1: 1.0, 2: 2.0}, 1, strategy="bald", rng=_rng(), diversity="power",
             power_beta=float("nan"))
    # Infinite scores come first, also when sampled.
    assert rank({4: math.inf, 6: 1.0, 2: 0.5}, 1, strategy="kl", rng=_rng(),
                diversity="softmax") == [4]


# --- typicality, k-means++ (BADGE), k-center ---------------------------------------------------

def _blobs(seed: int = 0, spread: float = 1.0, gap: float = 20.0):
    """3 blobs of 20 points in 2-D: a tight core of 5 points around the centre and 15 around
    it at ``spread``; ids 100..159 in blob order. Returns ids, (60, 2) points, (60,) blob."""
    rng = _rng(seed)
    centres = np.array([[0.0, 0.0], [gap, 0.0], [0.0, gap]])
    points = np.concatenate([
        np.concatenate([c + 0.05 * rng.normal(size=(5, 2)),
                        c + spread * rng.normal(size=(15, 2))]) for c in centres])
    return np.arange(100, 160), points, np.repeat([0, 1, 2], 20)


def test_typical_start_picks_each_blobs_dense_core() -> None:
    ids, points, blob = _blobs()
    core = {int(i) for b in range(3) for i in ids[20 * b: 20 * b + 5]}
    for seed in range(20):
        picks = typical_start(ids, points, 3, _rng(seed))
        assert len(picks) == 3
        assert sorted(blob[np.array(picks) - 100]) == [0, 1, 2]  # one per blob
        assert set(picks) <= core  # the most typical point is in the dense centre
    # The TypiClust typicality itself: 1 / mean distance to the 20 nearest of the whole set.
    d = np.linalg.norm(points[:, None] - points[None], axis=-1)
    typicality = 1 / np.sort(d, axis=1)[:, 1:21].mean(axis=1)
    picks = typical_start(ids, points, 3, _rng(0))
    for b in range(3):
        members = np.flatnonzero(blob == b)
        assert int(ids[members[np.argmax(typicality[members])]]) in picks


def test_typical_start_order_reproducibility_and_edge_cases() -> None:
    ids, points, _ = _blobs(1)
    # Unequal clusters: a blob of 20 against one of 5 -> the larger cluster's pick first.
    big, small = points[:20], points[40:45]
    picks = typical_start(list(range(25)), np.concatenate([big, small]), 2, _rng(0))
    assert picks[0] < 20 <= picks[1]
    a = typical_start(ids, points, 4, _rng(3))
    assert a == typical_start(ids, points, 4, _rng(3))  # same seed, same ids
    shuffle = _rng(8).permutation(ids.size)
    assert a == typical_start(ids[shuffle], points[shuffle], 4, _rng(3))  # any input order
    as_dict = {int(i): p for i, p in zip(ids, points)}
    assert a == typical_start(ids, as_dict, 4, _rng(3))  # {id: vector} as well
    assert len(set(a)) == 4
    assert sorted(typical_start(ids[:3], points[:3], 10, _rng())) == [100, 101, 102]  # k > n
    assert typical_start(ids, points, 0, _rng()) == []
    assert typical_start([7], [[1.0, 2.0]], 1, _rng()) == [7]
    # Fewer distinct points than k: empty clusters are filled, still k distinct ids.
    same = np.zeros((6, 3))
    assert sorted(typical_start(range(6), same, 4, _rng())) != [] and \
        len(set(typical_start(range(6), same, 4, _rng()))) == 4
    with pytest.raises(ValueError, match="shape"):
        typical_start(ids, points[:10], 3, _rng())


def test_kmeans_pp_select_first_largest_norm_then_covers_blobs() -> None:
    ids, points, blob = _blobs(2, gap=30.0)
    first = int(ids[np.argmax(np.linalg.norm(points, axis=1))])
    covered = 0
    for seed in range(200):
        picks = kmeans_pp_select(ids, points, 3, _rng(seed))
        assert picks[0] == first and len(set(picks)) == 3
        covered += sorted(blob[np.array(picks) - 100]) == [0, 1, 2]
    assert covered >= 0.95 * 200
    picks = kmeans_pp_select(ids, points, 3, _rng(0))
    assert sorted(blob[np.array(picks) - 100]) == [0, 1, 2]
    # Reproducible, independent of the input order; the ties of the first pick by smaller id.
    shuffle = _rng(8).permutation(ids.size)
    assert kmeans_pp_select(ids[shuffle], points[shuffle], 5, _rng(4)) == \
        kmeans_pp_select(ids, points, 5, _rng(4))
    tied = np.array([[0.0, 1.0], [1.0, 0.0], [0.0, -1.0], [0.1, 0.1]])
    assert kmeans_pp_select([9, 3, 5, 1], tied, 1, _rng())[0] == 3
    assert sorted(kmeans_pp_select([9, 3, 5, 1], tied, 10, _rng())) == [1, 3, 5, 9]
    assert kmeans_pp_select([9, 3], np.zeros((2, 2)), 2, _rng()) in ([3, 9], [9, 3])
    assert kmeans_pp_select(ids, points, 0, _rng()) == []


def test_greedy_k_center_covers_blobs_and_respects_the_labelled() -> None:
    ids, points, blob = _blobs(3)
    picks = greedy_k_center(ids, points, 3)
    assert sorted(blob[np.array(picks) - 100]) == [0, 1, 2]
    shuffle = _rng(8).permutation(ids.size)
    assert greedy_k_center(ids[shuffle], points[shuffle], 3) == picks
    # Blobs 0 and 1 labelled: the first pick comes from blob 2, the farthest from them.
    labelled = points[blob != 2][:: 7]
    picks = greedy_k_center(ids, points, 2, labelled_features=labelled)
    assert blob[picks[0] - 100] == 2
    # Every pick is the farthest from the labelled and the picked so far.
    chosen = list(labelled)
    for i in picks:
        d = np.linalg.norm(points[:, None] - np.array(chosen)[None], axis=-1).min(axis=1)
        assert d[i - 100] == pytest.approx(d.max())
        chosen.append(points[i - 100])
    assert len(set(greedy_k_center(range(4), np.zeros((4, 2)), 4))) == 4  # duplicates


def test_badge_diversity_in_rank_is_kmeans_pp_on_the_features() -> None:
    ids, points, _ = _blobs(4, gap=30.0)
    features = {int(i): p for i, p in zip(ids, points)}
    scores = {int(i): 0.0 for i in ids}  # BADGE's uncertainty is the embedding's norm
    assert rank(scores, 4, strategy="bald", rng=_rng(5), diversity="badge",
                features=features) == kmeans_pp_select(ids, points, 4, _rng(5))
    with pytest.raises(ValueError, match="needs features"):
        rank(scores, 4, strategy="bald", rng=_rng(), diversity="badge")
    with pytest.raises(ValueError, match="no embedding vector"):
        rank(scores, 4, strategy="bald", rng=_rng(), diversity="badge", features={100: [0.0]})


def test_top_k_distinct_takes_one_per_group_then_fills_up():
    from napari_alunet.acquisition import top_k_distinct

    scores = {10: 0.9, 11: 0.8, 12: 0.7, 13: 0.1, 14: 0.5}
    groups = ["a", "a", "b", "b", "c"]
    assert top_k_distinct(scores, 3, groups) == [10, 12, 14]
    assert top_k_distinct(scores, 4, groups) == [10, 12, 14, 11]  # only 3 groups: best rest
    assert top_k_distinct(scores, 2, None) == [10, 11]
    assert top_k_distinct(scores, 0, groups) == []
    with pytest.raises(ValueError, match="groups"):
        top_k_distinct(scores, 2, ["a"])
