"""The ``htsr-diag`` command.

Sub-commands::

    htsr-diag analyze PATH [--json] [--no-randomize] [--seed S] [--no-center-traps] [--compare weightwatcher]
    htsr-diag phases CHECKPOINTS [--plot [FILE]] [--json] [--seed S] [--no-center-traps] [CHECKPOINT OPTIONS]
    htsr-diag report CHECKPOINTS [--out DIR] [--no-baselines] [--seed S] [--workers N] [--no-center-traps]
                     [CHECKPOINT OPTIONS]
    htsr-diag demo [--out DIR] [--steps N] [--preset fast] [--device auto|cpu|cuda] [--seed S]
                   [--checkpoints-per-decade K] [--workers N]
    htsr-diag train ...          (see `htsr-diag train --help`)

PATH is one checkpoint file or a Hugging Face model folder (sharded or not). CHECKPOINTS is a
run folder written by ``htsr-diag train``, any folder of checkpoint files (``.safetensors``,
``.pt``, ``.pth``, ``.bin``, ``.ckpt``) or model folders (the HF Trainer's ``checkpoint-N/``), a
Lightning ``version_N/`` folder, or a quoted glob such as ``'runs/x/*.pt'``. CHECKPOINT OPTIONS:
``--steps-from REGEX`` (one capture group: the step in each checkpoint's name, for names other
than step_N, step=N, epoch=E-step=N, checkpoint-N, model_N, iter_N), ``--train-acc COLUMN`` and
``--test-acc COLUMN`` (the metrics columns holding the accuracies, as fractions).

Global options (before the sub-command): ``-v`` / ``-vv`` log more, ``--traceback``,
``--threads N`` (torch CPU threads; ``demo`` uses 1 unless given).

Exit codes: 0 success; 1 a failure while running (the message says what); 2 a bad
argument or path (missing, wrong kind of file, not a run folder). Errors print one line
``htsr-diag <command>: error: ...`` on stderr and no traceback (``--traceback`` shows it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import sys
import warnings
from pathlib import Path
from typing import Any, Iterator, Sequence

__all__ = ["main", "build_parser", "CLIError"]

logger = logging.getLogger("htsr_diag.cli")

_MODEL_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")


class CLIError(Exception):
    """A user error with a message to print and an exit code (2: bad argument or path)."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


def _out(text: str = "") -> None:
    sys.stdout.write(text + "\n")


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        if math.isnan(x):
            return "nan"
        return f"{x:.{digits}f}"
    return str(x)


def _num(x: Any) -> float | None:
    """A float for JSON; None for NaN (strict JSON has no NaN)."""
    v = float(x)
    return None if math.isnan(v) else v


def _check_model_path(path_arg: str) -> Path:
    from .checkpoints import is_model_folder

    path = Path(path_arg)
    if not path.exists():
        raise CLIError(f"PATH {str(path)!r} does not exist.")
    if path.is_dir():
        if is_model_folder(path):
            return path
        raise CLIError(f"PATH {str(path)!r} is a folder but not a model folder (no model.safetensors, "
                       f"model.safetensors.index.json or pytorch_model.bin); `analyze` takes one checkpoint file "
                       f"({', '.join(_MODEL_SUFFIXES)}) or model folder. For a folder of checkpoints use "
                       f"`htsr-diag phases` or `htsr-diag report`.")
    if path.suffix.lower() not in _MODEL_SUFFIXES:
        raise CLIError(f"PATH {str(path)!r} has the suffix {path.suffix or '(none)'!r}, which is not a "
                       f"checkpoint; expected one of {', '.join(_MODEL_SUFFIXES)}.")
    return path


def _check_checkpoints(args: argparse.Namespace) -> str:
    """CHECKPOINTS as given, once its checkpoints and their steps are found (else exit code 2)."""
    from .checkpoints import _is_glob, find_checkpoints

    text = args.checkpoints
    path = Path(text)
    if not path.exists() and not _is_glob(text):
        raise CLIError(f"CHECKPOINTS {text!r} does not exist. Pass a run folder, a folder of checkpoints, "
                       f"or a quoted glob such as 'runs/x/*.pt'.")
    if path.is_file():
        raise CLIError(f"CHECKPOINTS {text!r} is a file, not a folder or glob of checkpoints. For one "
                       f"checkpoint use `htsr-diag analyze`.")
    try:
        find_checkpoints(text, steps_from=args.steps_from)
    except (ValueError, TypeError) as exc:
        raise CLIError(f"CHECKPOINTS {text!r}: {exc}".replace("steps_from=", "--steps-from ")
                       .replace("steps_from", "--steps-from")) from exc
    return text


def _checkpoint_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps-from", default=None, metavar="REGEX",
                   help="regular expression with one capture group, the step, searched in each checkpoint's "
                        "name (default: step_N, step=N, epoch=E-step=N, checkpoint-N, model_N, iter_N)")
    p.add_argument("--train-acc", default=None, metavar="COLUMN",
                   help="metrics column holding the training accuracy, as a fraction (default: train_acc)")
    p.add_argument("--test-acc", default=None, metavar="COLUMN",
                   help="metrics column holding the test accuracy, as a fraction (default: test_acc)")


def _center_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--center-traps", action=argparse.BooleanOptionalAction, default=True,
                   help="count the traps of the centred shuffled weights (default; the library's default too). "
                        "--no-center-traps gives the uncentred count of WeightWatcher and the study, where a "
                        "layer's non-zero mean counts as a trap")


# ----------------------------------------------------------------------------- analyze
def _cmd_analyze(args: argparse.Namespace) -> int:
    from .analyze import analyze
    from .exceptions import CheckpointError

    path = _check_model_path(args.path)
    try:
        report = analyze(path, randomize=not args.no_randomize, rng=args.seed, center_traps=args.center_traps,
                         compare=args.compare)
    except CheckpointError as exc:
        raise CLIError(f"PATH {str(path)!r} could not be read as a checkpoint: {exc}") from exc
    except ImportError as exc:  # --compare without the extra: the message names it
        raise CLIError(str(exc)) from exc
    if args.json:
        _out(report.to_json())
        return 0
    width = max([len("layer")] + [len(lay.name) for lay in report.layers]) + 2
    cols = [("layer", width), ("shape", 12), ("alpha", 7), ("xmin", 10), ("D_ks", 7), ("traps", 6),
            ("ks_p", 9), ("status", 0)]
    _out("".join(f"{c:<{w}}" if w else c for c, w in cols))
    for lay in report.layers:
        shape = "x".join(str(d) for d in getattr(lay, "shape", ()))
        vals = [lay.name, shape, _fmt(getattr(lay, "alpha", None), 2), f"{getattr(lay, 'xmin', float('nan')):.3g}",
                _fmt(getattr(lay, "ks_distance", None), 3), _fmt(getattr(lay, "n_traps", None), 0),
                f"{getattr(lay, 'ks_pvalue', float('nan')):.2g}", str(getattr(lay, "status", ""))]
        _out("".join(f"{v:<{w}}" if w else v for v, (_, w) in zip(vals, cols)))
    skipped = getattr(report, "skipped", [])
    if skipped:
        _out(f"skipped {len(skipped)} parameter(s): " + ", ".join(
            f"{getattr(s, 'name', s)} ({getattr(s, 'reason', '')})" for s in skipped))
    if report.comparison is not None:
        _out("")
        _out(report.comparison.to_text())
    return 0


# ----------------------------------------------------------------------------- phases
def _cmd_phases(args: argparse.Namespace) -> int:
    import numpy as np

    from .phases import PhaseClassifier
    from .report import _each_warning_once, _finite_labels
    from .trajectory import analyze_checkpoints

    source = _check_checkpoints(args)
    run = Path(source)
    try:
        traj = analyze_checkpoints(source, rng=args.seed, progress=None, steps_from=args.steps_from,
                                   train_acc=args.train_acc, test_acc=args.test_acc, center_traps=args.center_traps)
    except ValueError as exc:
        if "column" not in str(exc) and "metrics" not in str(exc):
            raise
        raise CLIError(str(exc).replace("train_acc=", "--train-acc ").replace("test_acc=", "--test-acc ")) from exc
    clf = PhaseClassifier()
    with _each_warning_once():  # four questions of one trajectory: each note once
        predicted = clf.predict(traj)
        table = clf.features(traj)
        alarm = PhaseClassifier(causal=True).transition_steps(traj).get("anti-grokking")
        ev = clf.evidence(traj)
    steps = np.asarray(traj.steps)
    nan = np.full(steps.size, np.nan)
    tr = np.asarray(traj.metrics.get("train_acc", nan), float)
    te = np.asarray(traj.metrics.get("test_acc", nan), float)
    ref = _finite_labels(steps, tr, te)
    held_back = ev["layer_signature"] & ~ev["layer_gate"]  # (L, n): the signature, stopped by the norm gate
    grok_ratio = ev["grok_ratio"]
    onset_name = {"stable_rank": "smaller layer stable rank", "alpha": "mean alpha"}[ev["onset"]]

    def signature(i: int) -> str:
        """Layers with the over-fitting signature at checkpoint i; those held back by the norm gate marked."""
        return ", ".join(name + (f" (norm {_fmt(float(ev['layer_norm_ratio'][j, i]), 2)}x, gated)"
                                 if held_back[j, i] else "")
                         for j, name in enumerate(ev["layers"]) if ev["layer_signature"][j, i])

    if args.json:
        rows = [{"step": int(steps[i]), "train_acc": _num(tr[i]), "test_acc": _num(te[i]),
                 "mean_alpha": _num(table["alpha"][i]), "n_traps": _num(table["n_traps"][i]),
                 "onset_ratio": _num(ev["onset_ratio"][i]), "shrink": _num(ev["shrink"][i]),
                 "predicted": str(predicted[i]),
                 "from_accuracy": None if ref is None else str(ref[i]),
                 "layers": {name: {"alpha": _num(table["layer_alpha"][j, i]),
                                   "n_traps": _num(table["layer_n_traps"][j, i]),
                                   "stable_rank": _num(table["layer_stable_rank"][j, i]),
                                   "norm_ratio": _num(ev["layer_norm_ratio"][j, i]),
                                   "shrink": _num(ev["layer_shrink"][j, i]),
                                   "signature": bool(ev["layer_signature"][j, i]),
                                   "norm_gate": bool(ev["layer_gate"][j, i])}
                            for j, name in enumerate(ev["layers"])}}
                for i in range(steps.size)]
        _out(json.dumps({"run_dir": source, "alarm_step": alarm, "onset": ev["onset"], "grok_ratio": grok_ratio,
                         "shrink_ratio": ev["shrink_ratio"], "checkpoints": rows}, indent=1))
    else:
        _out(f"{'step':>10}  {'train':>6}  {'test':>6}  {'alpha':>6}  {'traps':>5}  {'onset':>5}  {'shrink':>6}  "
             f"{'predicted':<14}  {'from accuracy':<14}  over-fitting signature")
        for i in range(steps.size):
            _out(f"{int(steps[i]):>10}  {_fmt(float(tr[i])):>6}  {_fmt(float(te[i])):>6}  "
                 f"{_fmt(float(table['alpha'][i]), 2):>6}  {_fmt(float(table['n_traps'][i]), 0):>5}  "
                 f"{_fmt(float(ev['onset_ratio'][i]), 2):>5}  {_fmt(float(ev['shrink'][i]), 2):>6}  "
                 f"{predicted[i]:<14}  "
                 f"{'' if ref is None else ref[i]:<14}  {signature(i)}".rstrip())
        _out(f"onset: the {onset_name} over its value when the training set was first fitted; grokking once "
             f"fitted and <= {grok_ratio:g}")
        shrink_ratio = ev["shrink_ratio"]
        _out("shrink: the largest layer norm over its norm when the training set was first fitted; "
             + ("the norm onset is off (shrink_ratio None)" if shrink_ratio is None
                else f"grokking also once fitted and <= {shrink_ratio:g}"))
        _out(f"anti-grokking alarm (causal): {'none' if alarm is None else f'step {alarm}'}")
        held = [name for j, name in enumerate(ev["layers"]) if held_back[j, -1]]
        if held:
            _out(f"note: at the last checkpoint {', '.join(held)} show the over-fitting signature (alpha < "
                 f"{clf.alpha_anti:g} or >= {clf.min_traps} traps) below the norm gate ({clf.norm_ratio:g}x "
                 f"{'the norm at the fit' if clf.gate_base == 'fit' else 'the first norm'}), which is not labelled "
                 f"anti-grokking. In the measured weight-decay-0.01 runs it came "
                 f"with test-accuracy declines of 2-6 points (docs/phases.md).")
    if args.plot is not None:
        from .plot import plot_phases, use_agg

        use_agg()
        import matplotlib.pyplot as plt

        if not args.plot and not run.is_dir():
            raise CLIError("--plot needs a FILE when CHECKPOINTS is a glob.")
        target = Path(args.plot) if args.plot else run / "phases.png"
        ax = plot_phases(steps, predicted, reference=ref)
        ax.legend(fontsize=7, loc="upper left")
        ax.set_title(f"phases of {run}", fontsize=9)
        ax.figure.tight_layout()
        ax.figure.savefig(target, dpi=110)
        plt.close(ax.figure)
        (sys.stderr if args.json else sys.stdout).write(f"plot written to {target}\n")
    return 0


