"""Post-hoc comparison behind the v5 candidate (v5_preregistration.md): the grokking onset read
from the stable rank instead of the power-law alpha.

Usage (after score.py has cached the trajectories under runs/phase_cache)::

    .venv/bin/python benchmarks/phase_eval/posthoc_v5.py > benchmarks/phase_eval/results/posthoc_v5.txt

Every run scored here (seeds 0-23, all roles up to held-out-4) has been looked at, so nothing
this prints is a held-out result: it only chooses a candidate, judged afterwards on the runs of
role held-out-5 (seeds 24-28), which this script skips.

The anti-grokking rule is v4's throughout (anti rule "either", 2 traps, alpha 2.0, norm gate
1.5 x); only the onset evidence changes. A run is grokking once it is fitted and the onset
series is at most ``ratio`` times its value when the training set was first fitted (the
median of that checkpoint and the two before it), exactly as ``PhaseClassifier`` does for alpha.
Onset series: ``alpha`` (mean over FC1 and FC2; v4's rule), ``min_sr`` (the smaller stable rank
of the two layers), ``mean_sr`` (their mean).
"""
import json
import sys
import warnings
from pathlib import Path

import numpy as np

from htsr_diag import PhaseClassifier, Trajectory, phase_agreement, phases_from_accuracy
from htsr_diag.phases import PHASES, _fitted_mask, _onset_base

HERE = Path(__file__).resolve().parent
SKIP = {"held-out-5", "held-out-6", "held-out-7", "held-out-8"}  # seeds 24 and later
# v4, written out: only its anti-grokking evidence is used below
clf = PhaseClassifier(causal=True, onset="alpha", shrink_ratio=None, grok_ratio=0.78, anti_rule="either", min_traps=2,
                      norm_ratio=1.5)
runs = []
for e in json.loads((HERE / "runs.json").read_text())["runs"]:
    path = Path(f"runs/phase_cache/{e['name']}.json")
    if e["role"] in SKIP or not path.is_file():
        continue
    t = Trajectory.from_json(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = clf.features(t)
        _, anti = clf._evidence(table, clf._rules(), True, 0.99)
    layers = clf._trajectory_layers(t)
    sr = np.vstack([t.feature("stable_rank", name) for name in layers])
    ref = phases_from_accuracy(t.steps, t.metrics["train_acc"], t.metrics["test_acc"])
    series = {"alpha": table["alpha"], "min_sr": sr.min(axis=0), "mean_sr": sr.mean(axis=0)}
    runs.append((e["name"], t.steps, table, series, anti, ref))
print(f"{len(runs)} runs (seeds 0-23)\n")


def predict(table, series, anti, ratio):
    fitted = _fitted_mask(table["train_acc"], True, 0.99)
    with np.errstate(invalid="ignore"):
        grok = fitted & (series <= ratio * _onset_base(series, fitted))
    return np.asarray(PHASES)[clf._segment(grok, anti, 1, True)]


print("| onset | ratio | mean agreement | min | runs >= 0.90 |")
print("|---|---|---|---|---|")
for kind, ratios in (("alpha", (0.70, 0.74, 0.78, 0.82)), ("min_sr", (0.80, 0.85, 0.88, 0.90, 0.92)),
                     ("mean_sr", (0.80, 0.85, 0.88, 0.90, 0.92))):
    for ratio in ratios:
        ag = np.array([phase_agreement(predict(tb, s[kind], an, ratio), ref) for _, _, tb, s, an, ref in runs])
        print(f"| {kind} | {ratio:.2f} | {ag.mean():.3f} | {ag.min():.3f} | {np.sum(ag >= 0.9)}/{ag.size} |")

print("\nPer run: agreement and first grokking step, v4 (alpha 0.78) vs the candidate (min_sr 0.85)\n")
print("| run | reference grokking starts | v4 | candidate |")
print("|---|---|---|---|")
for name, steps, tb, s, an, ref in runs:
    cells = []
    for kind, ratio in (("alpha", 0.78), ("min_sr", 0.85)):
        pred = predict(tb, s[kind], an, ratio)
        g = np.flatnonzero(pred != PHASES[0])
        cells.append(f"{phase_agreement(pred, ref):.3f} (step {int(steps[g[0]]) if g.size else None})")
    g = np.flatnonzero(ref != PHASES[0])
    print(f"| {name} | {int(steps[g[0]]) if g.size else None} | {cells[0]} | {cells[1]} |")
