#!/usr/bin/env python
"""The GPU check of issue #17: every GPU measurement of htsr_diag in one run, within a wall-clock budget.

Items, in this order, each with its own time cap (an item that does not fit in what is left of
``--budget-s`` is skipped and marked ``skipped-budget``; one that raises is recorded as
``failed`` with its error, and the run goes on):

1. ``trainer``: the trainer's engine against the plain PyTorch loop of the Omnigrok notebook
   (``benchmarks/bench_trainer.py``'s baseline, imported), one run, float32 and float64, with
   and without ``compile=True`` (CUDA only): steps/s and the projected time for 10^7 steps.
   Target: >= 3x the plain loop.
2. ``ensembles``: R = 1, 8, 32 members as one batched step (float64, the study's recipe):
   time per step against R = 1. Target: R = 32 in <= 2x one run.
3. ``paper``: the study's regime, ``paper`` and ``paper-wd`` (seed 0) as one batched ensemble,
   float64, for as many steps as the measured speed lets fit in the remaining budget (10^7 if
   possible, else the longest prefix of the 10^7 checkpoint schedule, said so); then
   ``analyze_checkpoints`` on the run's device for each member; the trajectories are written
   as JSON into the output folder (never the raw checkpoints) and labelled by
   ``PhaseClassifier(causal=True)``, scored against ``phases_from_accuracy``.
4. ``analysis``: a 4096x4096 layer (``benchmarks/bench_spectral.py``'s computation) and the
   GPT-2-small shape set (``benchmarks/bench_gpt2.py``'s shapes and ``analyze`` call), each on
   the device and on the CPU in the same run.

Writes ``gpu_check.json`` and ``gpu_check.md`` (rewritten after every item, so a run killed at
its limit leaves what it finished) and ``trajectory_<preset>.json`` into ``--out`` (default
``$OUT`` when set, else ``benchmarks/results/gpu``). ``--dry-run``: tiny sizes on the CPU
(a few hundred steps, R = 1, 2, a 256x256 layer, two GPT-2 shapes / 8), well under a minute;
``torch.compile`` then uses the ``eager`` backend, so the code path runs without a compiler.

Usage (from the repository root; no install needed, ``src/`` is put on the path)::

    python benchmarks/gpu/run_all.py --budget-s 360 --out $OUT     # on a GPU machine
    python benchmarks/gpu/run_all.py --dry-run --out /tmp/gpu-dry   # anywhere, < 1 min
    python benchmarks/gpu/run_all.py --items paper --budget-s 540   # one item again
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
BENCH = HERE.parent
REPO = BENCH.parent
for _p in (str(BENCH), str(REPO / "src")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import numpy as np  # noqa: E402
import torch  # noqa: E402

import bench_trainer  # noqa: E402  (the plain-loop baseline and the engine timing)
from _common import cpu_model  # noqa: E402
from bench_gpt2 import SHAPES as GPT2_SHAPES  # noqa: E402

from htsr_diag import (PhaseClassifier, Trajectory, analyze, analyze_checkpoints,  # noqa: E402
                       phase_agreement, phases_from_accuracy)
from htsr_diag.train import (PRESETS, checkpoint_steps, list_checkpoints, load_checkpoint,  # noqa: E402
                             load_mnist, read_metrics, train_ensemble, training_subset)

SCHEMA = "htsr_diag.gpu_check/1"
OK, SKIPPED, FAILED = "ok", "skipped-budget", "failed"
PROJECT_STEPS = 10**7
# CPU numbers of docs/benchmarks.md (this project's 2-core build machine, 1 BLAS thread)
DOC_CPU_S = {"layer": 9.907, "gpt2": 12.75}


# --------------------------------------------------------------------------- plan
@dataclass(frozen=True)
class Item:
    key: str
    title: str
    cap_s: float | None   # None: elastic, takes what is left after reserving the later items' need_s
    need_s: float         # skipped when less than this is available to it


@dataclass(frozen=True)
class Sizes:
    target_s: float            # length of one timed throughput measurement
    probe_steps: int           # steps of the untimed-size probe that sizes it
    max_steps: int
    ensemble_sizes: tuple[int, ...]
    compile_guess_s: float     # compile + warm-up cost assumed before one is measured
    paper_steps: int           # the study's length (the schedule whose prefix is run)
    paper_per_decade: int
    paper_min_steps: int       # below this the study's item is skipped
    ckpt_cost_s: float         # evaluation + writes per checkpoint, reserved
    stop_every: int            # steps between deadline checks while training
    layer_n: int
    gpt2_blocks: int
    gpt2_shapes: tuple[tuple[str, int, int], ...]
    device_repeats: int
    cpu_repeats: int
    cpu_need_s: float          # time left needed before a CPU analysis is started


FULL_ITEMS = (Item("trainer", "Trainer vs the plain PyTorch loop", 90.0, 20.0),
              Item("ensembles", "Ensembles R = 1, 8, 32", 75.0, 15.0),
              Item("paper", "The study's regime: paper + paper-wd, float64", None, 60.0),
              Item("analysis", "Spectral analysis on the device vs the CPU", 75.0, 40.0))
DRY_ITEMS = (Item("trainer", FULL_ITEMS[0].title, 8.0, 0.5),
             Item("ensembles", "Ensembles R = 1, 2", 5.0, 0.5),
             Item("paper", FULL_ITEMS[2].title, None, 2.0),
             Item("analysis", FULL_ITEMS[3].title, 6.0, 0.5))
FULL = Sizes(target_s=4.0, probe_steps=50, max_steps=200_000, ensemble_sizes=(1, 8, 32), compile_guess_s=45.0,
             paper_steps=PROJECT_STEPS, paper_per_decade=PRESETS["paper"].checkpoints_per_decade,
             paper_min_steps=1000, ckpt_cost_s=0.15, stop_every=1000, layer_n=4096, gpt2_blocks=12,
             gpt2_shapes=tuple(GPT2_SHAPES), device_repeats=3, cpu_repeats=1, cpu_need_s=15.0)
DRY = Sizes(target_s=0.25, probe_steps=4, max_steps=400, ensemble_sizes=(1, 2), compile_guess_s=3.0,
            paper_steps=200, paper_per_decade=5, paper_min_steps=10, ckpt_cost_s=0.05, stop_every=10,
            layer_n=256, gpt2_blocks=1, gpt2_shapes=tuple((n, a // 8, b // 8) for n, a, b in GPT2_SHAPES[:2]),
            device_repeats=2, cpu_repeats=1, cpu_need_s=0.2)


class SkipItem(Exception):
    """Raised by an item that finds, after measuring, that its work does not fit."""


class _Deadline(Exception):
    """Raised from the training callback when the item's time is up."""


