"""Pool-scoring speed and memory: ``score_pool`` side by side with a naive reference.

The reference is written the way published MC-dropout segmentation code scores a pool: a Python
loop over passes at batch 16, ``model.train()`` for dropout (BatchNorm on batch statistics, and
its running statistics drift), fp16 autocast on CUDA, every pass's probabilities copied to the
host and the maps computed in numpy, per batch.

    python benchmarks/bench_scoring.py --preset cpu --images 64 --passes 8       # speed
    python benchmarks/bench_scoring.py --preset cpu --pool 2000 --size 64        # memory

Weights are freshly initialised: speed does not depend on them.
"""

from __future__ import annotations

import argparse
import copy
import os
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from napari_alunet.config import MODEL_PRESETS, AcquisitionConfig
from napari_alunet.events import drain
from napari_alunet.scoring import score_pool


def _build(preset: str) -> nn.Module:
    try:
        from napari_alunet.model.unet import build_model
    except ImportError:
        raise SystemExit("napari_alunet.model.unet is missing: nothing to benchmark") from None
    torch.manual_seed(0)
    return build_model(preset).eval()


def _synthetic(ids: list[int], size: int) -> np.ndarray:
    """Standardised noise images generated per id (so a pool of any size costs no memory)."""
    out = np.empty((len(ids), 1, size, size), np.float32)
    for row, image_id in enumerate(ids):
        out[row, 0] = np.random.default_rng(image_id).standard_normal((size, size))
    return out


def naive_scores(model: nn.Module, images: np.ndarray, passes: int, device: torch.device,
                 batch_size: int = 16) -> tuple[list[float], list[np.ndarray]]:
    """The published-code pattern (see the module docstring); returns BALD scores and maps."""
    model.train()  # dropout on -- and BatchNorm in training mode, the bug this project avoids
    scores: list[float] = []
    maps: list[np.ndarray] = []
    for start in range(0, len(images), batch_size):
        x = torch.from_numpy(images[start : start + batch_size]).to(device)
        samples = []
        for _ in range(passes):
            with torch.no_grad(), torch.autocast(device.type, dtype=torch.float16,
                                                 enabled=device.type == "cuda"):
                samples.append(torch.softmax(model(x), dim=1).float().cpu().numpy())
        probs = np.stack(samples)  # (T, B, C, H, W) on the host
        mean = probs.mean(0)
        entropy = -(mean * np.log(mean + 1e-10)).sum(1)
        expected = -(probs * np.log(probs + 1e-10)).sum(2).mean(0)
        bald = entropy - expected
        maps.extend(bald)
        scores.extend(bald.mean((1, 2)).tolist())
    return scores, maps


def _timed(run: Callable[[], object], device: torch.device) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process). CPU time is what a busy shared machine
    distorts least: on idle cores, wall time approaches CPU time / threads."""
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - wall, time.process_time() - cpu


def _ours(model: nn.Module, images: np.ndarray, passes: int, device: torch.device) -> object:
    config = AcquisitionConfig(strategy="bald", passes=passes, batch_size=16, seed=0)
    return drain(score_pool(model, list(range(len(images))), lambda ids: images[ids], config,
                            top_k=2, device=device))


def speed(args: argparse.Namespace, device: torch.device) -> None:
    model = _build(args.preset).to(device)
    reference = copy.deepcopy(model)  # the naive code's train() mode must not touch ours
    size = args.size or MODEL_PRESETS[args.preset].input_size
    images = _synthetic(list(range(args.images)), size)
    warm = images[: min(4, len(images))]
    _ours(model, warm, args.passes, device)  # first calls pay one-off kernel selection
    naive_scores(reference, warm, args.passes, device)
    load = _load_average()
    best = {"ours": (np.inf, np.inf), "naive": (np.inf, np.inf)}
    for _ in range(args.repeats):  # interleaved, so a busy spell on the machine hits both
        for name, run in (("ours", lambda: _ours(model, images, args.passes, device)),
                          ("naive", lambda: naive_scores(reference, images, args.passes, device))):
            wall, cpu = _timed(run, device)
            best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
    n = len(images)
    print(f"device={device} preset={args.preset} size={size}x{size} passes={args.passes} "
          f"images={n} threads={torch.get_num_threads()} (best of {args.repeats}; "
          f"load average {load} -> {_load_average()})")
    for name, label in (("ours", "ours  (score_pool, BN eval, top-2 maps) "),
                        ("naive", "naive (loop over passes, train(), numpy)")):
        wall, cpu = best[name]
        print(f"  {label}: {n / wall:8.1f} img/s  ({wall:.2f} s wall, "
              f"{1000 * cpu / n:.0f} ms CPU per image)")
    wall_ratio = best["naive"][0] / best["ours"][0]
    cpu_ratio = best["naive"][1] / best["ours"][1]
    print(f"  speed-up: {wall_ratio:.2f}x wall, {cpu_ratio:.2f}x CPU time")


def _load_average() -> str:
    try:
        return f"{os.getloadavg()[0]:.1f}"
    except OSError:
        return "n/a"


def _rss_mb() -> float:
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except ImportError:  # peak so far is the best we can do without psutil
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory(args: argparse.Namespace, device: torch.device) -> None:
    model = _build(args.preset).to(device)
    size = args.size or 64
    n = args.pool
    config = AcquisitionConfig(strategy="bald", passes=args.passes, batch_size=16, seed=0)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    marks = {max(1, n * q // 4) for q in (1, 2, 3, 4)}
    start_rss = _rss_mb()
    print(f"memory mode: pool of {n} synthetic {size}x{size} images, generated in load_batch; "
          f"preset={args.preset} passes={args.passes} device={device}")
    print(f"  rss before scoring: {start_rss:.0f} MiB")
    generator = score_pool(model, list(range(n)), lambda ids: _synthetic(ids, size), config,
                           top_k=args.top_k, device=device)

    def report(event: object) -> None:
        done = getattr(event, "done", 0)
        if getattr(event, "stage", "") == "score" and any(done - 16 < m <= done for m in marks):
            print(f"  scored {done:>7}/{n}: rss {_rss_mb():.0f} MiB, "
                  f"{getattr(event, 'images_per_second', 0):.1f} img/s")

    result = drain(generator, report)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"  peak host RSS: {peak:.0f} MiB (start {start_rss:.0f} MiB); "
          f"scores kept: {len(result.scores)}, maps kept: {len(result.maps)}")
    if device.type == "cuda":
        print(f"  peak GPU memory: {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=("gpu", "cpu", "tiny"), default="cpu")
    parser.add_argument("--images", type=int, default=64, help="images to score (speed mode)")
    parser.add_argument("--passes", type=int, default=8)
    parser.add_argument("--size", type=int, default=None, help="image side (default: preset's)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--pool", type=int, default=None, help="memory mode: pool size")
    parser.add_argument("--top-k", type=int, default=8)
    parser.add_argument("--threads", type=int, default=0,
                        help="torch intra-op threads (0: torch's default). On a machine shared "
                        "with other jobs, 1 thread can be several times faster than 2")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    name = args.device
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if args.pool:
        memory(args, device)
    else:
        speed(args, device)


if __name__ == "__main__":
    main()
