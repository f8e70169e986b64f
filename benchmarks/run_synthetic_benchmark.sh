#!/usr/bin/env bash
# The 0.1-era oracle-replay benchmark behind docs/experiment_summary.md (plain top-k, epoch
# budget); superseded by benchmarks/al_benchmark.py (issue 11), kept to reproduce that page.
#
#   benchmarks/run_synthetic_benchmark.sh cpu [OUT]   # what produced docs/experiment_summary.md
#                                                     # (2 CPU cores, about an hour for 5 seeds)
#   benchmarks/run_synthetic_benchmark.sh gpu [OUT]   # the issue's GPU run: gpu preset (256^2,
#                                                     # ~31 M parameters), 5 strategies, 5 seeds
#   PUBLISH=1 benchmarks/run_synthetic_benchmark.sh cpu   # also copy the figure into docs/
#
# Rerunning the same command resumes an interrupted run (finished rounds are kept in
# OUT/rounds.csv); changing any setting is refused, so use a new OUT for a new experiment.
# OUT/summary.csv holds the table; OUT/learning_curves.png and OUT/dice_vs_effort.png the
# figures; OUT/config.json everything needed to rerun it.
set -euo pipefail
cd "$(dirname "$0")/.."

variant=${1:-cpu}
case "$variant" in
  cpu)
    out=${2:-runs/synthetic_cpu}
    # 64 images (51 training pool, 13 test) letter-boxed to 128^2, 3 images per round from
    # 10 % to 50 % labelled. One torch thread: on two shared cores two spinning OpenMP threads
    # per process run several times slower.
    alunet experiment --data sample --sample-n 64 --sample-seed 0 \
      --strategies random entropy bald --diversity none --seeds 5 --k 3 \
      --initial-fraction 0.1 --test-fraction 0.2 --until-fraction 0.5 \
      --passes 8 --preset cpu --epochs 40 --patience 10 --threads 1 --out "$out"
    ;;
  gpu)
    out=${2:-runs/synthetic_gpu}
    # Closer to the paper's setting: the full-size model at 256^2, a bigger pool, all five
    # strategies, 5 seeds (Wilcoxon needs >= 6 seeds: add --seeds 8 if the budget allows).
    alunet experiment --data sample --sample-n 300 --sample-seed 0 \
      --strategies random entropy bald kl js --diversity none --seeds 5 --k 8 \
      --initial-fraction 0.1 --test-fraction 0.2 --until-fraction 0.5 \
      --passes 20 --preset gpu --epochs 60 --patience 10 --device cuda --out "$out"
    ;;
  *)
    echo "usage: $0 cpu|gpu [OUT]" >&2
    exit 2
    ;;
esac

if [ "${PUBLISH:-0}" = "1" ]; then
  cp "$out/learning_curves.png" docs/learning_curves.png
  echo "copied $out/learning_curves.png to docs/"
fi