# ----------------------------------------------------------------------------- report / demo
def _executor(workers: int):
    if workers <= 1:
        return None
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(workers)


def _cmd_report(args: argparse.Namespace) -> int:
    from .report import write_report

    run = _check_checkpoints(args)
    pool = _executor(args.workers)
    try:
        rep = write_report(run, args.out, baselines=not args.no_baselines, executor=pool, rng=args.seed,
                           steps_from=args.steps_from, train_acc=args.train_acc, test_acc=args.test_acc,
                           center_traps=args.center_traps)
    finally:
        if pool is not None:
            pool.shutdown()
    sys.stdout.write(rep.summary.to_text())
    _out(f"report: {rep.html}")
    return 0


def _positive_steps(text: str) -> int:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive whole number such as 300 or 1e5; got {text!r}")
    if not math.isfinite(value) or value < 1 or value != int(value):
        raise argparse.ArgumentTypeError(f"must be a positive whole number; got {text!r}")
    return int(value)


def _cmd_demo(args: argparse.Namespace) -> int:
    from .report import write_report
    from .train import PRESETS, train

    if args.preset not in PRESETS:
        raise CLIError(f"--preset must be one of {sorted(PRESETS)}; got {args.preset!r}.")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out {str(out)!r} is a file; pass a folder for the demo.")
    config = PRESETS[args.preset]
    changes: dict[str, Any] = {"seed": args.seed}
    if args.steps is not None:
        changes["steps"] = args.steps
    if args.device is not None:
        changes["device"] = args.device
    if args.checkpoints_per_decade is not None:
        changes["checkpoints_per_decade"] = args.checkpoints_per_decade
    config = config.replace(**changes)
    _out(f"training the {args.preset!r} preset for {config.steps:,} steps -> {out / 'run'}")
    run = train(config, out / "run", progress=None)
    _out("analysing every checkpoint and writing the report")
    pool = _executor(args.workers)
    try:
        rep = write_report(run, out, rng=args.seed, executor=pool)
    finally:
        if pool is not None:
            pool.shutdown()
    sys.stdout.write(rep.summary.to_text())
    _out(f"report: {rep.html}")
    return 0


