"""Bayesian (MC-dropout) U-Net with BatchNorm, built from
:class:`~napari_alunet.config.ModelConfig`.

The network is the U-Net of Ronneberger et al. (2015) with two changes that the active-learning
loop relies on:

* every 3x3 convolution is followed by BatchNorm (padding 1, so blocks keep their size), and
* dropout layers sit where ``ModelConfig.dropout_placement`` says, so that
  :func:`napari_alunet.model.mc.mc_predict` can draw Monte-Carlo samples. ``"encoder"`` places
  one after each encoder pooling, as the Active Bayesian U-Net (Saidu & Csato 2021) does;
  ``"all"`` after every block; ``"decoder"`` after each decoder block only.

Inputs of any height and width are accepted: the forward pass pads to a multiple of
``2**depth`` and crops the logits back, so odd sizes (a letter-boxed image that is not a
multiple of 16) do not break the skip concatenations.

Block names, used by :mod:`napari_alunet.model.features`: ``enc0`` ... ``enc{depth-1}``,
``bottleneck``, ``dec{depth-1}`` ... ``dec0`` (decoder blocks named after the encoder level they
join) and ``head``.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from napari_alunet.config import MODEL_PRESETS, ModelConfig


class ConvBlock(nn.Sequential):
    """Two (3x3 conv -> BatchNorm -> ReLU) layers; ``(B, c_in, H, W) -> (B, c_out, H, W)``."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(
            # No conv bias: the following BatchNorm's shift makes it redundant.
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
        )


def _dropout(p: float, on: bool) -> nn.Module:
    # Element-wise dropout (not Dropout2d): the MC samples then differ per pixel, which is what
    # the per-pixel uncertainty maps need. Identity keeps module names stable across placements.
    return nn.Dropout(p) if on and p > 0 else nn.Identity()


class UNet(nn.Module):
    """U-Net with BatchNorm and MC-dropout layers.

    Parameters
    ----------
    config : architecture; kept as ``self.config`` so checkpoints can describe the model.

    Notes
    -----
    ``forward(x)`` maps ``(B, in_channels, H, W)`` float to ``(B, n_classes, H, W)`` logits.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        widths = [config.base_width * 2**i for i in range(config.depth + 1)]
        enc_drop = config.dropout_placement in ("encoder", "all")
        all_drop = config.dropout_placement == "all"
        dec_drop = config.dropout_placement in ("decoder", "all")

        self.encoders = nn.ModuleList()
        self.enc_dropouts = nn.ModuleList()
        c_in = config.in_channels
        for i in range(config.depth):
            self.encoders.append(ConvBlock(c_in, widths[i]))
            # "encoder": after the pooling that follows block i (Saidu & Csato). "all" also
            # puts one there, which together with the decoder ones is "after every block".
            self.enc_dropouts.append(_dropout(config.dropout, enc_drop))
            c_in = widths[i]
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = ConvBlock(c_in, widths[-1])
        self.bottleneck_dropout = _dropout(config.dropout, all_drop)

        self.upsamples = nn.ModuleList()
        self.decoders = nn.ModuleList()
        self.dec_dropouts = nn.ModuleList()
        for i in reversed(range(config.depth)):
            self.upsamples.append(nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2))
            self.decoders.append(ConvBlock(2 * widths[i], widths[i]))
            self.dec_dropouts.append(_dropout(config.dropout, dec_drop))
        self.head = nn.Conv2d(widths[0], config.n_classes, 1)

    def block_names(self) -> list[str]:
        """Names of the blocks whose outputs :mod:`~napari_alunet.model.features` can read."""
        depth = self.config.depth
        return (
            [f"enc{i}" for i in range(depth)]
            + ["bottleneck"]
            + [f"dec{i}" for i in reversed(range(depth))]
            + ["head"]
        )

    def block(self, name: str) -> nn.Module:
        """The module whose output is block ``name`` (see :meth:`block_names`)."""
        depth = self.config.depth
        if name == "bottleneck":
            return self.bottleneck
        if name == "head":
            return self.head
        if name[:3] in ("enc", "dec") and name[3:].isdigit() and int(name[3:]) < depth:
            level = int(name[3:])
            return self.encoders[level] if name[:3] == "enc" else self.decoders[depth - 1 - level]
        raise ValueError(f"unknown block {name!r}; choose one of {', '.join(self.block_names())}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        multiple = 2**self.config.depth
        pad_h = (-height) % multiple
        pad_w = (-width) % multiple
        if pad_h or pad_w:
            # Zero padding: inputs are standardised, so zero is the image mean and adds no edge.
            x = F.pad(x, (0, pad_w, 0, pad_h))
        skips = []
        for encoder, dropout in zip(self.encoders, self.enc_dropouts):
            x = encoder(x)
            skips.append(x)
            x = dropout(self.pool(x))
        x = self.bottleneck_dropout(self.bottleneck(x))
        for up, decoder, dropout in zip(self.upsamples, self.decoders, self.dec_dropouts):
            x = torch.cat([skips.pop(), up(x)], dim=1)
            x = dropout(decoder(x))
        logits = self.head(x)
        if pad_h or pad_w:
            logits = logits[..., :height, :width]
        return logits


def build_model(config: ModelConfig | str, **overrides: object) -> UNet:
    """Build the U-Net from a :class:`ModelConfig` or the name of a ``MODEL_PRESETS`` entry.

    Parameters
    ----------
    config : a ``ModelConfig`` or ``"gpu"``, ``"cpu"``, ``"tiny"``.
    **overrides : ``ModelConfig`` fields to replace (e.g. ``n_classes=3``).

    Returns
    -------
    UNet in training mode with freshly initialised weights (on the CPU).
    """
    if isinstance(config, str):
        if config not in MODEL_PRESETS:
            raise ValueError(
                f"unknown model preset {config!r}; choose one of {', '.join(MODEL_PRESETS)}"
            )
        config = MODEL_PRESETS[config]
    if not isinstance(config, ModelConfig):
        raise TypeError(f"expected a ModelConfig or a preset name, got {type(config).__name__}")
    # Always a copy: the model must not share a mutable config with the caller.
    config = dataclasses.replace(config, **overrides)  # type: ignore[arg-type]
    return UNet(config)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
