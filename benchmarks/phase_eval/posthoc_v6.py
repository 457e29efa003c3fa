"""Post-hoc comparison behind the v6 candidate (v6_preregistration.md): a norm onset added to
v5's stable-rank onset, for runs under weight decay.

Usage (after score.py has cached the trajectories under runs/phase_cache)::

    .venv/bin/python benchmarks/phase_eval/posthoc_v6.py > benchmarks/phase_eval/results/posthoc_v6.txt

Every run scored here (seeds 0-33, all roles up to held-out-6) has been looked at, so nothing
this prints is a held-out result: it only chooses a candidate, judged afterwards on the runs of
role held-out-7 (seeds 34-38), which this script skips (as it skips held-out-8, seeds 39-43).

v5 (the default) reads one onset series, the smaller layer stable rank. Under weight decay 0.01
the test accuracy starts rising right after the training set is fitted while the stable rank
has not moved yet (it falls 3-4 checkpoints later), so v5 labels grokking late there. What does
move is the Frobenius norm: weight decay shrinks every layer once the data term is satisfied
(the "weight norm falls into the Goldilocks zone" mechanism of Omnigrok, Liu et al. 2022).
Without weight decay the norms grow, so the norm onset never fires there and wd-0 labels are
unchanged by construction. The candidate: a fitted run is grokking once the stable-rank rule
holds *or* every analysed layer's norm is at most ``shrink_ratio`` x its norm when the training
set was first fitted (the median of that checkpoint and the two before it). The anti-grokking
rule is v4's/v5's throughout.
"""
import json
import warnings
from pathlib import Path

import numpy as np

from htsr_diag import PhaseClassifier, Trajectory, phase_agreement, phases_from_accuracy

HERE = Path(__file__).resolve().parent
SKIP = {"held-out-7", "held-out-8"}
runs = []
for e in json.loads((HERE / "runs.json").read_text())["runs"]:
    path = Path(f"runs/phase_cache/{e['name']}.json")
    if e["role"] in SKIP or not path.is_file():
        continue
    t = Trajectory.from_json(path)
    ref = phases_from_accuracy(t.steps, t.metrics["train_acc"], t.metrics["test_acc"])
    runs.append((e, t, ref))
print(f"{len(runs)} runs (seeds 0-33)\n")


def scores(clf):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.array([phase_agreement(clf.predict(t), ref) for _, t, ref in runs])


def line(label, ag):
    wds = np.array([e["weight_decay"] for e, _, _ in runs])
    parts = [f"{ag[wds == wd].mean():.3f} ({np.sum(ag[wds == wd] >= 0.9)}/{np.sum(wds == wd)})" for wd in (0.0, 0.01, 0.1)]
    print(f"| {label} | {ag.mean():.3f} | {ag.min():.3f} | {np.sum(ag >= 0.9)}/{ag.size} | " + " | ".join(parts) + " |")


print("| rule | mean agreement | min | runs >= 0.90 | wd 0 | wd 0.01 | wd 0.1 |")
print("|---|---|---|---|---|---|---|")
v5 = scores(PhaseClassifier(causal=True, shrink_ratio=None))
line("v5 (default: stable rank 0.85)", v5)
line("v4 (alpha 0.78)", scores(PhaseClassifier(causal=True, onset="alpha", shrink_ratio=None)))
by_ratio = {}
for ratio in (0.80, 0.82, 0.84, 0.85, 0.86, 0.88, 0.90, 0.92, 0.95):
    by_ratio[ratio] = scores(PhaseClassifier(causal=True, shrink_ratio=ratio))
    line(f"v5 + norm onset, shrink_ratio {ratio:.2f}", by_ratio[ratio])
line("alpha onset + norm onset 0.85", scores(PhaseClassifier(causal=True, onset="alpha", shrink_ratio=0.85)))

cand = by_ratio[0.85]
print(f"\nCandidate (shrink_ratio 0.85) against v5, per run: better on {np.sum(cand > v5 + 1e-9)}, "
      f"worse on {np.sum(cand < v5 - 1e-9)}, equal on {np.sum(np.isclose(cand, v5))}\n")
print("| run | wd | v5 | candidate |")
print("|---|---|---|---|")
for (e, _, _), a, b in zip(runs, v5, cand):
    if not np.isclose(a, b) or b < 0.9:
        print(f"| {e['name']} | {e['weight_decay']} | {a:.3f} | {b:.3f} |")
print("\nBy seed group (mean agreement, runs >= 0.90):\n")
for lo, hi in ((0, 2), (3, 7), (8, 11), (12, 19), (20, 23), (24, 28), (29, 33)):
    sel = np.array([lo <= e["seed"] <= hi for e, _, _ in runs])
    print(f"- seeds {lo}-{hi}: v5 {v5[sel].mean():.3f} ({np.sum(v5[sel] >= 0.9)}/{sel.sum()}), "
          f"candidate {cand[sel].mean():.3f} ({np.sum(cand[sel] >= 0.9)}/{sel.sum()})")
