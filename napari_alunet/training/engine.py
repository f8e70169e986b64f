"""The one training engine: ``fit`` as a generator of events, plus evaluation and prediction.

Rounds, the CLI, the GUI workers, experiments and benchmarks all train through :func:`fit`. It
yields a :class:`StepEvent` after every batch (so a GUI Stop is answered within one batch) and an
:class:`EpochEvent` after every epoch, and returns a :class:`FitResult`. The consumer stops it by
closing the generator (``gen.close()``, or leaving a ``for`` loop and dropping it); the best
weights so far are then put back into the model and saved.

Shapes: images ``(N, 1, S, S)`` float32 (already normalised), labels ``(N, S, S)`` integer class
indices; numpy arrays or tensors. Both are moved to the device once, so the only host-device
traffic per step is a batch index.
"""

from __future__ import annotations

import math
import time
from collections.abc import Generator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from napari_alunet.config import TrainConfig
from napari_alunet.training.augment import Augmenter
from napari_alunet.training.checkpoint import plain_data, save_checkpoint
from napari_alunet.training.device import autocast, memory_format, resolve_device
from napari_alunet.training.losses import (
    border_weight_map,
    make_loss,
    median_frequency_weights,
)
from napari_alunet.training.metrics import (
    MetricAccumulator,
    confusion_matrix,
    mean_foreground_dice,
)

#: On CUDA the running loss is read back (a device sync) only every this many steps.
SYNC_EVERY = 25


@dataclass
class StepEvent:
    """After one optimisation step. ``loss`` is the epoch's mean batch loss at the last read-back
    (every step on the CPU, every :data:`SYNC_EVERY` steps on a GPU); ``seconds`` since fit
    started; ``epoch`` and ``step`` count from 1."""

    epoch: int
    step: int
    steps_per_epoch: int
    loss: float
    seconds: float


@dataclass
class EpochEvent:
    """After one epoch (training and validation). ``val_loss``/``val_dice`` are NaN without
    validation data; ``seconds`` since fit started."""

    epoch: int
    epochs: int
    train_loss: float
    val_loss: float
    val_dice: float
    best_val_dice: float
    best_epoch: int
    improved: bool
    seconds: float
    learning_rate: float


@dataclass
class FitResult:
    """What :func:`fit` returns. ``monitor`` is ``"val_dice"``, or ``"train_loss"`` when there was
    no validation data (then ``best_val_dice`` is NaN and ``note`` says so). ``best_epoch`` is
    0 and ``checkpoint_path`` None when it was cancelled before finishing an epoch (the model is
    then returned to the weights it came in with)."""

    best_epoch: int
    best_val_dice: float
    epochs_run: int
    stopped_early: bool
    cancelled: bool
    seconds: float
    checkpoint_path: str | None
    history: list[dict[str, Any]] = field(default_factory=list)
    monitor: str = "val_dice"
    note: str = ""


def _images(x: Any, name: str) -> torch.Tensor:
    t = torch.as_tensor(x)
    if t.dim() != 4:
        raise ValueError(f"{name} must have shape (N, C, S, S), got {tuple(t.shape)}")
    return t.float()


def _labels(y: Any, images: torch.Tensor, name: str, n_classes: int) -> torch.Tensor:
    t = torch.as_tensor(y)
    if t.dim() != 3 or t.shape[0] != images.shape[0] or t.shape[1:] != images.shape[2:]:
        raise ValueError(
            f"{name} must have shape (N, S, S) matching the images {tuple(images.shape)}, "
            f"got {tuple(t.shape)}"
        )
    t = t.long()
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= n_classes):
        raise ValueError(f"{name} hold class indices outside [0, {n_classes - 1}]")
    return t