class Box:
    """The time an item may use."""

    def __init__(self, seconds: float):
        self.end = time.perf_counter() + seconds
        self.seconds = seconds

    def left(self) -> float:
        return self.end - time.perf_counter()


@dataclass
class Ctx:
    args: argparse.Namespace
    sizes: Sizes
    dev: torch.device
    out: Path
    results: dict[str, dict]   # item key -> its results so far (later items read earlier ones)

    @property
    def dry(self) -> bool:
        return bool(self.args.dry_run)

    @property
    def can_compile(self) -> bool:
        return self.dev.type == "cuda" or self.dry


# --------------------------------------------------------------------------- helpers
def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


@contextlib.contextmanager
def _compile_mode(dry: bool):
    """In a dry run, ``torch.compile`` uses the eager backend (the code path runs, no compiler needed)."""
    if not dry:
        import torch._dynamo as dynamo
        dynamo.reset()  # a fresh cache: no recompile limit reached across measurements
        yield
        return
    orig = torch.compile

    def eager_compile(fn=None, **kw):
        kw.pop("mode", None)
        kw["backend"] = "eager"
        return orig(fn, **kw)

    torch.compile = eager_compile
    try:
        yield
    finally:
        torch.compile = orig


def _clean(x: Any) -> Any:
    """JSON-safe: numpy -> Python, non-finite floats -> None."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, np.ndarray):
        return _clean(x.tolist())
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, Path):
        return str(x)
    return x


def _fmt_s(s: float | None) -> str:
    if s is None or not math.isfinite(s):
        return "-"
    if s >= 3600:
        return f"{s / 3600:.1f} h"
    if s >= 60:
        return f"{s / 60:.1f} min"
    return f"{s:.2f} s"


def _paper_cfg(dtype: str, **changes):
    return PRESETS["paper"].replace(dtype=dtype, data_dir="bundled", **changes)


def _mnist():
    return load_mnist("bundled")


# --------------------------------------------------------------------------- item 1
def item_trainer(ctx: Ctx, box: Box) -> dict:
    sz, dev = ctx.sizes, ctx.dev
    data = _mnist()
    rows: list[dict] = []
    for dtype in ("float64", "float32"):  # float64 first: the study's dtype, and item 3 uses its numbers
        cfg = _paper_cfg(dtype)
        x, y = training_subset(cfg, data)
        plain = lambda n, cfg=cfg, x=x, y=y: bench_trainer.baseline_steps_per_s(cfg, x, y, dev, n)  # noqa: E731
        engine = lambda n, cfg=cfg: bench_trainer.engine_steps_per_s([cfg], data, dev, n)  # noqa: E731
        eager_rate = None
        for loop, fn in (("plain PyTorch loop", plain), ("htsr_diag trainer", engine)):
            row = {"dtype": dtype, "loop": loop}
            if box.left() < 2 * sz.target_s:
                rows.append({**row, "status": SKIPPED, "note": f"{box.left():.1f} s left in the item's cap"})
                continue
            rows.append({**row, **_measure(fn, sz, min(sz.target_s, box.left() / 3))})
            eager_rate = rows[-1]["steps_per_s"] if loop != "plain PyTorch loop" else eager_rate
        row = {"dtype": dtype, "loop": "htsr_diag trainer, compile=True"}
        guess = ctx.results.get("_compile_s", sz.compile_guess_s)
        if not ctx.can_compile:
            rows.append({**row, "status": SKIPPED, "note": f"compile is for CUDA (device {dev.type})"})
        elif eager_rate is None:
            rows.append({**row, "status": SKIPPED, "note": "no eager rate to size it"})
        elif box.left() < guess + sz.target_s:
            rows.append({**row, "status": SKIPPED,
                         "note": f"{box.left():.1f} s left; compiling takes ~{guess:.0f} s"})
        else:
            rows.append({**row, **_measure_compiled([cfg], data, ctx, eager_rate)})
            if rows[-1]["status"] == OK:
                ctx.results["_compile_s"] = rows[-1]["overhead_s"]
    speedups = {}
    for dtype in ("float32", "float64"):
        base = [r for r in rows if r["dtype"] == dtype and r["loop"] == "plain PyTorch loop" and r["status"] == OK]
        ours = [r for r in rows if r["dtype"] == dtype and r["loop"] != "plain PyTorch loop" and r["status"] == OK]
        if base and ours:
            best = max(ours, key=lambda r: r["steps_per_s"])
            speedups[dtype] = {"speedup": best["steps_per_s"] / base[0]["steps_per_s"], "best": best["loop"],
                               "target": 3.0, "met": best["steps_per_s"] >= 3.0 * base[0]["steps_per_s"]}
    return {"recipe": "paper (MLP 784-200-200-10, batch 200, AdamW), dtype as stated, bundled MNIST",
            "rows": rows, "speedup": speedups}


def _measure(fn: Callable[[int], float], sz: Sizes, target_s: float) -> dict:
    """Probe, then time enough steps to take ~target_s."""
    probe = fn(sz.probe_steps)
    steps = int(min(max(probe * target_s, sz.probe_steps), sz.max_steps))
    rate = fn(steps)
    return {"status": OK, "steps": steps, "steps_per_s": rate, "probe_steps_per_s": probe,
            "projected_1e7_s": PROJECT_STEPS / rate}


def _measure_compiled(cfgs, data, ctx: Ctx, eager_rate: float) -> dict:
    """One compiled engine: compile + 3 warm-up steps (untimed), then ~target_s of steps."""
    sz = ctx.sizes
    steps = int(min(max(eager_rate * sz.target_s, sz.probe_steps), sz.max_steps))
    with _compile_mode(ctx.dry):
        skips0 = _cudagraph_skips()
        t0 = time.perf_counter()
        rate = bench_trainer.engine_steps_per_s(cfgs, data, ctx.dev, steps, compile=True, warmup=3)
        total = time.perf_counter() - t0
        skips = _cudagraph_skips() - skips0
    note = "torch.compile backend 'eager' (dry run)" if ctx.dry else "mode='reduce-overhead'"
    if ctx.dev.type == "cuda":
        note += (f"; CUDA graphs NOT used: {skips} cudagraph skip(s) (TORCH_LOGS=perf_hints says why)" if skips
                 else "; CUDA graphs used (no cudagraph skip counted)")
    return {"status": OK, "steps": steps, "steps_per_s": rate, "projected_1e7_s": PROJECT_STEPS / rate,
            "overhead_s": max(total - steps / rate, 0.0), "cudagraph_skips": skips, "note": note}


def _cudagraph_skips() -> int:
    """Inductor's count of compiled graphs that fell back from CUDA graphs (0 when unknown)."""
    try:
        from torch._dynamo.utils import counters
        return int(counters["inductor"]["cudagraph_skips"])
    except Exception:
        return 0


