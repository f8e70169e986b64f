"""The one rule that splits a pool into test, initial labelled and unlabelled images.

Both the importer (a project's pools) and the experiment runner (a benchmark's test split and
each seed's initial set) call :func:`split_pool`, so a project and a benchmark built from the
same images and seed hold the same test images.

Images that belong together (frames of one embryo: ``groups``) are kept on one side, so the
test set measures new embryos, not new frames of embryos the model was trained on; with
``strata`` (an embryo's stage or mode) the test set takes the same fraction of every stratum,
so rare modes are in it at all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["PoolSplit", "initial_size", "split_pool"]

#: Offset mixed into the initial-set seed so that it does not draw from the test split's stream.
_INITIAL_STREAM = 11


@dataclass
class PoolSplit:
    """Image ids of each side, ascending."""

    test: list[int]
    initial: list[int]
    unlabelled: list[int]

    @property
    def train_pool(self) -> list[int]:
        """Everything that is not test: the initial set and the unlabelled pool."""
        return sorted(self.initial + self.unlabelled)


def initial_size(n_train_pool: int, fraction: float, *, minimum: int = 1) -> int:
    """Images in the initial labelled set: ``round(fraction * n)``, at least ``minimum`` when
    the fraction is positive, never more than ``n``."""
    if fraction <= 0 or n_train_pool <= 0:
        return 0
    return min(n_train_pool, max(minimum, round(fraction * n_train_pool)))


def split_pool(
    ids: Sequence[int], *, test_fraction: float, initial: float | int, seed: int,
    initial_seed: int | None = None, groups: Mapping[int, object] | None = None,
    strata: Mapping[int, object] | None = None, test_ids: Sequence[int] | None = None,
) -> PoolSplit:
    """Split ``ids`` into test, initial labelled and unlabelled images, reproducibly.

    Parameters
    ----------
    ids : the images that may go to the test set or the initial set (they have ground truth).
    test_fraction : fraction of the groups (of each stratum) held out for testing. With no
        ``groups`` every image is its own group. Each stratum with at least two groups gives at
        least one test group when the fraction is positive.
    initial : the initial labelled set: a fraction of the rest (a float < 1) or a number of
        images (an int). Drawn uniformly from the non-test images.
    seed : draws the test split.
    initial_seed : draws the initial set (default ``seed``); an experiment passes its run seed
        here and keeps ``seed`` fixed, so every run is tested on the same images.
    groups : ``{id: group}``; a group goes to one side as a whole.
    strata : ``{id: stratum}``; the test split is drawn per stratum (of the group's first id).
    test_ids : a test set given by the data (a benchmark's fresh embryos); then ``test_fraction``
        is not used.

    Returns
    -------
    PoolSplit
    """
    pool = sorted({int(i) for i in ids})
    if test_ids is not None:
        test = sorted({int(i) for i in test_ids})
    else:
        test = _draw_test(pool, test_fraction, seed, groups, strata)
    taken = set(test)
    rest = [i for i in pool if i not in taken]
    n0 = initial if isinstance(initial, (int, np.integer)) and not isinstance(initial, bool) \
        else initial_size(len(rest), float(initial))
    n0 = int(n0)
    if n0 > len(rest):
        raise ValueError(f"{len(rest)} training image(s) cannot hold an initial set of {n0}: "
                         "lower the test fraction or use more images")
    rng = np.random.default_rng([seed if initial_seed is None else initial_seed,
                                 _INITIAL_STREAM])
    chosen = sorted(int(i) for i in rng.choice(rest, size=n0, replace=False)) if n0 else []
    chosen_set = set(chosen)
    return PoolSplit(test, chosen, [i for i in rest if i not in chosen_set])


def _draw_test(pool: list[int], fraction: float, seed: int,
               groups: Mapping[int, object] | None,
               strata: Mapping[int, object] | None) -> list[int]:
    if fraction <= 0 or not pool:
        return []
    members: dict[object, list[int]] = {}
    for i in pool:
        members.setdefault(groups[i] if groups is not None else i, []).append(i)
    by_stratum: dict[object, list[object]] = {}
    for group, images in members.items():
        by_stratum.setdefault(strata[images[0]] if strata is not None else None, []).append(group)
    rng = np.random.default_rng(seed)
    test: list[int] = []
    # Strata in a fixed order (their string form) so the draw does not depend on dict order.
    for stratum in sorted(by_stratum, key=str):
        names = sorted(by_stratum[stratum], key=str)
        n = round(fraction * len(names))
        if len(names) >= 2:
            n = max(1, n)
        n = min(n, len(names) - 1) if len(by_stratum) == 1 and len(names) > 1 else n
        for index in rng.permutation(len(names))[:n]:
            test += members[names[int(index)]]
    return sorted(test)
