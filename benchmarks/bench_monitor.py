"""Cost of htsr_diag.Monitor in a training loop, against the same loop without it.

Measures, on the study's MLP (784-200-200-10, float32, batch 200, AdamW):

1. a plain training loop of ``--steps`` steps;
2. the same loop calling ``monitor.step(step)`` every step (log schedule, ``--per-decade``
   analyses per decade, traps on) -- the overhead is the analyses;
3. the cost of one off-schedule ``monitor.step`` call (no analysis due);
4. the cost of one scheduled analysis (``randomize=True`` and ``False``).

Medians over ``--repeats`` runs. Writes a markdown section to
``benchmarks/results/monitor.md``.

    .venv/bin/python benchmarks/bench_monitor.py [--steps 2000] [--repeats 3] [--device cpu] [--threads 1]

``--history N`` measures instead the Monitor's own bookkeeping per analysed step (feature
extraction, phase label, confidence, the gated-signature check) once ``N`` records are held:
the analysis itself is replaced by a fixed precomputed report (``htsr_diag.analyze.analyze``
patched), so the time is what the Monitor adds on top of the analysis, and how it grows with
the length of the run. Writes ``benchmarks/results/monitor_history.md``.

    .venv/bin/python benchmarks/bench_monitor.py --history 1000 [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

from htsr_diag.monitor import Monitor


def _model(device: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(784, 200), torch.nn.ReLU(), torch.nn.Linear(200, 200),
                               torch.nn.ReLU(), torch.nn.Linear(200, 10)).to(device)


def _loop(steps: int, device: str, monitor_kwargs: dict | None) -> tuple[float, int]:
    model = _model(device)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1000, 784, generator=g).to(device)
    y = torch.nn.functional.one_hot(torch.randint(0, 10, (1000,), generator=g), 10).float().to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.0)
    mon = Monitor(model, **monitor_kwargs) if monitor_kwargs is not None else None
    idx = torch.randperm(1000, generator=g).to(device)
    _sync(device)
    t0 = time.perf_counter()
    for step in range(steps):
        b = idx[(step * 200) % 1000:(step * 200) % 1000 + 200]
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.mse_loss(model(x[b]), y[b]).backward()
        opt.step()
        if mon is not None:
            mon.step(step)
    _sync(device)
    return time.perf_counter() - t0, (len(mon.history) if mon is not None else 0)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _history_cost(n_records: int, repeats: int) -> tuple[list[float], list[float]]:
    """Seconds per ``monitor.step`` at the first 20 and the last 20 of ``n_records`` analysed steps.

    The analysis is patched to return one precomputed report, so only the Monitor's own work
    (features, label, confidence, gated-signature check) is timed.
    """
    from unittest import mock

    from htsr_diag import analyze

    model = _model("cpu")
    report = analyze(model, rng=0, ks=False)
    first, last = [], []
    for _ in range(repeats):
        mon = Monitor(model, schedule=1)
        times = []
        with mock.patch("htsr_diag.analyze.analyze", return_value=report):
            for step in range(n_records):
                t0 = time.perf_counter()
                mon.step(step, train_acc=0.5)
                times.append(time.perf_counter() - t0)
        first.append(statistics.median(times[:20]))
        last.append(statistics.median(times[-20:]))
    return first, last


def _main_history(args: argparse.Namespace) -> None:
    first, last = _history_cost(args.history, args.repeats)
    cmd = "python " + " ".join([Path(sys.argv[0]).as_posix()] + sys.argv[1:])
    f, la = statistics.median(first), statistics.median(last)
    lines = [
        "## Monitor bookkeeping per analysed step vs the length of the run",
        "",
        f"Study MLP 784-200-200-10; the analysis is replaced by one precomputed report, so the time is the "
        f"Monitor's own work per analysed step (features, phase label, confidence, gated-signature check). "
        f"{args.history} analysed steps (schedule=1), train_acc 0.5; medians over {args.repeats} runs of the "
        f"median of 20 steps. CPU, torch threads {torch.get_num_threads()}; load average at the end "
        f"{os.getloadavg()[0]:.1f} (a shared machine).",
        "",
        "| measurement | value |",
        "|---|---|",
        f"| per step, records 1-20 | {f * 1e3:.2f} ms |",
        f"| per step, records {args.history - 19}-{args.history} | {la * 1e3:.2f} ms |",
        f"| last / first | {la / f:.1f}x |",
        "",
        f"Reproduce: `{cmd}`",
        "",
    ]
    out = Path(args.out_history)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    sys.stdout.write("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--per-decade", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "monitor.md"))
    ap.add_argument("--history", type=int, default=None,
                    help="measure the Monitor's own per-step cost once this many records are held")
    ap.add_argument("--out-history", default=str(Path(__file__).parent / "results" / "monitor_history.md"))
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.history is not None:
        _main_history(args)
        return

    # warm-up: one-off costs (imports, Tracy-Widom quantile tables) are not per-step costs
    Monitor(_model(args.device), schedule=[0]).step(0)

    # plain and monitored runs interleaved, so that both see the same machine load
    plain, with_mon, ratios = [], [], []
    n_analyses = 0
    for _ in range(args.repeats):
        tp = _loop(args.steps, args.device, None)[0]
        tm, n_analyses = _loop(args.steps, args.device, {"per_decade": args.per_decade})
        plain.append(tp)
        with_mon.append(tm)
        ratios.append(tm / tp)

    # one off-schedule call: a monitor whose next analysis is far away
    off = []
    for _ in range(args.repeats):
        mon = Monitor(_model(args.device), schedule=[0, 10**12])
        mon.step(0)
        n = 200_000
        t0 = time.perf_counter()
        for s in range(1, n + 1):
            mon.step(s)
        off.append((time.perf_counter() - t0) / n)

    one = {}
    for randomize in (True, False):
        ts = []
        model = _model(args.device)
        for r in range(max(args.repeats, 5)):
            mon = Monitor(model, schedule=[0], randomize=randomize, rng=r)
            t0 = time.perf_counter()
            mon.step(0)
            ts.append(time.perf_counter() - t0)
        one[randomize] = statistics.median(ts)

    p, m = statistics.median(plain), statistics.median(with_mon)
    device = (torch.cuda.get_device_name(0) if args.device.startswith("cuda")
              else f"CPU ({platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()})")
    cmd = "python " + " ".join([Path(sys.argv[0]).as_posix()] + sys.argv[1:])
    lines = [
        "## Monitor overhead in a training loop",
        "",
        f"Study MLP 784-200-200-10 (float32, batch 200, AdamW), {args.steps} steps, log schedule with "
        f"{args.per_decade} analyses per decade ({n_analyses} analyses, traps on). Medians of {args.repeats} "
        f"runs, plain and monitored interleaved. Device: {device}; load average at the end "
        f"{os.getloadavg()[0]:.1f} (a shared machine: loop times are noisy, the per-call costs below "
        f"are the stable numbers).",
        "",
        "| measurement | value |",
        "|---|---|",
        f"| plain loop, {args.steps} steps | {p:.2f} s |",
        f"| same loop + `monitor.step(step)` every step | {m:.2f} s |",
        f"| monitored / plain (median of per-repeat ratios) | {statistics.median(ratios):.2f}x |",
        f"| one off-schedule `monitor.step` call | {statistics.median(off) * 1e9:.0f} ns |",
        f"| one scheduled analysis, traps on (`randomize=True`) | {one[True] * 1e3:.1f} ms |",
        f"| one scheduled analysis, alpha only (`randomize=False`) | {one[False] * 1e3:.1f} ms |",
        "",
        f"Reproduce: `{cmd}`",
        "",
    ]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    sys.stdout.write("\n".join(lines))


if __name__ == "__main__":
    main()
