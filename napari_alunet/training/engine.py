"""The one training engine: ``fit`` as a generator of events.

Prediction and evaluation live in :mod:`napari_alunet.inference`, the batch order and learning
rate schedule in :mod:`.schedule`.

Rounds, the CLI, the GUI workers, experiments and benchmarks all train through :func:`fit`
(through :func:`napari_alunet.training.recipe.train_model`, which adds the validation rule and
the health check). It yields a :class:`StepEvent` after every optimiser step (so a GUI Stop is
answered within one step) and an :class:`EvalEvent` every ``eval_every`` steps, and returns a
:class:`FitResult`. The consumer stops it by closing the generator (``gen.close()``, or leaving a
``for`` loop and dropping it); the weights it would keep so far are then put into the model and
saved.

The recipe (``TrainConfig``, ``docs/TRAINING.md``): a budget in optimiser steps, warm-up + cosine
learning rate, an EMA of the weights that is evaluated and kept, best-weights selection only
when validation images are given, and a FixMatch-style consistency term on unlabelled images.

Shapes: images ``(N, 1, S, S)`` float32 (already normalised), labels ``(N, S, S)`` integer class
indices; numpy arrays or tensors. Both are moved to the device once, so the only host-device
traffic per step is a batch index.

Under a ``torch.distributed`` process group (``alunet train|round --nproc N``, torchrun) the fit
is data-parallel: the network is wrapped in ``DistributedDataParallel``, every rank draws the
same global batch of ``N * batch_size`` images and trains on its own slice of it, gradients are
averaged, so N processes step like one process with an N-times larger batch. The budget counts
global optimiser steps (the same number as one process). BatchNorm statistics are local to each
rank (SyncBatchNorm needs a GPU; on a GPU box, keep ``batch_size`` >= 4 per process); rank 0's
running statistics are broadcast before every evaluation and its kept weights at the end, so
every rank ends with the same model. Dropout and augmentation draw per rank. Only rank 0 saves.
"""

from __future__ import annotations

import math
import time
from collections.abc import Generator
from dataclasses import asdict, dataclass, field, replace
from typing import Any, cast

import torch
from torch import nn

from napari_alunet import distributed
from napari_alunet.config import UNKNOWN_LABEL, TrainConfig
from napari_alunet.events import EvalEvent, StepEvent  # noqa: F401 (re-exported)
from napari_alunet.training.augment import Augmenter
from napari_alunet.training.checkpoint import plain_data, save_fit_checkpoint
from napari_alunet.training.consistency import ConsistencyTerm
from napari_alunet.training.device import autocast, memory_format, resolve_device
from napari_alunet.training.ema import WeightEMA
from napari_alunet.training.losses import (
    border_weight_map,
    make_loss,
    median_frequency_weights,
)
from napari_alunet.training.metrics import (
    confusion_matrix,
    mean_foreground_dice,
)
from napari_alunet.training.schedule import (
    batch_partition,
    batch_stream,
    epoch_stream,
    eval_interval,
    lr_factor,
    rank_slices,
)
from napari_alunet.training.tensors import as_images, as_labels, split_unknown

#: On CUDA the running loss is read back (a device sync) only every this many steps.
SYNC_EVERY = 25

#: Seed offset between ranks for what each rank draws itself (dropout masks, augmentation).
RANK_SEED_STRIDE = 7919


@dataclass
class FitResult:
    """What :func:`fit` returns.

    ``selection`` is ``"validation"`` (best weights on the validation images, early stopping
    allowed) or ``"final"`` (no validation images: the whole budget, the final EMA weights);
    ``note`` says it in words. ``best_step`` is 0 and ``checkpoint_path`` None when it was
    cancelled before its first step (the model is then returned to the weights it came in
    with). ``passes`` counts passes over the training images; ``n_unlabelled`` the unlabelled
    images the consistency term drew from (0: off); ``metric`` what the checkpoint records as
    ``best_metric`` (validation Dice, or the training loss without validation).
    """

    best_step: int
    best_val_dice: float
    steps_run: int
    steps_planned: int
    passes: float
    stopped_early: bool
    cancelled: bool
    seconds: float
    checkpoint_path: str | None
    history: list[dict[str, Any]] = field(default_factory=list)
    selection: str = "final"
    note: str = ""
    n_train: int = 0
    n_val: int = 0
    n_unlabelled: int = 0
    metric: float = math.nan


