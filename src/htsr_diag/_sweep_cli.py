"""The ``htsr-diag sweep`` sub-command (argument parsing only; the work is :func:`htsr_diag.sweep.sweep`)."""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

__all__ = ["add_parser"]


def _grid_item(text: str) -> tuple[str, tuple[float, ...]]:
    from .sweep import parse_grid

    try:
        return parse_grid(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _seeds(text: str) -> tuple[int, ...]:
    from .sweep import _check_seeds

    try:
        return _check_seeds(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _whole(text: str) -> int:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive whole number such as 300 or 1e4; got {text!r}")
    if not math.isfinite(value) or value < 1 or value != int(value):
        raise argparse.ArgumentTypeError(f"must be a positive whole number; got {text!r}")
    return int(value)


def _setting(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip() or not value.strip():
        raise argparse.ArgumentTypeError(f"must be FIELD=VALUE, e.g. modulus=31; got {text!r}")
    return name.strip(), value.strip()


def _overrides(settings: list[tuple[str, str]]) -> dict[str, Any]:
    """--set FIELD=VALUE pairs as TrainConfig changes, typed like the field's default."""
    from .train import TrainConfig

    base = TrainConfig()
    out: dict[str, Any] = {}
    for name, value in settings:
        if name not in TrainConfig.__dataclass_fields__ or name == "seed":
            raise ValueError(f"--set {name}=...: {name!r} is not a TrainConfig field other than seed; use one "
                             f"of {sorted(set(TrainConfig.__dataclass_fields__) - {'seed'})}.")
        cur = getattr(base, name)
        try:
            if isinstance(cur, bool):
                out[name] = value.lower() in ("1", "true", "yes")
            elif isinstance(cur, int):
                out[name] = int(float(value))
            elif isinstance(cur, float):
                out[name] = float(value)
            elif value.lower() == "none":
                out[name] = None
            else:
                try:
                    out[name] = int(value) if value.lstrip("-").isdigit() else float(value)
                except ValueError:
                    out[name] = value
        except ValueError:
            raise ValueError(f"--set {name}={value}: not a number; {name} takes values like {cur!r}.") from None
    return out


def _cmd_sweep(args: argparse.Namespace) -> int:
    from .sweep import sweep

    overrides: dict[str, Any] = _overrides(args.set or [])
    if args.checkpoints_per_decade is not None:
        overrides["checkpoints_per_decade"] = args.checkpoints_per_decade
    pool = None
    if args.workers > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        pool = ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn"))
    try:
        res = sweep(args.preset, dict(args.grid), args.seeds, args.out, steps=args.steps, overrides=overrides,
                    max_ensemble=args.max_ensemble, executor=pool, device=args.device,
                    signature_steps=args.signature_steps, early_fraction=args.early_fraction,
                    liu_threshold=args.liu_threshold, liu_gap=args.liu_gap, rng=args.seed,
                    num_threads=args.threads or 1, figures=not args.no_figures)
    finally:
        if pool is not None:
            pool.shutdown()
    counts: dict[str, int] = {}
    for r in res.rows:
        counts[r["liu_phase"]] = counts.get(r["liu_phase"], 0) + 1
    sys.stdout.write(f"{len(res.rows)} runs in {len(res.timings)} ensemble(s); Liu phases {counts}\n"
                     f"Spearman rho (early loss activity vs final test accuracy): {res.spearman:.3f}\n"
                     f"table: {res.table_csv}\n")
    for name, path in res.figures.items():
        sys.stdout.write(f"figure ({name}): {path}\n")
    return 0


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add ``sweep`` to the ``htsr-diag`` sub-parsers."""
    p = sub.add_parser(
        "sweep", help="train a hyperparameter grid as batched ensembles; Liu phase diagram and loss signatures",
        description="Train every point of --grid x --seeds with the bundled trainer (runs that can share a "
                    "batched model train as one ensemble), then tabulate per run the final accuracies, the Liu "
                    "et al. phase, the weight-only phases, the early loss signature and alpha/traps at the "
                    "end; draw the phase diagrams and the signature figure. Re-running the same command "
                    "resumes a killed sweep.")
    p.add_argument("--preset", default="fast", help="trainer preset (default fast): fast, modular, liu-toy, ...")
    p.add_argument("--grid", action="append", type=_grid_item, required=True, metavar="FIELD=a:b:n",
                   help="a TrainConfig field and its values: a:b:n (n values from a to b, log-spaced when both "
                        "are > 0, else linear; append :log or :lin to choose) or v1,v2,...; repeat for a 2-D "
                        "grid, e.g. --grid lr=1e-4:1e-2:7 --grid weight_decay=0:1:6")
    p.add_argument("--seeds", type=_seeds, default=(0,), help="comma-separated seeds (default 0)")
    p.add_argument("--out", required=True, help="output folder (table.csv, table.json, figures, ens_*/)")
    p.add_argument("--steps", type=_whole, default=None, help="override the preset's steps")
    p.add_argument("--checkpoints-per-decade", type=_whole, default=None, metavar="K",
                   help="override the preset's log-spaced checkpoint density")
    p.add_argument("--set", action="append", type=_setting, metavar="FIELD=VALUE",
                   help="another TrainConfig change for every run, e.g. --set modulus=31 (repeatable)")
    p.add_argument("--max-ensemble", type=_whole, default=None, metavar="R",
                   help="most runs per batched ensemble (default: all that can share one)")
    p.add_argument("--workers", type=int, default=1, help="processes training ensembles (default 1)")
    p.add_argument("--device", default=None, choices=("auto", "cpu", "cuda"), help="training device")
    p.add_argument("--signature-steps", type=_whole, default=200, metavar="N",
                   help="the loss signature reads the training loss of steps 0..N-1 (default 200)")
    p.add_argument("--early-fraction", type=float, default=0.1,
                   help="fraction of the budget at which the weight-only verdict is read (default 0.1)")
    p.add_argument("--liu-threshold", type=float, default=0.9, help="accuracy counted as reached (default 0.9)")
    p.add_argument("--liu-gap", type=float, default=1000, help="largest train-test lag of comprehension, in "
                                                                "steps (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the analysis's shuffles (default 0)")
    p.add_argument("--no-figures", action="store_true", help="write the table only")
    p.set_defaults(func=_cmd_sweep)
    return p
