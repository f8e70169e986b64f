"""Pixel-wise uncertainty maps from Monte-Carlo dropout samples, and their per-image scores.

Every function is pure and vectorised over images and pixels. Inputs may be torch tensors (kept
on their device, so maps are reduced where they were computed) or numpy arrays (wrapped with
``torch.as_tensor``); outputs are torch tensors of the input's floating dtype.

Shapes: ``mc_probs`` is ``(T, B, C, H, W)`` (softmax of ``T`` dropout passes), ``det_probs`` is
``(B, C, H, W)`` (one pass with dropout off), a map is ``(B, H, W)``, a per-class map
``(B, C, H, W)``. Natural logarithms throughout (the entropy of ``C`` classes is at most
``log C``).

Zeros: ``0 log 0`` is taken as 0 (``torch.special.xlogy``), so one-hot probabilities give finite
maps and no epsilon shifts the values. The one infinite case is KL(det || MC mean) at a pixel
where the deterministic pass gives a class probability > 0 and every MC pass gives exactly 0:
the divergence is then +inf mathematically, and +inf is what is returned (never NaN). With a
float32 softmax this needs logits more than ~100 apart, since only then does ``exp`` underflow.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torch.special import xlogy

from napari_alunet.config import MAP_NAMES

__all__ = [
    "MAP_NAMES",
    "REDUCTIONS",
    "as_tensor",
    "bald_map",
    "compute_maps",
    "entropy",
    "entropy_map",
    "image_scores",
    "js_map",
    "kl_map",
    "margin_map",
    "per_class_bald",
    "per_class_entropy",
    "per_class_js",
    "per_class_kl",
    "variation_ratio_map",
]

# MAP_NAMES (config.py, the one list) are the names accepted by :func:`compute_maps`; ``kl``
# and ``js`` also need the deterministic pass.
#: Reductions accepted by :func:`image_scores`.
REDUCTIONS: tuple[str, ...] = ("mean", "foreground", "class_weighted")
_NEED_DET = frozenset({"kl", "js"})

TensorLike = torch.Tensor | np.ndarray


def as_tensor(x: TensorLike) -> torch.Tensor:
    """A floating tensor of ``x`` (numpy arrays are wrapped without a copy where possible)."""
    t = torch.as_tensor(x)
    return t if t.is_floating_point() else t.float()


def _mc(mc_probs: TensorLike) -> torch.Tensor:
    t = as_tensor(mc_probs)
    if t.dim() != 5:
        raise ValueError(f"mc_probs must have shape (T, B, C, H, W), got {tuple(t.shape)}")
    return t


def _det(det_probs: TensorLike | None, mean: torch.Tensor) -> torch.Tensor:
    if det_probs is None:
        raise ValueError("kl and js compare the MC mean with a deterministic pass: give det_probs")
    d = as_tensor(det_probs).to(mean.device, mean.dtype)
    if d.shape != mean.shape:
        raise ValueError(
            f"det_probs must have shape (B, C, H, W) = {tuple(mean.shape)}, got {tuple(d.shape)}"
        )
    return d


def entropy(probs: TensorLike, dim: int = 1) -> torch.Tensor:
    """Shannon entropy ``-sum p log p`` along ``dim``, with 0 log 0 = 0.

    Parameters
    ----------
    probs : probabilities, e.g. (B, C, H, W) with ``dim=1``.

    Returns
    -------
    ``probs`` with ``dim`` reduced, e.g. (B, H, W).
    """
    p = as_tensor(probs)
    return -xlogy(p, p).sum(dim)


# -- per-class terms: the sum over C of each is the corresponding map ----------------------------
# They take the MC mean's entropy terms ``-m log m`` as an argument so compute_maps reuses them.


def _bald_terms(mc: torch.Tensor, mean_terms: torch.Tensor) -> torch.Tensor:
    # E_t[p log p] - m log m >= 0 class by class (Jensen: x log x is convex), so a negative value
    # is float rounding; clamping each term keeps their sum, the map, >= 0 too.
    return (xlogy(mc, mc).mean(0) + mean_terms).clamp_min_(0.0)


def _kl_terms(det: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    return xlogy(det, det) - xlogy(det, mean)


def _js_terms(det: torch.Tensor, mean: torch.Tensor, mean_terms: torch.Tensor) -> torch.Tensor:
    # JS = sum_c (f(d) + f(m)) / 2 - f((d + m) / 2) with f(x) = x log x; each term >= 0 by
    # convexity, so negatives are rounding. The mean's f(m) is -mean_terms, already computed.
    avg = 0.5 * (det + mean)
    return (0.5 * (xlogy(det, det) - mean_terms) - xlogy(avg, avg)).clamp_min_(0.0)


def per_class_entropy(mc_probs: TensorLike) -> torch.Tensor:
    """Each class's term ``-m_c log m_c`` of the entropy of the MC mean ``m``.

    Parameters
    ----------
    mc_probs : (T, B, C, H, W) softmax samples.

    Returns
    -------
    (B, C, H, W), >= 0; the sum over C is :func:`entropy_map`.
    """
    mean = _mc(mc_probs).mean(0)
    return -xlogy(mean, mean)


def per_class_bald(mc_probs: TensorLike) -> torch.Tensor:
    """Each class's contribution ``E_t[p_c log p_c] - m_c log m_c`` to BALD.

    Parameters
    ----------
    mc_probs : (T, B, C, H, W) softmax samples.

    Returns
    -------
    (B, C, H, W), each term >= 0; the sum over C is :func:`bald_map`.
    """
    mc = _mc(mc_probs)
    mean = mc.mean(0)
    return _bald_terms(mc, -xlogy(mean, mean))


def per_class_kl(mc_probs: TensorLike, det_probs: TensorLike) -> torch.Tensor:
    """Each class's term ``d_c (log d_c - log m_c)`` of KL(det || MC mean).

    Parameters
    ----------
    mc_probs : (T, B, C, H, W) softmax samples.
    det_probs : (B, C, H, W) probabilities of the pass with dropout off.

    Returns
    -------
    (B, C, H, W); single terms can be negative, their sum over C (:func:`kl_map`) cannot.
    """
    mean = _mc(mc_probs).mean(0)
    return _kl_terms(_det(det_probs, mean), mean)


def per_class_js(mc_probs: TensorLike, det_probs: TensorLike) -> torch.Tensor:
    """Each class's term of the Jensen-Shannon divergence between det and the MC mean.

    Parameters
    ----------
    mc_probs : (T, B, C, H, W) softmax samples.
    det_probs : (B, C, H, W) probabilities of the pass with dropout off.

    Returns
    -------
    (B, C, H, W), each term >= 0; the sum over C is :func:`js_map`.
    """
    mean = _mc(mc_probs).mean(0)
    return _js_terms(_det(det_probs, mean), mean, -xlogy(mean, mean))


# -- maps (B, H, W) ----------------------------------------------------------------------------


def entropy_map(mc_probs: TensorLike) -> torch.Tensor:
    """Predictive entropy (of the MC mean): (T, B, C, H, W) -> (B, H, W), in [0, log C]."""
    return per_class_entropy(mc_probs).sum(1)


def bald_map(mc_probs: TensorLike) -> torch.Tensor:
    """BALD: entropy of the mean minus the mean entropy of the passes (mutual information).

    High where the passes are confident but disagree (model uncertainty); 0 where they agree,
    however uncertain each of them is. (T, B, C, H, W) -> (B, H, W), in [0, log C].
    """
    return per_class_bald(mc_probs).sum(1)


def kl_map(mc_probs: TensorLike, det_probs: TensorLike) -> torch.Tensor:
    """KL(det || MC mean) per pixel: (T, B, C, H, W), (B, C, H, W) -> (B, H, W), >= 0.

    +inf where ``det > 0`` and the mean is exactly 0 for some class (see the module notes).
    """
    return per_class_kl(mc_probs, det_probs).sum(1).clamp_min_(0.0)


def js_map(mc_probs: TensorLike, det_probs: TensorLike) -> torch.Tensor:
    """Jensen-Shannon divergence between det and the MC mean: -> (B, H, W), in [0, log 2]."""
    return per_class_js(mc_probs, det_probs).sum(1)


def margin_map(mc_probs: TensorLike) -> torch.Tensor:
    """``1 - (top - second)`` of the MC mean's class probabilities: -> (B, H, W), in [0, 1]."""
    mean = _mc(mc_probs).mean(0)
    return _margin(mean)


