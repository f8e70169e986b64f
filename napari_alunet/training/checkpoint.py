"""Self-describing, atomically written, safely loaded model checkpoints.

A checkpoint is one ``torch.save`` dict (nanoGPT style) holding the weights and everything needed
to rebuild and judge them: the model config as a plain dict, class names, epoch, best metric,
optional optimiser state and free-form ``extra`` data. It is written through
:func:`napari_alunet.fileio.atomic_write_bytes`, so a crash leaves the old file or the new one.

Loading uses ``torch.load(weights_only=True)``: only tensors and plain containers are
unpickled, so a crafted file cannot run code; such a file is refused with
:class:`CheckpointError`.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import io
import os
import pickle
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from napari_alunet.config import ModelConfig, from_dict, to_dict
from napari_alunet.fileio import atomic_write_bytes

FORMAT = "napari-alunet-checkpoint"
FORMAT_VERSION = 1

_PLAIN = (type(None), bool, int, float, str)


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unsafe, damaged, or for another model."""


def plain_data(value: Any, where: str = "extra") -> Any:
    """``value`` as data that ``weights_only`` loading accepts, or ``TypeError`` naming the spot.

    numpy scalars become Python numbers and numpy arrays tensors (ids from a numpy index array
    are common in round metadata); tuples become lists. Anything else that is not a tensor, a
    number, a string, None, or a list/dict of them is refused now rather than when the file is
    read back.
    """
    # Exact types: torch's TorchVersion subclasses str but is pickled as its own class, which
    # weights_only loading refuses.
    if type(value) in _PLAIN or isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.generic) and value.dtype.kind in "biuf":
        return value.item()
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
        return torch.from_numpy(value.copy())
    if isinstance(value, list | tuple):
        return [plain_data(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if type(k) not in (str, int):
                raise TypeError(f"{where} has a key of type {type(k).__name__}; use str keys")
            out[k] = plain_data(v, f"{where}[{k!r}]")
        return out
    raise TypeError(
        f"{where} holds a {type(value).__name__}; checkpoints store only tensors, numbers, "
        "strings, None and lists/dicts of them (convert it, e.g. with str())"
    )


def _state_digest(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes of the weights, in key order.

    The zip container has no checksum that torch verifies, so flipped bits in a tensor would
    otherwise load silently as different weights.
    """
    digest = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous()
        digest.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_checkpoint(
    path: str | os.PathLike[str],
    model: nn.Module,
    *,
    model_config: ModelConfig | dict[str, Any],
    optimizer: torch.optim.Optimizer | None = None,
    epoch: int | None = None,
    best_metric: float | None = None,
    class_names: tuple[str, ...] | list[str] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``model``'s weights and their description to ``path`` atomically.

    Parameters
    ----------
    path : destination file (its folder is created).
    model : the network; weights are copied to the CPU so the file loads anywhere.
    model_config : the architecture the weights belong to (stored as a plain dict).
    optimizer : optional, to resume training exactly.
    epoch, best_metric : where training was and how good the weights are.
    class_names : names in class-index order, checked again on load.
    extra : plain data (numbers, strings, lists, dicts, tensors; numpy values are converted,
        see :func:`plain_data`) such as round, seed or the training image ids.

    Returns
    -------
    The path written.
    """
    if isinstance(model_config, ModelConfig):
        config_dict = to_dict(model_config)
    else:
        config_dict = to_dict(from_dict(ModelConfig, dict(model_config)))  # validates it
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_config": config_dict,
        "model_state": state,
        "weights_sha256": _state_digest(state),
        "optimizer_state": optimizer.state_dict() if optimizer is not None else None,
        "epoch": None if epoch is None else int(epoch),
        "best_metric": None if best_metric is None else float(best_metric),
        "class_names": None if class_names is None else [str(c) for c in class_names],
        "extra": plain_data(dict(extra or {})),
        "torch_version": str(torch.__version__),
        "saved_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return atomic_write_bytes(Path(path), buffer.getvalue())


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        with warnings.catch_warnings():
            # A hand-made pickle triggers a protocol warning before the refusal; the refusal is
            # the message that matters.
            warnings.simplefilter("ignore", UserWarning)
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if "nsupported" in ln]
        raise CheckpointError(
            f"refusing to load {path}: it contains objects other than tensors and plain data, "
            "which could run code when unpickled. Only load checkpoints written by "
            f"napari-alunet. ({lines[0] if lines else str(exc).splitlines()[0]})"
        ) from None
    except Exception as exc:  # noqa: BLE001 - any other failure to decode means damage
        # RuntimeError (zip directory missing), EOFError, struct.error (a damaged data.pkl),
        # UnicodeDecodeError...: the file is damaged, whatever the decoder tripped on.
        raise CheckpointError(
            f"{path} is truncated or is not a checkpoint ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}); "
            "re-train or restore it from a copy"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a torch file but not a napari-alunet checkpoint")
    if payload.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} was written by a newer napari-alunet (format "
            f"{payload['format_version']}); upgrade to load it"
        )
    return payload


#: The largest network a checkpoint may ask for (the gpu preset has about 31 M parameters).
MAX_CHECKPOINT_PARAMETERS = 2_000_000_000


def load_checkpoint(
    path: str | os.PathLike[str],
    *,
    expected_model_config: ModelConfig | None = None,
    expected_class_names: tuple[str, ...] | list[str] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model stored at ``path``.

    Parameters
    ----------
    path : a file written by :func:`save_checkpoint`.
    expected_model_config : if given, the stored architecture must equal it; the error lists
        every field that differs.
    expected_class_names : if given, the stored class names must equal them.

    Returns
    -------
    model : the U-Net with the stored weights, in eval mode, on the CPU.
    meta : everything else in the file: ``model_config`` (a :class:`ModelConfig`),
        ``optimizer_state``, ``epoch``, ``best_metric``, ``class_names``, ``extra``,
        ``torch_version``, ``saved_at``, ``format_version``.

    Raises
    ------
    FileNotFoundError, or CheckpointError (a ValueError) for an unsafe, damaged or mismatched
    file. The unsafe-file check happens before any object in the file is built.
    """
    from napari_alunet.model.unet import build_model

    path = Path(path)
    payload = _read(path)
    try:
        config = from_dict(ModelConfig, payload["model_config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path} has an invalid model config: {exc}") from None
    if expected_model_config is not None and config != expected_model_config:
        stored, wanted = to_dict(config), to_dict(expected_model_config)
        diffs = [
            f"{k}: checkpoint {stored[k]!r} vs expected {wanted[k]!r}"
            for k in stored
            if stored[k] != wanted.get(k)
        ]
        raise CheckpointError(f"{path} holds another architecture ({'; '.join(diffs)})")
    names = payload.get("class_names")
    if expected_class_names is not None and (
        names is None or list(names) != list(expected_class_names)
    ):
        raise CheckpointError(
            f"{path} was trained for classes {names} but {list(expected_class_names)} were "
            "expected"
        )
    if names is not None and len(names) != config.n_classes:
        raise CheckpointError(
            f"{path} lists {len(names)} class names for a {config.n_classes}-class model"
        )
    # Before allocating: a config asking for an absurd network (a crafted or damaged file)
    # must not exhaust memory. The U-Net's parameters grow as base_width^2 * 4^depth.
    params = 30 * config.base_width ** 2 * 4 ** config.depth
    if params > MAX_CHECKPOINT_PARAMETERS or config.input_size > 8192 or config.n_classes > 255:
        raise CheckpointError(
            f"{path} asks for a network of about {params:,} parameters (base_width "
            f"{config.base_width}, depth {config.depth}, input {config.input_size}, "
            f"{config.n_classes} classes), beyond what napari-alunet builds; it is damaged or "
            "not one of ours")
    state = payload.get("model_state")
    if isinstance(state, dict):
        bad = [k for k, v in state.items() if isinstance(v, torch.Tensor)
               and v.is_floating_point() and not bool(torch.isfinite(v).all())]
        if bad:
            raise CheckpointError(
                f"{path} holds NaN or infinite weights ({', '.join(bad[:3])}"
                f"{' ...' if len(bad) > 3 else ''}): it comes from a fit that diverged; "
                "re-train, or use an earlier round's model")
    model = build_model(config)
    try:
        model.load_state_dict(payload["model_state"], strict=True)
    except (RuntimeError, KeyError) as exc:
        raise CheckpointError(
            f"{path}: weights do not fit its own model config ({str(exc).splitlines()[0]})"
        ) from None
    # After the fit check, so weights of another shape get that (more specific) message.
    stored_digest = payload.get("weights_sha256")
    if stored_digest is not None and _state_digest(payload["model_state"]) != stored_digest:
        raise CheckpointError(
            f"{path} is damaged: its weights do not match the checksum written with them; "
            "re-train or restore it from a copy"
        )
    model.eval()
    meta = {
        k: v for k, v in payload.items() if k not in ("model_state", "format", "weights_sha256")
    }
    meta["model_config"] = dataclasses.replace(config)
    return model, meta


def save_fit_checkpoint(
    path: Any, model: nn.Module, meta: dict[str, Any] | None, step: int, metric: float,
    monitor: str,
) -> str:
    """Save the model as a fit's result; ``step`` goes into the checkpoint's ``epoch`` field
    (the format's name for "where training was")."""
    extra = dict(meta or {})
    model_config = extra.pop("model_config", getattr(model, "config", None))
    if model_config is None:
        raise ValueError("checkpoint_meta needs 'model_config' for a model without .config")
    class_names = extra.pop("class_names", None)
    extra.setdefault("monitor", monitor)
    return str(save_checkpoint(
        path, model, model_config=model_config, epoch=step, best_metric=metric,
        class_names=class_names, extra=extra,
    ))