# --------------------------------------------------------------------------- item 2
def item_ensembles(ctx: Ctx, box: Box) -> dict:
    sz, dev = ctx.sizes, ctx.dev
    data = _mnist()
    modes = ["eager"]
    t1 = ctx.results.get("trainer", {})
    if ctx.can_compile and any(r.get("status") == OK and r["dtype"] == "float64" and "compile" in r["loop"]
                               for r in t1.get("rows", [])):
        modes.append("compile=True")
    rows: list[dict] = []
    for mode in modes:  # rows are sorted by R at the end
        eager_rates = {r["R"]: r["steps_per_s"] for r in rows if r["status"] == OK and r["mode"] == "eager"}
        order = sz.ensemble_sizes if mode == "eager" else sorted(sz.ensemble_sizes, key=lambda R: (R != 1, -R))
        for R in order:
            cfgs = [_paper_cfg("float64", seed=s) for s in range(R)]
            row = {"mode": mode, "R": R}
            same = [r for r in t1.get("rows", []) if r.get("status") == OK and r["dtype"] == "float64"
                    and r["loop"] == "htsr_diag trainer, compile=True"]
            if mode != "eager" and R == 1 and same:  # item 1 measured this very engine (paper, float64, seed 0)
                rows.append({**row, **{k: v for k, v in same[0].items() if k not in ("dtype", "loop")},
                             "note": "item 1's measurement"})
                continue
            if mode == "eager":
                if box.left() < 2 * sz.target_s:
                    rows.append({**row, "status": SKIPPED, "note": f"{box.left():.1f} s left"})
                    continue
                fn = lambda n, cfgs=cfgs: bench_trainer.engine_steps_per_s(cfgs, data, dev, n)  # noqa: E731
                rows.append({**row, **_measure(fn, sz, min(sz.target_s, box.left() / 3))})
            else:
                guess = ctx.results.get("_compile_s", sz.compile_guess_s)
                if R not in eager_rates or box.left() < guess + sz.target_s:
                    rows.append({**row, "status": SKIPPED,
                                 "note": f"{box.left():.1f} s left; compiling takes ~{guess:.0f} s"})
                    continue
                rows.append({**row, **_measure_compiled(cfgs, data, ctx, eager_rates[R])})
    rows.sort(key=lambda r: (modes.index(r["mode"]), r["R"]))
    for mode in modes:
        one = [r for r in rows if r["mode"] == mode and r["R"] == 1 and r["status"] == OK]
        for r in rows:
            if r["mode"] == mode and r["status"] == OK:
                r["ms_per_step"] = 1e3 / r["steps_per_s"]
                r["time_vs_R1"] = one[0]["steps_per_s"] / r["steps_per_s"] if one else None
    big = max(sz.ensemble_sizes)
    met = {m: r["time_vs_R1"] <= 2.0 for m in modes for r in rows
           if r["mode"] == m and r["R"] == big and r.get("time_vs_R1") is not None}
    return {"recipe": "paper, float64, members seeds 0..R-1, one batched step", "rows": rows,
            "target": f"R={big} step <= 2x the R=1 step", "met": met}


