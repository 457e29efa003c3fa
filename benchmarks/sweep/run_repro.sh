#!/usr/bin/env bash
# The two grids of benchmarks/sweep/preregistration.md (CPU, one torch thread, one job at a time).
# Usage: bash benchmarks/sweep/run_repro.sh [modular|mnist] [OUT_ROOT (default runs/G)]
set -euo pipefail
which=${1:-all}
root=${2:-runs/G}
py=${PY:-.venv/bin/python}
export OMP_NUM_THREADS=1
if [[ $which == modular || $which == all ]]; then
  nice -n 10 $py -m htsr_diag.cli --threads 1 sweep --preset modular \
    --set modulus=31 --set train_fraction=0.5 --checkpoints-per-decade 10 \
    --grid lr=1e-4:1e-2:3 --grid weight_decay=0,0.5,2,8 --seeds 0,1 --steps 1500 \
    --signature-steps 150 --early-fraction 0.1 --liu-threshold 0.9 --liu-gap 250 \
    --max-ensemble 6 --out "$root/sweep_modular"
fi
if [[ $which == mnist || $which == all ]]; then
  nice -n 10 $py -m htsr_diag.cli --threads 1 sweep --preset fast \
    --checkpoints-per-decade 10 \
    --grid lr=1e-3,3e-3,1e-2 --grid weight_decay=0,0.1,1 --seeds 0,1 --steps 3000 \
    --signature-steps 300 --early-fraction 0.1 --liu-threshold 0.8 --liu-gap 500 \
    --max-ensemble 6 --out "$root/sweep_mnist"
fi
