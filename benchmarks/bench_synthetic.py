"""Speed of the synthetic blastocyst generator (a sample project of 60 images should appear in
seconds, and the benchmark pool of 264 frames in well under a minute).

    python benchmarks/bench_synthetic.py

Prints the mean time per image at a realistic size (377 x 447) and at 64 x 64 beside their
budgets (0.3 s and 20 ms) and the ratio. This was a timed test; timings belong here, where a
loaded machine cannot fail CI.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from napari_alunet.data import synthetic as syn  # noqa: E402


def per_image(shape: tuple[int, int] | None, n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        syn.generate_blastocyst(np.random.default_rng(i), shape=shape)
    return (time.perf_counter() - start) / n


def main() -> None:
    syn.generate_blastocyst(np.random.default_rng(0))  # warm up
    for label, shape, n, budget in (("377 x 447", (377, 447), 5, 0.3),
                                    ("64 x 64", (64, 64), 20, 0.02)):
        seconds = per_image(shape, n)
        print(f"{label:>10}: {seconds * 1000:7.1f} ms per image (budget {budget * 1000:.0f} ms, "
              f"{seconds / budget:.2f}x of it)")


if __name__ == "__main__":
    main()