def _model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _clone_state(model: nn.Module) -> dict[str, torch.Tensor]:
    # Clone on the device: asynchronous on a GPU, no host copy per improvement.
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _batches(n: int, batch_size: int, gen: torch.Generator | None) -> list[torch.Tensor]:
    order = torch.randperm(n, generator=gen) if gen is not None else torch.arange(n)
    parts = list(order.split(batch_size))
    if len(parts) > 1 and len(parts[-1]) == 1:
        # A lone last image would make BatchNorm statistics of one sample; merge it instead.
        parts[-2:] = [torch.cat(parts[-2:])]
    return parts


def reset_parameters(model: nn.Module, *, seed: int | None = None) -> nn.Module:
    """Re-initialise every layer (and BatchNorm running statistics) in place, for a cold start.

    ``seed`` makes the new weights reproducible without touching the global RNG state.
    """
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        for module in model.modules():
            if module is not model and hasattr(module, "reset_parameters"):
                module.reset_parameters()
    return model


def fit(
    model: nn.Module,
    train_images: Any,
    train_labels: Any,
    val_images: Any,
    val_labels: Any,
    config: TrainConfig,
    *,
    n_classes: int,
    checkpoint_path: str | None = None,
    checkpoint_meta: dict[str, Any] | None = None,
    device: str | torch.device | None = None,
) -> Generator[StepEvent | EpochEvent, None, FitResult]:
    """Train ``model`` in place, yielding progress; the best weights end up in the model.

    Parameters
    ----------
    model : a fresh (see :func:`reset_parameters`) or warm-started network.
    train_images, train_labels : (N, 1, S, S) float32 and (N, S, S) integer arrays or tensors.
    val_images, val_labels : the same for validation, or None / empty: model selection and
        early stopping then use the training loss (reported in ``FitResult.monitor``/``note``).
    config : epochs, patience, batch size, optimiser, loss, augmentation, seed, device.
        ``config.scheduler`` picks ``"cosine"`` or ``"plateau"``;
        ``config.precision`` is passed to :func:`.device.autocast`.
    n_classes : number of classes C.
    checkpoint_path : where to save the best weights at the end (also when cancelled).
    checkpoint_meta : ``class_names``, ``model_config`` (needed if the model has no
        ``.config``) and anything else, which goes into the checkpoint's ``extra``.
    device : overrides ``config.device``.

    Yields
    ------
    StepEvent after every batch, EpochEvent after every epoch.

    Returns
    -------
    FitResult (``StopIteration.value``; ``gen.close()`` discards it, the checkpoint remains).
    """
    start = time.perf_counter()

    def since() -> float:
        return time.perf_counter() - start

    dev = resolve_device(device if device is not None else config.device)
    x_train = _images(train_images, "train_images")
    y_train = _labels(train_labels, x_train, "train_labels", n_classes)
    if x_train.shape[0] == 0:
        raise ValueError("no training images: label at least one image first")
    if checkpoint_path is not None:
        plain_data(dict(checkpoint_meta or {}), "checkpoint_meta")  # fail now, not after training
    has_val = val_images is not None and len(val_images) > 0
    if has_val:
        x_val = _images(val_images, "val_images").to(dev)
        y_val = _labels(val_labels, x_val, "val_labels", n_classes).to(dev)
    fmt = memory_format(dev)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input size: pick the fastest kernels once
    saved_threads = torch.get_num_threads()
    if config.num_threads > 0:
        torch.set_num_threads(config.num_threads)
    torch.manual_seed(config.seed)  # dropout masks and anything else drawn from the global RNG
    shuffle_gen = torch.Generator().manual_seed(config.seed)

    loss_fn = _criterion(config, y_train, n_classes, dev)
    pixel_w = None
    if config.border_weight:  # computed once: the labels do not change during a fit
        pixel_w = torch.from_numpy(
            border_weight_map(y_train.numpy(), w0=config.border_w0, sigma=config.border_sigma)
        ).to(dev)
    x_train, y_train = x_train.to(dev), y_train.to(dev)
    model.to(dev, memory_format=fmt)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    augmenter = Augmenter(seed=config.seed, device=dev) if config.augment else None
    n_train = x_train.shape[0]
    steps_per_epoch = len(_batches(n_train, config.batch_size, None))
    # Not (yet) TrainConfig fields: read with defaults so a config that gains them just works.
    scheduler_name = config.scheduler
    precision = config.precision
    autocast(dev, precision)  # validates the name before any work
    scheduler: Any = None
    if scheduler_name == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=max(1, config.epochs * steps_per_epoch)
        )
    elif scheduler_name == "plateau":
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=0.5, patience=max(1, config.patience // 3)
        )
    elif scheduler_name != "none":
        raise ValueError(f"unknown scheduler {scheduler_name!r}: use 'none', 'cosine', 'plateau'")

    initial_state = _clone_state(model)
    best_state: dict[str, torch.Tensor] | None = None
    best_score, best_epoch, best_val_dice = -math.inf, 0, math.nan
    history: list[dict[str, Any]] = []
    stale = epochs_run = 0
    cancelled = stopped_early = False
    try:
        for epoch in range(1, config.epochs + 1):
            model.train()
            loss_sum = torch.zeros((), device=dev)
            last_loss = math.nan
            batches = _batches(n_train, config.batch_size, shuffle_gen)
            for step, idx in enumerate(batches, 1):
                idx = idx.to(dev)
                xb, yb = x_train[idx], y_train[idx]
                wb = pixel_w[idx] if pixel_w is not None else None
                if augmenter is not None:
                    xb, yb, wb = augmenter(xb, yb, wb)
                with autocast(dev, precision):
                    logits = model(xb.contiguous(memory_format=fmt))
                loss = loss_fn(logits, yb, wb)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if scheduler_name == "cosine":
                    scheduler.step()
                loss_sum += loss.detach()
                if dev.type == "cpu" or step == 1 or step % SYNC_EVERY == 0:
                    last_loss = float(loss_sum) / step
                yield StepEvent(epoch, step, steps_per_epoch, last_loss, since())
            train_loss = float(loss_sum) / len(batches)
            if has_val:
                val_loss, val_dice = _validate(
                    model, x_val, y_val, loss_fn, n_classes, config.batch_size, dev, precision
                )
                score = val_dice if not math.isnan(val_dice) else -math.inf
            else:
                val_loss, val_dice = math.nan, math.nan
                score = -train_loss
            improved = best_state is None or score > best_score
            if improved:
                best_state, best_score, best_epoch = _clone_state(model), score, epoch
                best_val_dice = val_dice
                stale = 0
            else:
                stale += 1
            if scheduler_name == "plateau":
                scheduler.step(score)
            epochs_run = epoch
            event = EpochEvent(
                epoch, config.epochs, train_loss, val_loss, val_dice, best_val_dice, best_epoch,
                improved, since(), float(optimizer.param_groups[0]["lr"]),
            )
            history.append(asdict(event))
            yield event
            if config.patience > 0 and stale >= config.patience:
                stopped_early = epoch < config.epochs
                break
    except GeneratorExit:
        # The consumer stopped us (GUI Stop): fall through to restore and save, then return
        # without yielding again, which is what generator.close() requires.
        cancelled = True
    finally:
        if config.num_threads > 0:
            torch.set_num_threads(saved_threads)
        # Also on an error (e.g. out of memory): never leave half-trained weights in the model.
        model.load_state_dict(best_state if best_state is not None else initial_state)
    monitor = "val_dice" if has_val else "train_loss"
    saved_path = None
    if checkpoint_path is not None and best_state is not None:
        metric = best_val_dice if has_val else -best_score  # the training loss
        saved_path = _save(checkpoint_path, model, checkpoint_meta, best_epoch, metric, monitor)
    note = "" if has_val else (
        "no validation images: the best epoch and early stopping used the training loss"
    )
    return FitResult(best_epoch, best_val_dice, epochs_run, stopped_early, cancelled, since(),
                     saved_path, history, monitor, note)


