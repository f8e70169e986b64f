"""Read intermediate feature maps of the U-Net (for display as napari layers).

Activations are captured with a forward hook during one deterministic forward pass (dropout
off, BatchNorm on running statistics); the model's train/eval modes are restored afterwards.
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import torch
from torch import nn


def list_blocks(model: nn.Module) -> list[str]:
    """Names accepted by :func:`block_activations`.

    For :class:`~napari_alunet.model.unet.UNet` these are ``enc0``..., ``bottleneck``,
    ``dec...``, ``head``; for any other module, the names of its direct children.
    """
    if hasattr(model, "block_names"):
        # cast: torch types Module attributes as Tensor | Module; this one is a method.
        return list(cast(Any, model).block_names())
    return [name for name, _ in model.named_children()]


def _resolve(model: nn.Module, name: str) -> nn.Module:
    if hasattr(model, "block"):
        return cast(Any, model).block(name)  # a method, as above
    children = dict(model.named_children())
    if name not in children:
        raise ValueError(f"unknown block {name!r}; choose one of {', '.join(children)}")
    return children[name]


@torch.no_grad()
def block_activations(
    model: nn.Module, image: torch.Tensor | np.ndarray, block_name: str
) -> np.ndarray:
    """Output of one block for one image.

    Parameters
    ----------
    model : the network (its device is used for the forward pass).
    image : (1, C_in, H, W) float tensor or array, normalised like the training images.
    block_name : one of :func:`list_blocks`.

    Returns
    -------
    (channels, h, w) float32 array; ``h, w`` are the block's resolution (H / 2**level; for an
    input that is not a multiple of ``2**depth``, the padded size / 2**level).
    """
    module = _resolve(model, block_name)
    tensor = torch.as_tensor(image, dtype=torch.float32)
    if tensor.dim() != 4 or tensor.shape[0] != 1:
        raise ValueError(f"image must have shape (1, C, H, W), got {tuple(tensor.shape)}")
    device = next(model.parameters()).device
    captured: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda _m, _i, out: captured.append(out.detach()))
    saved = {m: m.training for m in model.modules()}
    try:
        model.eval()
        model(tensor.to(device))
    finally:
        handle.remove()
        for m, mode in saved.items():
            m.training = mode
    return captured[0][0].float().cpu().numpy()
