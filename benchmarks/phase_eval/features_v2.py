"""Rich per-checkpoint, per-layer features of a trainer run folder, for the classifier study.

Usage::

    .venv/bin/python benchmarks/phase_eval/features_v2.py NAME=RUN_DIR [NAME=RUN_DIR ...]

Writes ``results/features_v2/NAME.csv`` (one row per checkpoint; cached: re-running only
analyses checkpoints not yet in the file). Columns: the run's metrics (train/test accuracy and
loss, l2 norm), and for each weight matrix (fc1, fc2, fc3) alpha, xmin, n_tail, lambda_max,
Frobenius norm, stable rank, the uncentred and centred trap counts with the largest shuffled
eigenvalue over the trap threshold, the centred KS statistic and p-value, and mean/std of W.
Test accuracy is stored for scoring only; no classifier reads it.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "features_v2"


def layer_features(W: np.ndarray, seed: int) -> dict[str, float]:
    from htsr_diag import layer_alpha
    from htsr_diag.traps import randomized_analysis

    fit = layer_alpha(W)
    s = np.linalg.svd(W.astype(np.float64), compute_uv=False)
    ev = s ** 2
    out = {"alpha": fit.alpha, "xmin": fit.xmin, "n_tail": getattr(fit, "n_tail", np.nan),
           "lambda_max": float(ev[0]), "frob": float(np.sqrt(ev.sum())),
           "stable_rank": float(ev.sum() / ev[0]), "w_mean_over_std": float(W.mean() / W.std())}
    for tag, center in (("raw", False), ("c", True)):
        tr, ks = randomized_analysis(W, rng=seed, center=center)
        out[f"traps_{tag}"] = float(tr.n_traps)
        out[f"top_over_thr_{tag}"] = float(tr.max_eigenvalue / tr.threshold)
        out[f"n_large_{tag}"] = float(tr.n_large_entries)
        out[f"ks_stat_{tag}"] = float(ks.statistic)
        out[f"ks_p_{tag}"] = float(ks.pvalue)
    return out


def run_features(name: str, run_dir: Path) -> Path:
    from safetensors.numpy import load_file

    from htsr_diag.train import list_checkpoints, read_metrics

    cache = OUT / f"{name}.csv"
    rows: dict[int, dict[str, float]] = {}
    if cache.is_file():
        with cache.open() as f:
            for r in csv.DictReader(f):
                rows[int(float(r["step"]))] = {k: float(v) for k, v in r.items()}
    metrics = {int(m["step"]): m for m in read_metrics(run_dir)}
    for step, path in list_checkpoints(run_dir):
        if step in rows or step not in metrics:
            continue
        sd = load_file(str(path))
        row = {"step": float(step)}
        for k in ("train_acc", "test_acc", "train_loss", "test_loss", "l2_norm"):
            row[k] = float(metrics[step].get(k, np.nan))
        for j, key in enumerate(sorted(k for k in sd if k.endswith("weight"))):
            layer = f"fc{j + 1}"
            for k, v in layer_features(np.asarray(sd[key], dtype=np.float64), seed=step).items():
                row[f"{k}_{layer}"] = v
        rows[step] = row
    OUT.mkdir(parents=True, exist_ok=True)
    keys = list(next(iter(rows.values())))
    with cache.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(keys)
        for s in sorted(rows):
            w.writerow([repr(rows[s][k]) for k in keys])
    return cache


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        name, run_dir = arg.split("=", 1)
        print(run_features(name, Path(run_dir)), flush=True)
