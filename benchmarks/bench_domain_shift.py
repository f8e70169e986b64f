"""How far does a synthetic-only model fall on a shifted generator, with and without domain
randomisation? (issue 13: a proxy for the synthetic-to-real gap, which we cannot measure here)

One model is trained on the default generator; it is tested on fresh images of the same
generator and on deliberately shifted ones, each shift alone and all together:

``illumination``  a strong ramp and vignetting (0.25-0.4, against 0.03-0.14 in training)
``focus``         2.5-3.5 x the training blur
``optics``        another modulation-contrast relief: weak (0.2-0.6) or strong (3-4), the
                  shading from the opposite side
``stages``        only the rare modes: early, hatching, hatched, collapsed
``all``           every shift at once

The same fit is run twice, with ``TrainConfig.domain_randomisation`` off and on (same seed,
same images, same steps), and the drop from in-distribution Dice is printed side by side.

    python benchmarks/bench_domain_shift.py                       # cpu preset at 64 px, ~5 min
    python benchmarks/bench_domain_shift.py --size 128 --steps 1500 --train 160
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SHIFTS = ("none", "illumination", "focus", "optics", "stages", "all")
CLASS_NAMES = ("background", "ICM", "TE", "ZP", "BL")


def shifted_params(rng: np.random.Generator, shift: str) -> Any:
    """The parameters of one test image under ``shift`` (``"none"``: the training setting)."""
    from napari_alunet.data._synthetic_texture import fit_in_frame
    from napari_alunet.data.synthetic import draw_params

    every = shift == "all"
    if shift == "stages" or every:
        mode = int(rng.integers(4))
        params = (draw_params(rng, stage=(1, 5, 6)[mode]) if mode < 3
                  else draw_params(rng, stage=int(rng.choice([2, 3, 4])), collapsed=True))
    else:
        params = draw_params(rng)
    if shift == "illumination" or every:
        params.illumination = (float(rng.uniform(0.25, 0.4)), float(rng.uniform(0, 2 * np.pi)),
                               float(rng.uniform(0.25, 0.4)))
    if shift == "focus" or every:
        params.blur = float(params.blur * rng.uniform(2.5, 3.5))
    if shift == "optics" or every:
        strength = rng.uniform(0.2, 0.6) if rng.random() < 0.5 else rng.uniform(3.0, 4.0)
        params.relief = (float(strength), float(params.relief[1] + np.pi))
    fit_in_frame(params)
    return params


def make_set(n: int, seed: int, shift: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, 1, size, size) standardised images and (n, size, size) labels."""
    from napari_alunet.data.dataset import prepare_image
    from napari_alunet.data.synthetic import generate_blastocyst

    images, labels = [], []
    for i in range(n):
        rng = np.random.default_rng([seed, SHIFTS.index(shift), i])
        image, label, _ = generate_blastocyst(rng, params=shifted_params(rng, shift))
        x, box = prepare_image(image, size)
        images.append(x[None])
        labels.append(box.apply_labels(label))
    return np.stack(images).astype(np.float32), np.stack(labels).astype(np.int64)


def train(x: np.ndarray, y: np.ndarray, args: argparse.Namespace, randomised: bool) -> Any:
    from napari_alunet.config import TrainConfig, model_preset
    from napari_alunet.events import drain
    from napari_alunet.model import build_model
    from napari_alunet.training.engine import fit, reset_parameters

    model = reset_parameters(build_model(model_preset(args.preset, input_size=args.size)),
                             seed=args.seed)
    config = TrainConfig(steps=args.steps, batch_size=8, seed=args.seed, device=args.device,
                         semi_supervised=False, health_min_dice=0.0,
                         domain_randomisation=randomised)
    drain(fit(model, x, y, None, None, config, n_classes=5))
    return model, config


def main(argv: list[str] | None = None) -> int:
    from napari_alunet.inference import evaluate

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train", type=int, default=96, help="training images")
    ap.add_argument("--test", type=int, default=24, help="test images per shift")
    ap.add_argument("--size", type=int, default=64, help="model input side")
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("runs/domain_shift"))
    args = ap.parse_args(argv)
    start = time.perf_counter()
    x_train, y_train = make_set(args.train, 1000 + args.seed, "none", args.size)
    tests = {shift: make_set(args.test, 2000 + args.seed, shift, args.size) for shift in SHIFTS}
    results: dict[str, dict[str, Any]] = {}
    for randomised in (False, True):
        arm = "domain randomisation" if randomised else "plain augmentation"
        t0 = time.perf_counter()
        model, config = train(x_train, y_train, args, randomised)
        seconds = time.perf_counter() - t0
        results[arm] = {"train_seconds": round(seconds, 1)}
        for shift, (x, y) in tests.items():
            m = evaluate(model, x, y, n_classes=5, device=args.device)
            results[arm][shift] = {"mean_dice": m["mean_dice"],
                                   **{CLASS_NAMES[k]: m.get(f"dice_{k}") for k in range(1, 5)}}
        print(f"{arm}: trained in {seconds:.0f} s", file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    record = {"args": {k: str(v) for k, v in vars(args).items()},
              "train_config": dataclasses.asdict(config), "results": results,
              "seconds": round(time.perf_counter() - start, 1)}
    (args.out / "domain_shift.json").write_text(json.dumps(record, indent=2))
    plain, dr = results["plain augmentation"], results["domain randomisation"]
    print(f"# Synthetic domain shift: {args.train} training images, {args.test} test images per "
          f"shift, {args.preset} preset at {args.size} px, {args.steps} steps\n")
    print("| test set | mean Dice, plain | mean Dice, DR | drop, plain | drop, DR | ZP plain / DR "
          "| BL plain / DR |")
    print("|---|---|---|---|---|---|---|")
    for shift in SHIFTS:
        a, b = plain[shift], dr[shift]
        print(f"| {shift} | {a['mean_dice']:.3f} | {b['mean_dice']:.3f} | "
              f"{plain['none']['mean_dice'] - a['mean_dice']:+.3f} | "
              f"{dr['none']['mean_dice'] - b['mean_dice']:+.3f} | "
              f"{a['ZP']:.2f} / {b['ZP']:.2f} | {a['BL']:.2f} / {b['BL']:.2f} |")
    worst_plain = min(plain[s]["mean_dice"] for s in SHIFTS[1:])
    worst_dr = min(dr[s]["mean_dice"] for s in SHIFTS[1:])
    print(f"\nworst shifted set: plain {worst_plain:.3f}, DR {worst_dr:.3f} "
          f"(ratio {worst_dr / max(worst_plain, 1e-9):.2f}); {time.perf_counter() - start:.0f} s "
          f"in all; written to {args.out / 'domain_shift.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
