"""Checkpoint trajectories: :func:`~htsr_diag.analyze.analyze` over a sequence of checkpoints.

:func:`analyze_checkpoints` takes any folder or glob of checkpoints (a run folder written by
the trainer, Lightning's ``version_N/``, the HF Trainer's ``checkpoint-N/`` folders, a folder of
``.pt`` files; found by :mod:`htsr_diag.checkpoints`), or a list of models, state dicts or
checkpoint files, analyses every checkpoint (every layer's alpha, traps and KS test; the
baseline metrics when training inputs are given) and returns a :class:`Trajectory`, aligned
with the train/test metrics saved next to the checkpoints when there are any.

Checkpoints are independent, so the work is spread over any
:class:`concurrent.futures.Executor` (a ``ProcessPoolExecutor`` on one machine, a
``dask.distributed`` client's ``client.get_executor()`` on a cluster). Each checkpoint's
random streams are seeded from ``(rng, step)``, so the result does not depend on the
executor, the worker or the order in which checkpoints finish: it equals the serial run.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import os
from concurrent.futures import Executor, as_completed
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np

from ._progress import Progress
from ._results import Result

if TYPE_CHECKING:
    from .analyze import ModelReport

__all__ = ["Trajectory", "analyze_checkpoints", "METRIC_NAMES"]

logger = logging.getLogger(__name__)

#: Run metrics aligned with the checkpoints (NaN where the run folder has none).
METRIC_NAMES: tuple[str, ...] = ("train_acc", "test_acc", "train_loss", "test_loss", "l2_norm")
#: LayerReport fields that are counts: summed over layers by :meth:`Trajectory.feature`.
_COUNT_PREFIXES = ("n_", "num_")
_FORMAT = "htsr_diag.Trajectory"


def _layer_value(layer: Any, name: str) -> float:
    """A numeric field of a LayerReport; ``min_dim`` from its shape; NaN when absent."""
    if name == "min_dim" and not hasattr(layer, "min_dim"):
        for attr in ("M", "m"):
            if hasattr(layer, attr):
                return float(getattr(layer, attr))
        shape = getattr(layer, "shape", None)
        return float(min(shape[:2])) if shape is not None else math.nan
    value = getattr(layer, name, None)
    if isinstance(value, (bool, np.bool_)):
        return float(value)
    if isinstance(value, numbers.Real):
        return float(value)
    return math.nan


@dataclass(frozen=True)
class Trajectory(Result):
    """The analysis of a sequence of checkpoints of one run.

    Attributes
    ----------
    steps : ndarray of int, shape (n,)
        Training step of each checkpoint, strictly increasing: a Trajectory built (or read
        with :meth:`from_json` / :meth:`from_dict`) with its checkpoints in any order sorts
        them by step, each report, metric and baseline value with its step (stable sort).
        Repeated or non-finite steps raise ValueError.
    reports : list of ModelReport, length n
        :func:`~htsr_diag.analyze.analyze` of each checkpoint.
    metrics : dict of str -> ndarray of float, shape (n,)
        ``train_acc``, ``test_acc``, ``train_loss``, ``test_loss``, ``l2_norm`` from the run
        folder's ``metrics.jsonl`` at the same steps (NaN where unknown).
    baselines : dict of str -> ndarray of float, shape (n,)
        The baseline metrics (when ``inputs`` were given), else empty.
    source : str or None
        The run folder, when the trajectory was read from one.

    Examples
    --------
    Three models stand in for three checkpoints of a run:

    >>> import torch
    >>> _ = torch.manual_seed(0)
    >>> models = [torch.nn.Sequential(torch.nn.Linear(64, 60), torch.nn.ReLU(), torch.nn.Linear(60, 60))
    ...           for _ in range(3)]
    >>> traj = analyze_checkpoints(models, steps=[0, 10, 100], rng=0)
    >>> traj.steps.tolist(), traj.layer_names
    ([0, 10, 100], ['0', '2'])
    >>> traj.feature("alpha", "0").round(2)
    array([...])
    >>> traj.to_frame()[["step", "name", "alpha"]].shape
    (6, 3)
    """

    _format = _FORMAT
    _header = {"version": 1}

    steps: np.ndarray
    reports: list[ModelReport]
    metrics: dict[str, np.ndarray] = field(default_factory=dict)
    baselines: dict[str, np.ndarray] = field(default_factory=dict)
    source: str | None = None

    def __post_init__(self) -> None:
        steps = _check_steps(self.steps)
        reports = list(self.reports)
        if len(reports) != steps.size:
            raise ValueError(f"reports must have one entry per step ({steps.size}); got {len(reports)}.")
        tables = {}
        for attr in ("metrics", "baselines"):
            table = {str(k): np.asarray(v, dtype=np.float64).reshape(-1) for k, v in dict(getattr(self, attr)).items()}
            for k, v in table.items():
                if v.size != steps.size:
                    raise ValueError(f"{attr}[{k!r}] must have one value per step ({steps.size}); got {v.size}.")
            tables[attr] = table
        if steps.size > 1 and not (np.diff(steps) > 0).all():  # sort the checkpoints by step, rows with them
            order = np.argsort(steps, kind="stable")
            steps = steps[order]
            reports = [reports[i] for i in order]
            tables = {attr: {k: v[order] for k, v in t.items()} for attr, t in tables.items()}
        object.__setattr__(self, "steps", steps)
        object.__setattr__(self, "reports", reports)
        for attr, table in tables.items():
            object.__setattr__(self, attr, table)

    def __len__(self) -> int:
        return int(self.steps.size)

    @property
    def layer_names(self) -> list[str]:
        """Names of the analysed layers, in model order (union over the checkpoints)."""
        names: list[str] = []
        for report in self.reports:
            for layer in report.layers:
                if layer.name not in names:
                    names.append(layer.name)
        return names

    def feature(self, name: str, layer: str | None = None) -> np.ndarray:
        """One value per checkpoint.

        Parameters
        ----------
        name : str
            A LayerReport field (``"alpha"``, ``"n_traps"``, ``"ks_statistic"``, ...,
            ``"min_dim"``), a run metric (``"test_acc"``, ...) or a baseline name.
        layer : str, optional
            The layer to read. None: counts (fields starting ``n_``/``num_``) are summed
            over the layers, other fields averaged (NaN-aware); metrics and baselines ignore
            it.

        Returns
        -------
        ndarray of float, shape (n_checkpoints,)
            NaN where a checkpoint lacks the layer or the value.
        """
        if name in self.metrics:
            return self.metrics[name].copy()
        if name in self.baselines:
            return self.baselines[name].copy()
        names = self.layer_names
        if layer is not None and layer not in names:
            raise ValueError(f"layer {layer!r} is not in this trajectory; its layers are {names}.")
        if not any(hasattr(lr, name) for r in self.reports for lr in r.layers) and name != "min_dim":
            raise ValueError(f"{name!r} is neither a layer field, a metric ({sorted(self.metrics)}) nor a "
                             f"baseline ({sorted(self.baselines)}).")
        table = np.full((len(names), len(self)), np.nan)
        for j, report in enumerate(self.reports):
            for lr in report.layers:
                table[names.index(lr.name), j] = _layer_value(lr, name)
        if layer is not None:
            return table[names.index(layer)]
        valid = np.isfinite(table)
        if name.startswith(_COUNT_PREFIXES):
            out = np.where(valid, table, 0.0).sum(axis=0)
        else:
            count = valid.sum(axis=0)
            out = np.where(count > 0, np.where(valid, table, 0.0).sum(axis=0) / np.maximum(count, 1), np.nan)
        out[~valid.any(axis=0)] = np.nan
        return out

    def with_metrics(self, columns: Mapping[str, Any] | None = None, /, **more: Any) -> "Trajectory":
        """A new Trajectory with these metrics added (or replacing those of the same name).

        Parameters
        ----------
        columns : mapping of str -> array_like, optional
            Metric name -> one value per checkpoint, in the trajectory's (step) order.
        **more : array_like
            The same, as keywords: ``traj.with_metrics(train_acc=acc)``.

        Returns
        -------
        Trajectory
            The same reports, baselines and source; this one is unchanged (it is frozen).

        Raises
        ------
        TypeError
            A name that is not a str, or values that are not numbers.
        ValueError
            Values that are not one per checkpoint; ``train_acc`` / ``test_acc`` outside [0, 1]
            (percentages: divide by 100).

        Examples
        --------
        >>> import torch
        >>> models = [torch.nn.Linear(64, 60) for _ in range(3)]
        >>> traj = analyze_checkpoints(models, steps=[0, 10, 100], rng=0)
        >>> traj.with_metrics(train_acc=[0.1, 0.9, 1.0]).metrics["train_acc"]
        array([0.1, 0.9, 1. ])
        """
        from .checkpoints import check_accuracy

        if columns is not None and not isinstance(columns, Mapping):
            raise TypeError(f"with_metrics takes a mapping of metric names to values, or keywords; got "
                            f"{type(columns).__name__}.")
        new = {**dict(columns or {}), **more}
        out = dict(self.metrics)
        for name, values in new.items():
            if not isinstance(name, str):
                raise TypeError(f"metric names must be str; got {name!r}.")
            try:
                arr = np.asarray(values, dtype=np.float64)
            except (TypeError, ValueError) as exc:
                raise TypeError(f"metric {name!r} must be numbers, one per checkpoint; got {values!r:.80}.") from exc
            if arr.ndim != 1 or arr.size != len(self):
                raise ValueError(f"metric {name!r} must have one value per checkpoint ({len(self)}, in step order); "
                                 f"got shape {arr.shape}.")
            if name in ("train_acc", "test_acc"):
                check_accuracy(name, arr)
            out[name] = arr.copy()
        return dataclasses.replace(self, metrics=out)

    def to_frame(self):
        """A pandas DataFrame with one row per checkpoint x layer.

        Columns: ``step``, the layer report's columns (``name``, ``alpha``, ``n_traps``, ...),
        then the run metrics and baselines of that checkpoint (repeated on its layer rows).
        """
        try:
            import pandas as pd
        except ImportError as exc:  # pragma: no cover
            raise ImportError('Trajectory.to_frame needs pandas: pip install "htsr-diag[dev]" or pandas.') from exc
        frames = []
        for j, report in enumerate(self.reports):
            frame = report.to_frame().reset_index(drop=True)
            frame.insert(0, "step", int(self.steps[j]))
            for k, v in {**self.metrics, **self.baselines}.items():
                frame[k] = v[j]
            frames.append(frame)
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def to_csv(self, path: str | Path) -> Path:
        """Write :meth:`to_frame` as CSV; returns the path."""
        path = Path(path)
        self.to_frame().to_csv(path, index=False)
        return path

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Trajectory":
        """Inverse of :meth:`~htsr_diag._results.Result.to_dict` (the ``format`` key is required)."""
        if not isinstance(data, Mapping) or data.get("format") != _FORMAT:
            raise ValueError(f"data is not a serialised Trajectory (expected format {_FORMAT!r}); "
                             f"got {type(data).__name__} with format "
                             f"{data.get('format') if isinstance(data, Mapping) else None!r}.")
        return super().from_dict(data)


def _check_steps(steps: Any) -> np.ndarray:
    """A Trajectory's steps as a 1-D int64 array: integers, finite, without repeats (any order)."""
    raw = np.asarray(steps).reshape(-1)
    if raw.dtype == object or not (np.issubdtype(raw.dtype, np.integer) or np.issubdtype(raw.dtype, np.floating)
                                   or raw.size == 0):
        raise TypeError(f"steps must be a sequence of int training steps; got dtype {raw.dtype}.")
    if np.issubdtype(raw.dtype, np.floating):
        bad = np.flatnonzero(~np.isfinite(raw) | (raw != np.round(raw)))
        if bad.size:
            i = int(bad[0])
            raise ValueError(f"steps must be whole numbers (training steps); got {float(raw[i]):g} at index {i}. "
                             f"Drop that checkpoint or give its step.")
    out = raw.astype(np.int64)
    uniq, counts = np.unique(out, return_counts=True)
    if (counts > 1).any():
        dup = int(uniq[np.flatnonzero(counts > 1)[0]])
        raise ValueError(f"steps must not repeat (one checkpoint per step); step {dup} appears "
                         f"{int(counts[counts > 1][0])} times. Drop the repeated checkpoint(s) or correct their steps.")
    return out


