"""Can the weights tell which weight-decay-0.01 runs cross the 5-point collapse line? (post hoc)

Usage (after score.py has cached the trajectories under runs/phase_cache)::

    .venv/bin/python benchmarks/phase_eval/posthoc_wd001.py > benchmarks/phase_eval/results/posthoc_wd001.txt

Every v4-v6 rule misses every wd-0.01 run whose test accuracy ends 5 points or more below its
peak ("collapses in time: 0/7" on fresh runs), because the norm gate holds the over-fitting
signature back whenever a layer's norm has not grown 1.5 x. This script asks whether any
weight-only feature could do better, on seeds 0-33 (held-out-7 and held-out-8, seeds 34-43, are skipped).

1. The size of the fall: for each run, the largest fall of the test accuracy below its peak at
   a checkpoint after the peak where the training set is still fitted (train_acc >= 0.99), by
   weight decay.
2. For the 23 wd-0.01 runs, each per-layer feature (alpha, trap count, stable rank over its
   value at fitting, norm over its initial norm) at fixed steps (25,119, 50,119, the last) is
   compared between the runs that cross the 5-point line and those that do not: the best
   single threshold's balanced accuracy *on these same runs* (an optimistic, in-sample upper
   bound on what a one-feature rule could do) and the Spearman correlation with the size of
   the fall.
"""
import json
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from htsr_diag import Trajectory

HERE = Path(__file__).resolve().parent
LAYERS = ("fc1", "fc2")
runs = []
for e in json.loads((HERE / "runs.json").read_text())["runs"]:
    path = Path(f"runs/phase_cache/{e['name']}.json")
    if e["role"] in ("held-out-7", "held-out-8") or not path.is_file():
        continue
    t = Trajectory.from_json(path)
    tr, te = np.asarray(t.metrics["train_acc"]), np.asarray(t.metrics["test_acc"])
    ip = int(np.argmax(te))
    after = np.arange(ip + 1, te.size)
    after = after[tr[after] >= 0.99]
    fall = 100 * (te[ip] - te[after].min()) if after.size else 0.0
    runs.append((e, t, fall))
print(f"{len(runs)} runs (seeds 0-33)\n")

print("## 1. Largest fall below the test peak while the training set stays fitted (points)\n")
print("| weight decay | runs | min | median | max | runs >= 5 points |")
print("|---|---|---|---|---|---|")
for wd in (0.0, 0.01, 0.1):
    f = np.array([fall for e, _, fall in runs if e["weight_decay"] == wd])
    print(f"| {wd:g} | {f.size} | {f.min():.1f} | {np.median(f):.1f} | {f.max():.1f} | {np.sum(f >= 5)} |")
wd1 = [(e, t, fall) for e, t, fall in runs if e["weight_decay"] == 0.01]
f = np.sort([fall for _, _, fall in wd1])
print(f"\nwd 0.01, every run's fall, sorted: {', '.join(f'{x:.1f}' for x in f)}")


def features(t):
    tr = np.asarray(t.metrics["train_acc"])
    fit = int(np.flatnonzero(tr >= 0.99)[0])
    out = {}
    for name in LAYERS:
        sr = t.feature("stable_rank", name)
        norm = t.feature("frobenius_norm", name)
        series = {"alpha": t.feature("alpha", name), "n_traps": t.feature("n_traps", name),
                  "stable_rank / at fitting": sr / np.median(sr[max(0, fit - 2): fit + 1]),
                  "norm / initial": norm / norm[0]}
        for at in (25119, 50119, None):
            i = -1 if at is None else int(np.searchsorted(t.steps, at))
            for key, x in series.items():
                out[f"{name} {key} @ {'last' if at is None else at}"] = float(x[i])
    return out


crossed = np.array([fall >= 5 for _, _, fall in wd1])
falls = np.array([fall for _, _, fall in wd1])
table = [features(t) for _, t, _ in wd1]
print(f"\n## 2. The {len(wd1)} wd-0.01 runs: {crossed.sum()} cross the 5-point line, {(~crossed).sum()} do not\n")
print("| feature | median, crossed | median, not | best in-sample balanced accuracy | Spearman with the fall (p) |")
print("|---|---|---|---|---|")
results = []
for key in table[0]:
    x = np.array([row[key] for row in table])
    best = 0.5
    for thr in np.unique(x):
        for pred in (x >= thr, x <= thr):
            best = max(best, 0.5 * (np.mean(pred[crossed]) + np.mean(~pred[~crossed])))
    rho, p = spearmanr(x, falls)
    results.append((best, key, np.median(x[crossed]), np.median(x[~crossed]), rho, p))
for best, key, mc, mn, rho, p in sorted(results, reverse=True):
    print(f"| {key} | {mc:.3g} | {mn:.3g} | {best:.2f} | {rho:+.2f} ({p:.3f}) |")
