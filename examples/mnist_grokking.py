"""The bundled study, end to end, as a script: grokking and anti-grokking on 1k MNIST images.

Trains the reference MLP (784-200-200-10, init x8, MSE, AdamW without weight decay; Prakash &
Martin, arXiv 2506.04434), analyses every saved checkpoint (layer alpha, correlation traps,
KS test against Marchenko-Pastur, the four baselines), labels the phases from the weights
alone and from the accuracy curves, and writes a report folder::

    python examples/mnist_grokking.py                       # `fast` preset on CPU (~10 min on 2 cores)
    python examples/mnist_grokking.py --steps 300           # a smoke run (seconds)
    python examples/mnist_grokking.py --preset paper --device cuda --workers 8   # the full study

It does what ``htsr-diag demo`` does, spelled out with the library's public API so that
each stage can be changed: another classifier, another preset, more seeds. Like the demo it
trains with one torch thread unless ``--threads`` says otherwise: on a CPU the thread count
changes the float rounding of the matrix products, and over 10^5 steps that changes the
curve (docs/training.md, "What changes results"). With the same preset, seed and thread count
the two write bit-identical metrics (tests/test_train_robustness.py).
"""

from __future__ import annotations

import argparse
import logging
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

import htsr_diag
from htsr_diag.phases import PhaseClassifier, phases_from_accuracy
from htsr_diag.report import training_inputs, write_report
from htsr_diag.train import PRESETS, train

#: The preset ``htsr-diag demo`` trains by default (its own recipe once it has one).
DEFAULT_PRESET = "demo" if "demo" in PRESETS else "fast"


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1; got {text!r}")
    return value
from htsr_diag.trajectory import analyze_checkpoints


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default=DEFAULT_PRESET, choices=sorted(PRESETS))
    ap.add_argument("--steps", type=float, default=None, help="override the preset's number of steps")
    ap.add_argument("--device", default=None, choices=("auto", "cpu", "cuda"))
    ap.add_argument("--checkpoints-per-decade", type=_positive, default=None,
                    help="override the preset's log-spaced checkpoint density")
    ap.add_argument("--out", default="runs/mnist_grokking")
    ap.add_argument("--workers", type=_positive, default=1, help="processes analysing checkpoints")
    ap.add_argument("--threads", type=_positive, default=1,
                    help="torch CPU threads (default 1, as `htsr-diag demo`; the count changes results)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("-v", "--verbose", action="store_true", help="log the library's INFO messages")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)  # recorded in OUT/run/config.json (htsr_diag_env)

    # 1. train: log-spaced checkpoints and metrics.jsonl in OUT/run
    changes = {"seed": args.seed}
    if args.steps is not None:
        changes["steps"] = int(args.steps)
    if args.device is not None:
        changes["device"] = args.device
    if args.checkpoints_per_decade is not None:
        changes["checkpoints_per_decade"] = args.checkpoints_per_decade
    config = PRESETS[args.preset].replace(**changes)
    out = Path(args.out)
    run = train(config, out / "run")

    # 2. analyse every checkpoint (in parallel if asked; the result does not depend on it)
    pool = ProcessPoolExecutor(args.workers) if args.workers > 1 else None
    try:
        inputs = training_inputs(run)  # the run's 1k training images, for the baselines
        traj = analyze_checkpoints(run, inputs=inputs, executor=pool, rng=args.seed)
    finally:
        if pool is not None:
            pool.shutdown()

    # 3. phases: from the weights (no test data) and, as the reference, from the accuracy curves
    predicted = PhaseClassifier().predict(traj)
    reference = phases_from_accuracy(traj.steps, traj.metrics["train_acc"], traj.metrics["test_acc"])
    alarm = PhaseClassifier(causal=True).transition_steps(traj)["anti-grokking"]
    print(f"htsr_diag {htsr_diag.__version__}: {len(traj)} checkpoints analysed")
    print(f"agreement of weight-only phases with accuracy phases: {(predicted == reference).mean():.0%}")
    print(f"anti-grokking alarm (causal): {'none' if alarm is None else f'step {alarm:,}'}")

    # 4. the report folder: report.html, the four figures, trajectory.csv/json, summary.txt
    report = write_report(run, out, trajectory=traj, rng=args.seed)
    print(report.summary.to_text())
    print(f"report: {report.html}")


if __name__ == "__main__":
    main()