# ----------------------------------------------------------------------------- sources
def _is_paths(sources: Any) -> bool:
    if isinstance(sources, (str, os.PathLike)):
        return True
    return (isinstance(sources, (list, tuple)) and len(sources) > 0
            and all(isinstance(x, (str, os.PathLike)) for x in sources))


@dataclass(frozen=True)
class _Sources:
    items: list[Any]
    steps: np.ndarray
    home: Path | None  # where the metrics are looked for
    run_dir: Path | None  # a folder given as the source (our run folder, Lightning's version_N, ...)
    ours: bool  # the trainer's run folder: checkpoints/ and metrics.jsonl


def _resolve(sources: Any, steps: Any, steps_from: Any = None) -> _Sources:
    """The checkpoints to analyse, sorted by step, and where their metrics are."""
    if _is_paths(sources):
        from .checkpoints import _expand, find_checkpoints

        is_folder = isinstance(sources, (str, os.PathLike)) and Path(sources).is_dir()
        if steps is not None and is_folder and (Path(sources) / "checkpoints").is_dir():
            raise ValueError("steps must be None for a run folder: the steps are read from the checkpoint names.")
        pairs = find_checkpoints(sources, steps=steps, steps_from=steps_from)
        paths, home, _ = _expand(sources, "sources")
        ours = home is not None and (home / "checkpoints").is_dir() and (home / "metrics.jsonl").is_file()
        return _Sources([p for _, p in pairs], np.array([s for s, _ in pairs], dtype=np.int64), home,
                        Path(sources) if is_folder else None, ours)
    if steps_from is not None:
        raise ValueError("steps_from reads steps from file names; the sources are models or state dicts. Pass "
                         "steps=[...] instead.")
    items = list(sources) if isinstance(sources, (list, tuple)) else [sources]
    if not items:
        raise ValueError("sources must hold at least one checkpoint; got an empty sequence.")
    for i, item in enumerate(items):
        ok = isinstance(item, (str, os.PathLike, Mapping)) or hasattr(item, "state_dict")
        if not ok:
            raise TypeError(f"sources[{i}] must be a torch module, a state dict, or a checkpoint path; "
                            f"got {type(item).__name__}.")
        if isinstance(item, (str, os.PathLike)) and not Path(item).exists():
            raise ValueError(f"sources[{i}]={str(item)!r} is not a file. Pass existing checkpoint files, "
                             f"or a folder or glob as the only source.")
    if steps is None:
        if any(isinstance(x, (str, os.PathLike)) for x in items):
            raise ValueError("a list that mixes paths with models or state dicts needs steps=[...] (one per "
                             "source).")
        step_arr = np.arange(len(items), dtype=np.int64)
    else:
        step_arr = np.asarray(steps)
        if step_arr.ndim != 1 or step_arr.size != len(items):
            raise ValueError(f"steps must give one step per source ({len(items)}); got shape {step_arr.shape}.")
        if not np.issubdtype(step_arr.dtype, np.integer) or (step_arr < 0).any():
            raise ValueError(f"steps must be non-negative integers; got {step_arr.tolist()[:5]}...")
        step_arr = step_arr.astype(np.int64)
    if np.unique(step_arr).size != step_arr.size:
        uniq, counts = np.unique(step_arr, return_counts=True)
        raise ValueError(f"steps must be unique; step {int(uniq[counts > 1][0])} appears more than once.")
    order = np.argsort(step_arr, kind="stable")
    return _Sources([items[i] for i in order], step_arr[order], None, None, False)