# --------------------------------------------------------------------------- item 3
def _fit_rate(ctx: Ctx, R: int) -> tuple[float | None, bool, float, str]:
    """(steps/s of an R-member float64 ensemble, use compile?, compile cost, where from), from items 1-2."""
    rows = ctx.results.get("trainer", {}).get("rows", [])
    f64 = {r["loop"]: r for r in rows if r["dtype"] == "float64" and r.get("status") == OK}
    eager = f64.get("htsr_diag trainer")
    comp = f64.get("htsr_diag trainer, compile=True")
    use_compile = bool(comp and (not eager or comp["steps_per_s"] > eager["steps_per_s"]))
    base = comp if use_compile else eager
    if base is None:
        return None, False, 0.0, ""
    mode = "compile=True" if use_compile else "eager"
    ens = [r for r in ctx.results.get("ensembles", {}).get("rows", [])
           if r.get("status") == OK and r["mode"] == mode and r["R"] > 1 and r.get("time_vs_R1")]
    if ens:  # the smallest measured ensemble above R, else the largest measured: conservative
        above = [r for r in ens if r["R"] >= R]
        ref = min(above, key=lambda r: r["R"]) if above else max(ens, key=lambda r: r["R"])
        factor, why = 1.0 / ref["time_vs_R1"], f"R=1 rate / (R={ref['R']} time ratio)"
    else:
        factor, why = (0.8 if ctx.dev.type == "cuda" else 1.0 / R), "R=1 rate x assumed ensemble factor"
    cost = base.get("overhead_s", 0.0) if use_compile else 0.0
    return base["steps_per_s"] * factor, use_compile, cost, f"{mode}, {why}"


