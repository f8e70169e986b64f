"""Monte-Carlo dropout sampling with BatchNorm frozen.

Published implementations call ``model.train()`` to sample, which also switches BatchNorm to
batch statistics: a score then depends on which images share the batch, and the running
statistics drift while the pool is scored. Here every module is in eval mode except the dropout
layers, so BatchNorm always uses its running statistics and never updates them.

:class:`SeededDropout` makes the masks of :func:`mc_predict` depend only on ``(seed, image id,
pass, layer)``, so an image's MC score does not depend on the batch it was scored in.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import nn

_DROPOUT_TYPES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)
_ELEMENT_DROPOUT = (nn.Dropout,)
_FEATURE_DROPOUT = (nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)
_M64 = (1 << 64) - 1


def dropout_modules(model: nn.Module) -> list[nn.Module]:
    """The dropout layers of ``model``."""
    return [m for m in model.modules() if isinstance(m, _DROPOUT_TYPES)]


@contextlib.contextmanager
def mc_dropout_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block: everything in eval mode except dropout. Restores the modes after."""
    with eval_mode(model):
        for module in dropout_modules(model):
            module.train()
        yield model


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block: every module in eval mode (a deterministic pass). Restores the modes."""
    saved = {m: m.training for m in model.modules()}
    model.eval()
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


# -- per-image seeded dropout --------------------------------------------------------------------


def _mix64(x: int) -> int:
    # splitmix64 finaliser: turns structured keys (seed, id, pass, layer) into unrelated seeds.
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def _key(*parts: int) -> int:
    h = 0
    for part in parts:
        h = _mix64(h ^ (part & _M64))
    return h


class SeededDropout:
    """Context in which dropout masks depend only on ``(seed, image id, pass, layer)``.

    Inside it, every ``nn.Dropout``/``Dropout1d/2d/3d`` has ``p`` set to 0 (so its own random
    op is skipped) and a forward hook multiplies the output by a mask drawn from a generator
    seeded per row. Call :meth:`begin` with the image ids of the batch before each
    :func:`mc_predict`; rows are ``pass * len(ids) + image``, as ``mc_predict`` lays them out.
    Other dropout types (``AlphaDropout``) keep their global-RNG behaviour.
    """

    def __init__(self, model: nn.Module, seed: int) -> None:
        self.model = model
        self.seed = int(seed)
        self.ids: list[int] = []
        self.offset = 0
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._saved_p: dict[nn.Dropout | nn.Dropout1d | nn.Dropout2d | nn.Dropout3d, float] = {}
        self._generators: dict[torch.device, torch.Generator] = {}

    def begin(self, ids: Sequence[int]) -> None:
        """The image ids of the next MC call, in batch order."""
        self.ids = [int(i) for i in ids]
        self.offset = 0

    def __enter__(self) -> SeededDropout:
        layer = 0
        for module in self.model.modules():
            if isinstance(module, _ELEMENT_DROPOUT + _FEATURE_DROPOUT) and module.p > 0:
                self._saved_p[module] = module.p
                self._handles.append(module.register_forward_hook(self._hook(layer, module.p)))
                module.p = 0.0
                layer += 1
        self._handles.append(self.model.register_forward_hook(self._advance))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        for module, p in self._saved_p.items():
            module.p = p
        self._handles.clear()
        self._saved_p.clear()

    def _advance(self, _module: nn.Module, _args: object, out: torch.Tensor) -> None:
        self.offset += out.shape[0] // max(1, len(self.ids))

    def _hook(self, layer: int, p: float) -> Callable[..., torch.Tensor | None]:
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor):
            if not module.training:
                return None
            x = args[0]
            n_ids = len(self.ids)
            if n_ids == 0 or x.shape[0] % n_ids:
                raise RuntimeError("SeededDropout.begin(ids) must name the images of the batch")
            if isinstance(module, _FEATURE_DROPOUT):
                shape = (*x.shape[:2], *([1] * (x.dim() - 2)))  # one draw per channel
            else:
                shape = tuple(x.shape)
            gen = self._generator(x.device)
            uniform = torch.empty(shape, device=x.device)
            for row in range(x.shape[0]):  # rows = images x passes, not pixels
                image = self.ids[row % n_ids]
                gen.manual_seed(_key(self.seed, image, self.offset + row // n_ids, layer))
                uniform[row].uniform_(generator=gen)
            return x * (uniform >= p) * (1.0 / (1.0 - p))

        return hook

    def _generator(self, device: torch.device) -> torch.Generator:
        if device not in self._generators:
            self._generators[device] = torch.Generator(device=device)
        return self._generators[device]