def _run_metrics(src: _Sources, train_acc: str | None = None,
                 test_acc: str | None = None) -> dict[str, np.ndarray]:
    """The metrics next to the checkpoints at their steps (NaN where a checkpoint has no row).

    Always the columns of METRIC_NAMES; from a metrics file other than the trainer's run folder's
    metrics.jsonl, every other numeric column too. ``train_acc`` / ``test_acc`` name the columns
    that hold those accuracies. Rows at steps without a checkpoint are ignored.
    """
    from .checkpoints import check_accuracy, read_metrics_table

    steps = src.steps
    out = {k: np.full(steps.size, np.nan) for k in METRIC_NAMES}
    path: Path | None = None
    rows: dict[int, dict[str, float]] = {}
    if src.home is not None:
        path, rows = read_metrics_table(src.home, [p for p in src.items if Path(p).is_dir()])
    mapping = {k: v for k, v in (("train_acc", train_acc), ("test_acc", test_acc)) if v is not None}
    for key, column in mapping.items():
        if not isinstance(column, str):
            raise TypeError(f"{key} must be the name of a metrics column (a str); got {type(column).__name__}. "
                            f"To attach values, use traj.with_metrics({key}=values).")
        if path is None:
            where = "" if src.home is None else f" in {str(src.home)!r}"
            raise ValueError(f"{key}={column!r} names a metrics column, but no metrics file was found next to "
                             f"the checkpoints{where} (looked for metrics.jsonl, metrics.json, metrics.csv, "
                             f"trainer_state.json). Add one, or attach the values with "
                             f"traj.with_metrics({key}=values).")
        columns = sorted({c for r in rows.values() for c in r})
        if column not in columns:
            raise ValueError(f"{key}={column!r} is not a column of {str(path)!r}; its columns are {columns}.")
    if not rows:
        return out
    index = {int(s): j for j, s in enumerate(steps)}
    names = list(METRIC_NAMES)
    if not src.ours:
        names += sorted({c for r in rows.values() for c in r} - set(names))
    for name in names:
        out.setdefault(name, np.full(steps.size, np.nan))
    for step, row in rows.items():
        j = index.get(step)
        if j is None:
            continue
        for k in names:
            if k in row:
                out[k][j] = row[k]
        for key, column in mapping.items():
            if column in row:
                out[key][j] = row[column]
    for key in ("train_acc", "test_acc"):
        source = mapping.get(key, key)
        check_accuracy(key, out[key], f" (column {source!r} of {str(path)!r})")
    return out