def _analysis_time(ctx: Ctx) -> float:
    """Seconds to analyse one MLP checkpoint on the device (after one warm-up)."""
    cfg = _paper_cfg("float64")
    from htsr_diag.train.model import init_mlp_params

    sd = {k: v.to(ctx.dev) for k, v in init_mlp_params(cfg.hidden, cfg.init_scale, torch.float64, 0).items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        analyze_checkpoints([sd], steps=[0], progress=False)
        t0 = time.perf_counter()
        analyze_checkpoints([sd], steps=[1], progress=False)
    return time.perf_counter() - t0


def item_paper(ctx: Ctx, box: Box) -> dict:
    sz, dev = ctx.sizes, ctx.dev
    presets = ("paper", "paper-wd")
    rate, use_compile, compile_s, rate_from = _fit_rate(ctx, len(presets))
    if rate is None:  # items 1-2 did not run: a short eager calibration of this very ensemble
        cfgs = [PRESETS[p].replace(data_dir="bundled") for p in presets]
        fn = lambda n: bench_trainer.engine_steps_per_s(cfgs, _mnist(), dev, n)  # noqa: E731
        rate = _measure(fn, sz, min(sz.target_s, box.left() / 10))["steps_per_s"]
        rate_from = "eager calibration in this item (items 1-2 gave no float64 rate)"
    t_an = _analysis_time(ctx)
    sched_full = checkpoint_steps(sz.paper_steps, sz.paper_per_decade)
    n_ck = len(sched_full)
    reserve = n_ck * (len(presets) * t_an * 1.3 + sz.ckpt_cost_s) + compile_s + 2.0
    train_s = (box.left() - reserve) * 0.9
    fit = rate * train_s
    fitting = sched_full[(sched_full <= fit) & (sched_full > 0)]
    plan = {"steps_per_s_estimate": rate, "rate_from": rate_from, "compile": use_compile,
            "analysis_s_per_checkpoint": t_an, "reserved_s": reserve, "train_s_planned": train_s,
            "steps_fitting": fit, "schedule_steps": int(sz.paper_steps), "per_decade": sz.paper_per_decade}
    if fitting.size == 0 or fitting[-1] < sz.paper_min_steps:
        raise SkipItem(f"only ~{max(fit, 0):,.0f} steps fit at {rate:,.0f} steps/s in {box.left():.0f} s "
                       f"(minimum {sz.paper_min_steps}); plan {json.dumps(_clean(plan))}")
    steps = int(fitting[-1])
    cfgs = [PRESETS[p].replace(data_dir="bundled", steps=steps, checkpoints_per_decade=sz.paper_per_decade)
            for p in presets]
    tmp = Path(tempfile.mkdtemp(prefix="htsr_gpu_paper_"))
    stop_at = time.perf_counter() + compile_s + train_s * 1.15 + 5.0
    stopped = None

    def deadline(step: int) -> None:
        if step % sz.stop_every == 0 and time.perf_counter() > stop_at:
            raise _Deadline(step)

    try:
        t0 = time.perf_counter()
        with _compile_mode(ctx.dry) if use_compile else contextlib.nullcontext():
            try:
                dirs = train_ensemble(cfgs, tmp, device=dev, progress=False, compile=use_compile, callback=deadline)
            except _Deadline as exc:
                stopped = int(exc.args[0])
                dirs = [tmp / f"member_{r:02d}" for r in range(len(cfgs))]
        train_wall = time.perf_counter() - t0
        members = []
        for preset, d in zip(presets, dirs):
            members.append(_analyse_member(ctx, preset, d))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    done = min(m["last_step"] for m in members)
    prefix = done < PROJECT_STEPS
    note = (f"{done:,} of 10^7 steps: the longest prefix of the 10^7 schedule that fit" if prefix
            else "the full 10^7 steps")
    if ctx.dry:
        note = f"dry run: {done:,} steps of a {sz.paper_steps:,}-step schedule"
    if stopped is not None:
        note += f" (training stopped by the item's time cap at step {stopped:,}; last checkpoint {done:,})"
    return {"plan": plan, "steps_requested": steps, "steps_done": done, "prefix": prefix, "note": note,
            "train_wall_s": train_wall, "train_steps_per_s": done / train_wall if train_wall > 0 else None,
            "stopped_at": stopped, "members": members}


def _analyse_member(ctx: Ctx, preset: str, run_dir: Path) -> dict:
    ckpts = list_checkpoints(run_dir)
    states = [load_checkpoint(p, device=ctx.dev) for _, p in ckpts]
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traj = analyze_checkpoints(states, steps=[s for s, _ in ckpts], rng=0, progress=False)
    t_an = time.perf_counter() - t0
    rows = {int(r["step"]): r for r in read_metrics(run_dir)}
    keys = ("train_acc", "test_acc", "train_loss", "test_loss", "l2_norm")
    metrics = {k: np.array([rows.get(int(s), {}).get(k, np.nan) for s in traj.steps], dtype=float) for k in keys}
    source = f"{preset}, seed 0, {int(traj.steps[-1])} steps, float64, device {ctx.dev}"
    traj = Trajectory(steps=traj.steps, reports=traj.reports, metrics=metrics, baselines=traj.baselines,
                      source=source)
    path = ctx.out / f"trajectory_{preset}.json"
    traj.to_json(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pred = np.asarray(PhaseClassifier(causal=True).predict(traj), dtype=str)
    ref = phases_from_accuracy(traj.steps, metrics["train_acc"], metrics["test_acc"])
    te = metrics["test_acc"]
    i_peak = int(np.nanargmax(te))

    def first(labels: np.ndarray) -> dict:
        return {lab: int(traj.steps[np.flatnonzero(labels == lab)[0]]) for lab in dict.fromkeys(labels.tolist())}

    layer = {}
    for name in ("fc1", "fc2"):
        if name in traj.layer_names:
            layer[name] = {"alpha_last": float(traj.feature("alpha", name)[-1]),
                           "alpha_min": float(np.nanmin(traj.feature("alpha", name))),
                           "traps_last": float(traj.feature("n_traps", name)[-1])}
    return {"preset": preset, "checkpoints": len(traj), "last_step": int(traj.steps[-1]),
            "analysis_wall_s": t_an, "trajectory_file": path.name, "trajectory_bytes": path.stat().st_size,
            "train_acc_last": float(metrics["train_acc"][-1]), "test_acc_last": float(te[-1]),
            "test_acc_peak": float(te[i_peak]), "test_acc_peak_step": int(traj.steps[i_peak]),
            "l2_norm_first": float(metrics["l2_norm"][0]), "l2_norm_last": float(metrics["l2_norm"][-1]),
            "layers": layer, "classifier": "PhaseClassifier(causal=True), defaults",
            "labels": pred.tolist(), "reference": ref.tolist(),
            "classifier_first_step": first(pred), "reference_first_step": first(ref),
            "agreement": phase_agreement(pred, ref)}


# --------------------------------------------------------------------------- item 4
def _gpt2_model(shapes, blocks: int):
    """bench_gpt2's model, for any shape list: blocks x the shapes, N(0, 0.02^2) float32 weights."""
    gen = torch.Generator().manual_seed(0)
    model = torch.nn.Module()
    model.h = torch.nn.ModuleList()
    for _ in range(blocks):
        block = torch.nn.Module()
        for name, n_in, n_out in shapes:
            parent, child = name.split(".")
            if not hasattr(block, parent):
                setattr(block, parent, torch.nn.Module())
            lin = torch.nn.Linear(n_in, n_out)
            with torch.no_grad():
                lin.weight.copy_(torch.randn(n_out, n_in, generator=gen) * 0.02)
                lin.bias.zero_()
            setattr(getattr(block, parent), child, lin)
        model.h.append(block)
    return model


def item_analysis(ctx: Ctx, box: Box) -> dict:
    from bench_spectral import gaussian_linear, htsr_analysis

    sz, dev = ctx.sizes, ctx.dev
    n = sz.layer_n

    def layer_run(model):
        rows = htsr_analysis(model)
        return {"alpha": float(np.mean([r["alpha"] for r in rows])), "traps": int(sum(r["n_traps"] for r in rows))}

    def gpt2_run(model):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rep = analyze(model, randomize=True, ks=True, rng=0, progress=False)
        return {"alpha": float(rep.mean_alpha), "traps": int(rep.n_traps), "layers": len(rep.layers)}

    shapes = " + ".join(f"{a}x{b}" for _, a, b in sz.gpt2_shapes)
    cases = [("layer", f"Gaussian nn.Linear {n}x{n}: esd + layer_alpha + randomized_analysis (bench_spectral)",
              lambda: gaussian_linear(n), layer_run),
             ("gpt2", f"GPT-2-small shapes, {sz.gpt2_blocks} block(s) x ({shapes}): "
                      f"analyze(randomize=True, ks=True) (bench_gpt2)",
              lambda: _gpt2_model(sz.gpt2_shapes, sz.gpt2_blocks), gpt2_run)]
    warm = torch.nn.Sequential(torch.nn.Linear(64, 128)).to(dev)  # solver / allocator start-up, untimed
    layer_run(warm)
    out = []
    for key, label, make, run in cases:
        model = make()
        row: dict[str, Any] = {"case": key, "label": label}
        for where, target, repeats in ((dev.type, dev, sz.device_repeats), ("cpu (same run)", torch.device("cpu"),
                                                                              sz.cpu_repeats)):
            need = sz.cpu_need_s if target.type == "cpu" else 1.0
            if box.left() < need:
                row[where] = {"status": SKIPPED, "note": f"{box.left():.1f} s left"}
                continue
            m = model.to(target)
            times, res = [], {}
            for _ in range(repeats):
                _sync(target)
                t0 = time.perf_counter()
                res = run(m)
                _sync(target)
                times.append(time.perf_counter() - t0)
                if box.left() < 2 * times[-1]:
                    break
            warm_times = times[1:] or times  # the first run on the device includes its start-up
            row[where] = {"status": OK, "times_s": times, "median_s": statistics.median(warm_times), **res}
        devr, cpur = row.get(dev.type, {}), next((v for k, v in row.items() if k.startswith("cpu (")), {})
        if devr.get("status") == OK and cpur.get("status") == OK:
            row["speedup_vs_cpu"] = cpur["median_s"] / devr["median_s"]
            row["same_alpha"] = abs(devr["alpha"] - cpur["alpha"]) <= 1e-6 * max(1.0, abs(cpur["alpha"]))
        if not ctx.dry:
            row["doc_cpu_s"] = DOC_CPU_S[key]
        out.append(row)
        del model
    return {"cpu_threads": torch.get_num_threads(), "cases": out}


ITEM_FUNCS: dict[str, Callable[[Ctx, Box], dict]] = {
    "trainer": item_trainer, "ensembles": item_ensembles, "paper": item_paper, "analysis": item_analysis}


# --------------------------------------------------------------------------- summaries
def _environment(dev: torch.device, dry: bool) -> dict:
    gpu = torch.cuda.get_device_name(dev) if dev.type == "cuda" else None
    try:
        import subprocess
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                                timeout=10).stdout.strip() or None
    except Exception:
        commit = None
    return {"device": str(dev), "device_name": gpu or f"CPU: {cpu_model()}", "dry_run": dry,
            "torch": torch.__version__, "cuda": torch.version.cuda, "numpy": np.__version__,
            "python": platform.python_version(), "cpu": cpu_model(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "commit": commit}


def _write(out: Path, summary: dict) -> None:
    (out / "gpu_check.json").write_text(json.dumps(_clean(summary), indent=1) + "\n")
    (out / "gpu_check.md").write_text(render_markdown(summary))


def render_markdown(s: dict) -> str:
    env = s["environment"]
    lines = [f"## GPU check (`benchmarks/gpu/run_all.py`){' - DRY RUN on the CPU, tiny sizes' if env['dry_run'] else ''}",
             "",
             f"- Device: {env['device_name']} ({env['device']}); torch {env['torch']} (CUDA {env['cuda']}), "
             f"numpy {env['numpy']}, Python {env['python']}; host CPU {env['cpu']}, {env['cpu_count']} cores, "
             f"{env['torch_threads']} torch threads; commit {env['commit'] or 'unknown'}.",
             f"- Started {s['started_utc']}; budget {s['budget_s']:.0f} s; wall {s['wall_s']:.1f} s; "
             f"command `{s['command']}`.",
             "", "| # | item | status | wall | cap | note |", "|---|---|---|---|---|---|"]
    for i, it in enumerate(s["items"], 1):
        cap = "rest" if it["cap_s"] is None else f"{it['cap_s']:.0f} s"
        note = it.get("error") or it.get("note") or ""
        lines.append(f"| {i} | {it['title']} | **{it['status']}** | {_fmt_s(it.get('wall_s'))} | {cap} | "
                     f"{note.replace('|', '/')} |")
    lines.append("")
    for it in s["items"]:
        r = it.get("results")
        if it["status"] != OK or not r:
            continue
        lines += RENDER[it["key"]](r) + [""]
    return "\n".join(lines) + "\n"


def _md_trainer(r: dict) -> list[str]:
    lines = ["### 1. Trainer vs the plain PyTorch loop", "", f"Recipe: {r['recipe']}.", "",
             "| dtype | loop | status | steps timed | steps/s | projected 10^7 steps | compile + warm-up | note |",
             "|---|---|---|---|---|---|---|---|"]
    for x in r["rows"]:
        if x["status"] == OK:
            lines.append(f"| {x['dtype']} | {x['loop']} | ok | {x['steps']:,} | {x['steps_per_s']:,.0f} | "
                         f"{_fmt_s(x['projected_1e7_s'])} | {_fmt_s(x.get('overhead_s'))} | {x.get('note', '')} |")
        else:
            lines.append(f"| {x['dtype']} | {x['loop']} | {x['status']} | | | | | {x.get('note', '')} |")
    lines.append("")
    for dtype, sp in r["speedup"].items():
        lines.append(f"- {dtype}: best trainer ({sp['best']}) **{sp['speedup']:.2f}x** the plain loop "
                     f"(target >= 3x: {'met' if sp['met'] else 'not met'}).")
    return lines


def _md_ensembles(r: dict) -> list[str]:
    lines = ["### 2. Ensembles", "", f"Recipe: {r['recipe']}; target: {r['target']}.", "",
             "| mode | R | status | ensemble steps/s | ms per step | step time vs R=1 | note |",
             "|---|---|---|---|---|---|---|"]
    for x in r["rows"]:
        if x["status"] == OK:
            ratio = f"{x['time_vs_R1']:.2f}x" if x.get("time_vs_R1") is not None else "-"
            lines.append(f"| {x['mode']} | {x['R']} | ok | {x['steps_per_s']:,.0f} | {x['ms_per_step']:.3f} | {ratio} "
                         f"| {x.get('note', '')} |")
        else:
            lines.append(f"| {x['mode']} | {x['R']} | {x['status']} | | | | {x.get('note', '')} |")
    lines.append("")
    for mode, met in r["met"].items():
        lines.append(f"- {mode}: target {'met' if met else 'not met'}.")
    return lines


def _md_paper(r: dict) -> list[str]:
    p = r["plan"]
    lines = ["### 3. The study's regime (paper, paper-wd; seed 0; float64; one batched ensemble)", "",
             f"- **{r['note']}.** Planned from {p['steps_per_s_estimate']:,.0f} steps/s ({p['rate_from']}; "
             f"compile={p['compile']}); trained {r['steps_done']:,} steps in {_fmt_s(r['train_wall_s'])} "
             f"(checkpoints and evaluations included).",
             f"- Analysis: `analyze_checkpoints` of each member's checkpoints loaded on the device "
             f"(~{p['analysis_s_per_checkpoint']:.3f} s per checkpoint measured before training).",
             "", "| member | checkpoints | train acc (last) | test acc peak (step) | test acc last | l2 norm first -> last "
             "| FC1 alpha last (min) | FC2 alpha last (min) | traps FC1/FC2 last | analysis wall | agreement |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for m in r["members"]:
        def lay(name, m=m):
            d = m["layers"].get(name)
            return f"{d['alpha_last']:.2f} ({d['alpha_min']:.2f})" if d else "-"
        traps = "/".join(f"{m['layers'][n]['traps_last']:.0f}" if n in m["layers"] else "-" for n in ("fc1", "fc2"))
        lines.append(f"| {m['preset']} | {m['checkpoints']} | {m['train_acc_last']:.3f} | {m['test_acc_peak']:.3f} "
                     f"({m['test_acc_peak_step']:,}) | {m['test_acc_last']:.3f} | {m['l2_norm_first']:.1f} -> "
                     f"{m['l2_norm_last']:.1f} | {lay('fc1')} | {lay('fc2')} | {traps} | "
                     f"{_fmt_s(m['analysis_wall_s'])} | {m['agreement']:.3f} |")
    lines.append("")
    for m in r["members"]:
        lines.append(f"- {m['preset']}: classifier ({m['classifier']}) enters "
                     + ", ".join(f"{k} at {v:,}" for k, v in m["classifier_first_step"].items())
                     + "; reference (`phases_from_accuracy`) "
                     + ", ".join(f"{k} at {v:,}" for k, v in m["reference_first_step"].items())
                     + f". Trajectory: `{m['trajectory_file']}` ({m['trajectory_bytes'] / 1e6:.1f} MB).")
    return lines


def _md_analysis(r: dict) -> list[str]:
    lines = ["### 4. Analysis on the device vs the CPU", "",
             f"CPU torch threads: {r['cpu_threads']}. Device medians exclude the first (start-up) run when "
             f"there are several.", "",
             "| case | where | status | runs (s) | median (s) | mean alpha | traps |", "|---|---|---|---|---|---|---|"]
    for c in r["cases"]:
        for where, v in c.items():
            if not isinstance(v, dict):
                continue
            if v["status"] == OK:
                lines.append(f"| {c['label']} | {where} | ok | {', '.join(f'{t:.3f}' for t in v['times_s'])} | "
                             f"{v['median_s']:.3f} | {v['alpha']:.4f} | {v['traps']} |")
            else:
                lines.append(f"| {c['label']} | {where} | {v['status']} | | | | {v.get('note', '')} |")
    lines.append("")
    for c in r["cases"]:
        if "speedup_vs_cpu" in c:
            doc = (f"; docs/benchmarks.md's CPU number (2-core build machine, 1 thread): {c['doc_cpu_s']:.2f} s"
                   if "doc_cpu_s" in c else "")
            lines.append(f"- {c['case']}: device **{c['speedup_vs_cpu']:.1f}x** the CPU of the same run "
                         f"(same mean alpha: {c['same_alpha']}){doc}.")
    return lines


RENDER = {"trainer": _md_trainer, "ensembles": _md_ensembles, "paper": _md_paper, "analysis": _md_analysis}


# --------------------------------------------------------------------------- main
def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget-s", type=float, default=360.0, help="wall-clock budget of the whole run (s)")
    ap.add_argument("--out", type=Path, default=None,
                    help="output folder (default: $OUT when set, else benchmarks/results/gpu)")
    ap.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU, to check the script")
    ap.add_argument("--device", default="auto", help="auto (CUDA when available), cuda or cpu; dry run: cpu")
    ap.add_argument("--items", default="trainer,ensembles,paper,analysis",
                    help="comma-separated items to run, in the fixed order (names or 1-4)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's; dry run: 1)")
    ap.add_argument("--fail", default=None, metavar="ITEM",
                    help="make ITEM raise at its start (tests the error-recording path)")
    args = ap.parse_args(argv)
    keys = [it.key for it in FULL_ITEMS]
    chosen = []
    for tok in (t.strip() for t in args.items.split(",") if t.strip()):
        key = keys[int(tok) - 1] if tok.isdigit() and 1 <= int(tok) <= len(keys) else tok
        if key not in keys:
            ap.error(f"--items must name items among {keys} (or 1-{len(keys)}); got {tok!r}.")
        chosen.append(key)
    args.items = [k for k in keys if k in chosen]
    if args.fail is not None and args.fail not in keys:
        ap.error(f"--fail must name an item among {keys}; got {args.fail!r}.")
    if args.budget_s < 0 or not math.isfinite(args.budget_s):
        ap.error(f"--budget-s must be a finite number >= 0; got {args.budget_s}.")
    if args.out is None:
        args.out = Path(os.environ["OUT"]) if os.environ.get("OUT") else REPO / "benchmarks" / "results" / "gpu"
    return args


def main(argv: list[str] | None = None) -> int:
    t_start = time.perf_counter()
    args = _parse(argv)
    threads = torch.get_num_threads()
    if args.threads or args.dry_run:
        torch.set_num_threads(args.threads or 1)
    try:
        return _main(args, argv, t_start)
    finally:
        torch.set_num_threads(threads)  # as it was (the tests call main in-process)


def _main(args: argparse.Namespace, argv: list[str] | None, t_start: float) -> int:
    dev = torch.device("cpu") if args.dry_run else bench_trainer.resolve_device(args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    items = [it for it in (DRY_ITEMS if args.dry_run else FULL_ITEMS) if it.key in args.items]
    ctx = Ctx(args=args, sizes=DRY if args.dry_run else FULL, dev=dev, out=args.out, results={})
    summary: dict[str, Any] = {
        "schema": SCHEMA, "started_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "budget_s": args.budget_s, "command": " ".join(["python", "benchmarks/gpu/run_all.py", *(argv or sys.argv[1:])]),
        "environment": _environment(dev, args.dry_run), "wall_s": 0.0,
        "items": [{"key": it.key, "title": it.title, "cap_s": it.cap_s, "need_s": it.need_s, "status": "pending"}
                  for it in items]}
    deadline = t_start + args.budget_s
    for i, it in enumerate(items):
        rec = summary["items"][i]
        left = deadline - time.perf_counter()
        if it.cap_s is None:
            allowed = left - sum(later.need_s for later in items[i + 1:])
        else:
            allowed = min(it.cap_s, left)
        rec["allowed_s"] = allowed
        print(f"[gpu-check] {i + 1}/{len(items)} {it.key}: {allowed:.1f} s allowed, {left:.1f} s of the budget left",
              flush=True)
        if allowed < it.need_s:
            rec.update(status=SKIPPED, wall_s=0.0,
                       note=f"needs >= {it.need_s:g} s; {max(allowed, 0.0):.1f} s available of {left:.1f} s left")
        else:
            t0 = time.perf_counter()
            try:
                if args.fail == it.key:
                    raise RuntimeError(f"injected failure (--fail {it.key})")
                rec["results"] = ITEM_FUNCS[it.key](ctx, Box(allowed))
                ctx.results[it.key] = rec["results"]
                rec["status"] = OK
                rec["note"] = rec["results"].get("note", "")
            except SkipItem as exc:
                rec.update(status=SKIPPED, note=str(exc))
            except Exception as exc:  # recorded; the run goes on with the next item
                rec.update(status=FAILED, error=f"{type(exc).__name__}: {exc}",
                           traceback=traceback.format_exc(limit=8))
            rec["wall_s"] = time.perf_counter() - t0
        summary["wall_s"] = time.perf_counter() - t_start
        print(f"[gpu-check] {it.key}: {rec['status']} in {rec['wall_s']:.1f} s "
              f"{rec.get('error') or rec.get('note') or ''}", flush=True)
        _write(args.out, summary)
    summary["wall_s"] = time.perf_counter() - t_start
    _write(args.out, summary)
    print(f"[gpu-check] done in {summary['wall_s']:.1f} s; summaries in {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
