#!/usr/bin/env bash
# Extra fresh seeds for rule 3 of benchmarks/sweep/preregistration.md (addendum).
set -euo pipefail
root=${1:-runs/G}
py=${PY:-.venv/bin/python}
export OMP_NUM_THREADS=1
nice -n 10 $py -m htsr_diag.cli --threads 1 sweep --preset fast \
  --checkpoints-per-decade 10 \
  --grid lr=1e-3,3e-3,1e-2 --grid weight_decay=0,0.1,1 --seeds 2,3 --steps 3000 \
  --signature-steps 300 --early-fraction 0.1 --liu-threshold 0.8 --liu-gap 500 \
  --max-ensemble 6 --out "$root/sweep_mnist_extra"
nice -n 10 $py -m htsr_diag.cli --threads 1 sweep --preset modular \
  --set modulus=31 --set train_fraction=0.5 --checkpoints-per-decade 10 \
  --grid lr=1e-4:1e-2:3 --grid weight_decay=0,0.5,2,8 --seeds 2 --steps 1500 \
  --signature-steps 150 --early-fraction 0.1 --liu-threshold 0.9 --liu-gap 250 \
  --max-ensemble 6 --out "$root/sweep_modular_extra"
