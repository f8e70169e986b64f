"""Training throughput: our engine vs a naive research-style loop, side by side in one process.

The reference loop is written the way published blastocyst / active-learning code trains a
U-Net: a DataLoader over numpy arrays, a host->device copy per batch, fp16 autocast with a
GradScaler, batch 16, ``model.train()``, and ``loss.item()`` plus a batch Dice ``.item()``
every step (each one a device sync on a GPU). Our engine keeps the data on the device, uses bf16
autocast and channels_last on CUDA, and reads the loss back only every few steps.

Usage::

    python benchmarks/bench_train.py --preset cpu            # CPU, 128x128, cpu preset
    python benchmarks/bench_train.py --preset gpu --device cuda --steps 100

Prints images/s of each loop and the ratio, plus images per CPU-second of this process. Keep it
short: the default CPU run takes ~1 min on an idle machine.

On a shared machine (load above the core count) OpenMP threads spin-wait for each other and
wall-clock figures collapse (measured here: 2.6 img/s at load 8 versus 9.1 with
``OMP_WAIT_POLICY=PASSIVE``); run it as ``OMP_WAIT_POLICY=PASSIVE python benchmarks/...`` or
with ``--threads 1`` there, and read the img/CPU-s column.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from napari_alunet.config import MODEL_PRESETS, TrainConfig
from napari_alunet.model import build_model
from napari_alunet.training.device import resolve_device
from napari_alunet.training.engine import StepEvent, fit


def synthetic(n: int, size: int, n_classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n, 1, size, size) float32 standardised images and (n, size, size) uint8 labels: nested
    disks of classes 1..n_classes-1 at random positions, plus noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    labels = np.zeros((n, size, size), np.uint8)
    cy, cx = rng.uniform(0.3, 0.7, (2, n, 1, 1)) * size
    dist = np.hypot(yy - cy, xx - cx) / size
    for c in range(1, n_classes):
        labels[dist < 0.3 - 0.05 * c] = c
    images = labels.astype(np.float32) + rng.normal(0, 0.5, labels.shape).astype(np.float32)
    images = (images - images.mean((1, 2), keepdims=True)) / images.std((1, 2), keepdims=True)
    return images[:, None], labels


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_engine(
    preset: str, x: np.ndarray, y: np.ndarray, device: torch.device, batch: int, warmup: int,
    augment: bool, precision: str = "auto",
) -> tuple[float, float]:
    """Images/s of :func:`fit` (one epoch over ``x``, no validation) after ``warmup`` steps:
    (per wall-clock second, per CPU second of this process)."""
    torch.manual_seed(0)
    model = build_model(preset)
    config = TrainConfig(epochs=1, batch_size=batch, augment=augment, loss="ce+dice",
                         precision=precision)
    n_classes = model.config.n_classes
    t_start = t_end = c_start = c_end = 0.0
    last_step = 0
    for event in fit(model, x, y, None, None, config, n_classes=n_classes, device=device):
        if isinstance(event, StepEvent):
            if event.step == warmup:
                _sync(device)
                t_start, c_start = time.perf_counter(), time.process_time()
            if event.step == event.steps:
                _sync(device)
                t_end, c_end = time.perf_counter(), time.process_time()
                last_step = event.step
    images = (last_step - warmup) * batch
    return images / (t_end - t_start), images / (c_end - c_start)


class _ArrayDataset(Dataset):  # type: ignore[type-arg]
    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(self.x[i]), torch.from_numpy(self.y[i].astype(np.int64))


def _dice_loss(logits: torch.Tensor, target: torch.Tensor, n_classes: int) -> torch.Tensor:
    probs = torch.softmax(logits, 1)
    onehot = F.one_hot(target, n_classes).permute(0, 3, 1, 2).float()
    inter = (probs * onehot).sum((0, 2, 3))
    return 1 - ((2 * inter + 1) / (probs.sum((0, 2, 3)) + onehot.sum((0, 2, 3)) + 1)).mean()


def bench_naive(
    preset: str, x: np.ndarray, y: np.ndarray, device: torch.device, batch: int, warmup: int
) -> float:
    """Images/s of the research-style loop (see the module docstring)."""
    torch.manual_seed(0)
    model = build_model(preset).to(device)
    n_classes = model.config.n_classes
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    cuda = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=cuda)
    loader = DataLoader(_ArrayDataset(x, y), batch_size=batch, shuffle=True, drop_last=True)
    losses, dices = [], []
    t_start = c_start = 0.0
    steps = 0
    model.train()
    for step, (xb, yb) in enumerate(loader, 1):
        if step == warmup + 1:
            _sync(device)
            t_start, c_start = time.perf_counter(), time.process_time()
        xb, yb = xb.to(device), yb.to(device)
        optimizer.zero_grad()
        with torch.autocast("cuda", dtype=torch.float16, enabled=cuda):
            out = model(xb)
            loss = F.cross_entropy(out, yb) + _dice_loss(out.float(), yb, n_classes)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        losses.append(loss.item())  # a sync per step
        dices.append(1 - _dice_loss(out.detach().float(), yb, n_classes).item())  # and another
        steps = step
    _sync(device)
    images = (steps - warmup) * batch
    return images / (time.perf_counter() - t_start), images / (time.process_time() - c_start)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(MODEL_PRESETS), default=None,
                        help="model preset (default: gpu on CUDA, else cpu)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, default=None,
                        help="timed steps per loop (default: 12 on CPU, 100 on GPU)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="engine batch size (default: 8 on CPU, 16 on GPU; reference: 16)")
    parser.add_argument("--size", type=int, default=None, help="image side (default: preset)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto",
                        help="engine autocast (auto: bf16 on CUDA, fp32 on CPU)")
    parser.add_argument("--no-augment-run", action="store_true",
                        help="skip the third run (engine with augmentation)")
    args = parser.parse_args(argv)

    device = resolve_device(args.device)
    preset = args.preset or ("gpu" if device.type == "cuda" else "cpu")
    size = args.size or MODEL_PRESETS[preset].input_size
    steps = args.steps or (100 if device.type == "cuda" else 12)
    batch = args.batch_size or (16 if device.type == "cuda" else 8)
    ref_batch, warmup = 16, 3
    if args.threads:
        torch.set_num_threads(args.threads)
    n_classes = MODEL_PRESETS[preset].n_classes
    n_images = max(batch, ref_batch) * (steps + warmup)
    x, y = synthetic(n_images, size, n_classes)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else (
        f"{torch.get_num_threads()} CPU threads")
    print(f"preset {preset}, {size}x{size}, {device} ({where}), torch {torch.__version__}, "
          f"{steps} timed steps after {warmup} warm-up")

    rows = [("reference loop", f"batch {ref_batch}, fp16 autocast on CUDA, .item() per step",
             bench_naive(preset, x, y, device, ref_batch, warmup))]
    rows.append(("engine fit()", f"batch {batch}, {args.precision}, no augmentation",
                 bench_engine(preset, x, y, device, batch, warmup, False, args.precision)))
    if not args.no_augment_run:
        rows.append(("engine fit()", f"batch {batch}, {args.precision}, on-device augmentation",
                     bench_engine(preset, x, y, device, batch, warmup, True, args.precision)))
    print(f"{'':16}{'':50}{'img/s':>9}{'img/CPU-s':>11}")
    for name, what, (wall, cpu) in rows:
        print(f"{name:16}{what:50}{wall:9.1f}{cpu:11.1f}")
    ref = rows[0][2][0]
    print("ratio engine / reference (wall): "
          + ", ".join(f"{r[2][0] / ref:.2f}x" for r in rows[1:]))
    if device.type == "cpu":
        # On a shared machine wall-clock throughput depends on the other load; CPU seconds
        # of this process do not (much). img/CPU-s x cores is the uncontended ceiling.
        load, cores = os.getloadavg()[0], os.cpu_count() or 1
        print(f"load average {load:.1f} on {cores} cores (wall figures are only meaningful "
              "when it is below the core count)")
        if load > cores and os.environ.get("OMP_WAIT_POLICY", "").upper() != "PASSIVE":
            print("the machine is busy: rerun with OMP_WAIT_POLICY=PASSIVE or --threads 1")

if __name__ == "__main__":
    main()
