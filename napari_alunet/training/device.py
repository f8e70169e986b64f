"""Device selection and the per-device settings the engine uses (autocast, memory format)."""

from __future__ import annotations

import contextlib
from typing import ContextManager

import torch


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


def autocast(device: torch.device) -> ContextManager[object]:
    """bf16 autocast on CUDA (no loss scaling needed, unlike fp16); full precision elsewhere.

    CPU bf16 autocast is not used: on CPUs without native bf16 matmuls it is slower, and its
    numerics would make CPU runs differ from the reference float32 results.
    """
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def memory_format(device: torch.device) -> torch.memory_format:
    """channels_last on CUDA (tensor-core convolutions want NHWC); contiguous elsewhere."""
    return torch.channels_last if device.type == "cuda" else torch.contiguous_format
