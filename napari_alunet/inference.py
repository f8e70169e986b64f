"""Inference: deterministic prediction, evaluation, MC-dropout and test-time-augmented
prediction with uncertainty, and the embeddings used for diversity and cold starts.

Every function leaves the model's train/eval modes and BatchNorm statistics as they were, runs
on the device, precision and memory format of :mod:`napari_alunet.training.device`, and takes
images as ``(B, 1, S, S)`` float32 normalised arrays or tensors. Pool scoring
(:mod:`napari_alunet.scoring`) builds on :func:`mc_probabilities`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Sequence
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from napari_alunet.events import ScoreProgress
from napari_alunet.model.mc import SeededDropout, eval_mode, mc_predict
from napari_alunet.training.device import (
    inference_context,
    model_device,
    placed,
    to_device,
)
from napari_alunet.training.metrics import MetricAccumulator
from napari_alunet.training.tensors import as_images, as_labels
from napari_alunet.uncertainty import entropy

__all__ = ["encoder_embeddings", "evaluate", "gradient_embeddings", "mc_probabilities",
           "predict_labels", "predict_probabilities", "predict_with_uncertainty",
           "rows_per_call"]

#: Pixels per forward call (images x passes x H x W) on the CPU. Two cores are fastest on a few
#: images at a time (cache-resident activations: at 128x128, 8 rows per call ran 2.4x faster per
#: image than 64). On GPUs one call takes the whole batch times all passes.
_CPU_PIXELS = 8 * 128 * 128


def rows_per_call(device: torch.device, x: torch.Tensor, gpu_rows: int) -> int:
    """Images x passes per forward call: ``gpu_rows`` off the CPU, a pixel budget on it."""
    if device.type != "cpu":
        return gpu_rows
    return max(1, _CPU_PIXELS // (x.shape[-2] * x.shape[-1]))


# -- deterministic prediction and evaluation ------------------------------------------------------


def _predict_batches(
    model: nn.Module, images: Any, batch_size: int, device: str | torch.device | None,
    precision: str = "auto",
) -> Generator[tuple[slice, torch.Tensor], None, None]:
    """Deterministic softmax (dropout off, BN on running stats) batch by batch on the device."""
    dev = model_device(model, device)
    x = as_images(images)
    with placed(model, dev), eval_mode(model):
        for start in range(0, x.shape[0], batch_size):
            sl = slice(start, start + batch_size)
            with inference_context(dev, precision):
                probs = torch.softmax(model(to_device(x[sl], dev)).float(), dim=1)
            yield sl, probs


def predict_probabilities(model: nn.Module, images: Any, *, batch_size: int = 16,
                          device: str | torch.device | None = None,
                          precision: str = "auto") -> np.ndarray:
    """(B, C, S, S) float32 softmax probabilities of (B, 1, S, S) images, dropout off.

    ``device`` None means the model's current device; otherwise the model is moved there.
    ``precision`` as in :func:`napari_alunet.training.device.autocast`.
    """
    parts = [p.cpu() for _, p in _predict_batches(model, images, batch_size, device, precision)]
    return torch.cat(parts).numpy().astype(np.float32, copy=False)


def predict_labels(model: nn.Module, images: Any, *, batch_size: int = 16,
                   device: str | torch.device | None = None,
                   precision: str = "auto") -> np.ndarray:
    """(B, S, S) uint8 argmax labels of (B, 1, S, S) images, dropout off (see above)."""
    parts = [p.argmax(1).to(torch.uint8).cpu() for _, p in _predict_batches(
        model, images, batch_size, device, precision)]
    return torch.cat(parts).numpy()


def evaluate(model: nn.Module, images: Any, labels: Any, *, n_classes: int,
             batch_size: int = 16, device: str | torch.device | None = None,
             precision: str = "auto") -> dict[str, float]:
    """Dataset-level metrics of the deterministic model (dropout off).

    One confusion matrix and one set of calibration bins are accumulated over all images (see
    :mod:`napari_alunet.training.metrics`). Keys: ``mean_dice`` (foreground classes, NaN
    classes excluded), ``mean_iou``, ``pixel_accuracy``, ``ece`` (15 bins), and ``dice_<i>``,
    ``iou_<i>`` for every class index ``i`` (index keys; map to ``ClassSpec.names[i]`` for
    display).
    """
    x = as_images(images)
    y = as_labels(labels, x, "labels", n_classes)
    acc = MetricAccumulator(n_classes)
    for sl, probs in _predict_batches(model, x, batch_size, device, precision):
        acc.update(probs, y[sl].to(probs.device))
    return acc.compute()



# -- MC dropout ----------------------------------------------------------------------------------


def mc_probabilities(
    model: nn.Module, x: torch.Tensor, ids: Sequence[int], passes: int, seed: int, *,
    det: bool, rows: int,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """MC probabilities (T, B, C, H, W) and, if asked, deterministic ones (B, C, H, W).

    Forward calls hold about ``rows`` images x passes; ``ids`` key the dropout masks.
    """
    per_call = max(1, rows // passes)
    samples = []
    with SeededDropout(model, seed) as seeded:
        for s in range(0, x.shape[0], per_call):
            seeded.begin(ids[s : s + per_call])
            chunk = max(1, rows // min(per_call, x.shape[0] - s))
            samples.append(mc_predict(model, x[s : s + per_call], passes, chunk=chunk))
    det_probs = None
    if det:
        with eval_mode(model):
            det_probs = torch.cat([torch.softmax(model(x[s : s + rows]).float(), 1)
                                   for s in range(0, x.shape[0], rows)])
    return torch.cat(samples, 1), det_probs



# -- embeddings for diversity and cold starts -----------------------------------------------------


def gradient_embeddings(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    """BADGE's gradient embeddings of a batch: (B, C * F) float32.

    For each image, the gradient of the cross-entropy with the model's own argmax as target
    with respect to the 1x1 output layer's weights, averaged over pixels:
    ``sum_pixels (p - onehot(argmax p)) outer h / pixels``, with ``h`` the (F,) features
    entering the head (Ash et al. 2020). Its norm grows with the model's uncertainty and its
    direction says what kind of image it is, so k-means++ seeding on it mixes both.
    Deterministic pass (dropout off, BatchNorm on running statistics).
    """
    captured: list[torch.Tensor] = []
    head = cast(nn.Module, model.head)  # torch types attributes as Tensor | Module
    handle = head.register_forward_hook(lambda _m, args, _out: captured.append(args[0]))
    try:
        with torch.no_grad(), eval_mode(model):
            logits = model(x).float()
    finally:
        handle.remove()
    h = captured[0].float()[..., : logits.shape[-2], : logits.shape[-1]]
    probs = torch.softmax(logits, 1)
    residual = probs - F.one_hot(probs.argmax(1), probs.shape[1]).permute(0, 3, 1, 2).float()
    pixels = logits.shape[-2] * logits.shape[-1]
    grad = torch.einsum("bchw,bfhw->bcf", residual, h) / pixels
    return grad.flatten(1).cpu().numpy().astype(np.float32)


def encoder_embeddings(
    model: nn.Module, image_ids: Sequence[int], load_batch: Callable[[list[int]], np.ndarray], *,
    batch_size: int = 16, device: str | torch.device | None = None, precision: str = "auto",
) -> Generator[ScoreProgress, None, dict[int, np.ndarray]]:
    """``{image_id: (2 F,) float32}``: mean and std over pixels of the bottleneck features.

    What the typicality cold start clusters (:func:`napari_alunet.diversity.typical_start`).
    Deterministic pass; works with an untrained network too (random convolutional features
    still separate image layouts), which is what a project without labels has.
    """
    dev = model_device(model, device)
    ids = [int(i) for i in image_ids]
    out: dict[int, np.ndarray] = {}
    captured: list[torch.Tensor] = []
    start = time.perf_counter()
    bottleneck = cast(nn.Module, model.bottleneck)  # torch types attributes as Tensor | Module
    handle = bottleneck.register_forward_hook(lambda _m, _a, y: captured.append(y))
    try:
        with placed(model, dev):
            for begin in range(0, len(ids), batch_size):
                batch_ids = ids[begin : begin + batch_size]
                x = to_device(load_batch(batch_ids), dev)
                captured.clear()
                with inference_context(dev, precision), eval_mode(model):
                    model(x)
                feats = captured[0].float().flatten(2)
                vectors = torch.cat([feats.mean(2), feats.std(2)], 1).cpu().numpy()
                out.update(zip(batch_ids, vectors.astype(np.float32)))
                done = begin + len(batch_ids)
                seconds = time.perf_counter() - start
                yield ScoreProgress(done, len(ids), seconds, done / max(seconds, 1e-9), "embed")
    finally:
        handle.remove()
    return out



# -- prediction with uncertainty -----------------------------------------------------------------


def _dihedral(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    return torch.rot90(torch.flip(x, (-1,)) if flip else x, k, (-2, -1))


def _undo_dihedral(y: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    y = torch.rot90(y, -k, (-2, -1))
    return torch.flip(y, (-1,)) if flip else y


_DIHEDRAL = [(k, flip) for flip in (False, True) for k in range(4)]


def predict_with_uncertainty(
    model: nn.Module,
    images: np.ndarray | torch.Tensor,
    *,
    method: str = "mc",
    passes: int = 20,
    device: str | torch.device | None = None,
    batch_size: int = 8,
    seed: int = 0,
    precision: str = "auto",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, an uncertainty map and the mean probabilities of a batch of images.

    Parameters
    ----------
    model : the segmentation network; its modes and BatchNorm statistics are left unchanged.
    images : (B, 1, S, S) float32 normalised images.
    method : ``"softmax"``: one deterministic pass (dropout off); ``"mc"``: mean of ``passes``
        MC-dropout passes; ``"tta"``: mean over the 8 flips/rotations by 90 degrees of a
        deterministic pass, each prediction transformed back before averaging.
    passes : MC passes (``"mc"`` only).
    device : where to run (default: the model's device).
    batch_size : images per step.
    seed : seeds the MC dropout masks, per image position in ``images``.
    precision : autocast rule (:func:`napari_alunet.training.device.autocast`).

    Returns
    -------
    labels : (B, S, S) uint8, argmax of the mean probabilities.
    uncertainty : (B, S, S) float32, entropy of the mean probabilities (nats).
    mean_probs : (B, C, S, S) float32.
    """
    if method not in ("mc", "tta", "softmax"):
        raise ValueError(f"unknown method {method!r}; choose 'mc', 'tta' or 'softmax'")
    dev = model_device(model, device)
    x_all = torch.as_tensor(images, dtype=torch.float32)
    means = []
    with placed(model, dev):
        for s in range(0, x_all.shape[0], batch_size):
            x = to_device(x_all[s : s + batch_size], dev)
            with inference_context(dev, precision):
                if method == "mc":
                    mc, _ = mc_probabilities(model, x, list(range(s, s + len(x))), passes, seed,
                                             det=False,
                                             rows=rows_per_call(dev, x, batch_size * passes))
                    mean = mc.mean(0)
                else:
                    with eval_mode(model):
                        if method == "softmax":
                            mean = torch.softmax(model(x).float(), 1)
                        else:
                            # all 8 views in one forward call; each is mapped back before averaging
                            views = torch.cat([_dihedral(x, k, f) for k, f in _DIHEDRAL])
                            probs = torch.softmax(model(views).float(), 1).chunk(len(_DIHEDRAL))
                            mean = torch.stack([_undo_dihedral(p, k, f) for p, (k, f)
                                                in zip(probs, _DIHEDRAL)]).mean(0)
                means.append(mean.float().cpu())
    mean_probs = torch.cat(means)
    labels = mean_probs.argmax(1).to(torch.uint8).numpy()
    return labels, entropy(mean_probs).numpy(), mean_probs.numpy()