def _run_model_factory(run_dir: Path) -> Callable[[], Any] | None:
    """A picklable ``MLP`` constructor matching the run's ``config.json`` (None without one)."""
    import functools

    cfg_path = run_dir / "config.json"
    if not cfg_path.is_file():
        return None
    from .train import MLP, TrainConfig

    raw = json.loads(cfg_path.read_text())
    cfg = TrainConfig.from_dict({k: v for k, v in raw.items() if k != "htsr_diag_version"})
    return functools.partial(MLP, tuple(cfg.hidden), init_scale=1.0, dtype=cfg.torch_dtype)


# ----------------------------------------------------------------------------- the worker
def _analyze_one(source: Any, step: int, entropy: int, analyze_kwargs: dict[str, Any],
                 inputs: Any, model_factory: Any,
                 num_threads: int | None) -> tuple[Any, dict[str, float], list[tuple[str, str]]]:
    """Analyse one checkpoint; module level so that process pools and dask can pickle it.

    Returns the report, the baselines and the layers' small-spectrum notes (warned about
    once per layer by the caller, not once per checkpoint).
    """
    from ._seeding import step_streams
    from .analyze import analyze, small_spectrum_notes

    rng_analyze, rng_baseline = step_streams(entropy, step)
    with _threads(num_threads):
        with small_spectrum_notes() as notes:
            report = analyze(source, rng=rng_analyze, **analyze_kwargs)
        baselines: dict[str, float] = {}
        if inputs is not None:
            from .baselines import compute_baselines

            baselines = compute_baselines(source, inputs, rng=rng_baseline, model_factory=model_factory)
    return report, baselines, notes


