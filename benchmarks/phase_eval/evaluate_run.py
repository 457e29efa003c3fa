"""Score the classifiers of ``evaluate.py`` (default and fitted thresholds) on one more run folder.

Usage::

    .venv/bin/python benchmarks/phase_eval/evaluate_run.py RUN_DIR NAME

Uses the thresholds fitted by ``evaluate.py`` (``results/fitted_thresholds.json``), never
refits. Writes ``results/features/NAME.csv``, ``results/labels/NAME.csv`` and
``results/NAME.md``.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from evaluate import RESULTS, _features, _first_drop_step  # noqa: E402


def main() -> None:
    from htsr_diag import PhaseClassifier, phase_agreement, phases_from_accuracy
    from htsr_diag.phases import ANTI, PHASES

    run_dir, name = Path(sys.argv[1]), sys.argv[2]
    feats = _features(run_dir, RESULTS / "features" / f"{name}.csv")
    truth = phases_from_accuracy(feats["step"], feats["train_acc"], feats["test_acc"])
    table = {k: feats[k] for k in ("alpha", "n_traps", "train_acc", "step")}
    fitted = json.loads((RESULTS / "fitted_thresholds.json").read_text())
    classifiers = {"default": PhaseClassifier(), "default-causal": PhaseClassifier(causal=True)}
    for key, causal in (("fitted", False), ("fitted-causal", True)):
        th = fitted[key]
        clf = PhaseClassifier(causal=causal, **{k: th[k] for k in ("alpha_anti", "min_traps", "anti_rule",
                                                                     "patience")},
                              alpha_grok=max(th["alpha_grok"], th["alpha_anti"]))
        classifiers[key] = clf
    steps = feats["step"].astype(int)
    drop = _first_drop_step(steps, feats["test_acc"])
    lines = [f"## {name}: {run_dir} (last step {steps[-1]}, {len(steps)} checkpoints)", "",
             f"Reference counts pre/grok/anti: {'/'.join(str(int(np.sum(truth == p))) for p in PHASES)}; "
             f"first 5-point drop below the peak: step {drop}.", "",
             "| classifier | pred counts | agreement | anti flag step | in time |", "|---|---|---|---|---|"]
    labels = {"step": steps, "test_acc": feats["test_acc"], "alpha": feats["alpha"], "n_traps": feats["n_traps"],
              "reference": truth}
    for cname, clf in classifiers.items():
        pred = clf.predict(table)
        labels[cname] = pred
        flag = clf.transition_steps(table)[ANTI]
        lines.append(f"| {cname} | {'/'.join(str(int(np.sum(pred == p))) for p in PHASES)} | "
                     f"{phase_agreement(pred, truth):.3f} | {flag} | "
                     f"{None if drop is None else (flag is not None and flag <= drop)} |")
    with (RESULTS / "labels" / f"{name}.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(list(labels))
        for j in range(len(steps)):
            w.writerow([labels[k][j] for k in labels])
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
