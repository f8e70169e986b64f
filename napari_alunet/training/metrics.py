"""Segmentation metrics from one confusion matrix: Dice, IoU, pixel accuracy, and ECE.

Conventions
-----------
* The confusion matrix ``cm`` is ``(C, C)`` int64 with rows = truth and columns = prediction,
  built with a single ``bincount`` (no loop over classes or pixels).
* Per-class Dice ``2 TP / (2 TP + FP + FN)`` and IoU ``TP / (TP + FP + FN)`` are NaN for a class
  absent from both prediction and truth: nothing was there to find, so neither 0 nor 1 is honest.
  ``mean_dice`` / ``mean_iou`` average the *foreground* classes (1..C-1, background excluded)
  ignoring NaN; they are NaN when every foreground class is NaN.
* Dataset-level metrics accumulate ONE confusion matrix over the whole set (pixels of all images
  pooled) and compute Dice from it; they are not means of per-image Dice. Pooled Dice weighs
  large objects more and is defined even when a class is missing from some images.
* Expected calibration error uses 15 equal-width bins of the max-class probability; its bin
  sums accumulate over the set the same way.
"""

from __future__ import annotations

import numpy as np
import torch

from napari_alunet.config import UNKNOWN_LABEL

ArrayLike = np.ndarray | torch.Tensor


def confusion_matrix(pred: ArrayLike, target: ArrayLike, n_classes: int) -> ArrayLike:
    """``(C, C)`` int64 counts, rows = truth, columns = prediction.

    Parameters
    ----------
    pred, target : integer class indices of the same shape (any shape). Tensors stay on their
        device (``torch.bincount``, no sync); numpy arrays use ``np.bincount``.
    n_classes : C. Values outside ``[0, C)`` raise ``ValueError`` (numpy) — tensors are not
        checked, to avoid a device sync. Truth pixels that hold ``UNKNOWN_LABEL`` (unreviewed
        pixels of a partial label) are not counted.
    """
    p: ArrayLike  # a tensor or an array, depending on the branch below
    t: ArrayLike
    if isinstance(pred, torch.Tensor) or isinstance(target, torch.Tensor):
        p = torch.as_tensor(pred).reshape(-1).long()
        t = torch.as_tensor(target, device=p.device).reshape(-1).long()
        # Unknown truth goes to one extra bin that is dropped: no boolean indexing, no sync.
        cells = n_classes * n_classes
        index = torch.where(t == UNKNOWN_LABEL, cells, t * n_classes + p)
        cm = torch.bincount(index, minlength=cells + 1)[:cells]
        return cm.reshape(n_classes, n_classes)
    p = np.asarray(pred).reshape(-1).astype(np.int64)
    t = np.asarray(target).reshape(-1).astype(np.int64)
    if p.shape != t.shape:
        raise ValueError(f"prediction and truth differ in size: {p.size} vs {t.size}")
    known = t != UNKNOWN_LABEL
    if not known.all():
        p, t = p[known], t[known]
    for name, a in (("prediction", p), ("truth", t)):
        if a.size and (a.min() < 0 or a.max() >= n_classes):
            raise ValueError(f"{name} has class indices outside [0, {n_classes - 1}]")
    cm_np = np.bincount(t * n_classes + p, minlength=n_classes * n_classes)
    return cm_np.reshape(n_classes, n_classes).astype(np.int64)


def _as_numpy(cm: ArrayLike) -> np.ndarray:
    return cm.detach().cpu().numpy() if isinstance(cm, torch.Tensor) else np.asarray(cm)


def dice_per_class(cm: ArrayLike) -> np.ndarray:
    """(C,) float64 Dice per class; NaN where the class is in neither truth nor prediction."""
    m = _as_numpy(cm).astype(np.float64)
    tp = np.diag(m)
    denom = m.sum(0) + m.sum(1)  # (TP + FP) + (TP + FN)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, 2 * tp / denom, np.nan)


def iou_per_class(cm: ArrayLike) -> np.ndarray:
    """(C,) float64 IoU per class; NaN where the class is in neither truth nor prediction."""
    m = _as_numpy(cm).astype(np.float64)
    tp = np.diag(m)
    denom = m.sum(0) + m.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, tp / denom, np.nan)


def _foreground_mean(values: np.ndarray) -> float:
    fg = values[1:]
    fg = fg[~np.isnan(fg)]
    return float(fg.mean()) if fg.size else float("nan")


def mean_foreground_dice(cm: ArrayLike) -> float:
    """Mean Dice over classes 1..C-1, NaN classes excluded (NaN if none is defined)."""
    return _foreground_mean(dice_per_class(cm))


