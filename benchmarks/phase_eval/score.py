"""Score the PhaseClassifier on full-length `fast`-preset runs: tuning runs vs held-out runs.

Usage::

    .venv/bin/python benchmarks/phase_eval/score.py [--manifest benchmarks/phase_eval/runs.json]

Every run in the manifest was trained with::

    htsr-diag --threads 1 train --preset fast --seed S --lr LR --weight-decay WD --out DIR

(100,000 steps, 20 checkpoints per decade: 91 checkpoints). Each run is analysed exactly as a
user would (``analyze_checkpoints(DIR, rng=0)``: centred traps, the library's defaults) and
labelled by these classifiers, all in causal mode (each label uses only the checkpoints up
to it; with patience 1 the offline labels are the same):

- ``default``: ``PhaseClassifier(causal=True)`` with its documented defaults (v6 when the
  committed results were made: grokking onset from the smaller layer stable rank at 0.85 x its
  value at fitting, or every layer's norm at 0.85 x its norm at fitting; anti rule "either", 2
  traps, norm gate 1.5 x; adopted by the rule written in ``v6_preregistration.md``; v7 since
  acdb68e);
- ``fitted-onset``: ``.fit(..., params=["grok_ratio"])`` on the runs whose role is ``tuning``
  (seed 0) only: the grokking-onset threshold calibrated, the anti-grokking rule as in theory;
- ``fitted-all``: ``.fit(...)`` of every threshold on the same tuning runs;
- ``v2``: an earlier default (anti rule "both", 1 trap), frozen at commit 360ae1e;
- ``v3``: anti rule "either", 2 traps, norm gate 1.0 x the initial norm (the default from
  ``v3_preregistration.md`` until v4 was adopted);
- ``v4``: v5 with the grokking onset read from the mean alpha (``onset="alpha"``, ratio 0.78),
  the default from ``v4_preregistration.md`` until v5 was adopted;
- ``v5``: the stable-rank onset alone (``shrink_ratio=None``), the default from
  ``v5_preregistration.md`` until v6 was adopted;
- ``v6``: v5 plus the norm onset (``shrink_ratio=0.85``: grokking also once every analysed
  layer's norm is <= 0.85 x its norm at fitting), the candidate of ``v6_preregistration.md``,
  written out (the same labels as ``default`` since v6 was adopted);
then applied unchanged to every run.

The reference is ``phases_from_accuracy`` with its defaults (it reads the test accuracy; no
classifier does). ``collapse`` is the first checkpoint whose test accuracy is 5 points below
its peak while the training accuracy is still >= 0.99 (``score.csv`` also lists the first
5-point drop ignoring the training accuracy); ``flag`` the first checkpoint labelled anti-grokking; ``in time`` means flag <=
collapse; a ``false collapse`` is a flag in a run without a collapse.

Writes ``results/score.md``, ``results/score.csv``, ``results/fitted_v2.json`` and each run's
trajectory table to ``results/trajectories/NAME.csv``.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
from rulesets import classifier as ruleset  # noqa: E402

#: Columns of the committed per-run trajectory tables (the full trajectory is cached as JSON under runs/).
TABLE_COLUMNS = ("step", "name", "N", "M", "alpha", "alpha_std", "xmin", "n_tail", "lambda_max", "frobenius_norm",
                 "stable_rank", "n_traps", "trap_threshold", "sigma_mp", "ks_statistic", "ks_pvalue", "status",
                 "train_acc", "test_acc", "train_loss", "test_loss", "l2_norm")


def first_drop_step(steps: np.ndarray, test_acc: np.ndarray, train_acc: np.ndarray | None = None,
                    drop: float = 0.05, train_threshold: float = 0.99) -> int | None:
    """First checkpoint after the test-accuracy peak that is ``drop`` or more below it (None if none).

    With ``train_acc``, only checkpoints whose training accuracy is still >= ``train_threshold``
    count (anti-grokking is a fall of the test accuracy *while the training set stays fitted*,
    as in ``phases_from_accuracy``); a transient training instability is not a collapse.
    """
    i_peak = int(np.argmax(test_acc))
    ok = test_acc[i_peak + 1:] <= test_acc[i_peak] - drop
    if train_acc is not None:
        ok &= train_acc[i_peak + 1:] >= train_threshold
    hit = np.flatnonzero(ok)
    return None if hit.size == 0 else int(steps[i_peak + 1 + hit[0]])


def load_trajectory(name: str, run_dir: Path, cache_dir: Path):
    from htsr_diag import Trajectory, analyze_checkpoints

    cache = cache_dir / f"{name}.json"
    if cache.is_file():
        traj = Trajectory.from_json(cache)
        if traj.source == str(run_dir) and len(traj) == sum(1 for _ in (run_dir / "checkpoints").glob("*.safetensors")):
            return traj
    t0 = time.perf_counter()
    traj = analyze_checkpoints(run_dir, rng=0)
    print(f"  {name}: analysed {len(traj)} checkpoints in {time.perf_counter() - t0:.0f} s", flush=True)
    cache_dir.mkdir(parents=True, exist_ok=True)
    traj.to_json(cache)
    return traj


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--manifest", default=str(HERE / "runs.json"))
    ap.add_argument("--cache", default=str(ROOT / "runs" / "phase_cache"),
                    help="where analysed trajectories are cached as JSON (default: runs/phase_cache)")
    ap.add_argument("--out", default=str(RESULTS / "score.md"))
    args = ap.parse_args(argv)

    from htsr_diag import PhaseClassifier, phase_agreement, phases_from_accuracy
    from htsr_diag.phases import ANTI, PHASES

    manifest = json.loads(Path(args.manifest).read_text())
    runs = []
    for entry in manifest["runs"]:
        run_dir = ROOT / entry["dir"]
        if not (run_dir / "metrics.jsonl").is_file():
            print(f"  {entry['name']}: {run_dir} missing, skipped", flush=True)
            continue
        if not (run_dir / "checkpoints" / f"step_{manifest.get('steps', 100000):09d}.safetensors").is_file():
            print(f"  {entry['name']}: still training (no final checkpoint), skipped", flush=True)
            continue
        traj = load_trajectory(entry["name"], run_dir, Path(args.cache))
        if traj.steps[-1] < manifest.get("steps", 100000):
            print(f"  {entry['name']}: only reached step {traj.steps[-1]}, skipped", flush=True)
            continue
        (RESULTS / "trajectories").mkdir(parents=True, exist_ok=True)
        frame = traj.to_frame()
        frame[[c for c in TABLE_COLUMNS if c in frame.columns]].to_csv(
            RESULTS / "trajectories" / f"{entry['name']}.csv", index=False)
        truth = phases_from_accuracy(traj.steps, traj.metrics["train_acc"], traj.metrics["test_acc"])
        runs.append((entry, traj, truth))

    tuning = [(t, y) for e, t, y in runs if e["role"] == "tuning"]
    classifiers = {"default": PhaseClassifier(causal=True)}
    if tuning:
        xs, ys = [t for t, _ in tuning], [y for _, y in tuning]
        classifiers["fitted-onset"] = PhaseClassifier(causal=True).fit(xs, ys, params=["grok_ratio"])
        classifiers["fitted-all"] = PhaseClassifier(causal=True).fit(xs, ys)
    # the earlier defaults, each written out in full in rulesets.py (commit and pre-registration beside each)
    for version in ("v2", "v3", "v4", "v5", "v6"):
        classifiers[version] = ruleset(version, causal=True)
    fitted = {k: v.thresholds_ for k, v in classifiers.items() if k.startswith("fitted")}
    (RESULTS / "fitted_v2.json").write_text(json.dumps(fitted, indent=2) + "\n")

    rows = []
    for entry, traj, truth in runs:
        steps = traj.steps
        test = traj.metrics["test_acc"]
        drop = first_drop_step(steps, test, traj.metrics["train_acc"])
        raw_drop = first_drop_step(steps, test)
        for cname, clf in classifiers.items():
            pred = clf.predict(traj)
            flag = clf.transition_steps(traj)[ANTI]
            early = None
            if flag is not None and drop is not None:
                early = int(np.flatnonzero(steps == drop)[0] - np.flatnonzero(steps == flag)[0])
            rows.append({
                "run": entry["name"], "role": entry["role"], "seed": entry["seed"], "lr": entry["lr"],
                "weight_decay": entry["weight_decay"], "classifier": cname,
                "reference_counts": "/".join(str(int(np.sum(truth == p))) for p in PHASES),
                "predicted_counts": "/".join(str(int(np.sum(pred == p))) for p in PHASES),
                "agreement": round(phase_agreement(pred, truth), 4),
                "peak_test_acc": round(float(test.max()), 4), "final_test_acc": round(float(test[-1]), 4),
                "collapse_step": drop, "drop_ignoring_train_acc": raw_drop, "flag_step": flag,
                "in_time": None if drop is None else (flag is not None and flag <= drop),
                "checkpoints_early": early,
                "false_collapse": drop is None and flag is not None,
            })
    with (RESULTS / "score.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)

    lines = ["# PhaseClassifier vs phases_from_accuracy on full-length runs", "",
             f"Reproduce: `.venv/bin/python benchmarks/phase_eval/score.py` (manifest `{Path(args.manifest).name}`).", "",
             f"Fitted thresholds (tuning runs only): `{json.dumps(fitted)}`", "",
             "Counts are pre/grok/anti checkpoints. `collapse`: first checkpoint 5 points below the test peak with training accuracy >= 0.99; "
             "`flag`: first anti-grokking label; `early`: checkpoints between flag and collapse.", "",
             "| run | role | seed | lr | wd | peak -> final test | reference | classifier | predicted | agreement | collapse | flag | in time | early | false collapse |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['run']} | {r['role']} | {r['seed']} | {r['lr']} | {r['weight_decay']} | "
                     f"{r['peak_test_acc']:.3f} -> {r['final_test_acc']:.3f} | {r['reference_counts']} | "
                     f"{r['classifier']} | {r['predicted_counts']} | {r['agreement']:.3f} | {r['collapse_step']} | "
                     f"{r['flag_step']} | {r['in_time']} | {r['checkpoints_early']} | {r['false_collapse']} |")
    for role in ("development", "held-out", "held-out-2", "held-out-3", "held-out-4", "held-out-5", "held-out-6",
                 "held-out-7", "held-out-8"):
        sub = [r for r in rows if r["role"] == role]
        if not sub:
            continue
        lines += ["", f"Aggregate over the {role} runs ({len({r['run'] for r in sub})}):", "",
                  "| classifier | mean agreement | min agreement | runs >= 0.90 | collapses flagged in time | false collapses |",
                  "|---|---|---|---|---|---|"]
        for cname in classifiers:
            c = [r for r in sub if r["classifier"] == cname]
            coll = [r for r in c if r["collapse_step"] is not None]
            calm = [r for r in c if r["collapse_step"] is None]
            lines.append(f"| {cname} | {np.mean([r['agreement'] for r in c]):.3f} | "
                         f"{np.min([r['agreement'] for r in c]):.3f} | "
                         f"{sum(r['agreement'] >= 0.9 for r in c)}/{len(c)} | "
                         f"{sum(bool(r['in_time']) for r in coll)}/{len(coll)} | "
                         f"{sum(r['false_collapse'] for r in calm)}/{len(calm)} |")
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
