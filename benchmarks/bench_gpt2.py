"""Whole-model analysis of GPT-2-small-shaped random weights: htsr_diag vs WeightWatcher 0.7.7.

The model: 12 blocks of four linear layers with GPT-2 small's shapes (attention c_attn
768 -> 2304 and c_proj 768 -> 768, MLP c_fc 768 -> 3072 and c_proj 3072 -> 768; embeddings
excluded), weights N(0, 0.02^2) float32 as GPT-2's initialisation, 48 layers in all.

Both tools do the full analysis with the randomized (shuffled) spectrum:
``htsr_diag.analyze(model, randomize=True, ks=True)`` (alpha, traps, KS vs MP) and
``weightwatcher.WeightWatcher(model).analyze(randomize=True)`` (alpha, rand_num_spikes).
Each tool runs in its own subprocess so that its peak resident memory (``ru_maxrss``, which
counts BLAS/LAPACK work arrays that tracemalloc cannot see) is its own; the parent reports the
median wall time over ``--repeat`` runs within the subprocess and the peak RSS above the RSS
measured just before the first analysis (imports and the model excluded).

Run:  .venv/bin/python benchmarks/bench_gpt2.py --repeat 3 --ww-repeat 1
Writes benchmarks/results/gpt2.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_model, rss_kib, spawn_worker, weightwatcher_analyze  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "gpt2.md"
SHAPES = (("attn.c_attn", 768, 2304), ("attn.c_proj", 768, 768), ("mlp.c_fc", 768, 3072), ("mlp.c_proj", 3072, 768))


def build_model(blocks: int, seed: int = 0):
    import torch
    import torch.nn as nn

    gen = torch.Generator().manual_seed(seed)
    model = nn.Module()
    model.h = nn.ModuleList()
    for _ in range(blocks):
        block = nn.Module()
        block.attn = nn.Module()
        block.mlp = nn.Module()
        for name, n_in, n_out in SHAPES:
            parent, child = name.split(".")
            lin = nn.Linear(n_in, n_out)
            with torch.no_grad():
                lin.weight.copy_(torch.randn(n_out, n_in, generator=gen) * 0.02)
                lin.bias.zero_()
            setattr(getattr(block, parent), child, lin)
        model.h.append(block)
    return model


def worker(tool: str, blocks: int, repeat: int) -> dict:
    model = build_model(blocks)
    if tool == "htsr_diag":
        from htsr_diag.analyze import analyze

        def run():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                rep = analyze(model, randomize=True, ks=True, rng=0, progress=False)
            return {"n_layers": len(rep.layers), "mean_alpha": rep.mean_alpha, "n_traps": rep.n_traps,
                    "n_ok": sum(lr.status == "ok" for lr in rep.layers)}
    else:
        from htsr_diag.interop import _import_weightwatcher

        _import_weightwatcher()  # before timing

        def run():
            details = weightwatcher_analyze(model, randomize=True)
            return {"n_layers": int(len(details)), "mean_alpha": float(details["alpha"].mean()),
                    "n_traps": float(details["rand_num_spikes"].sum())}
    base = rss_kib()
    times, summary = [], {}
    for _ in range(repeat):
        t0 = time.perf_counter()
        summary = run()
        times.append(time.perf_counter() - t0)
    return {"tool": tool, "times": times, "rss_base_kib": base, "rss_peak_kib": rss_kib(), **summary}


def _spawn(tool: str, blocks: int, repeat: int, threads: int | None) -> dict:
    return spawn_worker(__file__, ["--worker", tool, "--blocks", str(blocks), "--repeat", str(repeat)], threads)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3, help="htsr_diag runs (median reported)")
    ap.add_argument("--ww-repeat", type=int, default=1, help="weightwatcher runs (it takes minutes)")
    ap.add_argument("--blocks", type=int, default=12)
    ap.add_argument("--threads", type=int, default=None,
                    help="BLAS/OpenMP threads of both workers (default: the libraries' own)")
    ap.add_argument("--worker", choices=["htsr_diag", "weightwatcher"])
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.blocks, args.repeat)))
        return
    import numpy
    import torch
    import weightwatcher

    load0 = os.getloadavg()
    res = {"htsr_diag": _spawn("htsr_diag", args.blocks, args.repeat, args.threads),
           "weightwatcher": _spawn("weightwatcher", args.blocks, args.ww_repeat, args.threads)}
    load1 = os.getloadavg()
    med = {t: statistics.median(r["times"]) for t, r in res.items()}
    peak = {t: (r["rss_peak_kib"] - r["rss_base_kib"]) / 1024 for t, r in res.items()}
    ratio = med["weightwatcher"] / med["htsr_diag"]
    n_layers = 4 * args.blocks
    lines = [
        "## GPT-2 small shapes: whole-model analysis with randomization (CPU)",
        "",
        f"{args.blocks} blocks x (768x2304, 768x768, 768x3072, 3072x768) random N(0, 0.02^2) float32 weights, "
        f"{n_layers} layers, embeddings excluded. Full analysis with the shuffled spectrum: "
        "`htsr_diag.analyze(model, randomize=True, ks=True)` (alpha, correlation traps, KS vs MP) vs "
        "`weightwatcher.WeightWatcher(model).analyze(randomize=True)`. Each tool in its own subprocess; "
        f"median wall time of {args.repeat} run(s) of htsr_diag and {args.ww_repeat} of weightwatcher; peak memory = `ru_maxrss` after the runs minus before "
        "the first (imports and the model excluded; includes BLAS/LAPACK work arrays).",
        "",
        "| tool | median wall (s) | runs (s) | peak extra RSS (MiB) | layers | mean alpha | traps (sum) |",
        "|---|---|---|---|---|---|---|",
    ]
    for t, r in res.items():
        lines.append(f"| {t} | {med[t]:.2f} | {', '.join(f'{x:.2f}' for x in r['times'])} | {peak[t]:.0f} | "
                     f"{r['n_layers']} | {r['mean_alpha']:.3f} | {r['n_traps']:g} |")
    lines += [
        "",
        f"**htsr_diag is {ratio:.1f}x faster** than weightwatcher 0.7.7 "
        f"(target: at least 5x). Peak extra memory: htsr_diag {peak['htsr_diag']:.0f} MiB, weightwatcher "
        f"{peak['weightwatcher']:.0f} MiB.",
        "",
        f"- Device: CPU only ({cpu_model()}, {os.cpu_count()} logical cores; the machine is shared, load average {load0[0]:.2f} before and "
        f"{load1[0]:.2f} after the run). No GPU was lent for this task, so no GPU timing.",
        f"- Threads: {args.threads or 'library defaults'} BLAS/OpenMP thread(s) for both tools"
        + (" (set with OMP/MKL/OPENBLAS_NUM_THREADS; on a busy shared machine, default OpenMP threads "
           "oversubscribe the cores and slow both tools down erratically)." if args.threads else "."),
        f"- Versions: Python {platform.python_version()}, numpy {numpy.__version__}, torch {torch.__version__}, "
        f"weightwatcher {weightwatcher.__version__}.",
        "- weightwatcher's `traps` column is its `rand_num_spikes` (pooled over its shuffles); htsr_diag's is "
        "`n_traps` (designed false-alarm rate 1e-3 per layer). Random weights should have none.",
        f"- Reproduce: `.venv/bin/python benchmarks/bench_gpt2.py --repeat {args.repeat} --ww-repeat {args.ww_repeat}"
        + (f" --blocks {args.blocks}" if args.blocks != 12 else "")
        + (f" --threads {args.threads}" if args.threads else "") + "`",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(text)


if __name__ == "__main__":
    main()
