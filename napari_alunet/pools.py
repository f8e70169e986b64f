"""The pools an active-learning step works on (:mod:`napari_alunet.active`).

:class:`ActivePool` is what a step needs: the ids of the labelled, unlabelled and test images,
and their images, labels and ground truth at the model's input size. :class:`ProjectPool`
reads a project on disk (a round, the GUI, the CLI); :class:`MemoryPool` holds arrays in memory
(the experiment runner's oracle replay).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from napari_alunet.config import UNKNOWN_LABEL
from napari_alunet.data.geometry import Letterbox

__all__ = ["ActivePool", "MemoryPool", "ProjectPool"]


class ActivePool(Protocol):
    """What a step needs from a pool. Ids are the pool's own (project ids, array rows)."""

    class_names: tuple[str, ...]
    input_size: int

    def labelled_ids(self) -> list[int]: ...

    def unlabelled_ids(self) -> list[int]: ...

    def test_ids(self) -> list[int]: ...

    def load_images(self, ids: Sequence[int]) -> np.ndarray:
        """(n, 1, S, S) float32 model inputs."""
        ...

    def load_labels(self, ids: Sequence[int]) -> np.ndarray:
        """(n, S, S) uint8 labels to train on (committed or, for the oracle, ground truth)."""
        ...

    def load_truth(self, ids: Sequence[int]) -> np.ndarray:
        """(n, S, S) uint8 ground truth (test images; the oracle's pool); ValueError if none."""
        ...

    def letterbox(self, image_id: int) -> Letterbox: ...

    def groups(self, ids: Sequence[int]) -> list[str] | None:
        """The group (embryo mode) of each id, or None when the pool has no groups."""
        ...

    def embryos(self, ids: Sequence[int]) -> list[int] | None:
        """The embryo each id is a frame of, or None when the pool does not know."""
        ...

    def partial_ids(self) -> list[int]:
        """Labelled ids whose label still has unreviewed pixels (region-level review)."""
        ...

    def known(self, ids: Sequence[int]) -> np.ndarray:
        """(n, S, S) bool: reviewed pixels on the canvas (letter-box padding counts as
        reviewed background; an unlabelled image has none)."""
        ...


# -- pools -----------------------------------------------------------------------------------------
class ProjectPool:
    """A project's pools ('labelled', 'unlabelled', 'test') seen through :class:`ActivePool`."""

    def __init__(self, project: Any, input_size: int) -> None:
        self.project = project
        self.input_size = int(input_size)
        self.class_names = tuple(project.classes.names)

    def labelled_ids(self) -> list[int]:
        return [r.id for r in self.project.images("labelled")]

    def unlabelled_ids(self) -> list[int]:
        return [r.id for r in self.project.images("unlabelled")]

    def test_ids(self) -> list[int]:
        return [r.id for r in self.project.images("test") if r.has_ground_truth]

    def load_images(self, ids: Sequence[int]) -> np.ndarray:
        from napari_alunet.data.dataset import load_images

        return load_images(self.project, ids, self.input_size)

    def load_labels(self, ids: Sequence[int]) -> np.ndarray:
        from napari_alunet.data.dataset import load_labels

        return load_labels(self.project, ids, self.input_size)

    def load_truth(self, ids: Sequence[int]) -> np.ndarray:
        from napari_alunet.data.dataset import load_labels

        return load_labels(self.project, ids, self.input_size, ground_truth=True)

    def letterbox(self, image_id: int) -> Letterbox:
        record = self.project.image(image_id)
        return Letterbox.fit(record.height, record.width, self.input_size)

    def truth(self, image_id: int) -> np.ndarray | None:
        """(h, w) uint8 ground truth at the original size, or None."""
        return self.project.read_ground_truth(image_id)

    def groups(self, ids: Sequence[int]) -> list[str] | None:
        return None

    def embryos(self, ids: Sequence[int]) -> list[int] | None:
        return None

    def partial_ids(self) -> list[int]:
        return self.project.partial_ids()

    def known(self, ids: Sequence[int]) -> np.ndarray:
        out = np.zeros((len(ids), self.input_size, self.input_size), dtype=bool)
        for row, image_id in enumerate(ids):
            if self.project.current_label(image_id) is not None:
                out[row] = self.load_labels([image_id])[0] != UNKNOWN_LABEL
        return out


