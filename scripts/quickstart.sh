#!/usr/bin/env bash
# Install napari-alunet and run the main job on a fresh machine.
#   With a display: opens napari with the active-learning widgets docked on a sample project.
#   Without one: says so and runs the headless demo, a short active-learning experiment on
#   synthetic blastocysts that leaves a learning-curve PNG in runs/quickstart/.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# The CPU build of torch first: a bare "torch" requirement would pull a multi-GB CUDA build.
"$PY" -m pip install -q "torch==2.13.0"
"$PY" -m pip install -q -e ".[pyqt5]"

OUT=${OUT:-runs/quickstart}
if [ -n "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ] && [ -z "${ALUNET_HEADLESS:-}" ]; then
  exec "$PY" -m napari_alunet.widgets.launch --sample "$OUT/sample_project"
fi
echo "No display found (DISPLAY is unset): running the headless demo instead."
echo "On a desktop, run this script again to open napari with the widgets docked."
# A short budget (200 optimiser steps a fit instead of the automatic 400+) keeps the demo at a
# few minutes on 2 cores; everything else is the product's default recipe.
alunet experiment --data sample --sample-n 40 --strategies random bald --seeds 1 --k 4 \
  --initial-fraction 0.1 --until-fraction 0.4 --preset cpu --steps 200 \
  --passes 4 --out "$OUT"
echo "Learning curves: $OUT/learning_curves.png  (rounds: $OUT/rounds.csv, summary: $OUT/summary.csv)"
