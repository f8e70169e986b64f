"""Device selection and the per-device compute settings: the one owner of them.

Training (:mod:`.engine`), inference (:mod:`napari_alunet.inference`) and pool scoring
(:mod:`napari_alunet.scoring`) all take their device, autocast precision and memory format from
here, so a rule (bf16 on CUDA, no channels_last on MPS) is written once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import AbstractContextManager

import numpy as np
import torch
from torch import nn


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """Turn ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"`` into a ``torch.device``.

    ``"auto"`` (or ``None``) picks CUDA if available, else Apple MPS, else the CPU. Asking for a
    backend that is not available raises ``ValueError`` saying what to choose instead.
    """
    if isinstance(name, torch.device):
        return name
    if name is None or name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"unknown device {name!r}: use 'auto', 'cpu', 'cuda' or 'mps'") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            "device 'cuda' was requested but this torch build sees no CUDA GPU; use 'auto' or "
            "'cpu' (or install a CUDA build of torch)"
        )
    if device.type == "mps" and not _mps_available():
        raise ValueError("device 'mps' was requested but MPS is not available; use 'auto' or 'cpu'")
    return device


PRECISIONS = ("auto", "bf16", "fp32")


def check_precision(precision: str) -> None:
    """``ValueError`` unless ``precision`` is one of :data:`PRECISIONS`."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be 'auto', 'bf16' or 'fp32', not {precision!r}")


def autocast(device: torch.device, precision: str = "auto") -> AbstractContextManager[object]:
    """Mixed-precision context for the forward pass.

    ``precision``: ``"auto"`` is bf16 on CUDA (no loss scaling needed, unlike fp16) and float32
    elsewhere; ``"bf16"`` forces bf16 autocast (also on the CPU, where CPUs with native bf16,
    e.g. AVX512-BF16 / AMX, train ~1.7x faster; on CPUs without it this is slower); ``"fp32"``
    disables autocast. CPU float32 stays the default so results do not depend on the CPU model.
    """
    check_precision(precision)
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def memory_format(device: torch.device) -> torch.memory_format:
    """channels_last (NHWC) on CUDA and the CPU: tensor-core and oneDNN convolutions want it
    (measured ~1.25x faster per CPU-second for the cpu preset at 128x128). MPS: contiguous."""
    return torch.contiguous_format if device.type == "mps" else torch.channels_last


def model_device(model: nn.Module, device: str | torch.device | None = None) -> torch.device:
    """``device`` resolved (:func:`resolve_device`); ``None``: where the model's weights are."""
    if device is not None:
        return resolve_device(device)
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


@contextlib.contextmanager
def inference_context(device: torch.device, precision: str = "auto") -> Iterator[None]:
    """No gradients and the precision's autocast (:func:`autocast`), for forward passes only.

    no_grad and autocast are thread-local and would leak to the consumer of a generator if held
    across a ``yield``, so callers wrap each batch's computation, not a whole loop.
    """
    with torch.no_grad(), autocast(device, precision):
        yield


@contextlib.contextmanager
def placed(model: nn.Module, device: torch.device) -> Iterator[nn.Module]:
    """The model on ``device`` in the device's :func:`memory_format` within the block.

    A model that was in the contiguous format before is put back into it afterwards (it stays on
    ``device``), so a checkpoint written later looks the same as one written before.
    """
    conv_weights = [p for p in model.parameters() if p.dim() == 4]
    was_contiguous = all(p.is_contiguous() for p in conv_weights)
    # Module.to accepts memory_format at run time, but torch's overloads do not declare it.
    model.to(device=device, memory_format=memory_format(device))  # type: ignore[call-overload]
    try:
        yield model
    finally:
        if was_contiguous:
            model.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]


def to_device(images: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """(B, C_in, S, S) float32 images on ``device`` in its memory format."""
    x = torch.as_tensor(images, dtype=torch.float32)
    if x.dim() != 4:
        raise ValueError(f"images must have shape (B, C_in, S, S), got {tuple(x.shape)}")
    return x.to(device).contiguous(memory_format=memory_format(device))


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Use ``n`` intra-op threads (0: leave torch's choice) for the whole experiment.

    On a small shared CPU, two processes that each spin two OpenMP threads on two cores run
    several times slower than with one thread each (measured: 0.04 vs 0.17 s per 128² image
    and epoch), and scoring and evaluation run outside ``fit``, which sets threads only for
    itself. The setting is process-wide; it is restored when the experiment ends or is closed.
    """
    saved = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n > 0:
            torch.set_num_threads(saved)