def _criterion(config: TrainConfig, labels: torch.Tensor, n_classes: int, dev: torch.device) -> Any:
    """The configured loss, class weights taken from the labelled (training) pool."""
    weights = None
    if config.class_weighting == "median_frequency":
        weights = torch.from_numpy(median_frequency_weights(labels.cpu().numpy(), n_classes))
    elif config.class_weighting != "none":
        raise ValueError(
            f"class_weighting must be 'median_frequency' or 'none', not {config.class_weighting!r}"
        )
    return make_loss(
        config.loss, class_weights=None if weights is None else weights.to(dev),
        tversky_alpha=config.tversky_alpha, tversky_beta=config.tversky_beta,
    )


def _save(
    path: str, model: nn.Module, meta: dict[str, Any] | None, epoch: int, metric: float,
    monitor: str,
) -> str:
    extra = dict(meta or {})
    model_config = extra.pop("model_config", getattr(model, "config", None))
    if model_config is None:
        raise ValueError("checkpoint_meta needs 'model_config' for a model without .config")
    class_names = extra.pop("class_names", None)
    extra.setdefault("monitor", monitor)
    return str(save_checkpoint(
        path, model, model_config=model_config, epoch=epoch, best_metric=metric,
        class_names=class_names, extra=extra,
    ))


