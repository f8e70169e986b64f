"""Train the shipped starter model on synthetic blastocysts only (issue 13).

    python scripts/train_starter.py                       # cpu preset, ~30 min on 2 CPU cores
    python scripts/train_starter.py --steps 300 --train 40 --out /tmp/starter   # a quick look

Draws ``--train`` images of realistic size from the generator (its version goes into the
record), trains the preset's network with domain randomisation (``TrainConfig
.domain_randomisation``: the model must not lean on the generator's own texture and optics) and
best-weights selection on a separate synthetic validation set, measures it on fresh synthetic
images and on the shifted generator settings of ``benchmarks/bench_domain_shift.py``, and writes

* ``OUT/starter_<preset>.pt``: the checkpoint, weights in float16 (half the size; loaded into
  float32 by :func:`napari_alunet.starter.load_starter` through the safe loader);
* ``OUT/starter_<preset>.json``: the command, generator version, configuration, the figures
  and the time it took.

``OUT`` defaults to ``napari_alunet/models``, where the package looks for its starter.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def main(argv: list[str] | None = None) -> int:
    import torch
    from bench_domain_shift import SHIFTS, make_set  # type: ignore[import-not-found]

    from napari_alunet.config import DEFAULT_CLASS_NAMES, TrainConfig, model_preset, to_dict
    from napari_alunet.data.synthetic import GENERATOR_VERSION
    from napari_alunet.events import drain
    from napari_alunet.inference import evaluate
    from napari_alunet.model import build_model
    from napari_alunet.starter import STARTER_DIR
    from napari_alunet.training.checkpoint import save_checkpoint
    from napari_alunet.training.engine import fit, reset_parameters

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="cpu", choices=("cpu", "gpu", "tiny"))
    ap.add_argument("--train", type=int, default=240, help="synthetic training images")
    ap.add_argument("--val", type=int, default=24, help="synthetic validation images")
    ap.add_argument("--test", type=int, default=24, help="test images per shifted setting")
    ap.add_argument("--steps", type=int, default=2500)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=STARTER_DIR)
    args = ap.parse_args(argv)

    start = time.perf_counter()
    model_config = model_preset(args.preset)
    size = model_config.input_size
    x_train, y_train = make_set(args.train, 5000 + args.seed, "none", size)
    x_val, y_val = make_set(args.val, 6000 + args.seed, "none", size)
    print(f"{args.train} training and {args.val} validation images drawn "
          f"({time.perf_counter() - start:.0f} s)", file=sys.stderr)
    config = TrainConfig(steps=args.steps, batch_size=8, seed=args.seed, device=args.device,
                         semi_supervised=False, health_min_dice=0.0, patience=0,
                         domain_randomisation=True)
    model = reset_parameters(build_model(model_config), seed=args.seed)
    last = time.perf_counter()

    def progress(event: object) -> None:
        nonlocal last
        if time.perf_counter() - last > 30:
            last = time.perf_counter()
            print(f"  {event}", file=sys.stderr)

    result = drain(fit(model, x_train, y_train, x_val, y_val, config, n_classes=5), progress)
    train_seconds = time.perf_counter() - start
    figures = {}
    for shift in SHIFTS:
        x, y = make_set(args.test, 7000 + args.seed, shift, size)
        metrics = evaluate(model, x, y, n_classes=5, device=args.device)
        figures[shift] = {"mean_dice": round(float(metrics["mean_dice"]), 4),
                          **{name: round(float(metrics[f"dice_{k}"]), 4)
                             for k, name in enumerate(DEFAULT_CLASS_NAMES) if k}}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"starter_{args.preset}.pt"
    save_checkpoint(path, model.half(), model_config=model_config,
                    class_names=DEFAULT_CLASS_NAMES, epoch=result.best_step,
                    best_metric=result.best_val_dice,
                    extra={"generator_version": GENERATOR_VERSION, "starter": True})
    record = {
        "command": "python scripts/train_starter.py " + " ".join(argv or sys.argv[1:]),
        "preset": args.preset, "class_names": list(DEFAULT_CLASS_NAMES),
        "generator_version": GENERATOR_VERSION, "n_train": args.train, "n_val": args.val,
        "train_config": to_dict(config), "model_config": dataclasses.asdict(model_config),
        "best_step": result.best_step, "steps_run": result.steps_run,
        "best_val_dice": round(float(result.best_val_dice), 4),
        "synthetic_test": figures, "train_seconds": round(train_seconds, 1),
        "file_bytes": path.stat().st_size, "torch_version": str(torch.__version__),
        "note": "trained on synthetic images only; the shifted settings are a proxy for real "
                "images, not a measurement on them",
    }
    path.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps({k: record[k] for k in ("best_val_dice", "synthetic_test", "file_bytes",
                                             "train_seconds")}, indent=2))
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB) and its record", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