def _clone_state(model: nn.Module) -> dict[str, torch.Tensor]:
    # Clone on the device: asynchronous on a GPU, no host copy per improvement.
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def reset_parameters(model: nn.Module, *, seed: int | None = None) -> nn.Module:
    """Re-initialise every layer (and BatchNorm running statistics) in place, for a cold start.

    ``seed`` makes the new weights reproducible without touching the global RNG state.
    """
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        for module in model.modules():
            if module is not model and hasattr(module, "reset_parameters"):
                # cast: torch types Module attributes as Tensor | Module; this one is a method.
                cast(Any, module).reset_parameters()
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
    unlabelled_images: Any = None,
    checkpoint_path: str | None = None,
    checkpoint_meta: dict[str, Any] | None = None,
    device: str | torch.device | None = None,
) -> Generator[StepEvent | EvalEvent, None, FitResult]:
    """Train ``model`` in place, yielding progress; the kept weights end up in the model.

    Parameters
    ----------
    model : a fresh (see :func:`reset_parameters`) or warm-started network.
    train_images, train_labels : (N, 1, S, S) float32 and (N, S, S) integer arrays or tensors.
    val_images, val_labels : the same for validation, or None / empty. Given, the fit keeps the
        weights with the best validation Dice and may stop early (``patience``); not given, it
        trains the whole budget and keeps the final weights (``FitResult.selection``). Which
        of the two a round gets is decided by :func:`napari_alunet.training.recipe.plan_fit`.
    config : budget, schedule, EMA, loss, augmentation, semi-supervised term, seed, device.
    n_classes : number of classes C.
    unlabelled_images : (M, 1, S, S) images without labels for the consistency term (used when
        ``config.semi_supervised``); never the test pool.
    checkpoint_path : where to save the kept weights at the end (also when cancelled).
    checkpoint_meta : ``class_names``, ``model_config`` (needed if the model has no
        ``.config``) and anything else, which goes into the checkpoint's ``extra``.
    device : overrides ``config.device``.

    Yields
    ------
    StepEvent after every optimiser step, EvalEvent every ``eval_interval`` steps.

    Returns
    -------
    FitResult (``StopIteration.value``; ``gen.close()`` discards it, the checkpoint remains).
    """
    start = time.perf_counter()

    def since() -> float:
        return time.perf_counter() - start

    dev = resolve_device(device if device is not None else config.device)
    rank, world = distributed.rank_and_size()
    if world > 1 and config.budget_in_epochs:
        raise ValueError("a training budget in epochs is not supported with several processes "
                         "(--nproc): give it in optimiser steps (--steps), which count global "
                         "steps")
    x_train = as_images(train_images, "train_images")
    y_train = as_labels(train_labels, x_train, "train_labels", n_classes)
    if x_train.shape[0] == 0:
        raise ValueError("no training images: label at least one image first")
    if checkpoint_path is not None:
        plain_data(dict(checkpoint_meta or {}), "checkpoint_meta")  # fail now, not after training
    has_val = val_images is not None and len(val_images) > 0
    if has_val:
        x_val = as_images(val_images, "val_images").to(dev)
        y_val = as_labels(val_labels, x_val, "val_labels", n_classes).to(dev)
    x_unl = None
    if config.semi_supervised and unlabelled_images is not None and len(unlabelled_images):
        x_unl = as_images(unlabelled_images, "unlabelled_images")
        if x_unl.shape[1:] != x_train.shape[1:]:
            raise ValueError(f"unlabelled_images {tuple(x_unl.shape)} do not match the training "
                             f"images {tuple(x_train.shape)}")
        x_unl = x_unl.to(dev)
    fmt = memory_format(dev)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input size: pick the fastest kernels once
    saved_threads = torch.get_num_threads()
    if config.num_threads > 0:
        torch.set_num_threads(config.num_threads)
    # Each rank draws its own dropout masks and augmentations; the batch order is global.
    rank_config = config if rank == 0 else replace(
        config, seed=config.seed + RANK_SEED_STRIDE * rank)
    torch.manual_seed(rank_config.seed)  # dropout masks, anything else from the global RNG
    shuffle_gen = torch.Generator().manual_seed(config.seed)

    loss_fn = _criterion(config, y_train, n_classes, dev)  # class weights: known pixels only
    # Partial labels: unknown pixels get loss weight 0 (a placeholder class underneath), so the
    # loss does not depend on what they hold; augmentation carries the weights along.
    y_train, pixel_w = split_unknown(y_train)
    if config.border_weight:  # computed once: the labels do not change during a fit
        border = torch.from_numpy(
            border_weight_map(y_train.numpy(), w0=config.border_w0, sigma=config.border_sigma))
        pixel_w = border if pixel_w is None else border * pixel_w
    if pixel_w is not None:
        pixel_w = pixel_w.to(dev)
    x_train, y_train = x_train.to(dev), y_train.to(dev)
    # Module.to accepts memory_format at run time, but torch's overloads do not declare it.
    model.to(dev, memory_format=fmt)  # type: ignore[call-overload]
    net = _data_parallel(model, dev) if world > 1 else model  # what the training steps call
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    augmenter = _augmenter(rank_config, dev) if config.augment else None
    n_train = x_train.shape[0]
    steps = config.planned_steps(n_train)
    every = eval_interval(config, steps, n_train)
    if config.budget_in_epochs:
        batches = epoch_stream(n_train, config.batch_size, shuffle_gen)
    else:  # with several ranks: the same global batches everywhere, one slice each
        batches = rank_slices(batch_stream(n_train, config.batch_size * world, shuffle_gen),
                              rank, config.batch_size)
    precision = config.precision
    autocast(dev, precision)  # validates the name before any work
    factor = lr_factor(config, steps)
    scheduler: Any = None
    if factor is not None:
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    elif config.scheduler == "plateau":
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=0.5, patience=max(1, config.patience // 3)
        )
    ema = WeightEMA(model, config.ema_decay) if config.ema_decay > 0 else None
    evaluated = ema.model if ema is not None else model

    # The consistency term: the EMA teacher (or the model itself without EMA, in eval mode)
    # labels a weak view of unlabelled images; the student learns them on a strong view.
    consistency = None
    if x_unl is not None:
        unl_gen = torch.Generator().manual_seed(config.seed + 1)
        unl_batches = batch_stream(x_unl.shape[0], config.unlabelled_batch_size * world, unl_gen)
        consistency = ConsistencyTerm(
            x_unl, rank_slices(unl_batches, rank, config.unlabelled_batch_size), rank_config,
            steps)

    initial_state = _clone_state(model)
    kept_state: dict[str, torch.Tensor] | None = None
    best_score, best_step, best_val_dice = -math.inf, 0, math.nan
    history: list[dict[str, Any]] = []
    stale = steps_run = 0
    cancelled = stopped_early = diverged = False
    images_seen = 0
    sums = torch.zeros(3, device=dev)  # supervised loss, unlabelled loss, confident fraction
    n_sum = n_unl_sum = 0
    shown = (math.nan, math.nan, math.nan)
    try:
        for step in range(1, steps + 1):
            net.train()
            idx = next(batches).to(dev)
            xb, yb = x_train[idx], y_train[idx]
            wb = pixel_w[idx] if pixel_w is not None else None
            if augmenter is not None:
                xb, yb, wb = augmenter(xb, yb, wb)
            with autocast(dev, precision):
                logits = net(xb.contiguous(memory_format=fmt))
            loss = loss_fn(logits, yb, wb)
            sup_loss = loss.detach()
            weight = consistency.weight(step) if consistency is not None else 0.0
            if weight > 0:
                assert consistency is not None  # weight is 0.0 without a consistency term
                unl_loss, confident = consistency(net, evaluated, fmt)
                loss = loss + weight * unl_loss
                sums[1:] += torch.stack([unl_loss.detach(), confident])
                n_unl_sum += 1
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            step_lr = float(optimizer.param_groups[0]["lr"])  # the rate this step used
            optimizer.step()
            if factor is not None:
                scheduler.step()
            if ema is not None:
                ema.update(model)
            sums[0] += sup_loss
            n_sum += 1
            images_seen += len(idx) * world
            steps_run = step
            if dev.type == "cpu" or step == 1 or step % SYNC_EVERY == 0:
                shown = _means(sums, n_sum, n_unl_sum)
            passes = images_seen / n_train
            yield StepEvent(step, steps, passes, shown[0], shown[1], shown[2], since())
            if step % every and step != steps:
                continue
            # -- evaluation ----------------------------------------------------------------
            # Every rank reads the same figures, so all take the same decisions below.
            train_loss, unl_mean, conf_mean = _means(distributed.mean_over_ranks(sums), n_sum,
                                                     n_unl_sum)
            distributed.broadcast_tensors(evaluated.buffers())  # rank 0's BatchNorm statistics
            if not math.isfinite(train_loss):
                # Checked where the losses are read back anyway (no extra device sync); the
                # weights are restored below and nothing is saved.
                raise TrainingDiverged(
                    f"training diverged at step {step} (loss {train_loss}): the model was not "
                    "saved. Lower the learning rate (--lr, Train: learning rate), then restart "
                    "the round ('alunet round --restart' or Restart round)")
            sums.zero_()
            n_sum = n_unl_sum = 0
            if has_val:
                val_loss, val_dice = _validate(
                    evaluated, x_val, y_val, loss_fn, n_classes, config.batch_size, dev,
                    precision)
                if world > 1:  # rank 0's figures decide, even where a GPU sums in another order
                    figures = torch.tensor([val_loss, val_dice], dtype=torch.float64, device=dev)
                    distributed.broadcast_tensors([figures])
                    val_loss, val_dice = figures.tolist()
                score = val_dice if not math.isnan(val_dice) else -math.inf
                improved = kept_state is None or score > best_score
            else:
                val_loss, val_dice, score, improved = math.nan, math.nan, -train_loss, True
            if improved:
                # Without validation this is only the latest state; the final one is kept.
                kept_state, best_score, best_step = _clone_state(evaluated), score, step
                best_val_dice = val_dice
                stale = 0
            else:
                stale += 1
            if config.scheduler == "plateau":
                scheduler.step(score)
            event = EvalEvent(
                step, steps, passes, train_loss, unl_mean, conf_mean, val_loss, val_dice,
                best_val_dice, best_step, improved, since(), step_lr,
            )
            history.append(asdict(event))
            yield event
            if has_val and config.patience > 0 and stale >= config.patience:
                stopped_early = step < steps
                break
        if world > 1 and kept_state is not None:
            distributed.broadcast_tensors(kept_state.values())  # one model on every rank
    except GeneratorExit:
        # The consumer stopped us (GUI Stop): fall through to restore and save, then return
        # without yielding again, which is what generator.close() requires.
        cancelled = True
    finally:
        if config.num_threads > 0:
            torch.set_num_threads(saved_threads)
        # Also on an error (e.g. out of memory): never leave half-trained weights in the model.
        # Stopped between evaluations without validation: the current (EMA) weights are kept.
        if steps_run and not has_val and best_step != steps_run:
            kept_state, best_step = _clone_state(evaluated), steps_run
        if kept_state is not None and not _finite(kept_state):
            kept_state = None  # diverged: never keep (or save) NaN/inf weights
            diverged = True
        model.load_state_dict(kept_state if kept_state is not None else initial_state)
    selection = "validation" if has_val else "final"
    saved_path = None
    metric = best_val_dice if has_val else -best_score  # the training loss
    if diverged:
        raise TrainingDiverged("training produced non-finite weights (NaN or inf): the model "
                               "was not saved. Lower the learning rate and restart the round")
    if checkpoint_path is not None and kept_state is not None:
        if distributed.is_primary():
            saved_path = save_fit_checkpoint(checkpoint_path, model, checkpoint_meta, best_step,
                                             metric, "val_dice" if has_val else "train_loss")
        else:
            saved_path = str(checkpoint_path)
        distributed.barrier()  # every rank returns once rank 0's checkpoint is in place
    if has_val:
        note = (f"best weights on {len(x_val)} validation image(s), evaluated every {every} "
                f"steps (step {best_step} of {steps_run})")
    else:
        note = (f"no validation split: all {n_train} labelled image(s) trained for the whole "
                f"budget ({steps_run} of {steps} steps); the final "
                f"{'EMA ' if ema is not None else ''}weights are kept")
    return FitResult(best_step, best_val_dice, steps_run, steps, images_seen / n_train,
                     stopped_early, cancelled, since(), saved_path, history, selection, note,
                     n_train, len(x_val) if has_val else 0,
                     0 if x_unl is None else int(x_unl.shape[0]), metric)


