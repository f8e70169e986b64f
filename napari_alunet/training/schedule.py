"""The training schedule: the order of batches and the learning rate over a step budget."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch

from napari_alunet.config import TrainConfig, steps_per_pass

#: Evaluations per fit when ``TrainConfig.eval_every`` is 0 (automatic).
EVALUATIONS_PER_FIT = 20


def batch_partition(n: int, batch_size: int, gen: torch.Generator | None) -> list[torch.Tensor]:
    """One pass: a partition of ``range(n)`` into batches (a lone last image joins the one
    before, so BatchNorm never sees a batch of one)."""
    order = torch.randperm(n, generator=gen) if gen is not None else torch.arange(n)
    parts = list(order.split(batch_size))
    if len(parts) > 1 and len(parts[-1]) == 1:
        parts[-2:] = [torch.cat(parts[-2:])]
    return parts


def batch_stream(n: int, batch_size: int, gen: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless full batches of ``batch_size`` indices drawn pass after pass, each pass a fresh
    permutation: with fewer images than a batch, a batch holds each image more than once (each
    copy augmented differently), so every step costs and teaches the same."""
    buffer = torch.empty(0, dtype=torch.long)
    while True:
        while len(buffer) < batch_size:
            buffer = torch.cat([buffer, torch.randperm(n, generator=gen)])
        yield buffer[:batch_size]
        buffer = buffer[batch_size:]


def rank_slices(batches: Iterator[torch.Tensor], rank: int,
                per_rank: int) -> Iterator[torch.Tensor]:
    """Rank ``rank``'s part of each global batch: positions ``[rank * per_rank, (rank + 1) *
    per_rank)`` (the whole batch for rank 0 of one process). Every rank draws the same global
    batches from the same seed, so the slices are disjoint and together are the batch."""
    for batch in batches:
        yield batch[rank * per_rank : (rank + 1) * per_rank]


def epoch_stream(n: int, batch_size: int, gen: torch.Generator) -> Iterator[torch.Tensor]:
    """The pre-0.2 batches: one partition of the images per epoch (batches of n < batch_size)."""
    while True:
        yield from batch_partition(n, batch_size, gen)


def eval_interval(config: TrainConfig, steps: int, n_train: int) -> int:
    """Steps between evaluations: ``config.eval_every``; one pass with a budget in epochs;
    else about :data:`EVALUATIONS_PER_FIT` per fit."""
    if config.eval_every > 0:
        return int(config.eval_every)
    if config.budget_in_epochs:
        return steps_per_pass(n_train, config.batch_size)
    return max(1, math.ceil(steps / EVALUATIONS_PER_FIT))


def lr_factor(config: TrainConfig, steps: int) -> Any:
    """Step -> learning-rate factor of the schedule (LambdaLR), or None for none/plateau."""
    if config.scheduler == "warmup_cosine":
        warmup = max(1, round(config.warmup_fraction * steps)) if config.warmup_fraction else 0
    elif config.scheduler == "cosine":
        warmup = 0
    else:
        return None
    floor = config.min_lr_fraction

    def factor(step: int) -> float:  # step = optimiser steps taken so far
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, steps - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor
