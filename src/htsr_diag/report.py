"""The report of a run folder: figures, trajectory tables, a text summary and one HTML page.

:func:`write_report` analyses every checkpoint of a run written by
:func:`htsr_diag.train.train` (or takes a ready :class:`~htsr_diag.trajectory.Trajectory`),
labels the phases twice — from the weights with :class:`~htsr_diag.phases.PhaseClassifier`
and from the accuracy curves with :func:`~htsr_diag.phases.phases_from_accuracy` — and
writes into ``out_dir``::

    report.html          self-contained page (figures embedded as base64 PNG)
    overview.png         (1) accuracy, per-layer alpha (line at 2), traps; phase bands
    esd.png              (2) ESD + power-law fit at one checkpoint per phase
    shuffled_esd.png     (3) shuffled ESD + MP fit, edge and traps at the same checkpoints
    baselines.png        (4) l2 norm, activation sparsity, weight entropy, circuit complexity
    alarm_esd.png        (5) ESD and shuffled ESD (traps marked) at the checkpoint the alarm fired
    trajectory.csv       one row per checkpoint x layer
    trajectory.json      the Trajectory (Trajectory.from_json reads it back)
    phases.csv           step, accuracies, mean alpha, traps, onset ratio, norm shrink, both labels, confidence
    summary.txt          phase boundaries, peak test accuracy, when the alarm fired, and per
                         checkpoint why it has its label (explain.explain_labels)
    summary.json         the same as JSON
"""

from __future__ import annotations

import base64
import contextlib
import csv
import html
import json
import logging
import math
import numbers
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ._results import Result
from .explain import LabelExplanation, explain_labels

__all__ = ["RunSummary", "RunReport", "write_report", "check_run_dir", "summarize",
           "representative_checkpoints", "training_inputs", "layer_stream", "alarm_figure"]

logger = logging.getLogger(__name__)

_PHASES = ("pre-grokking", "grokking", "anti-grokking")
FIGURES = ("overview", "esd", "shuffled_esd", "baselines", "alarm_esd")


@dataclass(frozen=True)
class RunSummary(Result):
    """The headline numbers of a run.

    Attributes
    ----------
    n_checkpoints : int
    first_step, last_step : int
    predicted_start : dict phase -> int or None
        First step the weight-only classifier labels each phase (non-causal).
    accuracy_start : dict phase -> int or None
        First step of each phase from the accuracy curves (None without metrics).
    alarm_step : int or None
        First step the *causal* classifier (what :class:`~htsr_diag.monitor.Monitor` runs
        during training) reports anti-grokking: when the alarm fires.
    peak_test_acc : float
        Highest test accuracy at a checkpoint (NaN without metrics).
    peak_test_step : int or None
    final_train_acc, final_test_acc : float
    agreement : float
        Fraction of checkpoints where predicted and accuracy labels agree (NaN without).
    layers : list of str
        Analysed layers.
    status : str
        "ok", or what was missing (e.g. "no accuracy metrics").
    """

    n_checkpoints: int
    first_step: int
    last_step: int
    predicted_start: dict[str, int | None]
    accuracy_start: dict[str, int | None]
    alarm_step: int | None
    peak_test_acc: float
    peak_test_step: int | None
    final_train_acc: float
    final_test_acc: float
    agreement: float
    layers: list[str]
    status: str

    def to_text(self) -> str:
        """A short plain-text summary (what ``summary.txt`` holds)."""
        def fmt_step(s: int | None) -> str:
            return "never" if s is None else f"step {s:,}"

        def fmt_acc(a: float) -> str:
            return "n/a" if not math.isfinite(a) else f"{a:.3f}"

        lines = [f"checkpoints: {self.n_checkpoints} (steps {self.first_step:,} .. {self.last_step:,}); "
                 f"layers: {', '.join(self.layers)}",
                 "phase boundaries (first step of each phase):",
                 f"  {'phase':<15}{'from weights':>18}{'from accuracy':>18}"]
        for p in _PHASES:
            acc = self.accuracy_start.get(p) if self.accuracy_start else None
            lines.append(f"  {p:<15}{fmt_step(self.predicted_start.get(p)):>18}"
                         f"{(fmt_step(acc) if self.accuracy_start else 'n/a'):>18}")
        peak = (f"{fmt_acc(self.peak_test_acc)} at {fmt_step(self.peak_test_step)}"
                if self.peak_test_step is not None else "n/a")
        lines += [f"peak test accuracy: {peak}",
                  f"final accuracy: train {fmt_acc(self.final_train_acc)}, test {fmt_acc(self.final_test_acc)}",
                  f"anti-grokking alarm (causal, weights only): "
                  f"{'did not fire' if self.alarm_step is None else 'fired at ' + fmt_step(self.alarm_step)}",
                  f"agreement of weight-only labels with accuracy labels: "
                  f"{'n/a' if not math.isfinite(self.agreement) else f'{100 * self.agreement:.0f}%'}"]
        if self.status != "ok":
            lines.append(f"note: {self.status}")
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class RunReport(Result):
    """Where :func:`write_report` put everything, plus the summary and the labels.

    Attributes
    ----------
    out_dir : Path
    html : Path
    figures : dict of str -> Path
        ``"overview"``, ``"esd"``, ``"shuffled_esd"``, ``"baselines"``.
    files : dict of str -> Path
        ``"trajectory_csv"``, ``"trajectory_json"``, ``"phases_csv"``, ``"summary_txt"``,
        ``"summary_json"``.
    summary : RunSummary
    steps : ndarray of int, shape (n,)
    predicted : ndarray of str, shape (n,)
        Weight-only labels.
    from_accuracy : ndarray of str, shape (n,) or None
        Accuracy labels (None without metrics).
    explanations : list of LabelExplanation
        Per checkpoint: the numbers the rules read, the rule that set the label and why the
        two labels differ (:func:`~htsr_diag.explain.explain_labels`).
    """

    out_dir: Path
    html: Path
    figures: dict[str, Path]
    files: dict[str, Path]
    summary: RunSummary
    steps: np.ndarray = field(repr=False)
    predicted: np.ndarray = field(repr=False)
    from_accuracy: np.ndarray | None = field(repr=False, default=None)
    explanations: list[LabelExplanation] = field(repr=False, default_factory=list)