def pixel_accuracy(cm: ArrayLike) -> float:
    """Fraction of pixels whose predicted class is right (NaN for an empty matrix)."""
    m = _as_numpy(cm)
    total = m.sum()
    return float(np.trace(m) / total) if total else float("nan")


def calibration_bins(
    probs: torch.Tensor, target: torch.Tensor, n_bins: int = 15
) -> torch.Tensor:
    """Per-bin sums for ECE, accumulable over batches: ``(3, n_bins)`` float64 tensor.

    Parameters
    ----------
    probs : (B, C, H, W) probabilities.
    target : (B, H, W) class indices; ``UNKNOWN_LABEL`` pixels are not counted.

    Returns
    -------
    rows: pixel count, sum of confidence (max prob), number correct, per confidence bin
    ``[k / n_bins, (k + 1) / n_bins)`` (the last bin includes 1).
    """
    # float64 sums: a float32 count stops being exact past 2**24 pixels (256 images of 256^2).
    # MPS has no float64, so there it is float32.
    dtype = torch.float32 if probs.device.type == "mps" else torch.float64
    conf, pred = probs.float().max(dim=1)
    conf = conf.reshape(-1)
    correct = (pred == target).reshape(-1).to(dtype)
    known = (target != UNKNOWN_LABEL).reshape(-1).to(dtype)  # unreviewed pixels do not count
    conf = conf * known
    correct = correct * known
    idx = (conf * n_bins).long().clamp_(0, n_bins - 1)
    out = torch.zeros(3, n_bins, dtype=dtype, device=probs.device)
    out[0].index_add_(0, idx, known)
    out[1].index_add_(0, idx, conf.to(dtype))
    out[2].index_add_(0, idx, correct)
    return out


def ece_from_bins(bins: ArrayLike) -> float:
    """ECE ``sum_k n_k / N * |acc_k - conf_k|`` from :func:`calibration_bins` sums."""
    b = _as_numpy(bins).astype(np.float64)
    total = b[0].sum()
    if total == 0:
        return float("nan")
    return float(np.abs(b[2] - b[1]).sum() / total)  # |n acc - n conf| summed, over N


def expected_calibration_error(
    probs: torch.Tensor, target: torch.Tensor, n_bins: int = 15
) -> float:
    """ECE of (B, C, H, W) probabilities against (B, H, W) labels, ``n_bins`` equal bins."""
    return ece_from_bins(calibration_bins(probs, target, n_bins))


def summarize(cm: ArrayLike, bins: ArrayLike | None = None) -> dict[str, float]:
    """Metric dict from an accumulated confusion matrix (and optional calibration bins).

    Keys: ``mean_dice``, ``mean_iou``, ``pixel_accuracy``, ``ece`` (when ``bins`` is given),
    and ``dice_<i>``, ``iou_<i>`` for every class index ``i`` (``dice_0`` is background; it is
    reported but not in the means). Index keys rather than class names keep the dict stable
    when a project renames classes; map them with ``ClassSpec.names[i]`` for display.
    """
    dice = dice_per_class(cm)
    iou = iou_per_class(cm)
    out = {
        "mean_dice": _foreground_mean(dice),
        "mean_iou": _foreground_mean(iou),
        "pixel_accuracy": pixel_accuracy(cm),
    }
    if bins is not None:
        out["ece"] = ece_from_bins(bins)
    for i, (d, j) in enumerate(zip(dice, iou)):
        out[f"dice_{i}"] = float(d)
        out[f"iou_{i}"] = float(j)
    return out


class MetricAccumulator:
    """Accumulate one confusion matrix and ECE bins over batches, on the batches' device.

    ``update`` never synchronises with the GPU; ``compute`` reads the totals once.
    """

    def __init__(self, n_classes: int, n_bins: int = 15) -> None:
        self.n_classes = n_classes
        self.n_bins = n_bins
        self.cm: torch.Tensor | None = None
        self.bins: torch.Tensor | None = None

    def update(self, probs: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch: probs (B, C, H, W), target (B, H, W) on the same device."""
        cm = confusion_matrix(probs.argmax(dim=1), target, self.n_classes)
        bins = calibration_bins(probs, target, self.n_bins)
        assert isinstance(cm, torch.Tensor)
        self.cm = cm if self.cm is None else self.cm + cm
        self.bins = bins if self.bins is None else self.bins + bins

    def compute(self) -> dict[str, float]:
        """The :func:`summarize` dict of everything added so far."""
        if self.cm is None or self.bins is None:
            raise ValueError("no batch was added: nothing to summarise")
        return summarize(self.cm.cpu(), self.bins.cpu())