@torch.no_grad()
def _validate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, loss_fn: Any,
              n_classes: int, batch_size: int, dev: torch.device, precision: str,
              ) -> tuple[float, float]:
    """(mean loss over batches, pooled mean foreground Dice), one device sync at the end."""
    model.eval()
    fmt = memory_format(dev)
    loss_sum = torch.zeros((), device=dev)
    cm = torch.zeros(n_classes, n_classes, dtype=torch.long, device=dev)
    batches = _batches(images.shape[0], batch_size, None)
    for idx in batches:
        with autocast(dev, precision):
            logits = model(images[idx].contiguous(memory_format=fmt))
        loss_sum += loss_fn(logits, labels[idx], None)
        cm += confusion_matrix(logits.argmax(1), labels[idx], n_classes)
    return float(loss_sum) / len(batches), mean_foreground_dice(cm.cpu())


def _predict_batches(
    model: nn.Module, images: Any, batch_size: int, device: str | torch.device | None
) -> Generator[tuple[slice, torch.Tensor], None, None]:
    """Deterministic softmax (dropout off, BN on running stats) batch by batch on the device."""
    dev = _model_device(model) if device is None else resolve_device(device)
    x = _images(images, "images")
    fmt = memory_format(dev)
    model.to(dev)
    saved = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, x.shape[0], batch_size):
                sl = slice(start, start + batch_size)
                xb = x[sl].to(dev).contiguous(memory_format=fmt)
                with autocast(dev):
                    logits = model(xb)
                yield sl, torch.softmax(logits.float(), dim=1)
    finally:
        for m, mode in saved.items():
            m.training = mode


def predict_probabilities(model: nn.Module, images: Any, *, batch_size: int = 16,
                          device: str | torch.device | None = None) -> np.ndarray:
    """(B, C, S, S) float32 softmax probabilities of (B, 1, S, S) images, dropout off.

    ``device`` None means the model's current device; otherwise the model is moved there.
    """
    parts = [p.cpu() for _, p in _predict_batches(model, images, batch_size, device)]
    return torch.cat(parts).numpy().astype(np.float32, copy=False)


def predict_labels(model: nn.Module, images: Any, *, batch_size: int = 16,
                   device: str | torch.device | None = None) -> np.ndarray:
    """(B, S, S) uint8 argmax labels of (B, 1, S, S) images, dropout off (see above)."""
    parts = [p.argmax(1).to(torch.uint8).cpu() for _, p in _predict_batches(
        model, images, batch_size, device)]
    return torch.cat(parts).numpy()


