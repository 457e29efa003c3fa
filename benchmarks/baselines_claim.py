"""The study's baselines claim, tested: can the four baselines tell grokking from anti-grokking?

Prakash & Martin (arXiv 2506.04434, section 5 / Figure 4; ../shared/REFERENCES.md section 1)
claim that activation sparsity, absolute weight entropy, approximate circuit complexity and the
l2 norm track the pre-grokking -> grokking transition but do not distinguish grokking from
anti-grokking, while the HTSR metrics (layer alpha, correlation traps) do.

For every run folder given (MNIST runs of the bundled trainer), every checkpoint is analysed with
the report's own pipeline (``analyze_checkpoints(run, inputs=training_inputs(run), rng=seed)``:
alpha, centred traps and the four baselines) and labelled by ``phases_from_accuracy`` (the
accuracy curves, the reference). Then:

- per phase: each metric's median over the phase's checkpoints within a run, then the mean and
  range over runs;
- grokking vs anti-grokking: each metric's AUC (``scipy.stats.mannwhitneyu`` U / (n_grok n_anti)
  over all checkpoints of all runs pooled: the probability that an anti-grokking checkpoint has the
  larger value; 0.5 = no separation, 0 or 1 = perfect), with a 95% percentile bootstrap interval
  over runs (runs resampled with replacement, 2,000 draws, seed 0). ``log10(step + 1)`` is listed
  as a control: anti-grokking checkpoints are always later than grokking ones within a run, so a
  metric that only grows with time separates them as well as the step does.

Usage (one torch thread; trajectories are cached as JSON in --cache)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/baselines_claim.py RUN [RUN ...] \\
        [--cache runs/F/claim_cache] [--out benchmarks/results/baselines_claim]

Writes OUT.md (the tables) and OUT.json (every number).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

PHASES = ("pre-grokking", "grokking", "anti-grokking")
BASELINES = ("activation_sparsity", "weight_entropy", "circuit_complexity", "l2_norm")
HTSR = ("alpha_mean", "alpha_fc1", "traps_total", "traps_fc1")
CONTROL = ("log_step",)


def load(run: Path, cache: Path):
    """The run's trajectory with baselines, shuffles seeded by the run's seed (as ``htsr-diag demo``
    does); cached as JSON in ``cache``."""
    from htsr_diag import Trajectory, analyze_checkpoints
    from htsr_diag.report import training_inputs

    rng = int(json.loads((run / "config.json").read_text())["seed"])
    cache.mkdir(parents=True, exist_ok=True)
    key = cache / (run.resolve().as_posix().strip("/").replace("/", "__") + f"__rng{rng}.json")
    if key.is_file():
        return Trajectory.from_json(key)
    traj = analyze_checkpoints(run, inputs=training_inputs(run), rng=rng)
    traj.to_json(key)
    return traj


def metrics(traj) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(accuracy labels, {metric: values per checkpoint}) of a Trajectory."""
    layers = [n for n in traj.layer_names if np.nanmax(traj.feature("min_dim", n)) >= 50]
    vals = {k: np.asarray(traj.baselines[k], float) for k in BASELINES if k in traj.baselines}
    vals.setdefault("l2_norm", np.asarray(traj.metrics["l2_norm"], float))
    return _finish(np.asarray(traj.steps), np.asarray(traj.metrics["train_acc"], float),
                   np.asarray(traj.metrics["test_acc"], float), vals,
                   {n: np.asarray(traj.feature("alpha", n), float) for n in layers},
                   {n: np.asarray(traj.feature("n_traps", n), float) for n in layers})


