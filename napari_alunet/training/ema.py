"""Exponential moving average of a model's weights, and BatchNorm statistics held still.

The EMA model is what a fit evaluates, saves and uses as the teacher of the semi-supervised
term: with a handful of labelled images the raw weights jump from step to step, and the average
over the last ~100 steps is both better and steadier (Polyak averaging; the mean teacher of
Tarvainen & Valpola 2017).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator

import torch
from torch import nn


class WeightEMA:
    """A frozen copy of ``model`` whose weights follow ``model``'s as a moving average.

    ``update(model)`` after every optimiser step sets ``ema = d * ema + (1 - d) * weights`` for
    every floating-point parameter and buffer (BatchNorm running statistics included), with
    ``d = min(decay, (1 + t) / (10 + t))`` at update ``t``: the usual warm-up, so the first
    updates do not drag the random initialisation along for hundreds of steps. Integer buffers
    (``num_batches_tracked``) are copied. The copy is always in eval mode (dropout off,
    BatchNorm on its running statistics) and has no gradients.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.updates = 0
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    def current_decay(self) -> float:
        return min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.current_decay()
        ema_state = self.model.state_dict()
        floats_e, floats_m = [], []
        for name, value in model.state_dict().items():
            target = ema_state[name]
            if target.dtype.is_floating_point:
                floats_e.append(target)
                floats_m.append(value.detach())
            else:
                target.copy_(value)
        if floats_e:
            torch._foreach_lerp_(floats_e, floats_m, 1.0 - d)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}


@contextlib.contextmanager
def batchnorm_statistics_frozen(model: nn.Module) -> Iterator[None]:
    """Forward passes inside keep every BatchNorm's running statistics as they are.

    In training mode BatchNorm still normalises with the batch's own statistics (what the
    gradient needs), but with ``momentum = 0`` the running mean and variance are not moved.
    Used for the strongly augmented unlabelled batch: its statistics (blur, cut-out, extreme
    contrast) are not those of real images, and the running statistics are what
    ``mc_predict`` and every deterministic prediction normalise with.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, m.num_batches_tracked.clone() if m.num_batches_tracked is not None
              else None) for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (momentum, tracked) in zip(norms, saved):
            m.momentum = momentum
            if tracked is not None:
                # tracked is a clone of num_batches_tracked, so that buffer is not None either.
                assert m.num_batches_tracked is not None
                m.num_batches_tracked.copy_(tracked)
