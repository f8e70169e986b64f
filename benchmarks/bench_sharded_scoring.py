"""Pool scoring with 1 and N processes (torch.distributed), side by side, in one run.

Makes a synthetic project, trains round 0 briefly (the model's quality does not matter here),
then runs ``alunet score`` on copies of it with ``--nproc 1`` and ``--nproc N`` and prints, for
each, the wall time of the command (process start and model loading included), the images
scored per second, and the peak resident memory of the largest process. It also checks that
both queued the same images.

    python benchmarks/bench_sharded_scoring.py --images 200 --nproc 2            # CPU, gloo
    python benchmarks/bench_sharded_scoring.py --images 2000 --nproc 8 --device cuda --preset gpu

On a GPU machine the second line uses one GPU per process (nccl). The same scoring runs on
several nodes with ``torchrun --nnodes M --nproc-per-node N --rdzv-backend c10d
--rdzv-endpoint HOST:PORT -m napari_alunet.cli score PROJECT ...`` (see README).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_MEASURE = """
import resource, subprocess, sys, json, time
start = time.perf_counter()
rc = subprocess.call(sys.argv[1:], stdout=subprocess.PIPE)
seconds = time.perf_counter() - start
print(json.dumps({"rc": rc, "seconds": seconds,
                  "peak_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def _alunet(*args: str) -> list[str]:
    return [sys.executable, "-m", "napari_alunet.cli", *args]


def measure(command: list[str], env: dict | None = None) -> dict:
    """Run ``command`` in a fresh wrapper process: wall seconds and the peak RSS (MiB) of the
    largest process it started (ru_maxrss of the children, grandchildren included)."""
    done = subprocess.run([sys.executable, "-c", _MEASURE, *command], capture_output=True,
                          text=True, check=True, env=env)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--preset", default="cpu", choices=("tiny", "cpu", "gpu"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--passes", type=int, default=8)
    parser.add_argument("--batch", type=int, default=8, help="images per scoring batch")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        subprocess.run(_alunet("sample", str(root / "pool"), "--n", str(args.images),
                               "--shape", "180", "214", "--seed", "1"), check=True,
                       stdout=subprocess.DEVNULL)
        subprocess.run(_alunet("import", str(root / "pool"), str(root / "proj"), "--quiet",
                               "--initial-fraction", "0.05", "--test-fraction", "0.05"),
                       check=True, stdout=subprocess.DEVNULL)
        subprocess.run(_alunet("train", str(root / "proj"), "--preset", args.preset,
                               "--steps", "5", "--device", args.device, "--quiet"),
                       check=True, stdout=subprocess.DEVNULL)
        results = {}
        for nproc in (1, args.nproc):
            copy = root / f"proj_{nproc}"
            shutil.copytree(root / "proj", copy)
            command = _alunet("score", str(copy), "--strategy", "bald", "--passes",
                              str(args.passes), "--top", "4", "--score-batch", str(args.batch),
                              "--preset", args.preset, "--device", args.device, "--json",
                              "--quiet", "--nproc", str(nproc))
            # torchrun gives each rank OMP_NUM_THREADS=1; the one process gets the same, so
            # that the comparison is per process and the results can match to the bit (torch's
            # CPU reductions depend on the thread count in the last bit).
            env = {**os.environ, "OMP_NUM_THREADS": "1"} if nproc == 1 else None
            start = time.perf_counter()
            results[nproc] = measure(command, env)
            results[nproc]["wall"] = time.perf_counter() - start
            done = subprocess.run(_alunet("status", str(copy), "--json"), capture_output=True,
                                  text=True, check=True)
            results[nproc]["status"] = json.loads(done.stdout)
        n_scored = results[1]["status"]["pools"]["unlabelled"] \
            if "pools" in results[1]["status"] else args.images
        for nproc, r in results.items():
            print(f"--nproc {nproc}: {r['seconds']:.1f} s for {n_scored} images "
                  f"({n_scored / r['seconds']:.1f} img/s, process start and model loading "
                  f"included), peak RSS of the largest process {r['peak_mib']:.0f} MiB, "
                  f"exit {r['rc']}")
        one, many = results[1], results[args.nproc]
        print(f"speed-up {one['seconds'] / many['seconds']:.2f}x with {args.nproc} processes; "
              f"same queue: {one['status'].get('queue') == many['status'].get('queue')}")


if __name__ == "__main__":
    main()
