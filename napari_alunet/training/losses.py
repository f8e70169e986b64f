"""Segmentation losses: class-weighted cross-entropy, Tversky, Dice, U-Net border weights.

Shapes: logits ``(B, C, H, W)`` float, target ``(B, H, W)`` int64 class indices, per-pixel
weights ``(B, H, W)`` float. Overlap losses (Tversky, Dice) are computed over the whole batch
(one TP/FP/FN count per class, summed over images and pixels) and averaged over foreground
classes: class 0 (background) is excluded because it dominates the pixel count and would make
the loss small whatever the objects look like.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from napari_alunet.config import UNKNOWN_LABEL

LOSSES = ("ce", "tversky", "dice", "ce+tversky", "ce+dice")

LossFn = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]


def median_frequency_weights(labels: np.ndarray | torch.Tensor, n_classes: int) -> np.ndarray:
    """Median-frequency class weights (Eigen & Fergus 2015) from the labelled pool.

    ``freq(c)`` is the pixel count of class ``c`` divided by the total pixel count of the images
    in which ``c`` occurs; ``weight(c) = median(freq) / freq(c)``, the median taken over the
    classes that occur. Rare classes (the ICM) get weights above 1, background below 1.

    Parameters
    ----------
    labels : (N, H, W) or (H, W) integer class indices; ``UNKNOWN_LABEL`` pixels (partial
        labels) count nowhere.
    n_classes : number of classes C.

    Returns
    -------
    (C,) float32 weights. A class absent from every image gets weight 1.0: cross-entropy never
    sees it, so its weight is irrelevant there, and 1.0 keeps the vector safe to print and save.
    """
    arr = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    if arr.ndim == 2:
        arr = arr[None]
    arr = arr.astype(np.int64, copy=False)
    known = arr != UNKNOWN_LABEL
    if arr.size and (arr.min() < 0 or arr[known].max(initial=0) >= n_classes):
        raise ValueError(f"labels must be in [0, {n_classes - 1}] (or {UNKNOWN_LABEL}, "
                         f"unknown), got {arr.min()}..{arr.max()}")
    n_images = arr.shape[0]
    # One bincount over (image, class) pairs gives every image's class histogram at once;
    # unknown pixels go to one extra bin per image that is dropped (they are no class).
    classes = np.where(known, arr, n_classes)
    offsets = (np.arange(n_images, dtype=np.int64) * (n_classes + 1))[:, None, None]
    counts = np.bincount((classes + offsets).ravel(), minlength=n_images * (n_classes + 1))
    counts = counts.reshape(n_images, n_classes + 1)[:, :n_classes]
    present = counts > 0
    # The pixels of the images a class occurs in: known pixels only (partial labels).
    image_pixels = (present * counts.sum(axis=1, keepdims=True)).sum(axis=0)
    weights = np.ones(n_classes, dtype=np.float64)
    seen = image_pixels > 0
    if seen.any():
        freq = counts.sum(axis=0)[seen] / image_pixels[seen]
        weights[seen] = np.median(freq) / freq
    return weights.astype(np.float32)


def border_weight_map(
    labels: np.ndarray, *, w0: float = 10.0, sigma: float = 5.0
) -> np.ndarray:
    """U-Net border weights ``1 + w0 * exp(-(d1 + d2)**2 / (2 sigma**2))`` (Ronneberger 2015).

    ``d1`` and ``d2`` are the distances to the nearest and the second-nearest object. Objects are
    the connected components of every foreground class (label > 0), each class labelled
    separately, so two touching regions of different classes count as two objects. The term is
    added on background pixels only: these are the thin gaps the paper wants the network to
    respect; inside an object ``d1`` is 0 and the term would only blur object interiors. Class
    balancing is done by the cross-entropy's class weights, so the map's own ``w_c`` is 1 here.

    Parameters
    ----------
    labels : (H, W) or (N, H, W) integer class indices.
    w0, sigma : the paper's 10 and 5 pixels by default.

    Returns
    -------
    float32 array of the same shape, >= 1.
    """
    arr = np.asarray(labels)
    if arr.ndim == 3:
        return np.stack([border_weight_map(a, w0=w0, sigma=sigma) for a in arr])
    if arr.ndim != 2:
        raise ValueError(f"labels must be (H, W) or (N, H, W), got shape {arr.shape}")
    components = np.zeros(arr.shape, dtype=np.int64)
    n_objects = 0
    for cls in np.unique(arr[arr > 0]):
        lab, n = ndimage.label(arr == cls)
        components[lab > 0] = lab[lab > 0] + n_objects
        n_objects += n
    weights = np.ones(arr.shape, dtype=np.float32)
    if n_objects < 2:
        return weights  # d2 is infinite: the border term is zero everywhere
    # Running two smallest distances: one EDT per object (a loop over objects, not pixels) and
    # O(H W) memory however many objects there are.
    d1 = np.full(arr.shape, np.inf)
    d2 = np.full(arr.shape, np.inf)
    for k in range(1, n_objects + 1):
        d = ndimage.distance_transform_edt(components != k)
        d2 = np.minimum(d2, np.maximum(d1, d))
        d1 = np.minimum(d1, d)
    term = w0 * np.exp(-((d1 + d2) ** 2) / (2.0 * sigma**2))
    background = arr == 0
    weights[background] += term[background].astype(np.float32)
    return weights


def weighted_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    class_weights: torch.Tensor | None = None,
    pixel_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross-entropy with class weights and optional per-pixel weights.

    ``sum_x w_c[y_x] * m_x * nll_x / sum_x w_c[y_x]``: with ``m = 1`` this equals
    ``F.cross_entropy(weight=w_c)``. The per-pixel map ``m`` is deliberately *not* in the
    denominator; a published reimplementation divides by it again, which cancels the border
    weighting. Pixels with ``m = 0`` (padding added by augmentation) are ignored.
    """
    nll = F.cross_entropy(logits.float(), target, reduction="none")
    w = (
        class_weights.to(logits.device, torch.float32)[target]
        if class_weights is not None
        else torch.ones_like(nll)
    )
    if pixel_weights is None:
        return (w * nll).sum() / w.sum().clamp_min(1e-8)
    # Normalise by the class weights of the pixels that count (m > 0, not padding), never by m.
    denom = (w * (pixel_weights > 0)).sum().clamp_min(1e-8)
    return (w * pixel_weights.to(w.dtype) * nll).sum() / denom


