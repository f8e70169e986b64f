"""Where the time of one few-labels fit goes: the default recipe at n = 4, part by part.

Runs, in one process on the synthetic sample (``cpu`` preset, 128²):

1. one whole fit with the default ``TrainConfig`` through ``train_model`` (what ``alunet train``,
   a round and the GUI run), wall time and seconds per optimiser step;
2. the same fit with the pre-0.2 recipe (``LEGACY_RECIPE``) for comparison;
3. each part of a step timed alone over ``--repeat`` steps: supervised forward + backward +
   AdamW on a batch of 8, the geometric augmentation, the EMA teacher's forward on the weak
   unlabelled view, the strong view, the student's forward + backward on it, the EMA update.

    python benchmarks/bench_fit_time.py [--threads 2] [--repeat 20]

Target (issue "few labels"): one default fit at n = 4 in <= 120 s on 2 cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from few_labels import fit_once  # noqa: E402

from napari_alunet.config import LEGACY_RECIPE, ExperimentConfig, TrainConfig, model_preset  # noqa: E402


def whole_fit(pool, labelled, unlabelled, config):
    _model, trained, seconds = fit_once(pool, labelled, unlabelled, config, "cpu", 0)
    return seconds, trained


def parts(pool, labelled, unlabelled, repeat: int) -> dict[str, float]:
    """Milliseconds per step of each part, timed alone."""
    import torch

    from napari_alunet.model import build_model
    from napari_alunet.training.augment import Augmenter, StrongAugmenter
    from napari_alunet.training.ema import WeightEMA, batchnorm_statistics_frozen
    from napari_alunet.training.engine import _criterion
    from napari_alunet.training.losses import consistency_loss

    config = TrainConfig()
    model = build_model(model_preset("cpu")).to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.from_numpy(pool.images[np.resize(labelled, 8)])
    y = torch.from_numpy(pool.labels[np.resize(labelled, 8)]).long()
    xu = torch.from_numpy(pool.images[unlabelled[: config.unlabelled_batch_size]])
    loss_fn = _criterion(config, y, 5, torch.device("cpu"))
    aug, weak, strong = Augmenter(seed=0), Augmenter(seed=1), StrongAugmenter(seed=2)
    ema = WeightEMA(model, 0.99)
    blank = torch.zeros(xu.shape[0], *xu.shape[2:], dtype=torch.long)

    def timed(fn) -> float:
        fn()  # warm-up
        start = time.perf_counter()
        for _ in range(repeat):
            fn()
        return (time.perf_counter() - start) / repeat * 1000

    def supervised():
        model.train()
        logits = model(x.contiguous(memory_format=torch.channels_last))
        loss = loss_fn(logits, y, None)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    weak_view = weak(xu, blank, None, intensity=False)[0]

    def teacher():
        with torch.no_grad():
            torch.softmax(ema.model(weak_view.contiguous(memory_format=torch.channels_last)), 1)

    with torch.no_grad():
        probs = torch.softmax(ema.model(weak_view), 1)

    def student():
        model.train()
        view, keep = strong(weak_view)
        with batchnorm_statistics_frozen(model):
            logits = model(view.contiguous(memory_format=torch.channels_last))
        loss, _ = consistency_loss(logits, probs, 0.9, keep)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return {
        "supervised fwd+bwd+step (batch 8)": timed(supervised),
        "augmentation (batch 8)": timed(lambda: aug(x, y, None)),
        "teacher forward (weak view, batch 4)": timed(teacher),
        "weak view (batch 4)": timed(lambda: weak(xu, blank, None, intensity=False)),
        "strong view (batch 4)": timed(lambda: strong(weak_view)),
        "student fwd+bwd+step (strong view, batch 4)": timed(student),
        "EMA update": timed(lambda: ema.update(model)),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--n", type=int, default=4)
    args = p.parse_args()
    import os

    import torch

    from napari_alunet.experiment.pool import load_pool

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    pool = load_pool(ExperimentConfig(model=model_preset("cpu"), sample_n=60, sample_seed=0))
    load_seconds = time.perf_counter() - start
    order = np.random.default_rng(0).permutation(len(pool))
    labelled = [int(i) for i in order[: args.n]]
    unlabelled = [int(i) for i in order[args.n: 48]]
    print(f"torch threads {args.threads}, load average {os.getloadavg()[0]:.1f}; "
          f"sample pool of 60 generated in {load_seconds:.1f} s")

    seconds, trained = whole_fit(pool, labelled, unlabelled, TrainConfig())
    steps = trained.fit.steps_run
    print(f"default recipe, n = {args.n}: {seconds:.1f} s for {steps} steps "
          f"({seconds / steps * 1000:.0f} ms/step, {len(trained.attempt_dice)} attempt(s), "
          f"{trained.fit.n_unlabelled} unlabelled images)   target <= 120 s")
    legacy = TrainConfig(**LEGACY_RECIPE)
    seconds_l, trained_l = whole_fit(pool, labelled, unlabelled, legacy)
    steps_l = trained_l.fit.steps_run
    print(f"legacy recipe, n = {args.n}: {seconds_l:.1f} s for {steps_l} steps "
          f"({seconds_l / max(1, steps_l) * 1000:.0f} ms/step; batches of {args.n - 1}, "
          f"{'stopped early' if trained_l.fit.stopped_early else 'full budget'})")
    semi_off = dataclasses.replace(TrainConfig(), semi_supervised=False)
    seconds_s, trained_s = whole_fit(pool, labelled, unlabelled, semi_off)
    print(f"default recipe without the unlabelled term: {seconds_s:.1f} s for "
          f"{trained_s.fit.steps_run} steps "
          f"({seconds_s / trained_s.fit.steps_run * 1000:.0f} ms/step)")
    print("\nparts of one step, timed alone (ms):")
    table = parts(pool, labelled, unlabelled, args.repeat)
    total = sum(table.values())
    for name, ms in table.items():
        print(f"  {name:<46} {ms:7.1f}  {ms / total:5.1%}")
    print(f"  {'sum':<46} {total:7.1f}")


if __name__ == "__main__":
    main()