def _warn_small_once(per_checkpoint: list[list[tuple[str, str]]], steps: np.ndarray) -> None:
    """One SmallSpectrumWarning per layer for a whole trajectory, saying at how many checkpoints."""
    from .analyze import warn_small_spectra

    first: dict[str, tuple[str, int]] = {}
    count: dict[str, int] = {}
    for notes, step in zip(per_checkpoint, steps):
        for name, message in dict(notes).items():
            first.setdefault(name, (message, int(step)))
            count[name] = count.get(name, 0) + 1
    warn_small_spectra([(name, f"{message.rstrip('.')} (at {count[name]} of {len(per_checkpoint)} checkpoints, first at step "
                               f"{step}).") for name, (message, step) in first.items()],
                       "analyze_checkpoints", stacklevel=3)


class _threads:
    """Run a block with a fixed number of torch and BLAS threads (None: leave them).

    The eigensolvers' rounding depends on the thread count, so a fixed count makes a
    checkpoint's numbers bit-identical in this process, a process pool or a dask worker.
    """

    def __init__(self, n: int | None) -> None:
        self.n = n

    def __enter__(self) -> None:
        if self.n is None:
            return
        import torch

        self._old = torch.get_num_threads()
        torch.set_num_threads(self.n)
        try:
            from threadpoolctl import threadpool_limits

            self._pool = threadpool_limits(self.n)
        except ImportError:  # pragma: no cover - threadpoolctl ships with scipy's stack
            self._pool = None

    def __exit__(self, *exc: Any) -> None:
        if self.n is None:
            return
        import torch

        torch.set_num_threads(self._old)
        if self._pool is not None:
            self._pool.restore_original_limits()


