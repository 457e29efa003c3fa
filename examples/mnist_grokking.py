"""The bundled study, end to end, as a script: grokking and anti-grokking on 1k MNIST images.

Trains the reference MLP (784-200-200-10, init x8, MSE, AdamW without weight decay; Prakash &
Martin, arXiv 2506.04434), analyses every saved checkpoint (layer alpha, correlation traps,
KS test against Marchenko-Pastur, the four baselines), labels the phases from the weights
alone and from the accuracy curves, and writes a report folder::

    python examples/mnist_grokking.py                       # `fast` preset on CPU (~10 min on 2 cores)
    python examples/mnist_grokking.py --steps 300           # a smoke run (seconds)
    python examples/mnist_grokking.py --preset paper --device cuda --workers 8   # the full study

It does what ``htsr-diag demo`` does, spelled out with the library's public API so that
each stage can be changed: another classifier, another preset, more seeds.
"""

from __future__ import annotations

import argparse
import logging
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import htsr_diag
from htsr_diag.phases import PhaseClassifier, phases_from_accuracy
from htsr_diag.report import training_inputs, write_report
from htsr_diag.train import PRESETS, train
from htsr_diag.trajectory import analyze_checkpoints


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="fast", choices=sorted(PRESETS))
    ap.add_argument("--steps", type=float, default=None, help="override the preset's number of steps")
    ap.add_argument("--device", default=None, choices=("auto", "cpu", "cuda"))
    ap.add_argument("--out", default="runs/mnist_grokking")
    ap.add_argument("--workers", type=int, default=1, help="processes analysing checkpoints")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    # 1. train: log-spaced checkpoints and metrics.jsonl in OUT/run
    changes = {"seed": args.seed}
    if args.steps is not None:
        changes["steps"] = int(args.steps)
    if args.device is not None:
        changes["device"] = args.device
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
