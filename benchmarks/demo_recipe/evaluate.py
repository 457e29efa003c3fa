"""Score demo-recipe candidates by the criteria of preregistration.md.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/demo_recipe/evaluate.py RUN [RUN ...] [--table]

Per run folder: peak test accuracy, the largest fall below it while train accuracy >= 0.99
(collapse), train accuracy >= 0.99 from its first fit to the end, the first checkpoint 5 points
below the peak (``score.py::first_drop_step``), the alarm (first anti-grokking label of the causal
``PhaseClassifier()`` on ``analyze_checkpoints(run, inputs=..., rng=seed)``, as ``write_report``
dates it; trajectories cached in runs/F/claim_cache),
and PASS/FAIL of the three criteria. ``--table`` also prints the curve (step, train acc,
test acc, label from accuracy, causal label from the weights) in markdown.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "phase_eval"))
from score import first_drop_step  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from baselines_claim import load  # noqa: E402


def evaluate(run: Path, table: bool = False, cache: Path = Path("runs/F/claim_cache")) -> dict:
    from htsr_diag.phases import PhaseClassifier, phases_from_accuracy

    cfg = json.loads((run / "config.json").read_text())
    traj = load(run, cache)  # analyze_checkpoints(run, inputs=..., rng=seed), cached
    steps = np.asarray(traj.steps)
    tr = np.asarray(traj.metrics["train_acc"], float)
    te = np.asarray(traj.metrics["test_acc"], float)
    ip = int(np.argmax(te))
    after = slice(ip + 1, None)
    fitted_after = tr[after] >= 0.99
    low = te[after][fitted_after]
    collapse = float(te[ip] - low.min()) if low.size else 0.0
    fit = np.flatnonzero(tr >= 0.99)
    stays = bool(fit.size and (tr[fit[0]:] >= 0.99).all())
    drop5 = first_drop_step(steps, te, tr, drop=0.05)
    causal = PhaseClassifier(causal=True)
    alarm = causal.transition_steps(traj).get("anti-grokking")
    in_time = alarm is not None and drop5 is not None and alarm < drop5
    out = {"run": str(run), "lr": cfg["lr"], "seed": cfg["seed"], "steps": cfg["steps"],
           "peak_test": float(te[ip]), "peak_step": int(steps[ip]), "final_test": float(te[-1]),
           "collapse": collapse, "train_stays": stays, "drop5_step": drop5, "alarm_step": alarm,
           "test_at_alarm": None if alarm is None else float(te[steps == alarm][0]),
           "crit_collapse": collapse >= 0.15, "crit_train": stays, "crit_alarm": bool(in_time)}
    out["pass"] = out["crit_collapse"] and out["crit_train"] and out["crit_alarm"]
    if table:
        ref = phases_from_accuracy(steps, np.clip(tr, 0, 1), np.clip(te, 0, 1))
        pred = causal.predict(traj)
        rows = ["| step | train acc | test acc | label (accuracy) | label (weights, causal) | alarm |",
                "|---|---|---|---|---|---|"]
        for i, s in enumerate(steps):
            rows.append(f"| {int(s):,} | {tr[i]:.3f} | {te[i]:.3f} | {ref[i]} | {pred[i]} | "
                        f"{'**fires**' if alarm is not None and s == alarm else ''} |")
        out["table"] = "\n".join(rows)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--table", action="store_true")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    for run in args.runs:
        res = evaluate(run, args.table)
        table = res.pop("table", None)
        print(json.dumps(res))
        if table:
            print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
