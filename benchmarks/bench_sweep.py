"""Wall time of a sweep: the grid as one batched ensemble vs the same runs one by one, and where
the time goes (issue #16 "Speed").

Part A, end to end: ``htsr_diag.sweep`` over an lr x weight-decay grid of the ``fast`` MNIST
preset, (i) every run in one ensemble (``max_ensemble=None``) and (ii) one run per ensemble
(``max_ensemble=1``, the runs one after the other), repeated ``--repeats`` times in alternating
order into fresh folders; medians; the sweep's own per-ensemble timings split training, the
replay of the first steps (loss signature) and the per-run analysis (alpha, traps, phases).

Part B, inside training: the engine step of R members (the CPU engine steps members one after
the other on row views; ``batched=True`` forces the single batched step the GPU uses) against
R separate one-member engines; one evaluation (the full 10,000-image test set and the training
set) for R members at once vs R times one; writing one member's checkpoint and metrics.

Usage::

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/bench_sweep.py --steps 600 \
        --repeats 3 --out benchmarks/results/sweep.md

The issue's grid (7 x 6 x 2 = 84 runs of 100,000 steps) is far beyond a shared 2-core CPU;
the defaults are a 2 x 2 x 1 grid of 600 steps, stated in the output.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_model  # noqa: E402


def part_a(args, root: Path) -> dict:
    from htsr_diag.sweep import sweep

    grid = {"lr": [1e-3, 5e-3][: args.n_lr] if args.n_lr <= 2 else
            [float(f"{v:.4g}") for v in np.geomspace(1e-3, 1e-2, args.n_lr)],
            "weight_decay": [0.0, 0.1, 1.0][: args.n_wd]}
    seeds = tuple(range(args.n_seeds))
    kw = dict(steps=args.steps, signature_steps=min(args.signature_steps, args.steps),
              overrides={"checkpoints_per_decade": args.checkpoints_per_decade, "data_dir": "bundled"},
              figures=False, num_threads=1)
    modes = {"batched (one ensemble)": None, "one by one": 1}
    res = {m: [] for m in modes}
    for rep in range(args.repeats):
        order = list(modes) if rep % 2 == 0 else list(modes)[::-1]
        for m in order:
            out = root / f"rep{rep}_{modes[m] or 'all'}"
            t0 = time.perf_counter()
            r = sweep("fast", grid, seeds, out, max_ensemble=modes[m], **kw)
            wall = time.perf_counter() - t0
            parts = {k: sum(t[k] for t in r.timings) for k in ("train_s", "replay_s", "analysis_s")}
            res[m].append({"wall_s": wall, **parts, "n_ensembles": len(r.timings)})
            shutil.rmtree(out)
            print(f"rep {rep} {m}: {wall:.1f} s {parts}", flush=True)
    n_runs = len(grid["lr"]) * len(grid["weight_decay"]) * len(seeds)
    med = {m: {k: statistics.median(x[k] for x in v) for k in v[0]} for m, v in res.items()}
    return {"grid": grid, "seeds": list(seeds), "n_runs": n_runs, "raw": res, "median": med}


def part_b(args) -> dict:
    from htsr_diag.train import get_preset
    from htsr_diag.train.trainer import _append_metrics, _atomic_save_safetensors, _make_engine

    R = args.n_lr * args.n_wd * args.n_seeds
    cfgs = [get_preset("fast", seed=s, lr=1e-3 * (1 + s), data_dir="bundled") for s in range(R)]
    dev = torch.device("cpu")
    n = args.bench_steps

    def step_ms(engine, steps: int) -> float:
        idx = engine.batch_indices(0, steps + 5)
        for i in range(5):
            engine.step_fn(idx[i])
        t = time.perf_counter()
        for i in range(5, steps + 5):
            engine.step_fn(idx[i])
        return (time.perf_counter() - t) / steps * 1000

    out: dict = {"R": R}
    with torch.no_grad():
        eng = _make_engine(cfgs, dev, cfgs[0].torch_dtype)
        singles = [_make_engine([c], dev, c.torch_dtype) for c in cfgs]
        rows = {"ensemble, members in turn (CPU default)": [], "ensemble, one batched step (GPU path)": [],
                f"{R} single runs": []}
        for _ in range(args.repeats):
            eng.batched = False
            rows["ensemble, members in turn (CPU default)"].append(step_ms(eng, n))
            eng.batched = True
            rows["ensemble, one batched step (GPU path)"].append(step_ms(eng, n))
            rows[f"{R} single runs"].append(sum(step_ms(s, n) for s in singles))
        out["step_ms"] = {k: statistics.median(v) for k, v in rows.items()}
        ev_all, ev_one = [], []
        for _ in range(args.repeats):
            t = time.perf_counter()
            eng.evaluate()
            ev_all.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            for s in singles:
                s.evaluate()
            ev_one.append((time.perf_counter() - t) * 1000)
        out["evaluate_ms"] = {f"ensemble of {R}": statistics.median(ev_all), f"{R} single runs": statistics.median(ev_one)}
        with tempfile.TemporaryDirectory() as d:
            wr = []
            for k in range(args.repeats * 3):
                t = time.perf_counter()
                _atomic_save_safetensors(Path(d) / f"step_{k}.safetensors", eng.member_state(0), {"step": str(k)})
                _append_metrics(Path(d), {"step": k, "train_loss": 0.0})
                wr.append((time.perf_counter() - t) * 1000)
            out["write_checkpoint_ms_per_member"] = statistics.median(wr)
    from htsr_diag.train import checkpoint_steps

    out["checkpoints_per_run"] = int(len(checkpoint_steps(args.steps, args.checkpoints_per_decade)))
    return out


def markdown(args, a: dict, b: dict, load: tuple) -> str:
    med = a["median"]
    one, bat = med["one by one"], med["batched (one ensemble)"]
    R = b["R"]
    L = [f"Grid: fast MNIST preset, lr {a['grid']['lr']} x weight decay {a['grid']['weight_decay']} x seeds "
         f"{a['seeds']} = {a['n_runs']} runs of {args.steps} steps (the issue's 84 runs x 100,000 steps do not fit "
         f"this session), {args.checkpoints_per_decade} checkpoints per decade ({b['checkpoints_per_run']} per run), "
         f"loss signature over {min(args.signature_steps, args.steps)} steps; CPU {cpu_model()}, 1 torch thread, "
         f"machine shared with other jobs (load average before/after {load[0]:.1f}/{load[1]:.1f}); "
         f"medians of {args.repeats} repeats, modes alternated.", "",
         "| sweep | wall s | training s | early-loss replay s | analysis s | ensembles |",
         "|---|---|---|---|---|---|"]
    for m, v in med.items():
        L.append(f"| {m} | {v['wall_s']:.1f} | {v['train_s']:.1f} | {v['replay_s']:.1f} | {v['analysis_s']:.1f} "
                 f"| {int(v['n_ensembles'])} |")
    L += ["", f"Ratio one-by-one / batched wall time: **{one['wall_s'] / bat['wall_s']:.2f}x**; "
              f"training only {one['train_s'] / bat['train_s']:.2f}x; analysis "
              f"{one['analysis_s'] / max(bat['analysis_s'], 1e-9):.2f}x.", "",
          f"Inside training (R = {R} members, {args.bench_steps} steps, medians of {args.repeats}):", "",
          "| what | ms |", "|---|---|"]
    for k, v in b["step_ms"].items():
        L.append(f"| one optimisation step: {k} | {v:.2f} |")
    for k, v in b["evaluate_ms"].items():
        L.append(f"| one evaluation (train set + 10,000 test images): {k} | {v:.1f} |")
    L.append(f"| writing one member's checkpoint + metrics line (fsync) | {b['write_checkpoint_ms_per_member']:.2f} |")
    return "\n".join(L) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--n-lr", type=int, default=2)
    ap.add_argument("--n-wd", type=int, default=2)
    ap.add_argument("--n-seeds", type=int, default=1)
    ap.add_argument("--checkpoints-per-decade", type=int, default=10)
    ap.add_argument("--signature-steps", type=int, default=100)
    ap.add_argument("--bench-steps", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None, help="markdown file for the results (and .json beside it)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench_sweep_") as d:
        a = part_a(args, Path(d))
    b = part_b(args)
    md = markdown(args, a, b, (load0, os.getloadavg()[0]))
    print(md)
    if args.out:
        Path(args.out).write_text(md)
        Path(args.out).with_suffix(".json").write_text(json.dumps({"args": vars(args), "a": a, "b": b}, indent=1,
                                                                  default=float))


if __name__ == "__main__":
    main()
