"""Time htsr_diag.layer_alpha against the two reference fitters on 4096-eigenvalue spectra.

Baselines, measured in the same run on the same eigenvalues:
* WeightWatcher 0.7.7's fitter ``weightwatcher.WW_powerlaw.WWFit`` (a Python loop over
  candidate xmin values),
* ``powerlaw.Fit`` 2.0 (``xmin=None, parameter_ranges={"alpha": [1, None]}``, the call
  that reproduces WWFit; its default range caps alpha at 3).

Writes ``benchmarks/results/powerlaw.md`` (medians over repeats, ratios, agreement, the
device and the command). Run: ``.venv/bin/python benchmarks/bench_powerlaw.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
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

from htsr_diag import esd, layer_alpha


def _quiet():
    buf = io.StringIO()
    stack = contextlib.ExitStack()
    stack.enter_context(contextlib.redirect_stdout(buf))
    stack.enter_context(contextlib.redirect_stderr(buf))
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    return stack


def _time(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=4096, help="eigenvalues per spectrum")
    ap.add_argument("--repeats", type=int, default=5, help="repeats for layer_alpha and WWFit")
    ap.add_argument("--pl-repeats", type=int, default=1, help="repeats for powerlaw.Fit (slow)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "powerlaw.md"))
    args = ap.parse_args(argv)

    with _quiet():
        import powerlaw
        from weightwatcher.WW_powerlaw import WWFit

    n = args.n
    rng = np.random.default_rng(0)
    spectra = {
        f"ESD of a Student-t (df=3) {3 * n // 2}x{n} matrix": esd(rng.standard_t(3, size=(3 * n // 2, n))),
        f"{n} Pareto samples, alpha = 3.5": np.sort(rng.pareto(2.5, size=n) + 1.0),
        f"ESD of a Gaussian {2 * n}x{n} matrix (MP bulk)": esd(rng.standard_normal((2 * n, n))),
    }
    rows = []
    for name, ev in spectra.items():
        t_ours, ours = _time(lambda: layer_alpha(ev), args.repeats)
        with _quiet():
            t_ww, ww = _time(lambda: WWFit(ev), args.repeats)
            t_pl, pl = _time(lambda: powerlaw.Fit(ev, xmin=None, verbose=0,
                                                  parameter_ranges={"alpha": [1, None]}), args.pl_repeats)
        rel = max(abs(ours.alpha - ww.alpha) / ww.alpha, abs(ours.alpha - pl.alpha) / pl.alpha,
                  abs(ours.xmin - ww.xmin) / ww.xmin, abs(ours.xmin - pl.xmin) / pl.xmin)
        rows.append((name, ev.size, ours.alpha, t_ours, t_ww, t_pl, rel))
        print(f"{name}: ours {t_ours:.4f}s  WWFit {t_ww:.4f}s  powerlaw {t_pl:.2f}s  max rel diff {rel:.1e}",
              file=sys.stderr)

    cmd = "nice -n 5 .venv/bin/python benchmarks/bench_powerlaw.py " + " ".join(argv or sys.argv[1:])
    lines = [
        "## Power-law fit (`layer_alpha`) vs WeightWatcher 0.7.7 and powerlaw 2.0",
        "",
        f"Device: CPU, {cpu_model()}, {os.cpu_count()} logical cores (shared; no GPU used). "
        f"numpy {np.__version__}, Python {platform.python_version()}.",
        f"Median wall time of one fit over {args.repeats} repeats ({args.pl_repeats} for powerlaw.Fit); "
        "same eigenvalues for all three; `max rel diff` = largest relative difference of alpha "
        "and xmin against either reference.",
        "",
        "| spectrum | n | alpha | layer_alpha (s) | WWFit (s) | powerlaw.Fit (s) | vs WWFit | vs powerlaw | max rel diff |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, size, alpha, t_o, t_w, t_p, rel in rows:
        lines.append(f"| {name} | {size} | {alpha:.4f} | {t_o:.4f} | {t_w:.4f} | {t_p:.2f} | "
                     f"{t_w / t_o:.1f}x faster | {t_p / t_o:.0f}x faster | {rel:.1e} |")
    lines += ["", f"Reproduce: `{cmd.strip()}`", ""]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
