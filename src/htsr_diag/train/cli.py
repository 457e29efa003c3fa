"""The ``htsr-diag train`` sub-command (also ``python -m htsr_diag.train``).

Examples
--------
::

    htsr-diag train --preset paper --steps 1e7 --out runs/paper
    htsr-diag train --preset fast --seeds 0,1,2 --weight-decays 0,0.01 --out runs/sweep
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import logging
import re
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from .config import PRESETS, TrainConfig

__all__ = ["add_parser", "configs_from_args", "run", "main"]

logger = logging.getLogger(__name__)


_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")


def plain(message: object) -> str:
    """``str(message)`` without ANSI terminal escapes (colour, bold), e.g. from torch's errors.

    Examples
    --------
    >>> plain("\x1b[1mbold\x1b[0m text")
    'bold text'
    """
    return _ANSI.sub("", str(message))


def _int(text: str) -> int:
    """An integer that may be written as a float: ``1e7`` -> 10000000."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer (e.g. 1000 or 1e7); got {text!r}") from None
    if not value.is_integer():
        raise argparse.ArgumentTypeError(f"expected an integer; got {text!r}")
    return int(value)


def _list(conv: Callable[[str], Any]) -> Callable[[str], list]:
    def parse(text: str) -> list:
        try:
            return [conv(t) for t in text.split(",") if t.strip()]
        except (ValueError, argparse.ArgumentTypeError) as exc:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list; got {text!r} ({exc})") from None
    return parse


def _sweep(conv: Callable[[str], Any]) -> Callable[[str], list]:
    """A sweep list: at least one value, none twice (each would train the same run again)."""
    def parse(text: str) -> list:
        values = _list(conv)(text)
        if not values:
            raise argparse.ArgumentTypeError(f"expected at least one value (e.g. 0,1,2); got {text!r}. "
                                             f"Leave the option out to use the preset's value.")
        twice = sorted({v for v in values if values.count(v) > 1})
        if twice:
            raise argparse.ArgumentTypeError(f"expected distinct values; got {text!r}, which lists "
                                             f"{', '.join(map(str, twice))} more than once. Remove the duplicates.")
        return values
    return parse