def analyze_checkpoints(sources: Any, *, steps: Sequence[int] | None = None, steps_from: str | None = None,
                        train_acc: str | None = None, test_acc: str | None = None, inputs: Any = None,
                        executor: Executor | None = None, randomize: bool = True, ks: bool = True,
                        layers: Any = None, model_factory: Callable[[], Any] | None = None,
                        rng: Any = 0, num_threads: int | None = 1,
                        progress: bool | None = None, center_traps: bool = True) -> Trajectory:
    """Analyse every checkpoint of a run: alpha, traps and KS per layer, plus baselines and metrics.

    Parameters
    ----------
    sources : path, glob, or sequence of models / state dicts / checkpoint paths
        Any folder or glob of checkpoints (see :func:`htsr_diag.checkpoints.find_checkpoints`):
        a run folder written by :func:`htsr_diag.train.train`, Lightning's ``version_N/``
        (their ``checkpoints/`` subfolder is read), a folder of ``.pt`` / ``.pth`` / ``.bin`` /
        ``.ckpt`` / ``.safetensors`` files, the HF Trainer's output folder of
        ``checkpoint-N/`` model folders (sharded or not), ``"runs/x/*.pt"``; or a list of
        checkpoint paths, ``torch.nn.Module`` or state dicts. Metrics saved next to the
        checkpoints are read (:func:`htsr_diag.checkpoints.read_metrics_table`).
    steps : sequence of int, optional
        The step of each source of a list. Default: read from the names
        (:func:`htsr_diag.checkpoints.step_from_name`: ``step_N``, ``epoch=E-step=N``,
        ``checkpoint-N``, ``model_N``, ``iter_N``, ...); a checkpoint whose step cannot be read
        raises, listing them all. Models and state dicts without ``steps`` get 0, 1, 2, ...
        Checkpoints are sorted by step; steps must be unique.
    steps_from : str, optional
        A regular expression with one capture group, the step, searched in each checkpoint's
        name (then its whole path), for names the default parser does not read.
    train_acc, test_acc : str, optional
        The metrics column that holds the training (test) accuracy, e.g. ``"eval_accuracy"``
        of the HF Trainer; it becomes ``metrics["train_acc"]`` (``["test_acc"]``). Default:
        the columns of those names, if any. Accuracies must be fractions in [0, 1]:
        percentages raise ValueError (before any checkpoint is analysed).
    inputs : array_like or tensor of shape (n_samples, n_features), optional
        Training inputs. When given, the baselines (activation sparsity, weight entropy,
        circuit complexity, l2 norm) are computed per checkpoint.
    executor : concurrent.futures.Executor, optional
        Runs the checkpoints in parallel, e.g.
        ``ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn"))`` or a dask
        ``client.get_executor()``. None: serial, in this process. The results are the same.
        Use the "spawn" (or "forkserver") start method for process pools: a child *forked*
        from a process whose torch / OpenMP threads have run can deadlock.
    randomize, ks, layers
        Passed to :func:`~htsr_diag.analyze.analyze`.
    model_factory : callable, optional
        ``model_factory()`` returns a fresh module to load a state-dict checkpoint into, so
        that the activation-based baselines can run. Default for a run folder: the trainer's
        MLP built from its ``config.json``. Must be picklable to use an executor.
    rng : None, int or numpy Generator, default 0
        Base seed; checkpoint ``step`` uses the stream ``SeedSequence(rng, spawn_key=(step,))``,
        so a checkpoint gets the same numbers whichever worker, order or subset runs it.
    num_threads : int or None, default 1
        Torch and BLAS threads each checkpoint's analysis runs with (restored afterwards).
        Eigensolver rounding depends on the thread count, so a fixed count makes every
        number bit-identical whichever executor or worker runs a checkpoint (dask workers,
        for one, start with one BLAS thread). None keeps each process's own setting: results
        then agree with the serial run only to rounding (~1e-10 relative on fitted MP sigma).
        Parallelism across checkpoints comes from ``executor``.
    progress : bool, optional
        Draw a progress bar on stderr (default: only when stderr is a terminal).
    center_traps : bool, default True
        Count correlation traps of the *centred* shuffled weights (``center_traps`` of
        :func:`~htsr_diag.analyze.analyze`; the default of every entry point).
        :class:`~htsr_diag.phases.PhaseClassifier` is calibrated on centred counts: a
        layer's non-zero mean makes one spurious "trap" from early training on
        (docs/quantities.md, docs/phases.md). False gives the uncentred count of
        WeightWatcher and the study.

    Returns
    -------
    Trajectory
        ``metrics`` holds :data:`METRIC_NAMES` (NaN where unknown) and, from a metrics file
        other than the trainer's ``metrics.jsonl``, its other numeric columns; a checkpoint
        without a metrics row gets NaN, a metrics row without a checkpoint is ignored.

    Examples
    --------
    A list of models (or state dicts, or checkpoint paths) with their steps:

    >>> import torch
    >>> _ = torch.manual_seed(0)
    >>> models = [torch.nn.Sequential(torch.nn.Linear(64, 60), torch.nn.ReLU(), torch.nn.Linear(60, 60))
    ...           for _ in range(3)]
    >>> traj = analyze_checkpoints(models, steps=[0, 10, 100], rng=0)
    >>> len(traj), traj.layer_names
    (3, ['0', '2'])

    Skipped: these need a Lightning log folder, an HF Trainer output folder, and a run folder
    (analysed in two worker processes):

    >>> traj = analyze_checkpoints("lightning_logs/version_0", train_acc="train_acc_epoch")  # doctest: +SKIP
    >>> traj = analyze_checkpoints("out/checkpoint-*", test_acc="eval_accuracy")            # doctest: +SKIP
    >>> import multiprocessing
    >>> from concurrent.futures import ProcessPoolExecutor
    >>> spawn = multiprocessing.get_context("spawn")
    >>> with ProcessPoolExecutor(2, mp_context=spawn) as pool:    # doctest: +SKIP
    ...     traj = analyze_checkpoints("runs/fast", executor=pool)
    >>> traj.feature("alpha", "fc1").round(2)                      # doctest: +SKIP
    """
    if executor is not None and not isinstance(executor, Executor) and not hasattr(executor, "submit"):
        raise TypeError(f"executor must be a concurrent.futures.Executor (or have .submit); got "
                        f"{type(executor).__name__}.")
    from ._seeding import base_entropy
    from ._validation import check_bool, check_positive_int

    randomize, ks = check_bool(randomize, "randomize"), check_bool(ks, "ks")
    center_traps = check_bool(center_traps, "center_traps")
    if num_threads is not None:
        num_threads = check_positive_int(num_threads, "num_threads")
    src = _resolve(sources, steps, steps_from)
    items, step_arr, run_dir = src.items, src.steps, src.run_dir
    metrics = _run_metrics(src, train_acc, test_acc)  # bad metrics fail before the long analysis
    entropy = base_entropy(rng)
    kwargs: dict[str, Any] = {"randomize": bool(randomize), "ks": bool(ks), "center_traps": bool(center_traps)}
    if layers is not None:
        kwargs["layers"] = layers
    if model_factory is not None and not callable(model_factory):
        raise TypeError(f"model_factory must be a callable returning a torch.nn.Module; got "
                        f"{type(model_factory).__name__}.")
    if inputs is not None and model_factory is None and src.ours and run_dir is not None:
        model_factory = _run_model_factory(run_dir)
    results: list[Any] = [None] * len(items)
    with Progress(len(items), "checkpoints", enabled=progress) as bar:
        if executor is None:
            for j, (item, step) in enumerate(zip(items, step_arr)):
                results[j] = _analyze_one(item, int(step), entropy, kwargs, inputs, model_factory, num_threads)
                bar.update(1, postfix=f"step {int(step)}")
        else:
            futures = {executor.submit(_analyze_one, item, int(step), entropy, kwargs, inputs, model_factory,
                                       num_threads): j
                       for j, (item, step) in enumerate(zip(items, step_arr))}
            for fut in as_completed(futures):
                results[futures[fut]] = fut.result()
                bar.update(1)
    reports = [r for r, _, _ in results]
    names = sorted({k for _, b, _ in results for k in b})
    baselines = {k: np.array([b.get(k, np.nan) for _, b, _ in results], dtype=np.float64) for k in names}
    _warn_small_once([notes for _, _, notes in results], step_arr)
    logger.info("analysed %d checkpoints (steps %d..%d)", len(items), step_arr[0], step_arr[-1])
    source = str(run_dir) if run_dir is not None else os.fspath(sources) if isinstance(sources, (str, os.PathLike)) \
        else None
    return Trajectory(steps=step_arr, reports=reports, metrics=metrics, baselines=baselines, source=source)
