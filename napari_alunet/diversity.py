"""Selections on feature vectors for small labelling budgets.

* :func:`typical_start`: the TypiClust cold start (Hacohen et al. 2022, arXiv 2202.02794):
  cluster the pool's embeddings into ``k`` groups, take the most typical member of each;
* :func:`kmeans_pp_select`: k-means++ seeding; on gradient embeddings this is BADGE (Ash et al.
  2020, arXiv 1906.03671), the uncertainty + representativeness hybrid of
  :func:`napari_alunet.acquisition.rank`;
* :func:`greedy_k_center`: the core-set rule (Sener & Savarese 2018).

Everything random takes a ``numpy.random.Generator``; ids are put in ascending order first, so a
selection does not depend on the order they were given in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
from numpy.typing import ArrayLike
from scipy.spatial.distance import cdist

__all__ = ["greedy_k_center", "kmeans_pp_select", "typical_start"]

Vectors = Mapping[int, ArrayLike] | ArrayLike


def _id_matrix(ids: Iterable[int], vectors: Vectors, what: str) -> tuple[np.ndarray, np.ndarray]:
    """``(n,)`` ids ascending and their ``(n, D)`` float64 rows, in that canonical order.

    ``vectors`` is ``{image_id: (D,) vector}`` (rows looked up by id) or an ``(n, D)`` array
    aligned with ``ids``.
    """
    ids = np.fromiter((int(i) for i in ids), dtype=np.int64)
    if np.unique(ids).size != ids.size:
        raise ValueError("image ids must be unique")
    if isinstance(vectors, Mapping):
        missing = [int(i) for i in ids if int(i) not in vectors]
        if missing:
            raise ValueError(f"no {what} vector for image ids {missing[:10]}")
        rows = [np.asarray(vectors[int(i)], dtype=np.float64).ravel() for i in ids]
        matrix = np.stack(rows) if rows else np.zeros((0, 0))
    else:
        matrix = np.asarray(vectors, dtype=np.float64)
        if matrix.ndim == 1 and ids.size:
            matrix = matrix.reshape(ids.size, -1)
        if matrix.ndim != 2 or matrix.shape[0] != ids.size:
            raise ValueError(f"{ids.size} ids but {what} of shape {matrix.shape}; want (n, D)")
    if not np.isfinite(matrix).all():
        raise ValueError(f"{what} vectors must be finite")
    order = np.argsort(ids, kind="stable")  # canonical order: the result ignores input order
    return ids[order], matrix[order]


def _selection(ids: Iterable[int], features: Vectors, k: int
               ) -> tuple[np.ndarray, np.ndarray, int]:
    """Ids ascending, their feature rows (:func:`_id_matrix`) and ``k`` capped at their
    number; ``ValueError`` for a negative ``k``."""
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    ids_sorted, matrix = _id_matrix(ids, features, "feature")
    return ids_sorted, matrix, min(int(k), ids_sorted.size)


def _sq_dist_to(matrix: np.ndarray, row: np.ndarray) -> np.ndarray:
    """``(n,)`` squared Euclidean distances of ``(n, D)`` rows to one ``(D,)`` row (exact 0
    for an identical row, unlike the ``|a|^2 - 2ab + |b|^2`` expansion)."""
    diff = matrix - row
    return np.einsum("ij,ij->i", diff, diff)


def _kmeans_pp(matrix: np.ndarray, k: int, rng: np.random.Generator, first: int) -> np.ndarray:
    """k-means++ seeding: ``(k,)`` distinct row indices, ``first`` first, each next drawn with
    probability proportional to its squared distance to the nearest one already chosen."""
    n = matrix.shape[0]
    chosen = np.zeros(n, dtype=bool)
    picks = [first]
    chosen[first] = True
    d2 = _sq_dist_to(matrix, matrix[first])
    for _ in range(1, k):  # a loop over the k picks; each step is vectorised over n
        d2[chosen] = 0.0  # chosen rows are at distance 0 anyway; exact, so never redrawn
        top = d2.max()
        if top > 0:
            p = d2 / top  # scaled first: the sum of huge squared distances could overflow
            nxt = int(rng.choice(n, p=p / p.sum()))
        else:  # only duplicates of chosen rows are left: any unchosen one covers as well
            nxt = int(rng.choice(np.flatnonzero(~chosen)))
        picks.append(nxt)
        chosen[nxt] = True
        d2 = np.minimum(d2, _sq_dist_to(matrix, matrix[nxt]))
    return np.asarray(picks, dtype=np.int64)


def _lloyd(
    matrix: np.ndarray, centres: np.ndarray, max_iter: int
) -> tuple[np.ndarray, float]:
    """``(n,)`` cluster labels after Lloyd iterations from ``(k, D)`` centres (until the
    labels stop changing), and their within-cluster sum of squares. An emptied cluster keeps
    its centre; argmin ties go to the lower cluster index, so the result is deterministic."""
    centres = centres.copy()
    k = centres.shape[0]
    labels = np.full(matrix.shape[0], -1)
    for _ in range(max_iter):
        new = np.argmin(cdist(matrix, centres, "sqeuclidean"), axis=1)
        if np.array_equal(new, labels):
            break
        labels = new
        counts = np.bincount(labels, minlength=k)
        sums = np.zeros_like(centres)
        np.add.at(sums, labels, matrix)
        filled = counts > 0
        centres[filled] = sums[filled] / counts[filled, None]
    diff = matrix - centres[labels]
    return labels, float(np.einsum("ij,ij->", diff, diff))


def _typicality(matrix: np.ndarray, n_neighbours: int, block: int = 512) -> np.ndarray:
    """``(n,)`` TypiClust typicality: 1 / mean distance to the ``min(n_neighbours, n - 1)``
    nearest other rows (``inf`` where they all coincide; all 1 for a single row).

    Exact brute force in blocks of rows (``(block, n)`` distances at a time, O(n^2 D) work): a
    k-d tree is no faster on the tens-to-hundreds of dimensions of an image embedding.
    """
    n = matrix.shape[0]
    m = min(n_neighbours, n - 1)
    if m < 1:
        return np.ones(n)
    total = np.empty(n)
    for start in range(0, n, block):  # a loop over blocks of rows, vectorised within
        dist = cdist(matrix[start:start + block], matrix)
        # The m + 1 smallest include the row itself at distance exactly 0 (or a duplicate
        # instead, also at 0), so their sum is the sum over the m nearest others.
        total[start:start + block] = np.partition(dist, m, axis=1)[:, : m + 1].sum(axis=1)
    with np.errstate(divide="ignore"):
        return m / total


def typical_start(
    ids: Iterable[int],
    features: Vectors,
    k: int,
    rng: np.random.Generator,
    *,
    n_neighbours: int = 20,
    n_init: int = 5,
    max_iter: int = 100,
) -> list[int]:
    """A cold-start batch of typical and diverse images (TypiClust, Hacohen et al. 2022).

    With very few labels, the most uncertain images are mostly outliers; the most typical
    image of each of ``k`` clusters covers the data better. k-means (k-means++ seeding from
    ``rng``, then Lloyd iterations; the best of ``n_init`` restarts by within-cluster sum of
    squares) splits the features into ``k`` clusters, and each cluster
    contributes its member of highest typicality, ``1 / mean distance to its
    min(n_neighbours, n - 1) nearest neighbours`` in the whole set (density, not distance to
    the centroid, so a cluster's dense core wins over its centroid in empty space).

    Parameters
    ----------
    ids : ``(n,)`` image ids (any order; the result depends on the set only).
    features : ``{image_id: (D,) vector}``, or an ``(n, D)`` array aligned with ``ids``:
        a self-supervised or pooled-encoder embedding, in which Euclidean distance means
        similarity.
    k : the budget: number of clusters and of ids returned.
    rng : the only source of randomness (the k-means++ seedings).
    n_neighbours : neighbours for the typicality (TypiClust uses 20).
    n_init : k-means restarts, the one of least within-cluster sum of squares kept.
    max_iter : at most this many Lloyd iterations (they stop when the labels do).

    Returns
    -------
    list of ``min(k, n)`` distinct ids, one per cluster, largest cluster first (equal sizes:
    smaller id first). If a cluster ends up empty, the most typical images not yet chosen
    fill its place, at the end.
    """
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    if n_neighbours < 1:
        raise ValueError(f"n_neighbours must be >= 1, got {n_neighbours}")
    if n_init < 1:
        raise ValueError(f"n_init must be >= 1, got {n_init}")
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    ids, matrix, k = _selection(ids, features, k)
    n = ids.size
    if k == 0:
        return []
    typicality = _typicality(matrix, n_neighbours)
    labels, best_inertia = np.zeros(n, dtype=np.int64), np.inf
    for _ in range(n_init):  # restarts: one k-means++ seeding may put two seeds in one blob
        seeds = _kmeans_pp(matrix, k, rng, first=int(rng.integers(n)))
        candidate, inertia = _lloyd(matrix, matrix[seeds], max_iter)
        if inertia < best_inertia:  # strict: equal inertia keeps the earlier restart
            labels, best_inertia = candidate, inertia
    # The most typical member of every cluster: sort by cluster, typicality descending, id
    # ascending (rows are in id order), and take each cluster's first row.
    rows = np.arange(n)
    order = np.lexsort((rows, -typicality, labels))
    clusters, first = np.unique(labels[order], return_index=True)
    best = order[first]
    sizes = np.bincount(labels, minlength=k)[clusters]
    picks = best[np.lexsort((ids[best], -sizes))]  # size descending, then id ascending
    if picks.size < k:  # empty clusters: the most typical of the rest
        rest = np.setdiff1d(rows, picks)
        rest = rest[np.lexsort((rest, -typicality[rest]))]
        picks = np.concatenate([picks, rest[: k - picks.size]])
    return [int(i) for i in ids[picks]]


def kmeans_pp_select(
    ids: Iterable[int], embeddings: Vectors, k: int, rng: np.random.Generator
) -> list[int]:
    """k-means++ seeding as a batch: uncertain and diverse at once (BADGE, Ash et al. 2020).

    The first pick is the largest-norm embedding (ties by smaller id), as in BADGE; each next
    one is drawn with probability proportional to its squared distance to the nearest pick so
    far, so a batch spreads over the embedding space and repeats no near-duplicate. With
    gradient embeddings, whose norm grows with the model's uncertainty (BADGE: the gradient of
    the loss at the predicted label with respect to the last layer), far-out points are
    both uncertain and different, and this is BADGE; on any other embedding it is plain
    k-means++ diversity sampling.

    Parameters
    ----------
    ids : ``(n,)`` image ids (any order; the result depends on the set only).
    embeddings : ``{image_id: (D,) vector}``, or an ``(n, D)`` array aligned with ``ids``.
    k : how many to return.
    rng : the only source of randomness (every pick after the first).

    Returns
    -------
    list of ``min(k, n)`` distinct ids in pick order. Once only duplicates of picked
    embeddings remain, the rest are drawn uniformly from them.
    """
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    ids, matrix = _id_matrix(ids, embeddings, "embedding")
    k = min(k, ids.size)
    if k == 0:
        return []
    norms = np.einsum("ij,ij->i", matrix, matrix)
    first = int(np.argmax(norms))  # argmax returns the first maximum: the smaller id
    return [int(i) for i in ids[_kmeans_pp(matrix, k, rng, first)]]


def greedy_k_center(
    ids: Iterable[int],
    features: Vectors,
    k: int,
    labelled_features: ArrayLike | None = None,
) -> list[int]:
    """Core-set batch by greedy k-center (Sener & Savarese 2018); deterministic.

    Each pick is the image farthest (Euclidean) from everything labelled or picked so far,
    which greedily minimises the largest distance from any pool image to its nearest labelled
    one (a 2-approximation of the k-center problem).

    Parameters
    ----------
    ids : ``(n,)`` pool image ids (any order; the result depends on the set only).
    features : ``{image_id: (D,) vector}``, or an ``(n, D)`` array aligned with ``ids``.
    k : how many to return.
    labelled_features : ``(m, D)`` features of the images labelled already; ``None`` or
        ``m = 0``: none, and the first pick is the image nearest the pool's mean (the
        most central one; ties by smaller id).

    Returns
    -------
    list of ``min(k, n)`` distinct ids in pick order; distance ties go to the smaller id.
    """
    ids, matrix, k = _selection(ids, features, k)
    n = ids.size
    if k == 0:
        return []
    labelled = None
    if labelled_features is not None:
        labelled = np.asarray(labelled_features, dtype=np.float64)
        if labelled.size == 0:
            labelled = None
        elif labelled.ndim != 2 or labelled.shape[1] != matrix.shape[1]:
            raise ValueError(f"labelled_features of shape {labelled.shape}; want (m, "
                             f"{matrix.shape[1]})")
    picks: list[int] = []
    if labelled is None:
        first = int(np.argmin(_sq_dist_to(matrix, matrix.mean(axis=0))))
        picks.append(first)
        d2 = _sq_dist_to(matrix, matrix[first])
    else:
        d2 = np.full(n, np.inf)
        for start in range(0, labelled.shape[0], 1024):  # blocks: an (n, 1024) matrix at most
            block = cdist(matrix, labelled[start:start + 1024], "sqeuclidean").min(axis=1)
            d2 = np.minimum(d2, block)
    chosen = np.zeros(n, dtype=bool)
    chosen[picks] = True
    while len(picks) < k:  # a loop over the k picks; each step is vectorised over n
        # Chosen rows out of the running even when every distance left is 0 (duplicates).
        nxt = int(np.argmax(np.where(chosen, -np.inf, d2)))  # first maximum: smaller id
        picks.append(nxt)
        chosen[nxt] = True
        d2 = np.minimum(d2, _sq_dist_to(matrix, matrix[nxt]))
    return [int(i) for i in ids[picks]]
