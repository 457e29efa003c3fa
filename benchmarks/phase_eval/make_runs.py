"""Train the runs the PhaseClassifier is tuned and evaluated on (the written split).

Usage (from the repository root; ~CPU-heavy, run it niced in the background)::

    nice -n 5 .venv/bin/python benchmarks/phase_eval/make_runs.py --out runs/phase_eval

All runs are trained as one batched ensemble (``train_ensemble``), one member folder each
(``member_00`` ...; ``split.json`` maps the run names to them). Every run is the trainer's ``fast`` preset (same architecture, data, steps and checkpoint
schedule) with one of the seeds, learning rates and weight decays below. The split is fixed
here, before any evaluation, and written to ``benchmarks/phase_eval/split.json``:

- tuning runs: the only runs :meth:`PhaseClassifier.fit` sees;
- held-out runs: other seeds, other learning rates, and weight decays 0, 0.01 and 0.1
  (0.01 and 0.1 are expected not to collapse), never used for tuning.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# (name, role, seed, learning rate, weight decay). Fixed before any evaluation.
SPLIT = [
    ("tune_s0_wd0", "tuning", 0, 5e-3, 0.0),        # the fast preset itself
    ("tune_s0_wd001", "tuning", 0, 5e-3, 0.01),     # its weight-decay control
    ("held_s1_wd0", "held-out", 1, 5e-3, 0.0),
    ("held_s2_lr1e-2_wd0", "held-out", 2, 1e-2, 0.0),
    ("held_s3_lr2e-2_wd0", "held-out", 3, 2e-2, 0.0),
    ("held_s1_wd001", "held-out", 1, 5e-3, 0.01),
    ("held_s2_wd01", "held-out", 2, 5e-3, 0.1),
]
#: Checkpoints per decade: half the preset's 20, to keep the analysis of every checkpoint
#: of every run within the CPU budget.
PER_DECADE = 10


def configs():
    from htsr_diag.train import PRESETS

    base = PRESETS["fast"]
    out = []
    for name, role, seed, lr, wd in SPLIT:
        out.append((name, role, base.replace(seed=seed, lr=lr, weight_decay=wd,
                                             checkpoints_per_decade=PER_DECADE)))
    return base, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/phase_eval", help="where the run folders go (git-ignored)")
    ap.add_argument("--steps", type=int, default=None, help="override the steps (smoke tests only)")
    ap.add_argument("--progress", action="store_true", help="progress bar on stderr")
    args = ap.parse_args()
    from htsr_diag.train import train_ensemble

    base, runs = configs()
    if args.steps is not None:
        runs = [(n, r, c.replace(steps=args.steps)) for n, r, c in runs]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    split = {"base_preset": "fast", "base_config": base.to_dict(),
             "runs": [{"name": n, "role": r, "seed": c.seed, "lr": c.lr, "weight_decay": c.weight_decay,
                       "steps": c.steps, "folder": f"member_{i:02d}"} for i, (n, r, c) in enumerate(runs)]}
    if args.steps is None:
        (HERE / "split.json").write_text(json.dumps(split, indent=2) + "\n")
    t0 = time.perf_counter()
    # one batched ensemble: all members share the architecture, data size and schedule
    train_ensemble([c for _, _, c in runs], out, progress=args.progress)
    print(f"{len(runs)} runs trained in {time.perf_counter() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
