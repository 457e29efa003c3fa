"""Post-hoc check of one idea for the unstable onset base: cap each layer's alpha before averaging.

Usage (after score.py has cached the trajectories under runs/phase_cache)::

    .venv/bin/python benchmarks/phase_eval/posthoc_onset.py

Scores the default classifier with the mean alpha replaced by the mean of min(layer alpha, cap),
on every run of the manifest (all of them seen, so nothing here is a held-out result). Written
after held3_s18 / held4_s23 showed pre-grokking fits of alpha 11-29 moving the onset base.
"""
import json
import warnings
from pathlib import Path

import numpy as np

from htsr_diag import PhaseClassifier, Trajectory, phase_agreement, phases_from_accuracy

m = json.load(open(Path(__file__).resolve().parent / "runs.json"))
data = []
for e in m["runs"]:
    path = Path(f"runs/phase_cache/{e['name']}.json")
    if e["role"] in ("held-out-5", "held-out-6", "held-out-7", "held-out-8") or not path.is_file():
        continue  # seeds 0-23 only, the runs this was written on
    t = Trajectory.from_json(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = PhaseClassifier().features(t)
    data.append((table, phases_from_accuracy(t.steps, t.metrics["train_acc"], t.metrics["test_acc"])))
print(f"{len(data)} runs")
for cap in (None, 8.0, 6.0, 5.0):
    for ratio in (0.74, 0.78, 0.82, 0.86):
        ag = []
        for table, ref in data:
            t = dict(table)
            if cap is not None:
                t["alpha"] = np.nanmean(np.minimum(table["layer_alpha"], cap), axis=0)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ag.append(phase_agreement(PhaseClassifier(causal=True, onset="alpha", shrink_ratio=None,
                                                              grok_ratio=ratio).predict(t), ref))
        ag = np.array(ag)
        print(f"cap {cap} grok_ratio {ratio}: mean agreement {ag.mean():.3f} min {ag.min():.3f} "
              f"runs >= 0.90 {(ag >= 0.9).sum()}/{ag.size}")
