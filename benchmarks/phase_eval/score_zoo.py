"""Score PhaseClassifier rules on the task zoo (and the fast-MNIST corpus) from one manifest.

Usage::

    .venv/bin/python benchmarks/phase_eval/score_zoo.py [--manifest benchmarks/phase_eval/zoo_runs.json]
        [--roles zoo-A,zoo-B] [--rules default] [--mnist-corpus] [--out results/zoo_score.md]

Each run of the manifest is a run folder written by ``htsr-diag train`` (its command is in the
manifest). It is analysed as a user would (``analyze_checkpoints(DIR, rng=0)``: centred traps,
the library's defaults), with the training accuracy from ``metrics.jsonl`` given to the
classifier (as ``predict(traj)`` reads it from the trajectory). ``--mnist-corpus`` adds the 88
committed fast-MNIST trajectories of ``results/trajectories/*.csv`` (score.py's runs), read
back into feature tables (family ``mnist-fast``; every one of them was seen while the rules
were designed, so none is fresh).

Scoring (issue #12; written before any zoo run was read, see ``zoo_preregistration.md``):

- ``agreement``: the fraction of checkpoints whose causal label equals
  ``phases_from_accuracy`` (defaults: the 5-point rule);
- ``D``: the largest fall of the test accuracy below its peak, in points, at a later
  checkpoint whose training accuracy is still >= 0.99; ``deadline``: the first such
  checkpoint 5 or more points below the peak;
- ``D >= 8``: a collapse; it is *flagged in time* when the first anti-grokking label is at or
  before the deadline. ``D < 3``: any anti-grokking label is a *false alarm*.
  ``3 <= D < 8``: indifferent (reported, neither required nor penalised);
- ``grok labels``: checkpoints labelled grokking; on a label-noise-1.0 run any is a failure;
- every number is computed twice: on all checkpoints (20 per decade) and on a sparse subset
  (the checkpoint nearest each of 8 log-spaced steps per decade, plus the first and last),
  the reference labels recomputed from the sparse accuracy curve.

Writes ``results/zoo_score.md`` and ``results/zoo_score.csv``; caches analysed trajectories
under ``runs/phase_cache``.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))  # rulesets.py
#: Per-checkpoint layer features the classifier reads, and the trajectory-table column of each.
LAYER_COLUMNS = {"layer_alpha": "alpha", "layer_n_traps": "n_traps", "layer_norm": "frobenius_norm",
                 "layer_stable_rank": "stable_rank"}
MIN_LAYER_DIM = 50   # PhaseClassifier's default min_layer_dim


# ----------------------------------------------------------------------------- runs -> feature tables
def table_from_trajectory(traj) -> dict:
    """The classifier's feature mapping of a Trajectory (layers with min dim >= 50), plus accuracies."""
    names = [n for n in traj.layer_names
             if np.nanmax(traj.feature("min_dim", n)) >= MIN_LAYER_DIM]
    out = {key: np.vstack([traj.feature(col, n) for n in names]) for key, col in LAYER_COLUMNS.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out["alpha"] = np.nanmean(out["layer_alpha"], axis=0)
    out["n_traps"] = np.nansum(out["layer_n_traps"], axis=0)
    out["step"] = traj.steps.astype(np.float64)
    out["train_acc"] = np.asarray(traj.metrics["train_acc"], dtype=np.float64)
    out["test_acc"] = np.asarray(traj.metrics["test_acc"], dtype=np.float64)
    out["layers"] = names
    return out


def table_from_csv(path: Path) -> dict:
    """The same mapping from a committed per-layer trajectory CSV (score.py's tables)."""
    import pandas as pd

    df = pd.read_csv(path)
    df = df[np.minimum(df["N"], df["M"]) >= MIN_LAYER_DIM]
    steps = np.sort(df["step"].unique())
    names = list(dict.fromkeys(df["name"]))
    out = {}
    for key, col in LAYER_COLUMNS.items():
        piv = df.pivot(index="step", columns="name", values=col).reindex(index=steps, columns=names)
        out[key] = piv.to_numpy(dtype=np.float64).T
    first = df.groupby("step").first().reindex(steps)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out["alpha"] = np.nanmean(out["layer_alpha"], axis=0)
    out["n_traps"] = np.nansum(out["layer_n_traps"], axis=0)
    out["step"] = steps.astype(np.float64)
    out["train_acc"] = first["train_acc"].to_numpy(dtype=np.float64)
    out["test_acc"] = first["test_acc"].to_numpy(dtype=np.float64)
    out["layers"] = names
    return out


def subset(table: dict, idx: np.ndarray) -> dict:
    return {k: (v if k == "layers" else np.asarray(v)[..., idx]) for k, v in table.items()}


def sparse_index(steps: np.ndarray, per_decade: int = 8) -> np.ndarray:
    """Indices of the checkpoints nearest to 8 log-spaced steps per decade, plus the first and last."""
    pos = steps[steps > 0]
    if pos.size == 0:
        return np.arange(steps.size)
    lo, hi = np.log10(pos.min()), np.log10(steps.max())
    grid = 10.0 ** (np.arange(np.floor(lo * per_decade), np.ceil(hi * per_decade) + 1) / per_decade)
    keep = {0, steps.size - 1}
    logs = np.log10(np.where(steps > 0, steps, np.nan))
    for g in grid:
        keep.add(int(np.nanargmin(np.abs(logs - np.log10(g)))))
    return np.array(sorted(keep))


# ----------------------------------------------------------------------------- scoring
def fall(steps: np.ndarray, train_acc: np.ndarray, test_acc: np.ndarray, train_threshold: float = 0.99):
    """(D in points, deadline step or None): the largest fall below the test peak while fitted."""
    i_peak = int(np.nanargmax(test_acc))
    later = np.arange(i_peak + 1, steps.size)
    later = later[train_acc[later] >= train_threshold]
    if later.size == 0:
        return 0.0, None
    falls = test_acc[i_peak] - test_acc[later]
    D = float(max(0.0, falls.max()) * 100)
    hit = later[falls >= 0.05 - 1e-12]
    return D, (int(steps[hit[0]]) if hit.size else None)


def score_one(clf, table: dict) -> dict:
    from htsr_diag import phase_agreement, phases_from_accuracy
    from htsr_diag.phases import ANTI, GROK

    feats = {k: v for k, v in table.items() if k not in ("layers", "test_acc")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pred = np.asarray(clf.predict(feats))
    truth = phases_from_accuracy(table["step"], table["train_acc"], table["test_acc"])
    steps = table["step"].astype(np.int64)
    anti = np.flatnonzero(pred == ANTI)
    flag = int(steps[anti[0]]) if anti.size else None
    D, deadline = fall(steps, table["train_acc"], table["test_acc"])
    out = {"n": int(steps.size), "agreement": round(float(phase_agreement(pred, truth)), 4),
           "D": round(D, 2), "deadline": deadline, "flag": flag,
           "grok_labels": int(np.sum(pred == GROK)),
           "peak": round(float(np.nanmax(table["test_acc"])), 4), "final": round(float(table["test_acc"][-1]), 4),
           "predicted": "/".join(str(int(np.sum(pred == p))) for p in ("pre-grokking", "grokking", "anti-grokking")),
           "reference": "/".join(str(int(np.sum(truth == p))) for p in ("pre-grokking", "grokking", "anti-grokking"))}
    out["in_time"] = (flag is not None and deadline is not None and flag <= deadline) if D >= 8 else None
    out["false_alarm"] = (flag is not None) if D < 3 else None
    return out


def classifiers(names: list[str]) -> dict:
    from htsr_diag import PhaseClassifier

    from rulesets import RULESETS, classifier

    # "default": the library's default (v6 at the zoo pre-registration; v7 since
    # zoo_candidate_preregistration.md); every version of rulesets.py by its name
    known = ["default", *RULESETS]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"--rules: unknown rule(s) {unknown}; known: {known}")
    return {n: PhaseClassifier(causal=True) if n == "default" else classifier(n, causal=True) for n in names}


def load_run(entry: dict, cache_dir: Path):
    from htsr_diag import Trajectory, analyze_checkpoints

    run_dir = ROOT / entry["dir"]
    cache = cache_dir / f"{entry['name']}.json"
    n_ckpt = sum(1 for _ in (run_dir / "checkpoints").glob("*.safetensors"))
    if cache.is_file():
        traj = Trajectory.from_json(cache)
        if traj.source == str(run_dir) and len(traj) == n_ckpt:
            return traj
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traj = analyze_checkpoints(run_dir, rng=0)
    print(f"  {entry['name']}: analysed {len(traj)} checkpoints in {time.perf_counter() - t0:.0f} s", flush=True)
    cache_dir.mkdir(parents=True, exist_ok=True)
    traj.to_json(cache)
    return traj


def aggregate(rows: list[dict]) -> dict:
    agr = [r["agreement"] for r in rows]
    col = [r for r in rows if r["D"] >= 8]
    low = [r for r in rows if r["D"] < 3]
    mid = [r for r in rows if 3 <= r["D"] < 8]
    noise = [r for r in rows if float(r.get("label_noise") or 0) >= 1.0]
    return {"runs": len(rows), "mean_agreement": round(float(np.mean(agr)), 3) if agr else None,
            "min_agreement": round(float(np.min(agr)), 3) if agr else None,
            "collapses_in_time": f"{sum(bool(r['in_time']) for r in col)}/{len(col)}",
            "false_alarms": f"{sum(bool(r['false_alarm']) for r in low)}/{len(low)}",
            "alarms_3_8": f"{sum(r['flag'] is not None for r in mid)}/{len(mid)}",
            "noise_runs_with_grok": f"{sum(r['grok_labels'] > 0 for r in noise)}/{len(noise)}"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--manifest", default=str(HERE / "zoo_runs.json"))
    ap.add_argument("--roles", default=None, help="comma-separated roles to score (default: all)")
    ap.add_argument("--rules", default="default", help="comma-separated rule names (default: default)")
    ap.add_argument("--mnist-corpus", action="store_true", help="also score the committed fast-MNIST tables")
    ap.add_argument("--cache", default=str(ROOT / "runs" / "phase_cache"))
    ap.add_argument("--out", default=str(RESULTS / "zoo_score.md"))
    args = ap.parse_args(argv)

    manifest = json.loads(Path(args.manifest).read_text())
    roles = None if args.roles is None else set(args.roles.split(","))
    rules = classifiers(args.rules.split(","))
    tables = []
    for entry in manifest["runs"]:
        if roles is not None and entry["role"] not in roles:
            continue
        run_dir = ROOT / entry["dir"]
        cfg_path = run_dir / "config.json"
        if not cfg_path.is_file():
            print(f"  {entry['name']}: {run_dir} missing, skipped", flush=True)
            continue
        cfg = json.loads(cfg_path.read_text())
        steps = cfg["steps"]
        entry = dict(entry, weight_decay=cfg.get("weight_decay"), label_noise=cfg.get("label_noise", 0.0),
                     lr=cfg.get("lr"), decoder_weight_decay=cfg.get("decoder_weight_decay"))
        if not (run_dir / "checkpoints" / f"step_{steps:09d}.safetensors").is_file():
            print(f"  {entry['name']}: still training (no final checkpoint), skipped", flush=True)
            continue
        tables.append((entry, table_from_trajectory(load_run(entry, Path(args.cache)))))
    if args.mnist_corpus:
        runs = {e["name"]: e for e in json.loads((HERE / "runs.json").read_text())["runs"]}
        for path in sorted((RESULTS / "trajectories").glob("*.csv")):
            e = runs.get(path.stem)
            if e is None:
                continue
            entry = {"name": path.stem, "family": "mnist-fast", "role": "corpus-seen", "seed": e["seed"],
                     "lr": e["lr"], "weight_decay": e["weight_decay"], "label_noise": 0.0}
            tables.append((entry, table_from_csv(path)))

    rows = []
    for entry, table in tables:
        for sparse in (False, True):
            t = subset(table, sparse_index(table["step"])) if sparse else table
            for rname, clf in rules.items():
                r = {"run": entry["name"], "family": entry["family"], "role": entry["role"],
                     "seed": entry.get("seed"), "lr": entry.get("lr"), "weight_decay": entry.get("weight_decay"),
                     "label_noise": entry.get("label_noise", 0.0), "rule": rname,
                     "checkpoints": "sparse" if sparse else "all"}
                r.update(score_one(clf, t))
                rows.append(r)
    if not rows:
        print("no finished runs to score", file=sys.stderr)
        return 1
    out_md = Path(args.out)
    with out_md.with_suffix(".csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)

    lines = ["# PhaseClassifier on the task zoo", "",
             f"Reproduce: `.venv/bin/python benchmarks/phase_eval/score_zoo.py {' '.join(argv or sys.argv[1:])}`".rstrip(),
             "", "D: largest fall below the test peak (points) while train_acc >= 0.99; deadline: first checkpoint "
             "5 points below the peak; flag: first anti-grokking label; counts are pre/grok/anti checkpoints.", "",
             "| run | family | role | wd | noise | ckpts | rule | reference | predicted | agreement | peak -> final | D | deadline | flag | in time (D>=8) | false alarm (D<3) | grok labels |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['run']} | {r['family']} | {r['role']} | {r['weight_decay']} | {r['label_noise']} | "
                     f"{r['checkpoints']} | {r['rule']} | {r['reference']} | {r['predicted']} | {r['agreement']:.3f} | "
                     f"{r['peak']:.3f} -> {r['final']:.3f} | {r['D']:.1f} | {r['deadline']} | {r['flag']} | "
                     f"{r['in_time']} | {r['false_alarm']} | {r['grok_labels']} |")
    lines += ["", "## Aggregates", "",
              "| group | ckpts | rule | runs | mean agreement | min agreement | D>=8 flagged in time | D<3 false alarms | alarms at 3<=D<8 | noise-1.0 runs with a grokking label |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    groups = {}
    for r in rows:
        groups.setdefault((r["family"], r["checkpoints"], r["rule"]), []).append(r)
        if r["family"] != "mnist-fast":
            groups.setdefault(("all zoo families", r["checkpoints"], r["rule"]), []).append(r)
    for (fam, ck, rn), sub in sorted(groups.items()):
        a = aggregate(sub)
        lines.append(f"| {fam} | {ck} | {rn} | {a['runs']} | {a['mean_agreement']} | {a['min_agreement']} | "
                     f"{a['collapses_in_time']} | {a['false_alarms']} | {a['alarms_3_8']} | {a['noise_runs_with_grok']} |")
    # detection rate against D
    lines += ["", "## Detection rate against D (all checkpoints)", "", "| rule | D bin | runs | alarmed |", "|---|---|---|---|"]
    for rn in rules:
        sub = [r for r in rows if r["rule"] == rn and r["checkpoints"] == "all"]
        for lo, hi in ((0, 3), (3, 5), (5, 8), (8, 15), (15, 101)):
            b = [r for r in sub if lo <= r["D"] < hi]
            lines.append(f"| {rn} | [{lo}, {hi}) | {len(b)} | {sum(r['flag'] is not None for r in b)} |")
    out_md.write_text("\n".join(lines) + "\n")
    print("\n".join(lines[-40:]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