def tversky_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    alpha: float = 0.3,
    beta: float = 0.7,
    smooth: float = 1.0,
    pixel_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """``1 - mean_c TP / (TP + alpha FP + beta FN)`` over foreground classes (Salehi 2017).

    ``alpha`` weighs false positives and ``beta`` false negatives; ``beta > alpha`` favours
    recall of small structures. ``alpha = beta = 0.5`` is the soft Dice loss. ``smooth`` keeps
    the ratio defined for a class absent from the batch (its score then rewards predicting none
    of it). ``pixel_mask`` (B, H, W) > 0 marks pixels that count (augmentation padding does not).
    """
    n_classes = logits.shape[1]
    probs = torch.softmax(logits.float(), dim=1)
    onehot = F.one_hot(target, n_classes).permute(0, 3, 1, 2).to(probs.dtype)
    if pixel_mask is not None:
        keep = (pixel_mask > 0).to(probs.dtype).unsqueeze(1)
        probs = probs * keep
        onehot = onehot * keep
    dims = (0, 2, 3)
    tp = (probs * onehot).sum(dims)
    fp = probs.sum(dims) - tp
    fn = onehot.sum(dims) - tp
    score = (tp + smooth) / (tp + alpha * fp + beta * fn + smooth)
    return 1.0 - score[1:].mean()


def dice_loss(
    logits: torch.Tensor, target: torch.Tensor, *, pixel_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Soft Dice loss over foreground classes: Tversky with ``alpha = beta = 0.5``."""
    return tversky_loss(logits, target, alpha=0.5, beta=0.5, pixel_mask=pixel_mask)


def make_loss(
    name: str,
    *,
    class_weights: torch.Tensor | np.ndarray | None = None,
    tversky_alpha: float = 0.3,
    tversky_beta: float = 0.7,
) -> LossFn:
    """The loss named by ``TrainConfig.loss`` as ``fn(logits, target, pixel_weights=None)``.

    Combined losses (``"ce+tversky"``, ``"ce+dice"``) are the unweighted sum of both terms:
    cross-entropy gives per-pixel gradients early on, the overlap term keeps rare classes from
    being ignored. ``pixel_weights`` scale the cross-entropy (border map); in the overlap terms
    they only mask out zero-weight pixels.
    """
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
    cw = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
    use_ce = name.startswith("ce")
    overlap = name.split("+")[-1] if name != "ce" else None

    def loss(
        logits: torch.Tensor, target: torch.Tensor, pixel_weights: torch.Tensor | None = None
    ) -> torch.Tensor:
        total = logits.new_zeros((), dtype=torch.float32)
        if use_ce:
            total = total + weighted_cross_entropy(logits, target, cw, pixel_weights)
        if overlap == "tversky":
            total = total + tversky_loss(
                logits, target, alpha=tversky_alpha, beta=tversky_beta, pixel_mask=pixel_weights
            )
        elif overlap == "dice":
            total = total + dice_loss(logits, target, pixel_mask=pixel_weights)
        return total

    return loss


def consistency_loss(
    student_logits: torch.Tensor,
    teacher_probs: torch.Tensor,
    threshold: float,
    valid: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """FixMatch's unsupervised term for segmentation: confident teacher pixels as hard targets.

    Parameters
    ----------
    student_logits : (B, C, H, W) logits of the student on the strong view.
    teacher_probs : (B, C, H, W) softmax of the teacher on the weak view (no gradient).
    threshold : a pixel counts when the teacher's top probability is >= this.
    valid : (B, H, W) bool or float, False/0 where a pixel must not count (padding introduced
        by augmentation, a cut-out square); None: all pixels.

    Returns
    -------
    (loss, confident fraction): the cross-entropy summed over the counted pixels and divided by
    all B*H*W pixels (FixMatch's normalisation, so the term grows as the teacher becomes
    confident and is exactly 0 when no pixel passes), and the fraction of pixels that counted.
    """
    confidence, pseudo = teacher_probs.max(dim=1)
    mask = confidence >= threshold
    if valid is not None:
        mask = mask & (valid > 0)
    ce = F.cross_entropy(student_logits.float(), pseudo, reduction="none")
    counted = mask.float()
    loss = (ce * counted).sum() / counted.numel()
    return loss, counted.mean()
