"""Acquisition: from per-image uncertainty scores to the ids of the images to label next.

Higher scores mean more uncertain. Everything random takes a ``numpy.random.Generator``, so a
ranking is reproducible from its seed, and ties are broken by the smaller image id, so it does
not depend on the order of a dict either.

Score ranking (:func:`rank`) offers top-k and stochastic batch acquisition (Kirsch et al. 2021,
arXiv 2106.12059); the selections on feature vectors it uses for ``diversity="badge"`` and the
cold start live in :mod:`napari_alunet.diversity`.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence

import numpy as np
from numpy.typing import ArrayLike

from napari_alunet.config import DIVERSITY, STRATEGIES, STRATEGY_MAPS
from napari_alunet.diversity import kmeans_pp_select

__all__ = [
    "AUTO_BETA_RANGE", "DIVERSITY", "STOCHASTIC", "STRATEGIES", "STRATEGY_MAPS", "auto_beta",
    "choose_subset", "rank", "strategy_map", "top_k_distinct",
]

#: The diversities that sample by score (Gumbel-top-k); ``power_beta`` is their temperature.
STOCHASTIC: tuple[str, ...] = ("power", "softrank", "softmax")
#: Bounds of the automatic power exponent (:func:`auto_beta`).
AUTO_BETA_RANGE: tuple[float, float] = (0.25, 20.0)

Scores = Mapping[int, float] | tuple[Sequence[int], Sequence[float]]


def strategy_map(strategy: str) -> str | None:
    """The map a strategy scores with (``None`` for ``random``); ValueError for unknown names."""
    try:
        return STRATEGY_MAPS[strategy]
    except KeyError:
        raise ValueError(
            f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}"
        ) from None


def _as_arrays(scores: Scores) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(scores, Mapping):
        ids = np.fromiter((int(i) for i in scores), dtype=np.int64, count=len(scores))
        values = np.fromiter((float(v) for v in scores.values()), np.float64, count=len(scores))
    else:
        ids = np.asarray(scores[0], dtype=np.int64).reshape(-1)
        values = np.asarray(scores[1], dtype=np.float64).reshape(-1)
        if ids.shape != values.shape:
            raise ValueError(f"{ids.size} ids but {values.size} scores")
    if np.unique(ids).size != ids.size:
        raise ValueError("image ids must be unique")
    order = np.argsort(ids, kind="stable")  # canonical order: the result ignores input order
    return ids[order], values[order]


def rank(
    scores: Scores,
    k: int,
    *,
    strategy: str,
    rng: np.random.Generator,
    diversity: str = "none",
    power_beta: float | None = 1.0,
    features: Mapping[int, np.ndarray] | None = None,
    min_distance: float | None = None,
) -> list[int]:
    """The ``k`` image ids to label next, in acquisition order.

    Parameters
    ----------
    scores : ``{image_id: score}`` or ``(ids, values)``; higher is more uncertain. ``random``
        uses only the ids.
    k : how many to return (at most the number of ids).
    strategy : one of :data:`STRATEGIES`. ``random`` draws ``k`` ids uniformly with ``rng``.
    rng : the only source of randomness (``random``, the stochastic diversities, ``badge``).
    diversity : ``"none"``: the top ``k`` by score, ties by smaller id. The stochastic batch
        acquisitions of Kirsch et al. 2021 draw ``k`` ids without replacement, by the
        Gumbel-top-k trick, with probability proportional to a weight ``w``:

        * ``"power"``: ``w = score ** beta`` (PowerBALD; scores must be >= 0),
        * ``"softrank"``: ``w = rank ** -beta``, rank 1 = highest score (ties by smaller id),
        * ``"softmax"``: ``w = exp(beta * score)``.

        ``"feature"``: greedy top-k that skips an id whose feature vector lies closer than
        ``min_distance`` (Euclidean) to one already chosen, so a batch is not ``k`` copies of
        the same hard case; if too few remain, the skipped ones fill up in score order.
        ``"badge"``: :func:`kmeans_pp_select` on ``features`` (BADGE's gradient embeddings,
        whose norm carries the uncertainty); the scores themselves are not used.
    power_beta : ``beta`` (inverse temperature) of the stochastic diversities, >= 0. ``0``
        samples uniformly (every weight 1, zero scores included); ``math.inf`` is plain top-k
        (ties by smaller id), and large finite values approach it. ``None`` picks it from the
        scores' dynamic range with :func:`auto_beta`.
    features : ``{image_id: (F,) vector}`` for ``"feature"`` and ``"badge"`` (every scored id
        needs one).
    min_distance : for ``"feature"``; default a tenth of the median pairwise distance among
        the ``4 k`` best-scored candidates.

    Returns
    -------
    list of ``min(k, n)`` distinct image ids.
    """
    strategy_map(strategy)
    if diversity not in DIVERSITY:
        raise ValueError(f"unknown diversity {diversity!r}; choose one of {', '.join(DIVERSITY)}")
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    ids, values = _as_arrays(scores)
    k = min(k, ids.size)
    if k == 0:
        return []
    if strategy == "random":
        return [int(i) for i in rng.choice(ids, size=k, replace=False)]
    if np.isnan(values).any():
        raise ValueError(f"NaN scores for image ids {ids[np.isnan(values)][:10].tolist()}")
    if diversity in STOCHASTIC:
        return _stochastic(ids, values, k, rng, diversity, power_beta)
    if diversity == "badge":
        if features is None:
            raise ValueError("diversity='badge' needs features: {image_id: embedding}")
        return kmeans_pp_select(ids, features, k, rng)
    order = np.lexsort((ids, -values))  # score descending, then id ascending
    if diversity == "feature":
        return _feature(ids[order], k, features, min_distance)
    return [int(i) for i in ids[order[:k]]]


def top_k_distinct(scores: Scores, k: int, groups: Sequence[Hashable] | None) -> list[int]:
    """The ``k`` best-scored ids, at most one per group first (the oracle's batch rule).

    Parameters
    ----------
    scores : ``{image_id: score}`` or ``(ids, values)``; higher is taken first, ties by
        smaller id.
    k : how many to return (at most the number of ids).
    groups : the group of each id *in the order of* ``scores`` (e.g. the embryo a frame shows),
        or None: plain top k. When fewer than ``k`` groups exist, the best of the remaining ids
        fill up in score order.

    Returns
    -------
    list of ``min(k, n)`` distinct ids in acquisition order.
    """
    if isinstance(scores, Mapping):
        given = [int(i) for i in scores]
    else:
        given = [int(i) for i in scores[0]]
    ids, values = _as_arrays(scores)
    order = np.lexsort((ids, -values))
    ranked = [int(i) for i in ids[order]]
    k = max(0, min(int(k), len(ranked)))
    if groups is None or k == 0:
        return ranked[:k]
    if len(groups) != len(given):
        raise ValueError(f"{len(given)} ids but {len(groups)} groups")
    group_of = dict(zip(given, groups))
    chosen, seen = [], set()
    for i in ranked:
        if group_of[i] not in seen:
            seen.add(group_of[i])
            chosen.append(i)
            if len(chosen) == k:
                return chosen
    taken = set(chosen)
    return chosen + [i for i in ranked if i not in taken][: k - len(chosen)]


def auto_beta(values: Mapping[int, float] | ArrayLike, mode: str) -> float:
    """An inverse temperature for stochastic acquisition from the scores' dynamic range.

    The rule makes the image at the scores' 90th percentile ten times as likely to be drawn
    (as the first pick) as the one at the 10th percentile, whatever the scores' units, so one
    setting fits every strategy (entropy in nats, BALD, margin, ...). Quantiles, not the
    extremes, so a single outlier does not set the temperature.

    Parameters
    ----------
    values : ``(n,)`` scores, or ``{image_id: score}``; NaN and infinite scores are ignored.
    mode : ``"power"``: ``beta = ln 10 / ln(q90 / q10)`` over the positive scores, clamped to
        :data:`AUTO_BETA_RANGE` ``[0.25, 20]`` and 1 (PowerBALD's default) when fewer than
        two scores are positive or ``q90 == q10``. Scale-invariant: scores times ``c > 0``
        give the same beta. At ``q90 / q10 = 10`` it is 1, Kirsch et al.'s default. The upper
        clamp keeps nearly equal scores (differences within Monte-Carlo noise) from turning
        sampling into top-k; the lower one keeps very spread scores from sampling nearly
        uniformly. ``"softmax"``: ``beta = ln 10 / (q90 - q10)`` (shift-invariant: scores
        plus ``c`` give the same beta; the beta scales with 1 / the score's unit). When
        ``q90 == q10`` it uses ``max - min`` instead, and 1 if all scores are equal (then any
        beta samples the same). ``"softrank"``: 1, Kirsch et al.'s default; ranks have no
        units, so there is nothing to calibrate.

    Returns
    -------
    float, > 0.
    """
    if mode not in STOCHASTIC:
        raise ValueError(f"auto_beta: unknown mode {mode!r}; choose one of {', '.join(STOCHASTIC)}")
    if isinstance(values, Mapping):
        values = list(values.values())
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    v = v[np.isfinite(v)]
    if mode == "softrank":
        return 1.0
    if mode == "power":
        v = v[v > 0]  # zero scores have weight 0 at any beta: they say nothing about the range
        if v.size < 2:
            return 1.0
        q10, q90 = np.quantile(v, [0.1, 0.9])
        if q10 <= 0 or q90 <= q10:
            return 1.0
        low, high = AUTO_BETA_RANGE
        return float(np.clip(math.log(10.0) / math.log(q90 / q10), low, high))
    if v.size < 2:
        return 1.0
    q10, q90 = np.quantile(v, [0.1, 0.9])
    spread = q90 - q10
    if not spread > 0:
        spread = float(v.max() - v.min())
    return float(math.log(10.0) / spread) if spread > 0 else 1.0


def _log_weights(ids: np.ndarray, values: np.ndarray, mode: str) -> np.ndarray:
    """``(n,)`` log sampling weights at beta = 1 (ids ascending, ``values`` aligned)."""
    if mode == "power":
        with np.errstate(divide="ignore"):
            return np.log(values)  # score 0 -> -inf: drawn only after every positive one
    if mode == "softmax":
        return values.copy()
    # softrank: ordinal ranks, ties by smaller id, so beta -> inf gives exactly the top-k order
    ranks = np.empty(ids.size, dtype=np.float64)
    ranks[np.lexsort((ids, -values))] = np.arange(1, ids.size + 1)
    return -np.log(ranks)


def _stochastic(
    ids: np.ndarray,
    values: np.ndarray,
    k: int,
    rng: np.random.Generator,
    mode: str,
    beta: float | None,
) -> list[int]:
    if mode == "power" and (values < 0).any():
        raise ValueError("power sampling needs scores >= 0 (they are sampling weights)")
    if beta is None:
        beta = auto_beta(values, mode)
    beta = float(beta)
    if not beta >= 0:  # also catches NaN
        raise ValueError(f"power_beta must be >= 0 (or None for automatic), got {beta}")
    if math.isinf(beta):
        # The limit itself; inf * log-weight would give NaN at log-weight 0 and random ties.
        order = np.lexsort((ids, -values))
        return [int(i) for i in ids[order[:k]]]
    if beta == 0:
        # Exactly uniform, even for zero (power) or infinite scores, where 0 * log w is NaN.
        log_w = np.zeros(ids.size)
    else:
        with np.errstate(over="ignore"):  # huge beta: overflow to +-inf keeps the order
            log_w = beta * _log_weights(ids, values, mode)
    return _gumbel_top_k(ids, log_w, k, rng)


def _gumbel_top_k(
    ids: np.ndarray, log_w: np.ndarray, k: int, rng: np.random.Generator
) -> list[int]:
    """``k`` of ``ids`` without replacement, with probabilities proportional to ``exp(log_w)``.

    The k largest of ``log_w`` + Gumbel noise are such a sample (Kool et al. 2019). Equal
    infinite keys (``-inf``: weight 0, or ``+inf``) are ordered by the noise alone, the
    second sort key, so they come in random order; exact noise ties fall back to the id.
    """
    gumbel = rng.gumbel(size=ids.size)
    keys = log_w + gumbel
    order = np.lexsort((ids, -gumbel, -keys))
    return [int(i) for i in ids[order[:k]]]


def _feature(
    ranked: np.ndarray,
    k: int,
    features: Mapping[int, np.ndarray] | None,
    min_distance: float | None,
) -> list[int]:
    if features is None:
        raise ValueError("diversity='feature' needs features: {image_id: 1-D vector}")
    missing = [int(i) for i in ranked if int(i) not in features]
    if missing:
        raise ValueError(f"no feature vector for image ids {missing[:10]}")
    vectors = np.stack([np.asarray(features[int(i)], dtype=np.float64).ravel() for i in ranked])
    if min_distance is None:
        head = vectors[: max(2, 4 * k)]
        pairwise = np.linalg.norm(head[:, None] - head[None], axis=-1)
        upper = pairwise[np.triu_indices(len(head), 1)]
        min_distance = 0.1 * float(np.median(upper)) if upper.size else 0.0
    chosen: list[int] = []
    skipped: list[int] = []
    for row in range(len(ranked)):  # a loop over images (stops at k), not pixels
        if chosen and np.linalg.norm(vectors[chosen] - vectors[row], axis=1).min() < min_distance:
            skipped.append(row)
            continue
        chosen.append(row)
        if len(chosen) == k:
            break
    chosen += skipped[: k - len(chosen)]
    return [int(ranked[r]) for r in chosen]


def choose_subset(ids: Iterable[int], subset: int | None, rng: np.random.Generator) -> list[int]:
    """A random subset of the pool to score (BaaL finds it about as good as scoring all).

    Parameters
    ----------
    ids : pool image ids (any order; the draw depends on the set only).
    subset : how many to keep; ``None`` or at least the pool size keeps all.
    rng : the source of randomness.

    Returns
    -------
    The kept ids, ascending.
    """
    pool = np.unique(np.fromiter((int(i) for i in ids), dtype=np.int64))
    if subset is None or subset >= pool.size:
        return [int(i) for i in pool]
    if subset < 0:
        raise ValueError(f"subset must be >= 0 or None, got {subset}")
    return sorted(int(i) for i in rng.choice(pool, size=subset, replace=False))
