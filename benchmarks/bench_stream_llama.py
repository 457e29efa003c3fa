"""A TinyLlama-1.1B-shaped sharded safetensors folder, streamed: htsr_diag vs WeightWatcher 0.7.7.

The model (generated locally, random weights): TinyLlama-1.1B's shapes -- ``--blocks`` (22)
decoder blocks of hidden 2048, MLP 5632, grouped-query attention with k/v projections
2048 -> 256, vocabulary 32000, untied ``lm_head`` -- in HF names
(``model.layers.0.self_attn.q_proj.weight`` ...), weights N(0, 0.02^2) (Llama's
``initializer_range``) stored in bfloat16, RMSNorm weights ones, split into three shards in
module order with a ``model.safetensors.index.json`` whose ``weight_map`` is sorted by name (as
``save_pretrained`` writes it).

Each tool runs in a fresh subprocess with the same thread count (OMP/MKL/OPENBLAS_NUM_THREADS
and ``torch.set_num_threads``), on the same folder path:

- htsr_diag: ``analyze(folder, randomize=False)`` -- alpha and norms, one tensor in memory at
  a time (``htsr_diag.streaming``); with ``--traps`` also ``randomize=True`` (traps + KS).
- WeightWatcher: ``WeightWatcher(model=folder).analyze()`` (its defaults: alpha, no
  randomization); 0.7.7 reads a safetensors folder itself (``PyStateDictDir`` /
  ``SafeTensorDict``: lazy handles on every shard, layer order from the index file).

Reported: wall time of the analysis call, peak RSS above the RSS just before it (``VmHWM``,
reset with ``/proc/self/clear_refs`` just before the call; it counts torch / BLAS memory and the
file pages mapped by safetensors), and alpha per layer matched by name.

Decision rule, written before the first run: alpha agrees when
``|alpha_ours - alpha_ww| <= 1e-3 * alpha_ww`` for every layer both tools fit; the speed target
is met when WeightWatcher's wall time / ours >= 5, the memory target when our peak extra RSS <=
1/2 of WeightWatcher's; streaming's own target is peak extra RSS <= 3x the largest layer.

Run:  nice -n 10 .venv/bin/python benchmarks/bench_stream_llama.py --blocks 22 --threads 1
      (``--blocks 1`` for a dry check; ``--keep`` keeps the generated folder under runs/E/).
Writes benchmarks/results/stream_llama.md (and .json).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_model, rss_kib, spawn_worker, weightwatcher_analyze  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results" / "stream_llama.md"
HIDDEN, MLP, VOCAB, KV = 2048, 5632, 32000, 256


# ----------------------------------------------------------------------------- the model
def tensor_specs(blocks: int) -> list[tuple[str, tuple[int, ...]]]:
    """(HF name, shape) of every tensor of a TinyLlama-shaped model, in module order."""
    specs = [("model.embed_tokens.weight", (VOCAB, HIDDEN))]
    for i in range(blocks):
        p = f"model.layers.{i}."
        specs += [(p + "self_attn.q_proj.weight", (HIDDEN, HIDDEN)), (p + "self_attn.k_proj.weight", (KV, HIDDEN)),
                  (p + "self_attn.v_proj.weight", (KV, HIDDEN)), (p + "self_attn.o_proj.weight", (HIDDEN, HIDDEN)),
                  (p + "mlp.gate_proj.weight", (MLP, HIDDEN)), (p + "mlp.up_proj.weight", (MLP, HIDDEN)),
                  (p + "mlp.down_proj.weight", (HIDDEN, MLP)),
                  (p + "input_layernorm.weight", (HIDDEN,)), (p + "post_attention_layernorm.weight", (HIDDEN,))]
    specs += [("model.norm.weight", (HIDDEN,)), ("lm_head.weight", (VOCAB, HIDDEN))]
    return specs


def generate(folder: Path, blocks: int, n_shards: int = 3, seed: int = 0) -> dict:
    """Write the model as ``n_shards`` bf16 safetensors shards and the index; returns sizes."""
    import torch
    from safetensors.torch import save_file

    specs = tensor_specs(blocks)
    sizes = [2 * math.prod(shape) for _, shape in specs]
    total = sum(sizes)
    folder.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    files = [f"model-{k + 1:05d}-of-{n_shards:05d}.safetensors" for k in range(n_shards)]
    weight_map: dict[str, str] = {}
    shard: dict[str, torch.Tensor] = {}
    k, filled = 0, 0
    for (name, shape), size in zip(specs, sizes):
        if len(shape) == 1:
            t = torch.ones(shape, dtype=torch.bfloat16)
        else:
            t = (torch.randn(shape, generator=gen) * 0.02).to(torch.bfloat16)
        shard[name] = t
        weight_map[name] = files[k]
        filled += size
        if filled >= total * (k + 1) / n_shards and k < n_shards - 1:
            save_file(shard, folder / files[k], metadata={"format": "pt"})
            shard, k = {}, k + 1
    save_file(shard, folder / files[k], metadata={"format": "pt"})
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2, sort_keys=True))
    largest = max(size for (_, shape), size in zip(specs, sizes) if len(shape) == 2)
    return {"total_bytes": total, "largest_layer_bytes": largest, "n_tensors": len(specs),
            "n_matrices": sum(len(s) == 2 for _, s in specs)}


# ----------------------------------------------------------------------------- workers
def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _current_rss_kib() -> int:
    return _status_kib("VmRSS")


def worker(tool: str, folder: str, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    if tool.startswith("htsr_diag"):
        from htsr_diag import analyze

        randomize = tool == "htsr_diag_traps"

        def run():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                rep = analyze(folder, randomize=randomize, ks=randomize, rng=0, progress=False)
            return {"alpha": {lr.name: lr.alpha for lr in rep.layers}, "n_skipped": len(rep.skipped),
                    "n_traps": rep.n_traps, "n_ok": sum(lr.status == "ok" for lr in rep.layers),
                    "order": rep.names}
    else:
        from htsr_diag.interop import _import_weightwatcher

        _import_weightwatcher()  # before timing

        def run():
            details = weightwatcher_analyze(folder, randomize=tool == "weightwatcher_rand")
            names = [str(n) for n in details["name"]]
            out = {"alpha": dict(zip(names, (float(a) for a in details["alpha"]))), "order": names,
                   "n_ok": int(details["alpha"].notna().sum()), "columns": list(details.columns)}
            if "rand_num_spikes" in details:
                out["n_traps"] = float(details["rand_num_spikes"].sum())
            return out
    base_peak = rss_kib()
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux)
    base_now = _current_rss_kib()
    t0 = time.perf_counter()
    summary = run()
    wall = time.perf_counter() - t0
    return {"tool": tool, "wall_s": wall, "rss_before_kib": base_now, "rss_peak_before_kib": base_peak,
            "rss_peak_kib": _status_kib("VmHWM"), "ru_maxrss_kib": rss_kib(), **summary}


def _spawn(tool: str, folder: Path, threads: int) -> dict:
    return spawn_worker(__file__, ["--worker", tool, "--folder", str(folder), "--threads", str(threads)], threads,
                        env={"PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")})


# ----------------------------------------------------------------------------- comparison
def _ww_name(name: str) -> str:
    return name[:-len(".weight")] if name.endswith(".weight") else name


def compare_alpha(ours: dict, theirs: dict, rel_tol: float = 1e-3) -> dict:
    """Per-layer alpha agreement, matching WeightWatcher's names (with or without '.weight')."""
    theirs_by = {_ww_name(k): v for k, v in theirs.items()}
    common = [n for n in ours if n in theirs_by]
    rel = {n: abs(ours[n] - theirs_by[n]) / abs(theirs_by[n]) for n in common
           if math.isfinite(ours[n]) and math.isfinite(theirs_by[n]) and theirs_by[n] != 0}
    worst = max(rel, key=rel.get) if rel else None
    return {"n_ours": len(ours), "n_theirs": len(theirs), "n_common": len(common), "n_compared": len(rel),
            "n_within": sum(v <= rel_tol for v in rel.values()), "rel_tol": rel_tol,
            "max_rel_diff": rel[worst] if worst else float("nan"), "worst_layer": worst,
            "median_rel_diff": sorted(rel.values())[len(rel) // 2] if rel else float("nan"),
            "only_ours": [n for n in ours if n not in theirs_by][:10],
            "only_theirs": [n for n in theirs_by if n not in ours][:10]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blocks", type=int, default=22, help="decoder blocks (TinyLlama: 22)")
    ap.add_argument("--threads", type=int, default=1, help="BLAS/OpenMP/torch threads of every worker")
    ap.add_argument("--traps", action="store_true", help="also time htsr_diag with randomize=True")
    ap.add_argument("--out", default=str(ROOT / "runs" / "E" / "llama"), help="where the weights are generated")
    ap.add_argument("--keep", action="store_true", help="keep the generated weights")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--randomized", action="store_true",
                    help="compare the randomized analyses instead: analyze(randomize=True) vs "
                         "WeightWatcher analyze(randomize=True)")
    ap.add_argument("--ww-first", action="store_true", help="run WeightWatcher before htsr_diag")
    ap.add_argument("--worker", choices=["htsr_diag", "htsr_diag_traps", "weightwatcher", "weightwatcher_rand"])
    ap.add_argument("--folder")
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.folder, args.threads)))
        return
    import numpy
    import torch
    import weightwatcher

    folder = Path(args.out) / f"blocks{args.blocks}"
    t0 = time.perf_counter()
    info = generate(folder, args.blocks)
    gen_s = time.perf_counter() - t0
    print(f"generated {info['total_bytes'] / 2**30:.2f} GiB in {gen_s:.0f} s at {folder}", flush=True)
    load0 = os.getloadavg()
    ours, theirs = ("htsr_diag_traps", "weightwatcher_rand") if args.randomized else ("htsr_diag", "weightwatcher")
    tools = [theirs, ours] if args.ww_first else [ours, theirs]
    if args.traps and not args.randomized:
        tools.append("htsr_diag_traps")
    res = {}
    try:
        for tool in tools:
            res[tool] = _spawn(tool, folder, args.threads)
            print(f"{tool}: {res[tool]['wall_s']:.1f} s", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    load1 = os.getloadavg()
    peak = {t: (r["rss_peak_kib"] - r["rss_before_kib"]) * 1024 for t, r in res.items()}
    cmp_ = compare_alpha(res[ours]["alpha"], res[theirs]["alpha"])
    speed = res[theirs]["wall_s"] / res[ours]["wall_s"]
    mem = peak[ours] / peak[theirs]
    largest = info["largest_layer_bytes"]
    mib = 2**20
    lines = [
        f"## Big models, streamed: TinyLlama-1.1B shape, {args.blocks} block(s), sharded safetensors (CPU)",
        "",
        f"Random N(0, 0.02^2) bf16 weights in TinyLlama-1.1B's shapes ({args.blocks} decoder blocks, hidden 2048, "
        f"MLP 5632, GQA k/v 2048 -> 256, vocab 32000, untied lm_head): {info['n_tensors']} tensors, "
        f"{info['n_matrices']} matrices, {info['total_bytes'] / 2**30:.2f} GiB in 3 shards with "
        f"model.safetensors.index.json; largest layer (embed_tokens / lm_head, 32000x2048 bf16) "
        f"{largest / mib:.0f} MiB. Each tool in a fresh subprocess on the same folder path; "
        f"wall = the analysis call; peak extra RSS = `VmHWM` after it minus `VmRSS` just before it, with "
        f"VmHWM reset to the current RSS just before the call (`echo 5 > /proc/self/clear_refs`); it counts "
        f"torch/BLAS work arrays and mapped file pages. One run each.",
        "",
        "| tool | call | wall (s) | process (s) | peak extra RSS (MiB) | x largest layer | layers with alpha |",
        "|---|---|---|---|---|---|---|",
    ]
    calls = {"htsr_diag": "`analyze(folder, randomize=False)`", "weightwatcher": "`WeightWatcher(model=folder).analyze()`",
             "htsr_diag_traps": "`analyze(folder, randomize=True)`",
             "weightwatcher_rand": "`WeightWatcher(model=folder).analyze(randomize=True)`"}
    for t, r in res.items():
        lines.append(f"| {t} | {calls[t]} | {r['wall_s']:.1f} | {r['process_s']:.1f} | {peak[t] / mib:.0f} | "
                     f"{peak[t] / largest:.2f} | {r['n_ok']} |")
    lines += [
        "",
        f"- Speed: htsr_diag is **{speed:.1f}x** faster than WeightWatcher (target >= 5x: "
        f"{'met' if speed >= 5 else 'NOT met'}).",
        f"- Memory: htsr_diag's peak extra RSS is **{mem:.2f}x** WeightWatcher's (target <= 0.5: "
        f"{'met' if mem <= 0.5 else 'NOT met'}); {peak[ours] / largest:.2f}x the largest layer as stored "
        f"(target <= 3x: {'met' if peak[ours] <= 3 * largest else 'NOT met'})."
        + (f" Traps (sum): htsr_diag {res[ours].get('n_traps')}, WeightWatcher rand_num_spikes "
           f"{res[theirs].get('n_traps')}." if args.randomized else ""),
        f"- Alpha per layer: {cmp_['n_within']} of {cmp_['n_compared']} layers within "
        f"|diff| <= {cmp_['rel_tol']:g} x alpha (rule fixed before the run); largest relative difference "
        f"{cmp_['max_rel_diff']:.2e} ({cmp_['worst_layer']}), median {cmp_['median_rel_diff']:.2e}. Layers: "
        f"htsr_diag {cmp_['n_ours']}, WeightWatcher {cmp_['n_theirs']}, matched by name {cmp_['n_common']}"
        + (f"; only htsr_diag: {cmp_['only_ours']}" if cmp_['only_ours'] else "")
        + (f"; only WeightWatcher: {cmp_['only_theirs']}" if cmp_['only_theirs'] else "") + ".",
        f"- Order: htsr_diag follows the index's weight_map ({res[ours]['order'][:2]} ...); "
        f"WeightWatcher's first layers: {res[theirs]['order'][:2]} ...; tools run in the order {tools}.",
        f"- Device: CPU only ({cpu_model()}, {os.cpu_count()} logical cores, shared with other jobs; load average "
        f"{load0[0]:.2f} before, {load1[0]:.2f} after). Threads: {args.threads} for each tool "
        f"(OMP/MKL/OPENBLAS_NUM_THREADS and torch.set_num_threads). Generating the weights took {gen_s:.0f} s.",
        f"- Versions: Python {platform.python_version()}, numpy {numpy.__version__}, torch {torch.__version__}, "
        f"weightwatcher {weightwatcher.__version__}.",
        f"- Reproduce: `nice -n 10 .venv/bin/python benchmarks/bench_stream_llama.py --blocks {args.blocks} "
        f"--threads {args.threads}{' --traps' if args.traps else ''}{' --randomized' if args.randomized else ''}"
        f"{' --ww-first' if args.ww_first else ''}`",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        suffix = ("" if args.blocks == 22 else f"_blocks{args.blocks}") + ("_randomized" if args.randomized else "") \
            + ("_ww_first" if args.ww_first else "")
        RESULTS.with_name(f"stream_llama{suffix}.md").write_text(text)
        slim = {t: {k: v for k, v in r.items()} for t, r in res.items()}
        RESULTS.with_name(f"stream_llama{suffix}.json").write_text(json.dumps(
            {"info": info, "compare": cmp_, "results": slim, "threads": args.threads, "blocks": args.blocks},
            indent=1))


if __name__ == "__main__":
    main()