def metrics_csv(path: Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The same from a committed per-run trajectory table (benchmarks/phase_eval/results/trajectories/
    NAME.csv: alpha, traps, accuracies and the l2 norm per checkpoint; no other baseline)."""
    import csv

    rows = list(csv.DictReader(path.open()))
    steps = np.array(sorted({int(r["step"]) for r in rows}))
    pos = {s: i for i, s in enumerate(steps)}
    layers = [n for n in dict.fromkeys(r["name"] for r in rows)
              if min(int(next(r for r in rows if r["name"] == n)["N"]),
                     int(next(r for r in rows if r["name"] == n)["M"])) >= 50]
    per = {k: np.full(steps.size, np.nan) for k in ("train_acc", "test_acc", "l2_norm")}
    alpha = {n: np.full(steps.size, np.nan) for n in layers}
    traps = {n: np.full(steps.size, np.nan) for n in layers}
    for r in rows:
        i = pos[int(r["step"])]
        for k in per:
            per[k][i] = float(r[k])
        if r["name"] in alpha:
            alpha[r["name"]][i] = float(r["alpha"]) if r["alpha"] else np.nan
            traps[r["name"]][i] = float(r["n_traps"]) if r["n_traps"] else np.nan
    return _finish(steps, per["train_acc"], per["test_acc"], {"l2_norm": per["l2_norm"]}, alpha, traps)


def _finish(steps, tr, te, vals, alpha, traps):
    from htsr_diag.phases import phases_from_accuracy

    labels = phases_from_accuracy(steps, np.clip(tr, 0, 1), np.clip(te, 0, 1))
    first = next(iter(alpha))
    vals["alpha_mean"] = np.nanmean(np.vstack(list(alpha.values())), axis=0)
    vals["alpha_fc1"] = alpha[first]
    vals["traps_total"] = np.nansum(np.vstack(list(traps.values())), axis=0)
    vals["traps_fc1"] = traps[first]
    vals["log_step"] = np.log10(steps + 1.0)
    for k in BASELINES:
        vals.setdefault(k, np.full(steps.size, np.nan))
    return np.asarray(labels, dtype=str), vals


def auc(anti: np.ndarray, grok: np.ndarray) -> float:
    from scipy.stats import mannwhitneyu

    anti, grok = anti[np.isfinite(anti)], grok[np.isfinite(grok)]
    if not anti.size or not grok.size:
        return float("nan")
    return float(mannwhitneyu(anti, grok, alternative="two-sided").statistic / (anti.size * grok.size))


def pooled(runs: list[tuple[np.ndarray, dict]], name: str, idx) -> tuple[np.ndarray, np.ndarray]:
    a = [runs[i][1][name][runs[i][0] == "anti-grokking"] for i in idx]
    g = [runs[i][1][name][runs[i][0] == "grokking"] for i in idx]
    return (np.concatenate(a), np.concatenate(g)) if idx else (np.empty(0), np.empty(0))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--cache", type=Path, default=Path("runs/F/claim_cache"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/baselines_claim"))
    ap.add_argument("--boot", type=int, default=2000)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    names, runs = [], []
    for run in args.runs:
        labels, vals = metrics_csv(run) if run.suffix == ".csv" else metrics(load(run, args.cache))
        counts = {p: int((labels == p).sum()) for p in PHASES}
        print(f"{run}: {counts}", file=sys.stderr)
        names.append(str(run))
        runs.append((labels, vals))
    keys = BASELINES + HTSR + CONTROL
    both = [i for i, (lab, _) in enumerate(runs) if (lab == "grokking").any() and (lab == "anti-grokking").any()]
    if not both:
        raise SystemExit("no run has both grokking and anti-grokking checkpoints (by the accuracy labels): "
                         "nothing to separate; pass runs that collapse")
    rng = np.random.default_rng(0)
    result: dict = {"runs": names, "runs_with_both": [names[i] for i in both], "per_phase": {}, "auc": {}}
    for k in keys:
        per = {}
        for p in PHASES:
            meds = [float(np.nanmedian(v[k][lab == p])) for lab, v in runs
                    if (lab == p).any() and np.isfinite(v[k][lab == p]).any()]
            per[p] = {"mean": float(np.mean(meds)) if meds else None,
                      "min": float(np.min(meds)) if meds else None,
                      "max": float(np.max(meds)) if meds else None, "n_runs": len(meds)}
        result["per_phase"][k] = per
        has = [i for i in both if np.isfinite(runs[i][1][k]).any()]  # runs that carry this metric
        a, g = pooled(runs, k, has)
        point = auc(a, g)
        boots = []
        for _ in range(args.boot if has else 0):
            pick = rng.integers(0, len(has), len(has))
            boots.append(auc(*pooled(runs, k, [has[j] for j in pick])))
        lo, hi = np.nanpercentile(boots, [2.5, 97.5]) if boots else (np.nan, np.nan)
        within = [auc(v[k][lab == "anti-grokking"], v[k][lab == "grokking"]) for lab, v in (runs[i] for i in has)]
        result["auc"][k] = {"auc": point, "lo": float(lo), "hi": float(hi), "n_runs": len(has),
                            "n_anti": int(np.isfinite(a).sum()), "n_grok": int(np.isfinite(g).sum()),
                            "within_run_mean": float(np.nanmean(within)) if within else None}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    fmt = lambda x: "n/a" if x is None or not np.isfinite(x) else f"{x:.3g}"  # noqa: E731
    md = ["| metric | pre-grokking | grokking | anti-grokking | AUC anti vs grok [95% CI over runs] | "
          "runs | within-run AUC (mean) |", "|---|---|---|---|---|---|---|"]
    for k in keys:
        per, au = result["per_phase"][k], result["auc"][k]
        if not au["n_runs"]:
            continue  # e.g. the three activation/weight baselines of the committed CSV tables
        cells = [f"{fmt(per[p]['mean'])} ({fmt(per[p]['min'])}-{fmt(per[p]['max'])})" for p in PHASES]
        md.append(f"| {k} | " + " | ".join(cells) + f" | {fmt(au['auc'])} [{fmt(au['lo'])}, {fmt(au['hi'])}] | "
                  f"{au['n_runs']} | {fmt(au['within_run_mean'])} |")
    md += ["", f"{len(names)} runs, {len(both)} with both grokking and anti-grokking checkpoints "
               f"(phase cells: mean over runs of the per-run median, range in brackets; l2 norm and the HTSR "
               f"metrics pool {result['auc']['l2_norm']['n_grok']} grokking and "
               f"{result['auc']['l2_norm']['n_anti']} anti-grokking checkpoints)."]
    args.out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
