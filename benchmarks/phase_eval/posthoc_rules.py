"""Post-hoc grid over the anti-grokking rule on every analysed run (the search behind v3_preregistration.md).

Usage (after score.py has cached the trajectories under runs/phase_cache)::

    .venv/bin/python benchmarks/phase_eval/posthoc_rules.py

Every run scored here was looked at, so nothing this prints is a held-out result: it only
chose the v3 candidate, which was then judged on runs analysed afterwards (seeds 8-11).
Run on the 18 runs of roles tuning / development / held-out (seeds 0-7) as committed; with the
seed 8-11 runs cached too, it includes them.
"""
import itertools
import json
import sys
from pathlib import Path
import numpy as np
sys.path.insert(0, "benchmarks/phase_eval")
from score import first_drop_step
from htsr_diag import Trajectory, PhaseClassifier, phases_from_accuracy, phase_agreement
from htsr_diag.phases import ANTI
m = json.load(open("benchmarks/phase_eval/runs.json"))
m["runs"] = [e for e in m["runs"] if Path(f"runs/phase_cache/{e['name']}.json").is_file()]
runs = []
for e in m["runs"]:
    t = Trajectory.from_json(f"runs/phase_cache/{e['name']}.json")
    ref = phases_from_accuracy(t.steps, t.metrics["train_acc"], t.metrics["test_acc"])
    drop = first_drop_step(t.steps, t.metrics["test_acc"], t.metrics["train_acc"])
    runs.append((e["name"], t, ref, drop))
res = []
for rule, k, aa, nr in itertools.product(["both", "either", "traps", "alpha"], [1, 2, 3], [2.0, 2.1, 2.2, 2.3], [1.0, 1.25, None]):
    clf = PhaseClassifier(causal=True, onset="alpha", shrink_ratio=None, anti_rule=rule, min_traps=k,
                          alpha_anti=aa, norm_ratio=nr)
    ag, it, fa, late = [], 0, 0, []
    for name, t, ref, drop in runs:
        pred = clf.predict(t); ag.append(phase_agreement(pred, ref))
        fl = clf.transition_steps(t)[ANTI]
        if drop is None: fa += fl is not None
        else:
            ok = fl is not None and fl <= drop; it += ok
            if not ok: late.append(name)
    res.append((rule, k, aa, nr, np.mean(ag), np.min(ag), it, fa, late))
res.sort(key=lambda r: (-r[6] + r[7] * 2, -r[4]))
for r in res[:25]:
    print(r[0], r[1], r[2], r[3], f"agree {r[4]:.3f} min {r[5]:.3f} in time {r[6]} false {r[7]}", r[8])
print([r for r in res if (r[0], r[1], r[2], r[3]) == ("both", 1, 2.0, 1.0)])
print("----")
for key in [("either",1,2.0,1.0),("either",2,2.0,1.0),("either",1,2.0,1.25),("either",2,2.0,1.25),("alpha",1,2.0,1.0),("traps",2,2.0,1.0),("traps",1,2.0,1.0)]:
    print([ (r[0],r[1],r[2],r[3],round(r[4],3),r[6],r[7],r[8]) for r in res if (r[0], r[1], r[2], r[3]) == key])