def _margin(mean: torch.Tensor) -> torch.Tensor:
    if mean.shape[1] < 2:
        raise ValueError("the margin needs at least two classes")
    top2 = torch.topk(mean, 2, dim=1).values
    return 1.0 - (top2[:, 0] - top2[:, 1])


def variation_ratio_map(mc_probs: TensorLike) -> torch.Tensor:
    """``1 - (passes voting for the modal class) / T``: -> (B, H, W), in [0, 1 - 1/C].

    Each pass votes for its argmax class (ties go to the lowest index, as ``argmax`` does).
    """
    mc = _mc(mc_probs)
    n_passes, n_classes = mc.shape[0], mc.shape[2]
    votes = mc.argmax(2)  # (T, B, H, W)
    classes = torch.arange(n_classes, device=mc.device).view(1, 1, n_classes, 1, 1)
    # A (T, B, C, H, W) bool tensor: 1 byte per element, reduced over T at once.
    counts = (votes.unsqueeze(2) == classes).sum(0)  # (B, C, H, W)
    return 1.0 - counts.amax(1).to(mc.dtype) / n_passes


def compute_maps(
    mc_probs: TensorLike,
    det_probs: TensorLike | None = None,
    names: Iterable[str] | None = None,
) -> dict[str, torch.Tensor]:
    """Several maps at once, sharing the MC mean and its entropy terms.

    Parameters
    ----------
    mc_probs : (T, B, C, H, W) softmax samples.
    det_probs : (B, C, H, W) probabilities with dropout off; needed for ``kl`` and ``js``.
    names : which of :data:`MAP_NAMES` to compute; default all of them that ``det_probs``
        allows (``kl`` and ``js`` only when it is given).

    Returns
    -------
    ``{name: (B, H, W) tensor}`` in the order asked.
    """
    mc = _mc(mc_probs)
    if names is None:
        wanted = [n for n in MAP_NAMES if det_probs is not None or n not in _NEED_DET]
    else:
        wanted = list(dict.fromkeys(names))
        unknown = [n for n in wanted if n not in MAP_NAMES]
        if unknown:
            raise ValueError(f"unknown map(s) {unknown}; choose from {', '.join(MAP_NAMES)}")
    mean = mc.mean(0)
    mean_terms = -xlogy(mean, mean)
    det = _det(det_probs, mean) if _NEED_DET.intersection(wanted) else None
    out: dict[str, torch.Tensor] = {}
    for name in wanted:
        if name == "entropy":
            out[name] = mean_terms.sum(1)
        elif name == "bald":
            out[name] = _bald_terms(mc, mean_terms).sum(1)
        elif name == "kl":
            assert det is not None
            out[name] = _kl_terms(det, mean).sum(1).clamp_min_(0.0)
        elif name == "js":
            assert det is not None
            out[name] = _js_terms(det, mean, mean_terms).sum(1)
        elif name == "margin":
            out[name] = _margin(mean)
        else:
            out[name] = variation_ratio_map(mc)
    return out


