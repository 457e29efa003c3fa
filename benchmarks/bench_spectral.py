"""Benchmark: htsr_diag's full randomized layer analysis vs WeightWatcher 0.7.7.

On the same models, in one run:

* htsr_diag, per Linear layer: ``esd`` (float64) + ``layer_alpha`` + ``randomized_analysis``
  (one shuffled spectrum: correlation traps and the KS test against MP) -- two
  eigendecompositions per layer;
* ``weightwatcher.WeightWatcher(model=...).analyze(randomize=True)`` (its stdout and
  logging silenced) -- three SVDs per layer and a KDE grid fit of the MP sigma.

Models: the anti-grokking study's MLP 784-200-200-10 (PyTorch init x 8), and a single
Gaussian ``nn.Linear`` of 1024 x 1024 and 4096 x 4096. Wall-clock medians over repeats,
after one untimed warm-up of both tools. Writes a markdown section to
``benchmarks/results/spectral.md``.

Usage::

    .venv/bin/python benchmarks/bench_spectral.py            # full run (~4 min on 2 cores)
    .venv/bin/python benchmarks/bench_spectral.py --quick    # MLP and 1024 only, 2 repeats
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_model  # noqa: E402

import numpy as np
import torch

from htsr_diag.powerlaw import layer_alpha
from htsr_diag.spectrum import esd
from htsr_diag.traps import randomized_analysis

RESULTS = Path(__file__).resolve().parent / "results" / "spectral.md"


def mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(784, 200), torch.nn.ReLU(), torch.nn.Linear(200, 200),
                                torch.nn.ReLU(), torch.nn.Linear(200, 10))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(8.0)  # the study's initialisation scale (REFERENCES.md, Table 3)
    return model


def gaussian_linear(n: int) -> torch.nn.Module:
    torch.manual_seed(0)
    lin = torch.nn.Linear(n, n)
    with torch.no_grad():
        lin.weight.normal_(0.0, 1.0 / n**0.5)
    return torch.nn.Sequential(lin)


def htsr_analysis(model: torch.nn.Module, precision: str = "auto") -> list[dict]:
    rows = []
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear):
            W = mod.weight.detach()
            ev = esd(W)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # small-spectrum warnings of the 10-row layer
                fit = layer_alpha(ev, shape=tuple(W.shape))
            traps, ks = randomized_analysis(W, rng=0, precision=precision)
            rows.append({"layer": name, "alpha": fit.alpha, "n_traps": traps.n_traps,
                         "sigma": traps.sigma, "ks_p": ks.pvalue})
    return rows


def ww_analysis(model: torch.nn.Module):
    import weightwatcher as ww

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ww.WeightWatcher(model=model).analyze(randomize=True)


def timed_pair(model, repeats: int):
    """Alternate the two tools (h, w, h, w, ...) so that both see the same machine load."""
    th, tw, rows, df = [], [], None, None
    for _ in range(repeats):
        t0 = time.perf_counter()
        rows = htsr_analysis(model)
        th.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        df = ww_analysis(model)
        tw.append(time.perf_counter() - t0)
    return statistics.median(th), th, rows, statistics.median(tw), tw, df


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="MLP and 1024 only, 2 repeats; no results file")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)

    import weightwatcher

    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    cases = [("MLP 784-200-200-10 (init x 8)", mlp, 5), ("Gaussian nn.Linear 1024x1024", lambda: gaussian_linear(1024), 5),
             ("Gaussian nn.Linear 4096x4096", lambda: gaussian_linear(4096), 3)]
    if args.quick:
        cases = [(c[0], c[1], 2) for c in cases[:2]]

    load_before = os.getloadavg()
    warm = mlp()
    htsr_analysis(warm)
    ww_analysis(warm)

    lines = []
    for label, make, repeats in cases:
        model = make()
        t_h, all_h, rows, t_w, all_w, df = timed_pair(model, repeats)
        ww_alpha = [float(a) for a in df["alpha"]]
        ww_traps = [int(t) for t in df["num_traps"]]
        ratio = t_w / t_h
        print(f"{label}: htsr {t_h:.3f}s  ww {t_w:.3f}s  ratio {ratio:.1f}x", flush=True)
        lines.append((label, repeats, t_h, t_w, ratio, all_h, all_w, rows, ww_alpha, ww_traps))
    # the all-float64 variant of the largest case (the shuffled spectrum in float64 too)
    big_label, big_make, big_repeats = cases[-1]
    model = big_make()
    t64 = []
    for _ in range(big_repeats):
        t0 = time.perf_counter()
        htsr_analysis(model, precision="float64")
        t64.append(time.perf_counter() - t0)
    t64_med = statistics.median(t64)
    print(f"{big_label} precision=float64: htsr {t64_med:.3f}s", flush=True)
    load_after = os.getloadavg()

    if args.quick:
        return 0
    cmd = "nice -n 0 .venv/bin/python benchmarks/bench_spectral.py"
    md = ["## Spectral analysis: htsr_diag vs WeightWatcher 0.7.7 (`analyze(randomize=True)`)", "",
          f"- Device: {cpu_model()}, {os.cpu_count()} logical cores, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), numpy {np.__version__}, weightwatcher {weightwatcher.__version__}, "
          f"Python {platform.python_version()}.",
          f"- Load average (1/5/15 min) before: {load_before[0]:.2f}/{load_before[1]:.2f}/{load_before[2]:.2f}, "
          f"after: {load_after[0]:.2f}/{load_after[1]:.2f}/{load_after[2]:.2f} "
          "(the machine is shared; run when the 1-minute load is below ~0.5 for clean numbers).",
          f"- Command: `{cmd}` (from the repository root).",
          "- htsr_diag per Linear layer: `esd` (float64 Gram + eigvalsh) + `layer_alpha` + "
          "`randomized_analysis(W, rng=0)` (one shuffled spectrum shared by the traps and the KS test): "
          "2 decompositions. WeightWatcher: 3 SVDs per layer (W, the pooled shuffles, a second shuffle) "
          "and a 195-point KDE grid fit of sigma.",
          "- Times: wall-clock seconds, median over the repeats (the two tools alternate, so both see the "
          "same load), after one untimed warm-up of both tools.", "",
          "| model | repeats | htsr_diag (s) | WeightWatcher (s) | speed-up |",
          "|---|---|---|---|---|"]
    for label, repeats, t_h, t_w, ratio, *_ in lines:
        md.append(f"| {label} | {repeats} | {t_h:.3f} | {t_w:.3f} | {ratio:.1f}x |")
    big = lines[-1]
    md.append(f"| {big[0]}, shuffled spectrum in float64 (`precision=\"float64\"`) | {big_repeats} | "
              f"{t64_med:.3f} | {big[3]:.3f} (same WW runs) | {big[3] / t64_med:.1f}x |")
    md += ["", "By default (`precision=\"auto\"`) the shuffled spectrum of float32 weights (all of these "
           "nn.Linear layers) is computed in float32: its eigenvalues are within 0.3% of a Tracy-Widom scale "
           "of the float64 ones, far below anything that changes a trap count or the KS statistic. The ESD "
           "used for alpha is always float64. The last row shows the all-float64 cost.", ""]
    md += ["", "Per-run times (s) and the results of both tools (sanity check: same alpha; "
           "traps 0 for these unstructured weights unless stated):", ""]
    for label, repeats, t_h, t_w, ratio, all_h, all_w, rows, ww_alpha, ww_traps in lines:
        md.append(f"- {label}: htsr {', '.join(f'{t:.3f}' for t in all_h)}; "
                  f"WW {', '.join(f'{t:.3f}' for t in all_w)}.")
        for r, a, tr in zip(rows, ww_alpha, ww_traps):
            md.append(f"  - `{r['layer']}`: alpha {r['alpha']:.3f} (WW {a:.3f}), traps {r['n_traps']} "
                      f"(WW {tr}), sigma {r['sigma']:.3f}, KS p {r['ks_p']:.3g}")
    md.append("")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(md) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