# ----------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    """The ``htsr-diag`` argument parser (every sub-command sets ``func``)."""
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="htsr-diag",
        description="HTSR diagnostics from the weights alone: layer alpha, correlation traps and "
                    "grokking / anti-grokking phases.")
    parser.add_argument("--version", action="version", version=f"htsr-diag {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more log output on stderr (-v info, -vv debug)")
    parser.add_argument("--traceback", action="store_true", help="show the full traceback on errors")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="CPU threads for torch (default: torch's, except `demo`: 1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("analyze", help="per-layer table of one model or checkpoint file",
                       description="Analyse one model or checkpoint file: alpha, traps and KS test per layer.")
    p.add_argument("path", metavar="PATH", help="checkpoint file (.safetensors, .pt, .pth, .bin, .ckpt) or a "
                                                "Hugging Face model folder (sharded or not)")
    p.add_argument("--json", action="store_true", help="print the full report as JSON")
    p.add_argument("--no-randomize", action="store_true", help="skip traps and the KS test (alpha only)")
    p.add_argument("--seed", type=int, default=0, help="seed of the shuffles (default 0)")
    _center_option(p)
    p.add_argument("--compare", choices=["weightwatcher"], default=None,
                   help="also run WeightWatcher 0.7.7 on the same layers and print its alpha, xmin and traps "
                        "beside ours, with where and why they differ (needs pip install \"htsr-diag[compare]\")")
    p.set_defaults(func=_cmd_analyze)

    p = sub.add_parser("phases", help="phase label of every checkpoint of a run or checkpoint folder",
                       description="Label every checkpoint of a folder or glob of checkpoints from its weights "
                                   "(and, for comparison, from the accuracy curves saved beside them).")
    p.add_argument("checkpoints", metavar="CHECKPOINTS",
                   help="run folder written by `htsr-diag train`, any folder of checkpoints (.safetensors, .pt, "
                        ".pth, .bin, .ckpt, HF checkpoint-N/ folders), or a quoted glob")
    p.add_argument("--plot", nargs="?", const="", default=None, metavar="FILE",
                   help="also save a plot (default CHECKPOINTS/phases.png)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--seed", type=int, default=0, help="seed of the shuffles (default 0)")
    _center_option(p)
    _checkpoint_options(p)
    p.set_defaults(func=_cmd_phases)

    p = sub.add_parser("report", help="figures, tables, summary and HTML page of a run or checkpoint folder",
                       description="Write the report of a folder or glob of checkpoints (HTML page, PNG figures, "
                                   "trajectory CSV/JSON, summary).")
    p.add_argument("checkpoints", metavar="CHECKPOINTS",
                   help="run folder written by `htsr-diag train`, any folder of checkpoints, or a quoted glob")
    p.add_argument("--out", default=None, help="report folder (default CHECKPOINTS/report)")
    p.add_argument("--no-baselines", action="store_true", help="skip the four baseline metrics")
    p.add_argument("--workers", type=_positive_steps, default=1, help="processes analysing checkpoints (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the shuffles (default 0)")
    _center_option(p)
    _checkpoint_options(p)
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("demo", help="the bundled MNIST study end to end: train, analyse, report",
                       description="Train the reference MLP on 1k MNIST images (the `fast` preset on CPU by "
                                   "default), analyse every checkpoint, classify the phases and write a "
                                   "report folder.")
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo); the run goes "
                                                      "to OUT/run, the report to OUT")
    p.add_argument("--preset", default="fast", help="trainer preset: fast (default, CPU minutes) or paper "
                                                    "(10^7 steps, use a GPU)")
    p.add_argument("--steps", type=_positive_steps, default=None, help="override the preset's steps (e.g. 300)")
    p.add_argument("--device", default=None, choices=("auto", "cpu", "cuda"),
                   help="training device (default: the preset's)")
    p.add_argument("--checkpoints-per-decade", type=_positive_steps, default=None, metavar="K",
                   help="override the preset's log-spaced checkpoint density")
    p.add_argument("--workers", type=_positive_steps, default=1, help="processes analysing checkpoints (default 1)")
    p.add_argument("--seed", type=int, default=0, help="training seed and seed of the shuffles (default 0)")
    p.set_defaults(func=_cmd_demo)

    from ._sweep_cli import add_parser as add_sweep_parser

    add_sweep_parser(sub)

    try:
        from .train.cli import add_parser as add_train_parser
    except ImportError as exc:  # pragma: no cover - the trainer ships with the package
        logger.debug("train sub-command unavailable: %s", exc)
    else:
        add_train_parser(sub)
    return parser


