"""Checked conversion of image and label arrays to the tensors training and inference use.

Shapes: images ``(N, C_in, S, S)`` float32, labels ``(N, S, S)`` integer class indices, where
:data:`~napari_alunet.config.UNKNOWN_LABEL` marks the unreviewed pixels of a partial label.
"""

from __future__ import annotations

from typing import Any

import torch

from napari_alunet.config import UNKNOWN_LABEL


def as_images(x: Any, name: str = "images") -> torch.Tensor:
    """(N, C_in, S, S) float32 tensor of ``x`` (array or tensor); ``ValueError`` on another rank."""
    t = torch.as_tensor(x)
    if t.dim() != 4:
        raise ValueError(f"{name} must have shape (N, C, S, S), got {tuple(t.shape)}")
    return t.float()


def as_labels(y: Any, images: torch.Tensor, name: str, n_classes: int) -> torch.Tensor:
    """(N, S, S) int64 tensor of ``y``, checked against ``images`` and the class range."""
    t = torch.as_tensor(y)
    if t.dim() != 3 or t.shape[0] != images.shape[0] or t.shape[1:] != images.shape[2:]:
        raise ValueError(
            f"{name} must have shape (N, S, S) matching the images {tuple(images.shape)}, "
            f"got {tuple(t.shape)}"
        )
    t = t.long()
    known = t != UNKNOWN_LABEL
    if t.numel() and (int(t.min()) < 0 or int(t.masked_fill(~known, 0).max()) >= n_classes):
        raise ValueError(f"{name} hold class indices outside [0, {n_classes - 1}] (and not "
                         f"{UNKNOWN_LABEL}, the unknown value of partial labels)")
    return t


def split_unknown(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(labels with unknown pixels set to class 0, (N, S, S) float 1 = known / 0 = unknown),
    or (labels, None) when every pixel is known. The 0 is a placeholder: weight 0 hides it."""
    known = labels != UNKNOWN_LABEL
    if bool(known.all()):
        return labels, None
    return labels.masked_fill(~known, 0), known.float()
