"""Alpha, correlation traps and the KS test per reference phase, next to the study's tables.

Usage (after ``score.py``, which writes the trajectory tables)::

    .venv/bin/python benchmarks/phase_eval/per_phase.py

Reads ``results/trajectories/NAME.csv`` for every lr 5e-3 run of the manifest, labels each
checkpoint with ``phases_from_accuracy`` (defaults) and pools the checkpoints of each
(weight decay, phase) over runs: mean +- std with the checkpoint count n. Trap counts are of
the centred shuffled weights (``analyze_checkpoints``'s default). Writes
``results/per_phase.md`` (used by docs/reproduction.md).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

STUDY = {  # Prakash & Martin 2025, as quoted in ../shared/REFERENCES.md section 1 (weight decay 0 unless noted)
    ("alpha", "fc1"): ("5.0 +- 0.7", "3.6 +- 0.5", "0.9 +- 0.4"),
    ("alpha", "fc2"): ("2.9 +- 0.7", "2.3 +- 0.2", "1.3 +- 0.3"),
    ("alpha", "mean"): ("4.0 +- 0.6", "2.9 +- 0.2", "1.1 +- 0.3"),
    ("n_traps", "fc1"): ("0", "0", "7.5 +- 5.6"),
    ("n_traps", "fc2"): ("0", "0", "1 +- 0"),
    ("ks_statistic", "fc1"): ("0.0120", "0.0212", "0.3044"),
    ("ks_pvalue", "fc1"): ("~1.0", "~1.0", "1.9e-5"),
}


def _fmt(x: np.ndarray) -> str:
    x = x[np.isfinite(x)]
    if x.size == 0:
        return "-"
    if x.size == 1:
        return f"{x[0]:.3g} (n=1)"
    return f"{x.mean():.3g} +- {x.std(ddof=1):.2g} (n={x.size})"


def main() -> int:
    import pandas as pd

    from htsr_diag import phases_from_accuracy
    from htsr_diag.phases import PHASES

    manifest = json.loads((HERE / "runs.json").read_text())
    frames = []
    for entry in manifest["runs"]:
        path = RESULTS / "trajectories" / f"{entry['name']}.csv"
        if entry["lr"] != 0.005 or not path.is_file():
            continue
        d = pd.read_csv(path)
        d = d[d["name"].isin(["fc1", "fc2"])]
        m = d.groupby("step")[["train_acc", "test_acc"]].first()
        labels = dict(zip(m.index, phases_from_accuracy(m.index.values, m.train_acc.values, m.test_acc.values)))
        d = d.assign(phase=d["step"].map(labels), wd=entry["weight_decay"], run=entry["name"])
        frames.append(d)
    if not frames:
        print("no trajectory tables: run score.py first", file=sys.stderr)
        return 1
    d = pd.concat(frames)
    lines = ["# Alpha, traps and KS per reference phase (lr 5e-3 `fast`-preset runs, 100,000 steps)", "",
             "Reproduce: `.venv/bin/python benchmarks/phase_eval/score.py && .venv/bin/python "
             "benchmarks/phase_eval/per_phase.py`. Phases from `phases_from_accuracy` (defaults); values are "
             "mean +- std over the checkpoints of that phase pooled across runs (n = checkpoints). Traps are "
             "centred (`analyze_checkpoints` default). Study values: Prakash & Martin 2025 via "
             "../shared/REFERENCES.md (their phases are at ~1e5 / ~1e6 / ~1e7 steps of the `paper` preset).", ""]
    for wd, sub in d.groupby("wd"):
        runs = sorted(sub["run"].unique())
        lines += [f"## weight decay {wd} ({len(runs)} runs: {', '.join(runs)})", "",
                  "| quantity | layer | study pre | measured pre | study grok | measured grok | study anti | measured anti |",
                  "|---|---|---|---|---|---|---|---|"]
        for q in ("alpha", "n_traps", "ks_statistic", "ks_pvalue"):
            for layer in ("fc1", "fc2", "mean"):
                if layer == "mean" and q != "alpha":
                    continue
                if q.startswith("ks") and layer != "fc1":
                    continue
                vals = []
                for ph in PHASES:
                    p = sub[sub["phase"] == ph]
                    if layer == "mean":
                        x = p.groupby(["run", "step"])["alpha"].mean().to_numpy()
                    else:
                        x = p[p["name"] == layer][q].to_numpy(dtype=float)
                    vals.append(_fmt(x))
                study = STUDY.get((q, layer), ("", "", "")) if wd == 0 else ("", "", "")
                lines.append(f"| {q} | {layer} | {study[0]} | {vals[0]} | {study[1]} | {vals[1]} | {study[2]} | {vals[2]} |")
        lines.append("")
    (RESULTS / "per_phase.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