def image_scores(
    maps: TensorLike,
    reduction: str = "mean",
    probs: TensorLike | None = None,
    class_weights: TensorLike | None = None,
) -> torch.Tensor:
    """One score per image from a map: a mean over pixels, never a sum.

    A sum would rank large images above small ones for the same per-pixel uncertainty.

    Parameters
    ----------
    maps : (B, H, W) uncertainty map.
    reduction : ``"mean"`` over all pixels; ``"foreground"``: mean over pixels whose predicted
        class is not 0 (all pixels for an image with no foreground predicted);
        ``"class_weighted"``: each pixel weighted by ``class_weights[predicted class]``, divided
        by the total weight. Without ``class_weights`` each predicted class present counts
        equally (the mean of the per-class means), so a small ICM counts as much as background.
    probs : (B, C, H, W) probabilities (the MC mean) giving the predicted class; needed by
        ``"foreground"`` and ``"class_weighted"``.
    class_weights : (C,) non-negative weights for ``"class_weighted"``.

    Returns
    -------
    (B,) tensor on the device of ``maps``.
    """
    m = as_tensor(maps)
    if m.dim() != 3:
        raise ValueError(f"maps must have shape (B, H, W), got {tuple(m.shape)}")
    if reduction == "mean":
        return m.mean((1, 2))
    if reduction not in REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}; choose from {', '.join(REDUCTIONS)}")
    if probs is None:
        raise ValueError(f"reduction {reduction!r} needs probs (B, C, H, W) for the classes")
    p = as_tensor(probs).to(m.device)
    if p.dim() != 4 or p.shape[0] != m.shape[0] or p.shape[2:] != m.shape[1:]:
        raise ValueError(f"probs must have shape (B, C, H, W) matching maps, got {tuple(p.shape)}")
    pred = p.argmax(1).flatten(1)  # (B, HW)
    flat = m.flatten(1)
    if reduction == "foreground":
        fg = pred != 0
        count = fg.sum(1)
        # where() rather than a product with the mask: inf * 0 would give NaN.
        total = torch.where(fg, flat, 0.0).sum(1)
        return torch.where(count > 0, total / count.clamp_min(1), flat.mean(1))
    n_classes = p.shape[1]
    sums = flat.new_zeros(m.shape[0], n_classes).scatter_add_(1, pred, flat)
    counts = flat.new_zeros(m.shape[0], n_classes).scatter_add_(1, pred, torch.ones_like(flat))
    if class_weights is None:
        present = counts > 0
        per_class = torch.where(present, sums / counts.clamp_min(1), 0.0)
        return per_class.sum(1) / present.sum(1)
    w = as_tensor(class_weights).to(m.device, m.dtype)
    if w.shape != (n_classes,) or bool((w < 0).any()):
        raise ValueError(f"class_weights must be {n_classes} non-negative numbers, got {w}")
    numerator = torch.where(w > 0, w * sums, 0.0).sum(1)
    weight = (w * counts).sum(1)
    return torch.where(weight > 0, numerator / weight.clamp_min(1e-30), flat.mean(1))
