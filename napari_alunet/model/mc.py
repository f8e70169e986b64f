"""Monte-Carlo dropout sampling with BatchNorm frozen.

Published implementations call ``model.train()`` to sample, which also switches BatchNorm to
batch statistics: a score then depends on which images share the batch, and the running
statistics drift while the pool is scored. Here every module is in eval mode except the dropout
layers, so BatchNorm always uses its running statistics and never updates them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

_DROPOUT_TYPES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)


def dropout_modules(model: nn.Module) -> list[nn.Module]:
    """The dropout layers of ``model``."""
    return [m for m in model.modules() if isinstance(m, _DROPOUT_TYPES)]


@contextlib.contextmanager
def mc_dropout_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block: everything in eval mode except dropout. Restores the modes after."""
    saved = {m: m.training for m in model.modules()}
    model.eval()
    for module in dropout_modules(model):
        module.train()
    try:
        yield model
    finally:
        for module, mode in saved.items():
            module.training = mode


@torch.no_grad()
def mc_predict(
    model: nn.Module, images: torch.Tensor, passes: int, *, chunk: int | None = None
) -> torch.Tensor:
    """Softmax probabilities of ``passes`` stochastic forward passes.

    The passes run batched: the batch is repeated ``chunk`` times per forward call, which is
    equivalent to separate passes because dropout masks are drawn per sample and BatchNorm uses
    running statistics.

    Parameters
    ----------
    model : a network with dropout layers; its train/eval modes are restored afterwards.
    images : (B, C_in, H, W) float tensor on the model's device.
    passes : number of MC samples T (>= 1).
    chunk : passes per forward call (default: all at once).

    Returns
    -------
    (T, B, C, H, W) float32 tensor of softmax probabilities.
    """
    if passes < 1:
        raise ValueError(f"passes must be >= 1, got {passes}")
    chunk = passes if chunk is None else max(1, min(chunk, passes))
    batch = images.shape[0]
    outputs = []
    with mc_dropout_mode(model):
        done = 0
        while done < passes:
            n = min(chunk, passes - done)
            logits = model(images.repeat(n, *([1] * (images.dim() - 1))))
            probs = torch.softmax(logits.float(), dim=1)
            outputs.append(probs.reshape(n, batch, *probs.shape[1:]))
            done += n
    return torch.cat(outputs, dim=0)
