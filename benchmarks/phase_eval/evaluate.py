"""Evaluate the PhaseClassifier against accuracy-drawn phases on tuning and held-out runs.

Usage (after ``make_runs.py``)::

    nice -n 5 .venv/bin/python benchmarks/phase_eval/evaluate.py --runs runs/phase_eval

Steps:

1. every run folder listed in ``split.json`` is analysed with
   :func:`htsr_diag.analyze_checkpoints` (seed 0); its per-checkpoint features (per-layer
   alpha, traps, KS statistic and p-value; mean alpha and total traps over FC1, FC2;
   train/test accuracy) are written to ``results/features/<run>.csv`` (cached: delete a file
   to recompute it);
2. the reference labels are :func:`htsr_diag.phases_from_accuracy` with its defaults;
3. classifiers: the default rules (no fitting) and the rules fitted on the *tuning runs
   only*, each offline and causal;
4. per run and classifier: agreement with the reference, the first checkpoint where test
   accuracy is 5 points below its peak, the first causal anti-grokking flag, and whether a
   collapse was reported where none happened. Written to ``results/summary.csv``,
   ``results/labels/<run>.csv`` and ``results/summary.md`` (the table in docs/phases.md).
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
LAYERS = ("fc1", "fc2")


FIELDS = ("alpha", "n_traps", "ks_statistic", "ks_pvalue")


def _features(run_dir: Path, cache: Path, max_step: int | None = None) -> dict[str, np.ndarray]:
    """Per-checkpoint features of a run, analysing only checkpoints not yet in the cache."""
    from htsr_diag import PhaseClassifier, analyze_checkpoints
    from htsr_diag.train import list_checkpoints, read_metrics

    rows: dict[int, dict[str, float]] = {}
    if cache.is_file():
        with cache.open() as f:
            for r in csv.DictReader(f):
                rows[int(float(r["step"]))] = {k: float(v) for k, v in r.items()}
    metrics = {int(m["step"]): m for m in read_metrics(run_dir)}
    todo = [(s, p) for s, p in list_checkpoints(run_dir)
            if s not in rows and s in metrics and (max_step is None or s <= max_step)]
    if todo:
        t0 = time.perf_counter()
        traj = analyze_checkpoints([p for _, p in todo], rng=0)
        table = PhaseClassifier().features(traj)
        for j, step in enumerate(traj.steps):
            row = {"step": float(step)}
            for k in ("train_acc", "test_acc", "train_loss", "test_loss", "l2_norm"):
                row[k] = float(metrics[int(step)].get(k, np.nan))
            row["alpha"] = float(table["alpha"][j])
            row["n_traps"] = float(table["n_traps"][j])
            for layer in LAYERS:
                for name in FIELDS:
                    row[f"{name}_{layer}"] = float(traj.feature(name, layer)[j])
            rows[int(step)] = row
        print(f"  {run_dir}: analysed {len(todo)} new checkpoints in {time.perf_counter() - t0:.0f} s", flush=True)
        cache.parent.mkdir(parents=True, exist_ok=True)
        keys = list(next(iter(rows.values())))
        with cache.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(keys)
            for step in sorted(rows):
                w.writerow([repr(rows[step][k]) for k in keys])
    steps = sorted(s for s in rows if max_step is None or s <= max_step)
    return {k: np.array([rows[s][k] for s in steps]) for k in rows[steps[0]]}


def _first_drop_step(steps, test_acc, drop=0.05):
    """First checkpoint after the peak with test accuracy >= drop below the peak (None if none)."""
    i_peak = int(np.argmax(test_acc))
    hit = np.flatnonzero(test_acc[i_peak + 1:] <= test_acc[i_peak] - drop)
    return None if hit.size == 0 else int(steps[i_peak + 1 + hit[0]])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default="runs/phase_eval")
    ap.add_argument("--features-only", action="store_true", help="only update the feature cache")
    ap.add_argument("--max-step", type=int, default=None,
                    help="use checkpoints up to this step only (the committed results: 7943)")
    args = ap.parse_args()
    from htsr_diag import PhaseClassifier, phase_agreement, phases_from_accuracy
    from htsr_diag.phases import ANTI, PHASES

    split = json.loads((HERE / "split.json").read_text())
    runs = []
    for entry in split["runs"]:
        run_dir = Path(args.runs) / entry["folder"]
        if not (run_dir / "checkpoints").is_dir():
            print(f"  missing {run_dir}: skipped", flush=True)
            continue
        feats = _features(run_dir, RESULTS / "features" / f"{entry['name']}.csv", args.max_step)
        truth = phases_from_accuracy(feats["step"], feats["train_acc"], feats["test_acc"])
        table = {k: feats[k] for k in ("alpha", "n_traps", "train_acc", "step")}
        runs.append((entry, feats, table, truth))
    if args.features_only:
        return

    tuning = [(t, y) for e, _, t, y in runs if e["role"] == "tuning"]
    classifiers = {
        "default": PhaseClassifier(),
        "default-causal": PhaseClassifier(causal=True),
        "fitted": PhaseClassifier().fit([t for t, _ in tuning], [y for _, y in tuning]),
        "fitted-causal": PhaseClassifier(causal=True).fit([t for t, _ in tuning], [y for _, y in tuning]),
    }
    rows = []
    (RESULTS / "labels").mkdir(parents=True, exist_ok=True)
    for entry, feats, table, truth in runs:
        steps = feats["step"].astype(int)
        drop_step = _first_drop_step(steps, feats["test_acc"])
        true_anti = ANTI in truth
        labels = {"step": steps, "train_acc": feats["train_acc"], "test_acc": feats["test_acc"],
                  "alpha": feats["alpha"], "n_traps": feats["n_traps"], "reference": truth}
        for cname, clf in classifiers.items():
            pred = clf.predict(table)
            labels[cname] = pred
            flag = clf.transition_steps(table)[ANTI]
            rows.append({
                "run": entry["name"], "role": entry["role"], "seed": entry["seed"], "lr": entry["lr"],
                "weight_decay": entry["weight_decay"], "classifier": cname,
                "n_checkpoints": len(steps), "last_step": int(steps[-1]),
                "reference_counts": "/".join(str(int(np.sum(truth == ph))) for ph in PHASES),
                "predicted_counts": "/".join(str(int(np.sum(pred == ph))) for ph in PHASES),
                "agreement": round(phase_agreement(pred, truth), 4),
                "reference_collapse": true_anti, "first_5pt_drop_step": drop_step,
                "anti_flag_step": flag,
                "flag_in_time": (None if drop_step is None else (flag is not None and flag <= drop_step)),
                "false_collapse": (not true_anti) and (ANTI in pred),
                "peak_test_acc": round(float(np.max(feats["test_acc"])), 4),
                "final_test_acc": round(float(feats["test_acc"][-1]), 4),
                "min_alpha": round(float(np.nanmin(feats["alpha"])), 3),
                "max_traps": int(np.nanmax(feats["n_traps"])),
            })
        with (RESULTS / "labels" / f"{entry['name']}.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(list(labels))
            for j in range(len(steps)):
                w.writerow([labels[k][j] if isinstance(labels[k][j], str) else repr(float(labels[k][j]))
                            if k not in ("step",) else int(labels[k][j]) for k in labels])
    with (RESULTS / "summary.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    _per_phase(runs)
    fitted = {k: v.thresholds_ for k, v in classifiers.items() if k.startswith("fitted")}
    (RESULTS / "fitted_thresholds.json").write_text(json.dumps(fitted, indent=2) + "\n")
    _markdown(rows, fitted)


def _per_phase(runs) -> None:
    """Alpha / traps / KS per reference phase, pooled over runs, for docs/reproduction.md."""
    from htsr_diag.phases import PHASES

    groups = {"weight decay 0": lambda e: e["weight_decay"] == 0,
              "weight decay 0.01": lambda e: e["weight_decay"] == 0.01,
              "weight decay 0.1": lambda e: e["weight_decay"] == 0.1}
    cols = [("alpha_fc1", "alpha FC1"), ("alpha_fc2", "alpha FC2"), ("alpha", "alpha mean FC1,FC2"),
            ("n_traps_fc1", "traps FC1"), ("n_traps_fc2", "traps FC2"), ("ks_statistic_fc1", "KS stat FC1"),
            ("ks_pvalue_fc1", "KS p FC1")]
    lines = ["## Measured per phase (mean +- std over checkpoints; phases from phases_from_accuracy)", ""]
    for gname, pred in groups.items():
        sel = [(f, y) for e, f, _, y in runs if pred(e)]
        if not sel:
            continue
        lines += [f"### {gname} ({len(sel)} runs)", "",
                  "| quantity | " + " | ".join(PHASES) + " |", "|---|---|---|---|"]
        for key, label in cols:
            cells = []
            for ph in PHASES:
                vals = np.concatenate([f[key][y == ph] for f, y in sel if key in f])
                vals = vals[np.isfinite(vals)]
                cells.append("n/a (0 checkpoints)" if vals.size == 0 else
                             f"{vals.mean():.3g} +- {vals.std():.2g} (n={vals.size})")
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    (RESULTS / "per_phase.md").write_text("\n".join(lines) + "\n")


def _markdown(rows, fitted) -> None:
    lines = ["## PhaseClassifier vs phases_from_accuracy (benchmarks/phase_eval)", "",
             f"Machine: {platform.processor() or platform.machine()}, Python {sys.version.split()[0]}. "
             "Reproduce: `.venv/bin/python benchmarks/phase_eval/make_runs.py` (stopped once every member "
             "had written checkpoint 7943), then "
             "`.venv/bin/python benchmarks/phase_eval/evaluate.py --max-step 7943`.", "",
             "Fitted thresholds (tuning runs only): " + json.dumps(fitted), "",
             "Counts are pre/grok/anti checkpoints (reference, then predicted).", "",
             "| run | role | seed | lr | wd | last step | classifier | ref counts | pred counts | agreement | collapse (ref) | first 5-pt drop | anti flag | in time | false collapse |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['run']} | {r['role']} | {r['seed']} | {r['lr']:g} | {r['weight_decay']:g} | "
                     f"{r['last_step']} | {r['classifier']} | {r['reference_counts']} | {r['predicted_counts']} | "
                     f"{r['agreement']:.3f} | {r['reference_collapse']} | "
                     f"{r['first_5pt_drop_step']} | {r['anti_flag_step']} | {r['flag_in_time']} | "
                     f"{r['false_collapse']} |")
    lines += ["", "Aggregate over held-out runs:", "",
              "| classifier | mean agreement | runs >= 0.90 | collapses flagged in time | false collapses |",
              "|---|---|---|---|---|"]
    for cname in dict.fromkeys(r["classifier"] for r in rows):
        held = [r for r in rows if r["classifier"] == cname and r["role"] == "held-out"]
        if not held:
            continue
        coll = [r for r in held if r["first_5pt_drop_step"] is not None]
        nocoll = [r for r in held if not r["reference_collapse"]]
        lines.append(f"| {cname} | {np.mean([r['agreement'] for r in held]):.3f} | "
                     f"{sum(r['agreement'] >= 0.9 for r in held)}/{len(held)} | "
                     f"{sum(bool(r['flag_in_time']) for r in coll)}/{len(coll)} | "
                     f"{sum(r['false_collapse'] for r in nocoll)}/{len(nocoll)} |")
    (RESULTS / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