def _positive(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1; got {text!r}")
    return value


def _pair(conv: Callable[[str], Any]) -> Callable[[str], tuple]:
    def parse(text: str) -> tuple:
        parts = _list(conv)(text)
        if len(parts) != 2:
            raise argparse.ArgumentTypeError(f"expected two comma-separated values; got {text!r}")
        return tuple(parts)
    return parse


_FIELD_TYPES: dict[str, Callable[[str], Any]] = {
    "seed": _int, "lr": float, "weight_decay": float, "betas": _pair(float), "eps": float,
    "batch_size": _int, "steps": _int, "dtype": str, "init_scale": float, "hidden": _pair(_int),
    "n_train_per_class": _int, "checkpoints_per_decade": _int, "data_dir": str, "device": str,
    "data_seed": _int, "task": str, "label_noise": float, "modulus": _int, "operation": str,
    "train_fraction": float, "d_model": _int, "n_heads": _int, "d_mlp": _int, "decoder_lr": float,
    "decoder_weight_decay": float,
}
_CHOICES = {"dtype": ["float64", "float32"], "task": ["mnist", "modular", "liu_toy"],
            "operation": ["add", "sub", "mul", "div"]}


def add_parser(subparsers: "argparse._SubParsersAction") -> argparse.ArgumentParser:
    """Add the ``train`` sub-command to ``subparsers``; the parser's ``func`` runs it.

    Every :class:`TrainConfig` field is an option (``--weight-decay``, ``--steps 1e7``...);
    ``--seeds``, ``--lrs`` and ``--weight-decays`` (comma-separated) train the product of their
    values as one batched ensemble.
    """
    p = subparsers.add_parser(
        "train", help="train the reference MLP on MNIST (the anti-grokking study)",
        description="Train the study's MLP on MNIST, writing config.json, metrics.jsonl and "
                    "log-spaced safetensors checkpoints to --out. Re-running the same command "
                    "resumes an interrupted run.")
    add_arguments(p)
    p.set_defaults(func=run)
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", choices=sorted(PRESETS), default="fast",
                   help="starting recipe (default: fast); options below override its fields")
    p.add_argument("--out", type=Path, required=True, help="run folder (created; resumed if it holds a run)")
    cfg_group = p.add_argument_group("config fields (override the preset)")
    for f in dataclasses.fields(TrainConfig):
        if f.name == "preset":
            continue
        cfg_group.add_argument("--" + f.name.replace("_", "-"), dest=f.name, type=_FIELD_TYPES[f.name],
                               default=None, choices=_CHOICES.get(f.name),
                               help=f"default from the preset (paper: {getattr(PRESETS['paper'], f.name)!r})")
    sweep = p.add_argument_group("sweeps (one batched ensemble; the product of the lists)")
    sweep.add_argument("--seeds", type=_sweep(_int), default=None, help="e.g. 0,1,2 (distinct)")
    sweep.add_argument("--lrs", type=_sweep(float), default=None, help="e.g. 1e-3,5e-3 (distinct)")
    sweep.add_argument("--weight-decays", type=_sweep(float), default=None, help="e.g. 0,0.01 (distinct)")
    run_group = p.add_argument_group("execution")
    run_group.add_argument("--no-resume", dest="resume", action="store_false",
                           help="fail if --out already holds a run instead of resuming it")
    run_group.add_argument("--progress", dest="progress", action="store_true", default=None,
                           help="always draw the progress bar (default: only on a terminal)")
    run_group.add_argument("--no-progress", dest="progress", action="store_false")
    # SUPPRESS: an unset sub-command option must not overwrite `htsr-diag --threads N train`.
    run_group.add_argument("--threads", type=_positive, default=argparse.SUPPRESS,
                           help="torch CPU threads (same as the global --threads)")
    run_group.add_argument("--compile", action="store_true", help="torch.compile the step (experimental)")
    run_group.add_argument("--download", action="store_true",
                           help="download the full MNIST IDX files into the cache if missing")


def configs_from_args(args: argparse.Namespace) -> list[TrainConfig]:
    """The config(s) the arguments describe: one, or the product of --seeds/--lrs/--weight-decays."""
    changes = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
               if f.name != "preset" and getattr(args, f.name, None) is not None}
    base = PRESETS[args.preset].replace(**changes)
    seeds = args.seeds if args.seeds is not None else [base.seed]
    lrs = args.lrs if args.lrs is not None else [base.lr]
    wds = args.weight_decays if args.weight_decays is not None else [base.weight_decay]
    if args.seeds is None and args.lrs is None and args.weight_decays is None:
        return [base]
    return [base.replace(seed=s, lr=lr, weight_decay=wd) for s, lr, wd in itertools.product(seeds, lrs, wds)]


def run(args: argparse.Namespace) -> int:
    """Run the sub-command; returns the exit status."""
    import torch

    from .data import load_mnist
    from .trainer import RunLockedError, TrainingDivergedError, train, train_ensemble

    try:
        configs = configs_from_args(args)
    except (TypeError, ValueError) as exc:
        print(f"htsr-diag train: error: {plain(exc)}", file=sys.stderr)
        return 2
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    if args.download:
        load_mnist(configs[0].data_dir, download=True)
    try:
        if len(configs) == 1:
            out = train(configs[0], args.out, progress=args.progress, resume=args.resume, compile=args.compile)
            print(out)
        else:
            dirs = train_ensemble(configs, args.out, progress=args.progress, resume=args.resume,
                                  compile=args.compile)
            print("\n".join(str(d) for d in dirs))
    except TrainingDivergedError as exc:
        print(f"htsr-diag train: {plain(exc)}", file=sys.stderr)
        return 3
    except (ValueError, FileNotFoundError, OSError, RunLockedError) as exc:
        print(f"htsr-diag train: error: {plain(exc)}", file=sys.stderr)
        return 2
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m htsr_diag.train ARGS`` (the same options as ``htsr-diag train``)."""
    parser = argparse.ArgumentParser(prog="python -m htsr_diag.train", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return run(args)
