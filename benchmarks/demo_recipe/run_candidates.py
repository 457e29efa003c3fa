"""Train the demo-recipe candidates of preregistration.md as one CPU ensemble.

Usage (one torch thread, niced; the machine is shared)::

    OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python benchmarks/demo_recipe/run_candidates.py --out runs/F/demo_cand

Writes OUT/member_00 ... (run folders) and OUT/ensemble.json; resumes if interrupted.
"""

from __future__ import annotations

import argparse
import time

import torch

from htsr_diag.train import PRESETS, train_ensemble

#: (id, lr, seed) in the order of preregistration.md.
CANDIDATES = [("C1", 1e-2, 0), ("C1", 1e-2, 1), ("C1", 1e-2, 2),
              ("C2", 2e-2, 0), ("C2", 2e-2, 1), ("C2", 2e-2, 2),
              ("C3", 3e-2, 0)]
STEPS = 50_000


def configs(steps: int = STEPS):
    return [PRESETS["fast"].replace(preset="custom", lr=lr, seed=seed, steps=steps, device="cpu")
            for _, lr, seed in CANDIDATES]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=STEPS)
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0, c0 = time.perf_counter(), time.process_time()
    train_ensemble(configs(args.steps), args.out, progress=False)
    print(f"wall {time.perf_counter() - t0:.0f} s, cpu {time.process_time() - c0:.0f} s")


if __name__ == "__main__":
    main()