#: Sub-commands that run with a fixed number of torch CPU threads unless --threads is given.
#: The demo's MLP (batch 200, 200x784 weights) gains little from intra-op threads, and on a
#: shared or busy CPU two spinning OpenMP threads made training ~12x slower than one
#: (1000 steps: 11 s with 1 thread, 130 s with 2, on a 2-core machine under load).
_DEFAULT_THREADS = {"demo": 1}


@contextlib.contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    if n is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _setup_warnings(verbosity: int) -> None:
    """Keep the command's output short: expected small-spectrum notes only with -v; a library
    warning is one line, ``warning: MESSAGE (Category)``, without the source line Python shows
    (with -vv, Python's own format). Called inside ``warnings.catch_warnings()``, which restores both."""
    from .exceptions import HTSRWarning, SmallSpectrumWarning

    if verbosity <= 0:
        warnings.filterwarnings("ignore", category=SmallSpectrumWarning)
    if verbosity >= 2:
        return
    default = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if not issubclass(category, HTSRWarning):
            return default(message, category, filename, lineno, file, line)
        (file or sys.stderr).write(f"warning: {message} ({category.__name__})\n")

    warnings.showwarning = show


def _setup_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    root = logging.getLogger("htsr_diag")
    if not any(getattr(h, "_htsr_cli", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
        handler._htsr_cli = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)


def _plain(exc: BaseException) -> str:
    """The message without ANSI terminal escapes (third-party messages, e.g. torch's, carry some)."""
    import re

    return re.sub(r"\x1b\[[0-?]*[ -/]*[@-~]", "", str(exc))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``htsr-diag`` command; returns the exit code (0 ok, 1 failure, 2 bad argument/path).

    Examples
    --------
    Skipped: needs a model.safetensors file.

    >>> main(["analyze", "model.safetensors", "--json"])      # doctest: +SKIP
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    _setup_logging(args.verbose)
    name = f"htsr-diag {args.command}"
    from .exceptions import CheckpointError
    threads = args.threads if args.threads is not None else _DEFAULT_THREADS.get(args.command)
    if threads is not None and threads < 1:
        sys.stderr.write(f"{name}: error: --threads must be >= 1; got {threads}\n")
        return 2
    try:
        with warnings.catch_warnings(), _torch_threads(threads):  # both restored on return
            _setup_warnings(args.verbose)
            return int(args.func(args) or 0)
    except CLIError as exc:
        if args.traceback:
            raise
        sys.stderr.write(f"{name}: error: {_plain(exc)}\n")
        return exc.code
    except KeyboardInterrupt:
        sys.stderr.write(f"{name}: interrupted\n")
        return 130
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError, CheckpointError) as exc:
        if args.traceback:
            raise
        sys.stderr.write(f"{name}: error: {_plain(exc)}\n")
        return 2
    except (ValueError, TypeError, ImportError, RuntimeError, OSError) as exc:
        if args.traceback:
            raise
        sys.stderr.write(f"{name}: error: {_plain(exc)}\n(run with --traceback for details)\n")
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