# ----------------------------------------------------------------------------- inputs
def check_run_dir(run_dir: Any, name: str = "run_dir") -> Path:
    """Return ``run_dir`` as a Path if it is a trainer run folder, else raise a clear error.

    Raises
    ------
    TypeError
        not a str or Path.
    FileNotFoundError
        the path does not exist.
    NotADirectoryError
        the path is a file.
    ValueError
        a folder without ``checkpoints/`` (not a run folder), or without checkpoint files.
    """
    if not isinstance(run_dir, (str, Path)):
        raise TypeError(f"{name} must be a path to a run folder; got {type(run_dir).__name__}.")
    path = Path(run_dir)
    if not path.exists():
        raise FileNotFoundError(f"{name} {str(path)!r} does not exist. Pass the folder written by "
                                f"`htsr-diag train` (it holds config.json, metrics.jsonl, checkpoints/).")
    if not path.is_dir():
        raise NotADirectoryError(f"{name} {str(path)!r} is a file, not a run folder. Pass the folder that "
                                 f"holds checkpoints/ (use `htsr-diag analyze` for a single checkpoint).")
    ckpt = path / "checkpoints"
    if not ckpt.is_dir():
        members = sorted(p.name for p in path.glob("member_*") if p.is_dir())
        hint = (f" It looks like an ensemble folder; pass one member, e.g. {str(path / members[0])!r}."
                if members else " Pass the folder written by `htsr-diag train`.")
        raise ValueError(f"{name} {str(path)!r} is not a run folder: it has no checkpoints/ folder.{hint}")
    if not any(p.suffix in (".safetensors", ".pt", ".pth") for p in ckpt.iterdir()):
        raise ValueError(f"{name} {str(path)!r} has no checkpoint files in checkpoints/ "
                         f"(expected step_*.safetensors). Was the run started?")
    return path


def training_inputs(run_dir: Any) -> Any:
    """The training inputs of a run folder (for the baselines), or None if they cannot be rebuilt.

    Rebuilt exactly as the trainer selected them, from the run's ``config.json`` (its
    ``data_dir``, ``n_train_per_class``, ``seed`` / ``data_seed``) and the MNIST data (the
    bundled subset when no IDX files are found). Failure (no config, data missing) is
    logged as a warning and gives None: the report then goes on without the two
    activation-based baselines.

    Parameters
    ----------
    run_dir : path
        A run folder written by :func:`htsr_diag.train.train`.

    Returns
    -------
    ndarray of shape (n_train, 784) in the run's dtype, pixels in [0, 1]; or None

    Examples
    --------
    Skipped: needs a run folder (``htsr-diag demo`` writes runs/demo/run).

    >>> x = training_inputs("runs/demo/run")     # doctest: +SKIP
    >>> x.shape                                  # doctest: +SKIP
    (1000, 784)
    """
    try:
        from .train import TrainConfig, load_mnist, training_subset

        raw = json.loads((Path(run_dir) / "config.json").read_text())
        cfg = TrainConfig.from_dict(raw)
        x, _ = training_subset(cfg, load_mnist(cfg.data_dir))
        return np.asarray(x, dtype=np.dtype(cfg.dtype)) / 255.0  # pixels in [0, 1], as trained
    except Exception as exc:  # noqa: BLE001 - the report goes on without those baselines
        logger.warning("activation baselines skipped: cannot rebuild the training inputs of %s (%s)",
                       run_dir, exc)
        return None


