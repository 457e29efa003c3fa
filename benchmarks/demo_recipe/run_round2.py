"""Rounds 2-3 of preregistration.md: `fast` with batch 50 for 200,000 steps (C4; --batch 25 --steps 150000: C5;
--steps 150000 --per-class 50 / 25: C6 / C7, round 4).

    OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python benchmarks/demo_recipe/run_round2.py --seeds 0 --out runs/F/c4_s0
    OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python benchmarks/demo_recipe/run_round2.py --seeds 1,2 --out runs/F/c4_s12
"""

from __future__ import annotations

import argparse
import time

import torch

from htsr_diag.train import PRESETS, train, train_ensemble


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--steps", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--per-class", type=int, default=100)
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfgs = [PRESETS["fast"].replace(preset="custom", batch_size=args.batch, n_train_per_class=args.per_class, steps=args.steps, seed=int(s), device="cpu")
            for s in args.seeds.split(",")]
    t0, c0 = time.perf_counter(), time.process_time()
    if len(cfgs) == 1:
        train(cfgs[0], args.out, progress=False)
    else:
        train_ensemble(cfgs, args.out, progress=False)
    print(f"wall {time.perf_counter() - t0:.0f} s, cpu {time.process_time() - c0:.0f} s")


if __name__ == "__main__":
    main()