def evaluate(model: nn.Module, images: Any, labels: Any, *, n_classes: int,
             batch_size: int = 16, device: str | torch.device | None = None) -> dict[str, float]:
    """Dataset-level metrics of the deterministic model (dropout off).

    One confusion matrix and one set of calibration bins are accumulated over all images (see
    :mod:`napari_alunet.training.metrics`). Keys: ``mean_dice`` (foreground classes, NaN
    classes excluded), ``mean_iou``, ``pixel_accuracy``, ``ece`` (15 bins), and ``dice_<i>``,
    ``iou_<i>`` for every class index ``i`` (index keys; map to ``ClassSpec.names[i]`` for
    display).
    """
    x = _images(images, "images")
    y = _labels(labels, x, "labels", n_classes)
    acc = MetricAccumulator(n_classes)
    for sl, probs in _predict_batches(model, x, batch_size, device):
        acc.update(probs, y[sl].to(probs.device))
    return acc.compute()


def lr_range_test(model: nn.Module, images: Any, labels: Any, config: TrainConfig, *,
                  n_classes: int, start: float = 1e-6, end: float = 1.0, steps: int = 50,
                  device: str | torch.device | None = None,
                  ) -> tuple[list[float], list[float], float]:
    """Learning-rate range test (Smith 2017): raise the LR exponentially, one batch per step.

    The model's weights, BatchNorm statistics and modes are restored afterwards. The test stops
    early when the smoothed loss exceeds 4x its minimum (diverged).

    Returns
    -------
    lrs, losses (smoothed, debiased) and the suggested LR: where the smoothed loss falls fastest
    against log-LR before its minimum, at most a tenth of the LR at the minimum.
    """
    dev = resolve_device(device if device is not None else config.device)
    x = _images(images, "images")
    y = _labels(labels, x, "labels", n_classes)
    loss_fn = _criterion(config, y, n_classes, dev)
    x, y = x.to(dev), y.to(dev)
    model.to(dev, memory_format=memory_format(dev))
    saved_state = _clone_state(model)
    saved_modes = {m: m.training for m in model.modules()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=start, weight_decay=config.weight_decay)
    gen = torch.Generator().manual_seed(config.seed)
    schedule = np.geomspace(start, end, steps)  # exact end points, unlike start * f**i
    lrs: list[float] = []
    losses: list[float] = []
    # Smoothing over ~steps/5 points: fastai's 0.98 assumes ~100 steps and lags badly at 20.
    beta = min(0.98, max(0.5, 1.0 - 5.0 / steps))
    avg, best = 0.0, math.inf
    batches: list[torch.Tensor] = []
    try:
        model.train()
        for i in range(steps):
            if not batches:
                batches = _batches(x.shape[0], config.batch_size, gen)
            idx = batches.pop().to(dev)
            lr = float(schedule[i])
            for group in optimizer.param_groups:
                group["lr"] = lr
            with autocast(dev, getattr(config, "precision", "auto")):
                logits = model(x[idx].contiguous(memory_format=memory_format(dev)))
            loss = loss_fn(logits, y[idx], None)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            avg = beta * avg + (1 - beta) * float(loss.detach())  # a sync per step: it is short
            smoothed = avg / (1 - beta ** (i + 1))
            if not math.isfinite(smoothed) or (i > 0 and smoothed > 4 * best):
                break
            best = min(best, smoothed)
            lrs.append(lr)
            losses.append(smoothed)
    finally:
        model.load_state_dict(saved_state)
        for m, mode in saved_modes.items():
            m.training = mode
    if len(lrs) < 3:
        return lrs, losses, lrs[0] if lrs else start
    # Steepest descent before the minimum, capped at a tenth of the minimum's LR (the usual
    # "min / 10" rule), so a curve still falling at ``end`` does not suggest ``end`` itself.
    last = int(np.argmin(losses))
    slope = np.gradient(np.asarray(losses), np.log(np.asarray(lrs)))
    steepest = lrs[int(np.argmin(slope[: last + 1]))]
    return lrs, losses, float(min(steepest, lrs[last] / 10))