@contextlib.contextmanager
def _each_warning_once(stacklevel: int = 4):
    """Warnings raised in the block are shown once each (by category and message) when it ends:
    the report asks the classifier several questions of one trajectory, and each would repeat
    the same note (no training accuracy, a checkpoint with no feature)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    seen = set()
    for w in caught:
        key = (w.category, str(w.message))
        if key not in seen:
            seen.add(key)
            warnings.warn(str(w.message), w.category, stacklevel=stacklevel)


def _finite_labels(steps: np.ndarray, tr: np.ndarray, te: np.ndarray) -> np.ndarray | None:
    from .phases import phases_from_accuracy

    ok = np.isfinite(tr) & np.isfinite(te)
    if ok.sum() < 2:
        return None
    labels = np.full(steps.size, "", dtype=object)
    labels[ok] = phases_from_accuracy(steps[ok], np.clip(tr[ok], 0, 1), np.clip(te[ok], 0, 1))
    # a checkpoint without metrics takes the label of the last one before it that has them
    last = ""
    for i in range(steps.size):
        if labels[i]:
            last = labels[i]
        else:
            labels[i] = last
    return labels.astype(str)


def _first_step(steps: np.ndarray, labels: np.ndarray | None) -> dict[str, int | None]:
    if labels is None:
        return {}
    out: dict[str, int | None] = {}
    for p in _PHASES:
        hit = np.flatnonzero(labels == p)
        out[p] = int(steps[hit[0]]) if hit.size else None
    return out


def summarize(trajectory: Any, predicted: np.ndarray, from_accuracy: np.ndarray | None,
              alarm_step: int | None) -> RunSummary:
    """The :class:`RunSummary` of a trajectory and its labels.

    Parameters
    ----------
    trajectory : Trajectory
    predicted : array of str, shape (n,)
        Weight-only labels.
    from_accuracy : array of str, shape (n,) or None
        Accuracy labels.
    alarm_step : int or None
        The causal classifier's first anti-grokking step.

    Returns
    -------
    RunSummary
    """
    steps = np.asarray(trajectory.steps)
    te = np.asarray(trajectory.metrics.get("test_acc", np.full(steps.size, np.nan)), float)
    tr = np.asarray(trajectory.metrics.get("train_acc", np.full(steps.size, np.nan)), float)
    has_te = bool(np.isfinite(te).any())
    i_peak = int(np.nanargmax(te)) if has_te else None
    last_tr = tr[np.isfinite(tr)]
    last_te = te[np.isfinite(te)]
    agreement = (float(np.mean(np.asarray(predicted) == np.asarray(from_accuracy)))
                 if from_accuracy is not None else float("nan"))
    return RunSummary(
        n_checkpoints=int(steps.size), first_step=int(steps[0]), last_step=int(steps[-1]),
        predicted_start=_first_step(steps, np.asarray(predicted)),
        accuracy_start=_first_step(steps, from_accuracy),
        alarm_step=alarm_step,
        peak_test_acc=float(te[i_peak]) if i_peak is not None else float("nan"),
        peak_test_step=int(steps[i_peak]) if i_peak is not None else None,
        final_train_acc=float(last_tr[-1]) if last_tr.size else float("nan"),
        final_test_acc=float(last_te[-1]) if last_te.size else float("nan"),
        agreement=agreement, layers=list(trajectory.layer_names),
        status="ok" if from_accuracy is not None else "no accuracy metrics in the run folder")


def representative_checkpoints(steps: Any, labels: Any, test_acc: Any = None) -> dict[str, int]:
    """One checkpoint index per phase present in ``labels``.

    pre-grokking: the middle checkpoint of the phase; grokking: the highest test accuracy
    within the phase (its middle without accuracies); anti-grokking: the last checkpoint
    (the deepest collapse reached, as the study's 10^7-step state).

    Parameters
    ----------
    steps : array of shape (n,)
    labels : array of str, shape (n,)
    test_acc : array of shape (n,), optional

    Returns
    -------
    dict phase -> index into ``steps``, in phase order.

    Examples
    --------
    >>> representative_checkpoints([0, 1, 10, 100, 1000],
    ...     ["pre-grokking", "pre-grokking", "grokking", "grokking", "anti-grokking"], [.1, .1, .5, .9, .6])
    {'pre-grokking': 0, 'grokking': 3, 'anti-grokking': 4}
    """
    labels = np.asarray(labels, dtype=str)
    te = None if test_acc is None else np.asarray(test_acc, float)
    out: dict[str, int] = {}
    for p in _PHASES:
        idx = np.flatnonzero(labels == p)
        if not idx.size:
            continue
        if p == "anti-grokking":
            out[p] = int(idx[-1])
        elif p == "grokking" and te is not None and np.isfinite(te[idx]).any():
            out[p] = int(idx[np.nanargmax(te[idx])])
        else:
            out[p] = int(idx[(idx.size - 1) // 2])
    return out


def _layer_weights(checkpoint: Any, names: list[str]) -> dict[str, Any]:
    from .layers import find_layers

    found = find_layers(checkpoint)
    out = {}
    for lay in found.layers:
        if lay.name in names:
            out[lay.name] = lay.weight
    return out


def layer_stream(rng: int, step: int, name: str) -> np.random.Generator:
    """The random stream that ``analyze_checkpoints(..., rng=rng)`` used for one layer at one step.

    :func:`~htsr_diag.trajectory.analyze_checkpoints` seeds checkpoint ``step`` with
    ``SeedSequence(rng, spawn_key=(step,))`` and :func:`~htsr_diag.analyze.analyze` gives
    each layer its own stream derived from that and the layer's name. Redrawing the
    shuffles from this stream reproduces the trajectory's shuffled spectrum, so the
    report's figure (3) shows exactly the traps counted in the tables.

    Returns
    -------
    numpy.random.Generator (a fresh one per call)
    """
    from ._seeding import layer_stream as stream

    return stream(int(rng), int(step), name)


def _check_source(source: Any, steps_from: str | None) -> tuple[Path, dict[int, Path], bool]:
    """(the folder a report goes into by default, {step: checkpoint path}, is the trainer's run folder).

    ``source``: a run folder, any folder of checkpoints or a glob (see
    :func:`htsr_diag.checkpoints.find_checkpoints`).
    """
    from .checkpoints import _is_glob, find_checkpoints, metrics_home

    if not isinstance(source, (str, Path)):
        raise TypeError(f"run_dir must be a path to a run folder; got {type(source).__name__}.")
    text = str(source)
    if not (not Path(text).exists() and _is_glob(text)):
        path = Path(text)
        if not path.exists():
            raise FileNotFoundError(f"run_dir {text!r} does not exist. Pass the folder written by "
                                    f"`htsr-diag train`, any folder of checkpoints, or a glob of them.")
        if not path.is_dir():
            raise NotADirectoryError(f"run_dir {text!r} is a file, not a run folder. Pass a folder or glob of "
                                     f"checkpoints (use `htsr-diag analyze` for a single checkpoint).")
    pairs = find_checkpoints(text, steps_from=steps_from)
    paths = {int(s): Path(p) for s, p in pairs}
    home = Path(text) if Path(text).is_dir() else metrics_home(list(paths.values()))
    ours = (home / "checkpoints").is_dir() and (home / "config.json").is_file()
    return home, paths, ours


# ----------------------------------------------------------------------------- figures
def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _spectral_figures(paths: dict[int, Path], trajectory: Any, reps: dict[str, int], layers: list[str],
                      out_dir: Path, rng: int) -> dict[str, Path]:
    import matplotlib.pyplot as plt

    from .plot import plot_esd, plot_shuffled_esd
    from .powerlaw import layer_alpha
    from .spectrum import esd
    from .traps import correlation_traps

    steps = np.asarray(trajectory.steps)
    rows = list(reps.items())
    ncols = max(len(layers), 1)
    nrows = max(len(rows), 1)
    fig_e, ax_e = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.2 * nrows), squeeze=False)
    fig_s, ax_s = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.2 * nrows), squeeze=False)
    for r, (phase, i) in enumerate(rows):
        step = int(steps[i])
        source = paths.get(step)
        weights = _layer_weights(source, layers) if source is not None else {}
        for c, name in enumerate(layers):
            W = weights.get(name)
            title = f"{name}, step {step:,} ({phase})"
            if W is None:
                for ax in (ax_e[r, c], ax_s[r, c]):
                    ax.text(0.5, 0.5, "weights not available", ha="center", va="center",
                            transform=ax.transAxes)
                    ax.set_title(title, fontsize=9)
                continue
            ev = esd(W)
            plot_esd(ev, fit=layer_alpha(ev), ax=ax_e[r, c], title=title)
            ax_e[r, c].legend(fontsize=7)
            center = bool(getattr(trajectory.reports[i], "center_traps", False))
            traps = correlation_traps(W, rng=layer_stream(rng, step, name), center_traps=center)
            shuffled = traps.shuffled_eigenvalues  # the shuffle the traps were counted on
            scale = traps.scale if math.isfinite(traps.scale) and traps.scale > 0 else float(np.mean(shuffled))
            plot_shuffled_esd(shuffled / scale, q=traps.q, sigma=traps.sigma, edge=traps.bulk_edge / scale,
                              threshold=traps.threshold / scale, n_traps=traps.n_traps, ax=ax_s[r, c],
                              title=title)
            ax_s[r, c].legend(fontsize=7)
    if not rows:
        for ax in (ax_e[0, 0], ax_s[0, 0]):
            ax.text(0.5, 0.5, "no checkpoints", ha="center", va="center", transform=ax.transAxes)
    fig_e.suptitle("ESD of W^T W with the power-law fit, one checkpoint per phase", fontsize=10)
    fig_s.suptitle("ESD of the element-wise shuffled W with the Marchenko-Pastur fit, edge and traps",
                   fontsize=10)
    fig_e.tight_layout()
    fig_s.tight_layout()
    return {"esd": _save(fig_e, out_dir / "esd.png"), "shuffled_esd": _save(fig_s, out_dir / "shuffled_esd.png")}


def alarm_figure(paths: Mapping[int, Any], trajectory: Any, step: int | None, layers: Sequence[str],
                 rng: int = 0) -> Any:
    """Figure (5): the ESD and the shuffled ESD of each layer at the alarm checkpoint, traps marked.

    One row per layer: left, the ESD of W^T W with its power-law fit; right, the ESD of the
    element-wise shuffled W (the same shuffles as the trajectory, via :func:`layer_stream`)
    with the Marchenko-Pastur fit, its bulk edge, the trap threshold and every trap (the
    shuffled eigenvalues above the threshold) as a red cross; the panel titles give the trap
    count and alpha the trajectory holds for that checkpoint.

    Parameters
    ----------
    paths : mapping step -> checkpoint path
    trajectory : Trajectory
    step : int or None
        The alarm step (``RunSummary.alarm_step``); None draws a panel saying the alarm did
        not fire.
    layers : sequence of str
    rng : int
        The seed the trajectory was analysed with.

    Returns
    -------
    matplotlib Figure
    """
    import matplotlib.pyplot as plt

    from .plot import plot_esd, plot_shuffled_esd
    from .powerlaw import layer_alpha
    from .spectrum import esd
    from .traps import correlation_traps

    steps = np.asarray(trajectory.steps) if trajectory is not None else np.empty(0, int)
    hits = np.flatnonzero(steps == step) if step is not None else np.empty(0, int)
    source = paths.get(int(step)) if step is not None else None
    if not hits.size or source is None:
        fig, ax = plt.subplots(figsize=(6.0, 1.6))
        ax.axis("off")
        why = ("the anti-grokking alarm did not fire" if step is None
               else f"weights of the alarm checkpoint (step {int(step):,}) not available")
        ax.text(0.5, 0.5, f"No alarm spectra: {why}.", ha="center", va="center", transform=ax.transAxes)
        return fig
    i = int(hits[0])
    step = int(step)
    report = trajectory.reports[i]
    center = bool(getattr(report, "center_traps", True))
    rows = {r.name: r for r in report.layers}
    weights = _layer_weights(source, list(layers))
    names = [n for n in layers if n in weights] or list(layers)[:1]
    fig, axes = plt.subplots(len(names), 2, figsize=(9.0, 3.3 * len(names)), squeeze=False)
    for r, name in enumerate(names):
        W = weights.get(name)
        ax_e, ax_s = axes[r]
        if W is None:
            for ax in (ax_e, ax_s):
                ax.text(0.5, 0.5, "weights not available", ha="center", va="center", transform=ax.transAxes)
            continue
        row = rows.get(name)
        alpha = float(getattr(row, "alpha", np.nan)) if row is not None else np.nan
        n_traj = getattr(row, "n_traps", np.nan) if row is not None else np.nan
        ev = esd(W)
        plot_esd(ev, fit=layer_alpha(ev), ax=ax_e, title=f"{name}, step {step:,}: ESD, alpha {alpha:.2f}")
        ax_e.legend(fontsize=7)
        traps = correlation_traps(W, rng=layer_stream(rng, step, name), center_traps=center)
        shuffled = traps.shuffled_eigenvalues  # the shuffle the traps were counted on
        scale = traps.scale if math.isfinite(traps.scale) and traps.scale > 0 else float(np.mean(shuffled))
        plot_shuffled_esd(shuffled / scale, q=traps.q, sigma=traps.sigma, edge=traps.bulk_edge / scale,
                          threshold=traps.threshold / scale, n_traps=traps.n_traps, ax=ax_s,
                          title=f"{name}, step {step:,}: shuffled ESD, {n_traj:g} trap(s)")
        ax_s.legend(fontsize=7)
    fig.suptitle(f"At the anti-grokking alarm (step {step:,}): ESD and shuffled ESD; red crosses are the "
                 f"correlation traps", fontsize=10)
    fig.tight_layout()
    return fig


def _plot_layers(trajectory: Any, min_dim: int = 50) -> list[str]:
    names = list(trajectory.layer_names)
    keep = [n for n in names if np.nanmax(trajectory.feature("min_dim", n)) >= min_dim]
    return keep or names


def _make_figures(trajectory: Any, predicted: np.ndarray, from_accuracy: np.ndarray | None,
                  paths: dict[int, Path], out_dir: Path, rng: int, alarm_step: int | None = None) -> dict[str, Path]:
    from .plot import figure_baselines, figure_overview, use_agg

    use_agg()
    steps = np.asarray(trajectory.steps)
    n = steps.size
    names = list(trajectory.layer_names)
    nan = np.full(n, np.nan)
    fig = figure_overview(
        steps, train_acc=trajectory.metrics.get("train_acc", nan), test_acc=trajectory.metrics.get("test_acc", nan),
        alphas={k: trajectory.feature("alpha", k) for k in names},
        traps={k: trajectory.feature("n_traps", k) for k in names},
        predicted=predicted, from_accuracy=from_accuracy)
    figures = {"overview": _save(fig, out_dir / "overview.png")}
    ref = from_accuracy if from_accuracy is not None else predicted
    reps = representative_checkpoints(steps, ref, trajectory.metrics.get("test_acc"))
    figures.update(_spectral_figures(paths, trajectory, reps, _plot_layers(trajectory), out_dir, rng))
    base: dict[str, np.ndarray] = {}
    l2 = trajectory.baselines.get("l2_norm", trajectory.metrics.get("l2_norm"))
    if l2 is not None and np.isfinite(l2).any():
        base["l2_norm"] = l2
    for k, v in trajectory.baselines.items():
        if k != "l2_norm":
            base[k] = v
    figures["baselines"] = _save(figure_baselines(steps, base, from_accuracy=from_accuracy),
                                 out_dir / "baselines.png")
    figures["alarm_esd"] = _save(alarm_figure(paths, trajectory, alarm_step, _plot_layers(trajectory), rng),
                                 out_dir / "alarm_esd.png")
    return {k: figures[k] for k in FIGURES}


# ----------------------------------------------------------------------------- tables and page
def _write_phases_csv(path: Path, trajectory: Any, predicted: np.ndarray, confidence: np.ndarray,
                      from_accuracy: np.ndarray | None, table: Mapping[str, np.ndarray],
                      evidence: Mapping[str, Any]) -> Path:
    steps = np.asarray(trajectory.steps)
    n = steps.size
    nan = np.full(n, np.nan)
    tr = trajectory.metrics.get("train_acc", nan)
    te = trajectory.metrics.get("test_acc", nan)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["step", "train_acc", "test_acc", "mean_alpha", "n_traps", "onset_ratio", "shrink", "predicted",
                    "confidence", "from_accuracy"])
        onset_ratio, shrink = evidence["onset_ratio"], evidence["shrink"]
        for i in range(n):
            w.writerow([int(steps[i]), f"{tr[i]:.6g}", f"{te[i]:.6g}", f"{table['alpha'][i]:.6g}",
                        f"{table['n_traps'][i]:.6g}", f"{onset_ratio[i]:.6g}", f"{shrink[i]:.6g}", predicted[i],
                        f"{confidence[i]:.3f}",
                        "" if from_accuracy is None else from_accuracy[i]])
    return path


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


_CAPTIONS = {
    "overview": "(1) Train and test accuracy, per-layer alpha (dashed line at alpha = 2) and correlation-trap "
                "counts against the training step (log axis). Full-height bands: phases from the accuracy "
                "curves; strip along the top: phases predicted from the weights alone.",
    "esd": "(2) Empirical spectral density of W<sup>T</sup>W with the fitted power-law tail (red; dotted: "
           "x<sub>min</sub>) at one checkpoint per phase.",
    "shuffled_esd": "(3) ESD of the element-wise shuffled W (mean 1) with the fitted Marchenko-Pastur density, "
                    "its bulk edge (dashed) and the Tracy-Widom trap threshold (dotted); crosses are traps.",
    "baselines": "(4) The competing metrics over training: l2 norm, activation sparsity, absolute weight "
                 "entropy and approximate circuit complexity.",
    "alarm_esd": "(5) At the checkpoint where the anti-grokking alarm fired: each layer's ESD with its power-law "
                 "fit (left) and the ESD of its element-wise shuffled weights (right) with the Marchenko-Pastur "
                 "fit, bulk edge (dashed) and trap threshold (dotted); red crosses are the correlation traps, "
                 "as many as the trajectory counts for that checkpoint.",
}


def _how_to_read(rules: Mapping[str, Any], evidence: Mapping[str, Any]) -> list[str]:
    """The "How to read this" paragraphs, with the thresholds in use."""
    onset = {"stable_rank": "the smallest stable rank", "alpha": "the mean alpha"}[evidence["onset"]]
    base = "its norm when the training set was first fitted" if rules.get("gate_base", "first") == "fit" \
        else "its norm at the first checkpoint"
    gate = ("no norm gate" if rules.get("norm_ratio") is None
            else f"while its Frobenius norm is at least {rules['norm_ratio']:g}x {base} (the norm gate)")
    shrink = ("" if evidence["shrink_ratio"] is None else
              f", or every layer's norm has shrunk to {evidence['shrink_ratio']:g}x its norm at the fit "
              f"(weight decay)")
    train = (f"train accuracy >= {rules['train_threshold']:g}" if rules.get("use_train_acc", True)
             else "always (use_train_acc=False)")
    signal = {"either": "alpha &lt; {a:g} or at least {t} correlation traps",
              "both": "alpha &lt; {a:g} and at least {t} correlation traps",
              "alpha": "alpha &lt; {a:g}", "traps": "at least {t} correlation traps"}[rules["anti_rule"]].format(
        a=rules["alpha_anti"], t=rules["min_traps"])
    return [
        "Every checkpoint gets two labels: <b>from the weights</b> (the phase classifier; it reads each "
        "analysed layer's power-law exponent alpha, correlation-trap count, Frobenius norm and stable rank, "
        "plus the training accuracy, never the test accuracy) and <b>from accuracy</b> (the train and test "
        "curves: the reference the weight-only labels are checked against).",
        f"<b>pre-grokking</b> until the training set is fitted ({train}) and {onset} has fallen to "
        f"{evidence['grok_ratio']:g}x its value at the fit{shrink}: then <b>grokking</b>. "
        f"<b>anti-grokking</b> once the training set is fitted and some layer shows the over-fitting "
        f"signature ({signal}) {gate}. Phases only go forward; "
        f"a checkpoint whose rule no longer holds keeps the label it reached (the table says so).",
        "The table at the end gives, per checkpoint, each analysed layer's alpha, trap count and norm ratio, "
        "the rule that set the label in words and, where the two labels differ, which rule fired or did not "
        "(also in summary.txt). The anti-grokking alarm is the first step the <i>causal</i> classifier (only "
        "the checkpoints up to each one, as during training) says anti-grokking.",
        "In the figures the step axis is logarithmic (linear between step 0 and 1); shaded bands are the "
        "phases from accuracy, the strip along the top of figure (1) the phases from the weights.",
    ]


def _html(summary: RunSummary, figures: Mapping[str, Path], files: Mapping[str, Path], source: str,
          phases_rows: list[tuple[int, str, str, str, str]], explanations: Sequence[Any] = (),
          how_to_read: Sequence[str] = ()) -> str:
    esc = html.escape
    parts = ["<!DOCTYPE html>", "<html lang='en'><head><meta charset='utf-8'>",
             f"<title>htsr_diag report: {esc(source)}</title>",
             "<style>body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;"
             "color:#222}img{max-width:100%;border:1px solid #ddd}figure{margin:1.5em 0}"
             "figcaption{font-size:.9em;color:#444}pre{background:#f6f6f6;padding:.8em;overflow-x:auto}"
             "table{border-collapse:collapse;font-size:.8em}td,th{border:1px solid #ccc;padding:2px 6px;"
             "text-align:right;vertical-align:top;white-space:nowrap}td.why{text-align:left;white-space:normal}"
             "td.why:nth-last-child(2){min-width:19em}.differs{color:#a61b1b}"
             "#how-to-read{background:#f4f8fc;border:1px solid #cfe0f0;padding:.2em 1em;font-size:.92em}"
             "</style></head><body>",
             "<h1>htsr_diag report</h1>",
             f"<p>Run folder: <code>{esc(source)}</code></p>"]
    if how_to_read:
        parts.append("<section id='how-to-read'><h2>How to read this</h2>"
                     + "".join(f"<p>{para}</p>" for para in how_to_read) + "</section>")
    parts += ["<h2>Summary</h2>", f"<pre>{esc(summary.to_text())}</pre>", "<h2>Figures</h2>"]
    for key, path in figures.items():
        parts.append(f"<figure id='{key}'><a href='{esc(path.name)}'><img src='{_data_uri(path)}' "
                     f"alt='{esc(path.name)}' data-file='{esc(path.name)}'></a>"
                     f"<figcaption>{_CAPTIONS.get(key, '')} File: <a href='{esc(path.name)}'>"
                     f"{esc(path.name)}</a></figcaption></figure>")
    why = list(explanations)
    parts.append("<h2 id='phases'>Phases per checkpoint</h2><table><tr><th>step</th><th>train acc</th>"
                 "<th>test acc</th><th>predicted (weights)</th><th>from accuracy</th>"
                 + ("<th>alpha, traps, norm ratio per layer</th><th>why</th>" if why else "") + "</tr>")
    for k, (step, tr, te, pred, ref) in enumerate(phases_rows):
        row = (f"<tr><td>{step:,}</td><td>{esc(tr)}</td><td>{esc(te)}</td><td>{esc(pred)}</td>"
               f"<td>{esc(ref)}</td>")
        if why:
            e = why[k]
            differs = f"<br><span class='differs'>{esc(e.differs)}</span>" if e.differs else ""
            row += (f"<td class='why'>{'<br>'.join(esc(x) for x in e.layers.split('; '))}</td>"
                    f"<td class='why'>{esc(e.rule)}{differs}</td>")
        parts.append(row + "</tr>")
    parts.append("</table><h2>Data</h2><ul>")
    for key, path in files.items():
        parts.append(f"<li><a href='{esc(path.name)}'>{esc(path.name)}</a></li>")
    parts.append("</ul><p style='font-size:.8em;color:#777'>Written by htsr_diag.</p></body></html>")
    return "\n".join(parts)


# ----------------------------------------------------------------------------- entry point
def write_report(run_dir: Any = None, out_dir: Any = None, *, trajectory: Any = None,
                 classifier: Any = None, baselines: bool = True, executor: Any = None,
                 rng: int = 0, progress: bool | None = None, steps_from: str | None = None,
                 train_acc: str | None = None, test_acc: str | None = None,
                 center_traps: bool = True) -> RunReport:
    """Analyse a run folder (or any folder or glob of checkpoints) and write its report.

    Parameters
    ----------
    run_dir : path or str, optional
        A run folder written by :func:`htsr_diag.train.train`, or any folder or glob of
        checkpoints :func:`~htsr_diag.trajectory.analyze_checkpoints` reads. Needed unless
        ``trajectory`` is given (the spectral figures then say "weights not available").
    out_dir : path, optional
        Where to write; default ``run_dir / "report"``. Created if missing.
    trajectory : Trajectory, optional
        A ready analysis (skips :func:`~htsr_diag.trajectory.analyze_checkpoints`).
    classifier : PhaseClassifier, optional
        Default ``PhaseClassifier()`` with its documented thresholds. Its ``causal`` twin
        (same parameters) dates the alarm.
    baselines : bool, default True
        Compute the four baselines (needs the run's training inputs, rebuilt from its
        config.json and the MNIST data; skipped with a log warning if they cannot be).
    executor : concurrent.futures.Executor, optional
        Passed to ``analyze_checkpoints`` to analyse checkpoints in parallel.
    rng : int, default 0
        Seed of the shuffles (per checkpoint streams, see ``analyze_checkpoints``).
    progress : bool, optional
        Progress bar on stderr (default: when stderr is a terminal).
    steps_from, train_acc, test_acc : str, optional
        Passed to :func:`~htsr_diag.trajectory.analyze_checkpoints`: a regular expression for
        the steps in the checkpoint names; the metrics columns holding the accuracies.
    center_traps : bool, default True
        Count the traps of the centred shuffled weights (passed to ``analyze_checkpoints``;
        the default of every entry point, docs/quantities.md). The figures redraw the
        shuffles as the trajectory counted them (centred or not, read from each report).

    Returns
    -------
    RunReport

    Raises
    ------
    FileNotFoundError, NotADirectoryError, ValueError
        ``run_dir`` missing, a file, or a folder without checkpoints (or whose checkpoints'
        steps cannot be read); ``out_dir`` an existing file.
    TypeError
        ``classifier`` not a PhaseClassifier, ``trajectory`` not a Trajectory, ``rng`` not
        a non-negative int.

    Examples
    --------
    Skipped: needs a run folder (``htsr-diag demo`` writes runs/demo/run).

    >>> rep = write_report("runs/demo/run", "runs/demo")      # doctest: +SKIP
    >>> print(rep.summary.to_text())                           # doctest: +SKIP
    """
    from .phases import PhaseClassifier
    from .trajectory import analyze_checkpoints

    if run_dir is None and trajectory is None:
        raise ValueError("write_report needs run_dir (a run folder) or trajectory=...; got neither.")
    if isinstance(rng, bool) or not isinstance(rng, numbers.Integral) or rng < 0:
        raise TypeError(f"rng must be a non-negative int seed; got {rng!r}.")
    from ._validation import check_bool

    center_traps = check_bool(center_traps, "center_traps")
    if classifier is not None and not isinstance(classifier, PhaseClassifier):
        raise TypeError(f"classifier must be a htsr_diag.PhaseClassifier; got {type(classifier).__name__}.")
    if trajectory is not None and not (hasattr(trajectory, "steps") and hasattr(trajectory, "feature")):
        raise TypeError(f"trajectory must be a htsr_diag.Trajectory (from analyze_checkpoints); got "
                        f"{type(trajectory).__name__}.")
    run_path: Path | None = None
    paths: dict[int, Path] = {}
    ours = False
    if run_dir is not None:
        run_path, paths, ours = _check_source(run_dir, steps_from)
    if out_dir is None:
        if run_path is None:
            raise ValueError("out_dir must be given when the report is built from a trajectory alone.")
        out_dir = run_path / "report"
    if not isinstance(out_dir, (str, Path)):
        raise TypeError(f"out_dir must be a path; got {type(out_dir).__name__}.")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"out_dir {str(out)!r} is a file; pass a folder for the report.")
    out.mkdir(parents=True, exist_ok=True)

    if trajectory is None:
        inputs = training_inputs(run_path) if baselines and ours else None
        if baselines and not ours:
            logger.info("%s is not a run folder of the trainer: no training inputs, no baselines", run_dir)
        trajectory = analyze_checkpoints(run_path if Path(str(run_dir)).is_dir() else str(run_dir), inputs=inputs,
                                         executor=executor, rng=rng, progress=progress, steps_from=steps_from,
                                         train_acc=train_acc, test_acc=test_acc, center_traps=center_traps)
    if classifier is None:
        classifier = PhaseClassifier()
    causal = PhaseClassifier(**{**classifier.get_params(), "causal": True})
    if "thresholds_" in classifier.__dict__:
        causal.thresholds_ = dict(classifier.thresholds_)
    with _each_warning_once():
        predicted = classifier.predict(trajectory)
        confidence = classifier.confidence(trajectory)
        alarm_step = causal.transition_steps(trajectory).get("anti-grokking")
        table = classifier.features(trajectory)
        evidence = classifier.evidence(trajectory)
    steps = np.asarray(trajectory.steps)
    nan = np.full(steps.size, np.nan)
    tr = np.asarray(trajectory.metrics.get("train_acc", nan), float)
    te = np.asarray(trajectory.metrics.get("test_acc", nan), float)
    from_accuracy = _finite_labels(steps, tr, te)
    summary = summarize(trajectory, predicted, from_accuracy, alarm_step)

    figures = _make_figures(trajectory, predicted, from_accuracy, paths, out, int(rng), alarm_step)
    explanations = explain_labels(evidence, table, predicted, from_accuracy, rules=classifier.rules())
    files = {
        "trajectory_csv": trajectory.to_csv(out / "trajectory.csv"),
        "trajectory_json": out / "trajectory.json",
        "phases_csv": _write_phases_csv(out / "phases.csv", trajectory, predicted, confidence, from_accuracy,
                                        table, evidence),
        "summary_txt": out / "summary.txt",
        "summary_json": out / "summary.json",
    }
    trajectory.to_json(files["trajectory_json"])
    files["summary_txt"].write_text(summary.to_text() + "\nwhy each checkpoint has its label "
                                    "(alpha, traps and norm ratio of each analysed layer):\n"
                                    + "\n".join(e.text() for e in explanations) + "\n")
    summary.to_json(files["summary_json"], indent=2)
    rows = [(int(steps[i]), "n/a" if not np.isfinite(tr[i]) else f"{tr[i]:.3f}",
             "n/a" if not np.isfinite(te[i]) else f"{te[i]:.3f}", str(predicted[i]),
             "" if from_accuracy is None else str(from_accuracy[i])) for i in range(steps.size)]
    page = out / "report.html"
    page.write_text(_html(summary, figures, files, str(run_dir) if run_dir is not None else "(trajectory)", rows,
                          explanations, _how_to_read(classifier.rules(), evidence)))
    logger.info("report written to %s", page)
    return RunReport(out_dir=out, html=page, figures=figures, files={k: Path(v) for k, v in files.items()},
                     summary=summary, steps=steps, predicted=np.asarray(predicted),
                     from_accuracy=from_accuracy, explanations=explanations)
