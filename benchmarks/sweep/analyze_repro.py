"""The numbers of docs/reproduction.md (Liu / Notsawo sections) from a sweep's table.csv, computed
exactly as benchmarks/sweep/preregistration.md fixes them.

Usage::

    .venv/bin/python benchmarks/sweep/analyze_repro.py benchmarks/sweep/results/modular_table.csv \
        --name modular [--json OUT.json]

Prints a markdown summary: the phase grid (seed 0 / seed 1 per cell), the Goldilocks verdict,
Spearman's rho with its bootstrap interval, and the early predictors on the fresh seed.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from collections import Counter

import numpy as np
from scipy.stats import spearmanr

GENERALISING = ("comprehension", "grokking")
ABBR = {"comprehension": "C", "grokking": "G", "memorization": "M", "confusion": "X"}


def read(path: str) -> list[dict]:
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        for k in ("lr", "weight_decay", "final_test_acc", "final_train_acc", "activity", "alpha_end"):
            r[k] = float(r[k])
        r["seed"] = int(r["seed"])
    return rows


def cells(rows: list[dict]) -> tuple[list[float], list[float], dict]:
    lrs = sorted({r["lr"] for r in rows})
    wds = sorted({r["weight_decay"] for r in rows})
    by = {}
    for r in rows:
        by.setdefault((r["lr"], r["weight_decay"]), {})[r["seed"]] = r
    return lrs, wds, by


def cell_phase(c: dict) -> str:
    phases = {r["liu_phase"] for r in c.values()}
    return phases.pop() if len(phases) == 1 else "mixed"


def goldilocks(rows: list[dict]) -> tuple[str, list[str]]:
    """Rule 1 of the pre-registration."""
    lrs, wds, by = cells(rows)
    notes, shown, flanked_one = [], False, False
    any_gen = False
    for lr in lrs:
        seq = [cell_phase(by[(lr, wd)]) for wd in wds]
        notes.append(f"lr {lr:g}: " + " -> ".join(seq))
        gen = [i for i, p in enumerate(seq) if p in GENERALISING]
        if gen:
            any_gen = True
        for i in gen:
            mem_before = any(p == "memorization" for p in seq[:i])
            conf_after = any(p == "confusion" for p in seq[i + 1:])
            if mem_before and conf_after:
                shown = True
            left = any(p in ("memorization", "confusion") for p in seq[:i])
            right = any(p in ("memorization", "confusion") for p in seq[i + 1:])
            if left or right:
                flanked_one = True
    # also along lr at fixed weight decay (one side only counts as 'partly')
    for wd in wds:
        seq = [cell_phase(by[(lr, wd)]) for lr in lrs]
        for i, p in enumerate(seq):
            if p in GENERALISING and (any(q in ("memorization", "confusion") for q in seq[:i])
                                      or any(q in ("memorization", "confusion") for q in seq[i + 1:])):
                flanked_one = True
    verdict = "shown" if shown else "partly shown" if (any_gen and flanked_one) else "not shown"
    return verdict, notes


def bootstrap_rho(x: np.ndarray, y: np.ndarray, n: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    rho = float(spearmanr(x, y).statistic)
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(n):
        i = rng.integers(0, len(x), len(x))
        if np.ptp(x[i]) == 0 or np.ptp(y[i]) == 0:
            continue
        vals.append(spearmanr(x[i], y[i]).statistic)
    lo, hi = np.nanpercentile(vals, [2.5, 97.5])
    return rho, float(lo), float(hi)


def auc(score: np.ndarray, positive: np.ndarray) -> float:
    """Mann-Whitney AUC (ties count one half); NaN when one class is empty."""
    pos, neg = score[positive], score[~positive]
    if len(pos) == 0 or len(neg) == 0:
        return math.nan
    gt = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(gt / (len(pos) * len(neg)))


def balanced_accuracy(pred: np.ndarray, truth: np.ndarray) -> float:
    parts = [np.mean(pred[truth == c] == c) for c in (True, False) if np.any(truth == c)]
    return float(np.mean(parts)) if parts else math.nan


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("table")
    ap.add_argument("--name", default="sweep")
    ap.add_argument("--json", default=None)
    ap.add_argument("--fresh", default="1", help="comma-separated fresh seeds for rule 3 (default 1)")
    args = ap.parse_args(argv)
    rows = read(args.table)
    lrs, wds, by = cells(rows)
    out: dict = {"name": args.name, "n_runs": len(rows)}
    lines = [f"### {args.name}: {len(rows)} runs", "",
             "Liu phase per cell (seed 0 / seed 1; C comprehension, G grokking, M memorisation, X confusion), "
             "final test accuracy (seed 0 / seed 1):", "",
             "| lr \\ weight decay | " + " | ".join(f"{w:g}" for w in wds) + " |",
             "|---|" + "---|" * len(wds)]
    for lr in lrs:
        cellstr = []
        for wd in wds:
            c = by[(lr, wd)]
            ph = "/".join(ABBR[c[s]["liu_phase"]] for s in sorted(c))
            acc = "/".join(f"{c[s]['final_test_acc']:.2f}" for s in sorted(c))
            cellstr.append(f"{ph} ({acc})")
        lines.append(f"| {lr:g} | " + " | ".join(cellstr) + " |")
    verdict, notes = goldilocks(rows)
    out["goldilocks"] = verdict
    out["phase_rows"] = notes
    out["phase_counts"] = dict(Counter(r["liu_phase"] for r in rows))
    lines += ["", f"Goldilocks band (rule 1): **{verdict}**; cells with both seeds agreeing, by lr: "
              + "; ".join(notes), ""]
    act = np.array([r["activity"] for r in rows])
    acc = np.array([r["final_test_acc"] for r in rows])
    rho, lo, hi = bootstrap_rho(act, acc)
    agree = "agree" if (lo > 0 or hi < 0) else "disagree"
    out["spearman"] = {"rho": rho, "ci95": [lo, hi], "verdict": agree}
    lines.append(f"Notsawo (rule 2): Spearman rho(early activity, final test accuracy) = {rho:.3f}, "
                 f"95% bootstrap interval [{lo:.3f}, {hi:.3f}] over {len(rows)} runs: **{agree}**.")
    # rule 3
    truth = np.array([r["liu_phase"] in GENERALISING for r in rows])
    seed = np.array([r["seed"] for r in rows])
    early = np.array([r["weight_early"] for r in rows])
    pred_w = early == "grokking"
    fresh = [int(x) for x in args.fresh.split(",")]
    s0, s1 = seed == 0, np.isin(seed, fresh)
    a0 = auc(act[s0], truth[s0])
    direction = 1.0 if (math.isnan(a0) or a0 >= 0.5) else -1.0
    res3 = {
        "seed1_generalising": int(truth[s1].sum()), "seed1_runs": int(s1.sum()),
        "weight_balanced_accuracy_seed1": balanced_accuracy(pred_w[s1], truth[s1]),
        "weight_accuracy_seed1": float(np.mean(pred_w[s1] == truth[s1])) if s1.any() else math.nan,
        "signature_direction": "higher activity -> generalises" if direction > 0 else "lower activity -> generalises",
        "signature_auc_seed0": a0,
        "signature_auc_seed1": auc(direction * act[s1], truth[s1]),
        "weight_balanced_accuracy_both_seeds": balanced_accuracy(pred_w, truth),
        "signature_auc_both_seeds_same_direction": auc(direction * act, truth),
    }
    conf = Counter((e, r["liu_phase"]) for e, r, s in zip(early, rows, seed) if s in fresh)
    labels_e = sorted({e for e in early})
    phases = ["comprehension", "grokking", "memorization", "confusion"]
    res3["confusion_seed1"] = {e: {p: conf.get((e, p), 0) for p in phases} for e in labels_e}
    out["prediction"] = res3
    res3["fresh_seeds"] = fresh
    lines += ["", f"Early predictors on the fresh seed(s) {fresh} ({res3['seed1_runs']} runs, "
                  f"{res3['seed1_generalising']} generalise):", "",
              "| early weight-only label (step <= 10% of budget) | " + " | ".join(phases) + " |",
              "|---|" + "---|" * len(phases)]
    for e in labels_e:
        lines.append(f"| {e} | " + " | ".join(str(res3['confusion_seed1'][e][p]) for p in phases) + " |")
    def f(x):
        return "NaN" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"
    lines += ["",
              f"- weight-only verdict ('grokking' -> generalises): balanced accuracy {f(res3['weight_balanced_accuracy_seed1'])} "
              f"(accuracy {f(res3['weight_accuracy_seed1'])}) on the fresh seed(s); {f(res3['weight_balanced_accuracy_both_seeds'])} on all seeds",
              f"- loss signature (direction from seed 0: {res3['signature_direction']}, seed-0 AUC {f(a0)}): "
              f"AUC {f(res3['signature_auc_seed1'])} on the fresh seed(s); {f(res3['signature_auc_both_seeds_same_direction'])} on all seeds"]
    out["markdown"] = "\n".join(lines)
    print(out["markdown"])
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)
    return out


if __name__ == "__main__":
    main()