class TrainingDiverged(RuntimeError):
    """A fit's loss or weights became NaN or infinite; nothing was saved."""


def _augmenter(config: TrainConfig, dev: torch.device) -> Augmenter:
    """The training batches' augmentation; with ``domain_randomisation`` also the
    photometric perturbations of :mod:`.domain` and a stronger elastic deformation."""
    if not config.domain_randomisation:
        return Augmenter(seed=config.seed, device=dev)
    from napari_alunet.training.augment import AugmentSettings
    from napari_alunet.training.domain import DomainRandomiser

    return Augmenter(AugmentSettings(elastic_p=0.5, elastic_alpha=0.06), seed=config.seed,
                     device=dev, domain=DomainRandomiser(seed=config.seed, device=dev))


def _data_parallel(model: nn.Module, dev: torch.device) -> nn.Module:
    """``model`` wrapped for data-parallel training (its weights are rank 0's from here on)."""
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [torch.cuda.current_device()] if dev.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def _finite(state: dict[str, torch.Tensor]) -> bool:
    return all(bool(torch.isfinite(v).all()) for v in state.values() if v.is_floating_point())


def _means(sums: torch.Tensor, n: int, n_unl: int) -> tuple[float, float, float]:
    values = sums.tolist()  # one read-back
    sup = values[0] / n if n else math.nan
    if not n_unl:
        return sup, math.nan, math.nan
    return sup, values[1] / n_unl, values[2] / n_unl


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


@torch.no_grad()
def _validate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, loss_fn: Any,
              n_classes: int, batch_size: int, dev: torch.device, precision: str,
              ) -> tuple[float, float]:
    """(mean loss over batches, pooled mean foreground Dice), one device sync at the end."""
    model.eval()
    fmt = memory_format(dev)
    loss_sum = torch.zeros((), device=dev)
    cm = torch.zeros(n_classes, n_classes, dtype=torch.long, device=dev)
    batches = batch_partition(images.shape[0], batch_size, None)
    for idx in batches:
        with autocast(dev, precision):
            logits = model(images[idx].contiguous(memory_format=fmt))
        known = labels[idx] != UNKNOWN_LABEL  # no check for "all known": no device sync
        loss_sum += loss_fn(logits, labels[idx].masked_fill(~known, 0), known.float())
        # skips unknown; a tensor in, a tensor out
        cm += cast(torch.Tensor, confusion_matrix(logits.argmax(1), labels[idx], n_classes))
    return float(loss_sum) / len(batches), mean_foreground_dice(cm.cpu())