@dataclass
class MemoryPool:
    """A benchmark pool in memory with a labelled set that the oracle grows.

    Attributes
    ----------
    images : (N, 1, S, S) float32 model inputs; an image's id is its row.
    labels : (N, S, S) uint8 ground truth on the canvas.
    truths : N arrays (h_i, w_i) uint8, ground truth at the original size.
    boxes : N :class:`Letterbox` transforms.
    train_pool : ids that may be labelled (never the test ids).
    test : the test ids.
    labelled : the labelled ids (a subset of ``train_pool``).
    class_names : class names in index order.
    modes : N group names (an embryo's mode), or None.
    embryo_ids : N embryo ids (frames of one embryo share one), or None.
    known_masks : ``{id: (S, S) bool}`` the reviewed pixels of partially labelled ids (region
        arms); a labelled id without an entry is fully labelled.
    """

    images: np.ndarray
    labels: np.ndarray
    truths: list[np.ndarray]
    boxes: list[Letterbox]
    train_pool: list[int]
    test: list[int]
    labelled: list[int] = field(default_factory=list)
    class_names: tuple[str, ...] = ()
    modes: list[str] | None = None
    embryo_ids: list[int] | None = None
    known_masks: dict[int, np.ndarray] | None = None

    @property
    def input_size(self) -> int:
        return int(self.images.shape[-1])

    def labelled_ids(self) -> list[int]:
        return sorted(self.labelled)

    def unlabelled_ids(self) -> list[int]:
        taken = set(self.labelled)
        return [i for i in self.train_pool if i not in taken]

    def test_ids(self) -> list[int]:
        return list(self.test)

    def load_images(self, ids: Sequence[int]) -> np.ndarray:
        return self.images[np.asarray(ids, dtype=np.intp)]

    def load_labels(self, ids: Sequence[int]) -> np.ndarray:
        labels = self.labels[np.asarray(ids, dtype=np.intp)]  # a copy (fancy indexing)
        for row, image_id in enumerate(ids):
            mask = (self.known_masks or {}).get(int(image_id))
            if mask is not None:
                labels[row][~mask] = UNKNOWN_LABEL
        return labels

    def load_truth(self, ids: Sequence[int]) -> np.ndarray:
        return self.labels[np.asarray(ids, dtype=np.intp)]

    def partial_ids(self) -> list[int]:
        masks = self.known_masks or {}
        return sorted(i for i in self.labelled if i in masks and not masks[i].all())

    def known(self, ids: Sequence[int]) -> np.ndarray:
        masks, taken = self.known_masks or {}, set(self.labelled)
        size = self.input_size
        out = np.zeros((len(ids), size, size), dtype=bool)
        for row, image_id in enumerate(ids):
            image_id = int(image_id)
            if image_id in masks:
                out[row] = masks[image_id]
            elif image_id in taken:
                out[row] = True
        return out

    def letterbox(self, image_id: int) -> Letterbox:
        return self.boxes[int(image_id)]

    def truth(self, image_id: int) -> np.ndarray | None:
        return self.truths[int(image_id)]

    def groups(self, ids: Sequence[int]) -> list[str] | None:
        return None if self.modes is None else [self.modes[int(i)] for i in ids]

    def embryos(self, ids: Sequence[int]) -> list[int] | None:
        return None if self.embryo_ids is None else [self.embryo_ids[int(i)] for i in ids]

    def with_labelled(self, labelled: Sequence[int],
                      known_masks: dict[int, np.ndarray] | None = None) -> MemoryPool:
        """The same pool with another labelled set (arrays shared, not copied); ``known_masks``
        for partially labelled ids."""
        return dataclasses.replace(self, labelled=sorted(int(i) for i in labelled),
                                   known_masks=known_masks)


# -- the steps -------------------------------------------------------------------------------------
