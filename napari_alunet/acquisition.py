"""Acquisition: from per-image uncertainty scores to the ids of the images to label next.

Higher scores mean more uncertain. Everything random takes a ``numpy.random.Generator``, so a
ranking is reproducible from its seed, and ties are broken by the smaller image id, so it does
not depend on the order of a dict either.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

__all__ = ["DIVERSITY", "STRATEGIES", "STRATEGY_MAPS", "choose_subset", "rank", "strategy_map"]

#: Strategy name -> the uncertainty map (:mod:`napari_alunet.uncertainty`) its score reduces.
STRATEGY_MAPS: dict[str, str | None] = {
    "random": None,
    "entropy": "entropy",
    "bald": "bald",
    "kl": "kl",
    "js": "js",
    "margin": "margin",
    "variation_ratio": "variation_ratio",
}
STRATEGIES: tuple[str, ...] = tuple(STRATEGY_MAPS)
DIVERSITY: tuple[str, ...] = ("none", "power", "feature")

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
    power_beta: float = 1.0,
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
    rng : the only source of randomness (``random`` and ``diversity="power"``).
    diversity : ``"none"``: the top ``k`` by score, ties by smaller id. ``"power"``: stochastic
        power sampling (PowerBALD, Kirsch et al. 2021): ``k`` ids drawn without replacement
        with probability proportional to ``score ** power_beta``, by the Gumbel-top-k trick.
        ``"feature"``: greedy top-k that skips an id whose feature vector lies closer than
        ``min_distance`` (Euclidean) to one already chosen, so a batch is not ``k`` copies of
        the same hard case; if too few remain, the skipped ones fill up in score order.
    power_beta : exponent of the power sampling; large values approach plain top-k.
    features : ``{image_id: (F,) vector}`` for ``"feature"`` (every scored id needs one).
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
    if diversity == "power":
        return _power(ids, values, k, rng, power_beta)
    order = np.lexsort((ids, -values))  # score descending, then id ascending
    if diversity == "feature":
        return _feature(ids[order], k, features, min_distance)
    return [int(i) for i in ids[order[:k]]]


def _power(
    ids: np.ndarray, values: np.ndarray, k: int, rng: np.random.Generator, beta: float
) -> list[int]:
    if (values < 0).any():
        raise ValueError("power sampling needs scores >= 0 (they are sampling weights)")
    if beta <= 0:
        raise ValueError(f"power_beta must be > 0, got {beta}")
    # Gumbel-top-k: the k largest of log(w) + Gumbel noise are a sample without replacement with
    # probabilities proportional to w (Kool et al. 2019). Score 0 gives -inf: drawn only after
    # every positive one, in the noise's (random) order, which the second key provides.
    gumbel = rng.gumbel(size=ids.size)
    with np.errstate(divide="ignore"):
        keys = beta * np.log(values) + gumbel
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
