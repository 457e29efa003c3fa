"""A training-loop hook: HTSR analysis on a log-spaced schedule and an anti-grokking alarm.

:class:`Monitor` is called once per optimisation step. Off the schedule a call costs one
integer comparison; on the schedule it runs :func:`htsr_diag.analyze.analyze` on the
model where it lives (a CUDA model is analysed on its GPU; only the eigenvalues come back
to the host), feeds the weight-only features to a causal
:class:`~htsr_diag.phases.PhaseClassifier` and reports the current phase. When the phase
changes it calls ``on_phase_change``; when anti-grokking begins it also logs a warning on
the ``htsr_diag.monitor`` logger.
"""

from __future__ import annotations

import logging
import math
import numbers
import time
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

import numpy as np

from ._results import Result
from ._seeding import base_entropy, step_streams
from ._validation import check_bool, check_positive_int
from .exceptions import MissingTrainAccWarning, NoFeatureWarning
from .phases import UNKNOWN
from .phases.features import FeatureRows

if TYPE_CHECKING:
    from .analyze import ModelReport

__all__ = ["Monitor", "MonitorRecord", "log_schedule"]

logger = logging.getLogger(__name__)


def log_schedule(per_decade: int = 10, *, start: int = 0) -> Iterator[int]:
    """Log-spaced training steps: ``start``, then ``round(10**(k / per_decade))`` without repeats.

    Parameters
    ----------
    per_decade : int, default 10
        Points per factor of 10 (the study's figures use 20-50 per decade on 10^7 steps).
    start : int, default 0
        First step yielded (0 = the initialisation); later steps are the log-spaced ones
        above it.

    Yields
    ------
    int
        Strictly increasing steps, without end.

    Examples
    --------
    >>> import itertools
    >>> list(itertools.islice(log_schedule(4), 10))
    [0, 1, 2, 3, 6, 10, 18, 32, 56, 100]
    """
    per_decade = check_positive_int(per_decade, "per_decade")
    if isinstance(start, bool) or not isinstance(start, numbers.Integral) or start < 0:
        raise ValueError(f"start must be a non-negative int; got {start!r}.")
    last = int(start)
    yield last
    k = 0
    while True:
        s = int(round(10.0 ** (k / per_decade)))
        k += 1
        if s > last:
            last = s
            yield s


@dataclass(frozen=True)
class MonitorRecord(Result):
    """One analysed checkpoint of a monitored run.

    Attributes
    ----------
    step : int
        Training step of the analysis.
    phase : str
        Causal phase label at this step (``"pre-grokking"``, ``"grokking"``,
        ``"anti-grokking"``), or ``"unknown"`` when no analysed layer had a finite
        feature (e.g. NaN weights; a :class:`~htsr_diag.exceptions.NoFeatureWarning` says so).
    confidence : float
        The classifier's confidence in ``phase`` (0..1, a heuristic score; NaN when unknown).
    alpha : float
        Mean alpha over the classifier's layers (NaN if no fit).
    n_traps : float
        Correlation traps summed over the classifier's layers.
    train_acc : float
        Training accuracy passed to :meth:`Monitor.step` (NaN if none).
    layer_alpha : dict of str -> float
        Alpha of every analysed layer.
    layer_traps : dict of str -> float
        Trap count of every analysed layer (NaN without ``randomize``).
    seconds : float
        Wall time of the analysis.
    report : ModelReport
        The full :func:`~htsr_diag.analyze.analyze` result.
    """

    step: int
    phase: str
    confidence: float
    alpha: float
    n_traps: float
    train_acc: float
    layer_alpha: dict[str, float]
    layer_traps: dict[str, float]
    seconds: float
    report: ModelReport | None = field(repr=False, compare=False)


class _Schedule:
    """Next scheduled step; ``due(step)`` is one comparison until the step is reached."""

    def __init__(self, it: Iterator[int]):
        self._it = it
        self.next: float = -1
        self._advance(-1)

    def _advance(self, past: int) -> None:
        for s in self._it:
            if s > past:
                self.next = s
                return
        self.next = math.inf

    def due(self, step: int) -> bool:
        if step < self.next:
            return False
        self._advance(step)
        return True


def _schedule_iter(schedule: Any, per_decade: int) -> Iterator[int]:
    if isinstance(schedule, str):
        if schedule != "log":
            raise ValueError(f"schedule must be 'log', a positive int (every n steps) or an increasing "
                             f"sequence of steps; got {schedule!r}.")
        return log_schedule(per_decade)
    if isinstance(schedule, numbers.Integral) and not isinstance(schedule, bool):
        every = check_positive_int(schedule, "schedule")
        return iter(range(0, 2**62, every))
    if isinstance(schedule, Iterable):
        steps = list(schedule)
        if not steps or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) and s >= 0
                                for s in steps):
            raise ValueError(f"schedule must be a non-empty sequence of non-negative int steps; got "
                             f"{steps[:5]!r}.")
        arr = np.asarray(steps, dtype=np.int64)
        if np.any(np.diff(arr) <= 0):
            raise ValueError("schedule must be strictly increasing; sort the steps and drop repeats.")
        return iter(arr.tolist())
    raise TypeError(f"schedule must be 'log', a positive int or a sequence of steps; got "
                    f"{type(schedule).__name__}.")


class Monitor:
    """Watch a model during training: layer alpha, traps and the phase on a log schedule.

    Call :meth:`step` once per optimisation step (after ``optimizer.step()``). Off the
    schedule it returns None at once; on it, the model is analysed where it lives (no copy
    of the weights to the CPU; only eigenvalues travel) and a :class:`MonitorRecord` is
    returned and appended to :attr:`history`. The phase comes from a causal
    :class:`~htsr_diag.phases.PhaseClassifier`: it only reads checkpoints up to the current
    one, and never the test data.

    Parameters
    ----------
    model : torch.nn.Module
        The model being trained (CPU or CUDA).
    schedule : "log", int or sequence of int, default "log"
        ``"log"``: step 0 then ``per_decade`` log-spaced steps per decade (see
        :func:`log_schedule`); an int ``n``: every ``n`` steps; a sequence: those steps.
        A step skipped by the caller is caught up at the next call.
    per_decade : int, default 10
        Density of the log schedule.
    on_phase_change : callable, optional
        ``on_phase_change(previous, record)`` when the phase differs from the previous
        known phase (``previous`` is None at the first analysis, which only triggers it if
        the run is not pre-grokking). An ``"unknown"`` analysis (no finite feature) is not a
        phase change: it neither triggers the callback nor counts as ``previous``, so a
        run that goes grokking -> unknown -> grokking calls nothing, and grokking ->
        unknown -> anti-grokking calls ``on_phase_change("grokking", record)`` once.
    classifier : PhaseClassifier, optional
        Default ``PhaseClassifier(causal=True)`` with its documented thresholds; pass a
        fitted one to use calibrated thresholds.
    randomize : bool, default True
        Compute correlation traps (the earliest anti-grokking signal); False analyses
        alpha only (faster; the classifier then relies on alpha).
    layers : optional
        Passed to :func:`~htsr_diag.analyze.analyze` (which layers to analyse).
    rng : None, int or numpy Generator, default 0
        Seed of the shuffles; the analysis at step ``s`` uses the stream
        ``SeedSequence(rng, spawn_key=(s,))``, as :func:`~htsr_diag.analyze_checkpoints`
        does, so a monitored run and its saved checkpoints give the same traps.
    center_traps : bool, default True
        Count the traps of the centred shuffled weights, as every entry point does by
        default and as the classifier is calibrated (docs/quantities.md).

    Notes
    -----
    The Monitor keeps the features of its analyses as one growing feature table
    (:class:`~htsr_diag.phases.features.FeatureRows`) and labels its last row with the
    classifier's :meth:`~htsr_diag.phases.PhaseClassifier.predict_step`, i.e. the same rule
    functions (:func:`~htsr_diag.phases.rules.ranks` with ``causal=True``) that
    :meth:`~htsr_diag.phases.PhaseClassifier.predict` applies: its labels equal
    ``PhaseClassifier(causal=True).predict`` on the same features. The history is not
    rebuilt at each step.

    Attributes
    ----------
    history : list of MonitorRecord
    phase : str or None
        Phase at the last analysis (None before the first; ``"unknown"`` when that analysis
        found no finite feature).
    alarm_step : int or None
        Step at which anti-grokking was first reported.
    gated_signature_step : int or None
        First fitted step at which a layer showed the over-fitting signature (alpha < 2 or
        traps) while the norm gate held it back (the layer below ``norm_ratio`` x its first
        norm, as under weight decay). Logged once at INFO level; not an alarm.

    Examples
    --------
    >>> import torch
    >>> from htsr_diag import Monitor
    >>> model = torch.nn.Sequential(torch.nn.Linear(100, 60), torch.nn.ReLU(), torch.nn.Linear(60, 30))
    >>> mon = Monitor(model, per_decade=2)
    >>> for step in range(12):
    ...     rec = mon.step(step, train_acc=0.5)   # analyses at steps 0, 1, 3, 10
    >>> [r.step for r in mon.history], mon.phase
    ([0, 1, 3, 10], 'pre-grokking')
    """

    def __init__(self, model: Any, *, schedule: Any = "log", per_decade: int = 10,
                 on_phase_change: Callable[[str | None, MonitorRecord], Any] | None = None,
                 classifier: Any = None, randomize: bool = True, layers: Any = None,
                 rng: Any = 0, center_traps: bool = True) -> None:
        if not hasattr(model, "named_parameters"):
            raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}. "
                            f"For a state dict or checkpoint file use htsr_diag.analyze().")
        if on_phase_change is not None and not callable(on_phase_change):
            raise TypeError(f"on_phase_change must be callable or None; got {type(on_phase_change).__name__}.")
        randomize = check_bool(randomize, "randomize")
        center_traps = check_bool(center_traps, "center_traps")
        per_decade = check_positive_int(per_decade, "per_decade")
        if classifier is None:
            from .phases import PhaseClassifier

            classifier = PhaseClassifier(causal=True)
        elif not (hasattr(classifier, "predict_step") and hasattr(classifier, "report_features")):
            raise TypeError(f"classifier must be a PhaseClassifier (with predict_step and report_features); "
                            f"got {type(classifier).__name__}.")
        self._entropy = base_entropy(rng)
        self.model = model
        self.on_phase_change = on_phase_change
        self.classifier = classifier
        self.randomize = bool(randomize)
        self.center_traps = bool(center_traps)
        self.layers = layers
        self._schedule = _Schedule(_schedule_iter(schedule, per_decade))
        self._counter = 0
        self._last_seen = -1                      # the largest step passed to step() so far
        self._last_analysed: int | None = None
        self._known_phase: str | None = None     # the last phase other than "unknown"
        self._got_train_acc = False
        self._warned_train_acc = False
        self._small_warned: set[str] = set()
        self._features = FeatureRows()  # the feature table so far, grown one row per analysis
        self.history: list[MonitorRecord] = []
        self.phase: str | None = None
        self.alarm_step: int | None = None
        self.gated_signature_step: int | None = None

    @property
    def next_step(self) -> float:
        """The next scheduled step (``inf`` when a finite schedule is exhausted)."""
        return self._schedule.next

    def step(self, step: int | None = None, *, train_acc: float | None = None,
             force: bool = False) -> MonitorRecord | None:
        """Record one training step; analyse the model if the step is on the schedule.

        Parameters
        ----------
        step : int, optional
            The training step just completed. None: an internal counter (0, 1, 2, ...
            over the calls, continuing from the last step given) is used. Steps must not
            decrease over the calls (ValueError naming both steps); the same step may be
            passed again (e.g. once per micro-batch), but never analysed twice.
        train_acc : float, optional
            Training accuracy in [0, 1] at this step (cheap to track in most loops). The
            classifier only leaves pre-grokking once it is high; None means unknown. After
            three analyses without any, a :class:`~htsr_diag.exceptions.MissingTrainAccWarning`
            is emitted once (unless the classifier has ``use_train_acc=False``).
        force : bool, default False
            Analyse now even if the step is off the schedule. The step must be larger than
            the last analysed one.

        Returns
        -------
        MonitorRecord or None
            None off the schedule.
        """
        if step is None:
            step = self._counter
        elif type(step) is not int:  # one identity test on the hot path; full check otherwise
            if isinstance(step, bool) or not isinstance(step, numbers.Integral):
                raise TypeError(f"step must be an int (the training step) or None; got {step!r}.")
            step = int(step)
        if step < 0:
            raise ValueError(f"step must be a non-negative int; got {step!r}.")
        if step < self._last_seen:
            raise ValueError(f"step must not decrease over the calls; got step {step} after step {self._last_seen}. "
                             f"Pass the training step, which only grows (or step=None for the internal counter); "
                             f"use a new Monitor for a new run.")
        if force and self._last_analysed is not None and step <= self._last_analysed:
            raise ValueError(f"step must be larger than the last analysed step to analyse it; got step {step} with "
                             f"force=True after the analysis at step {self._last_analysed}. A step is analysed "
                             f"once: force an analysis at a later step.")
        self._last_seen = step
        self._counter = step + 1
        if not (self._schedule.due(step) or force):
            return None
        if train_acc is not None:
            if isinstance(train_acc, bool) or not isinstance(train_acc, numbers.Real) \
                    or not 0.0 <= float(train_acc) <= 1.0:
                raise ValueError(f"train_acc must be a fraction in [0, 1] or None; got {train_acc!r}. "
                                 f"Divide percentages by 100.")
        return self._analyze(step, train_acc)

    __call__ = step

    def _analyze(self, step: int, train_acc: float | None) -> MonitorRecord:
        import torch

        from .analyze import analyze, small_spectrum_notes, warn_small_spectra

        t0 = time.perf_counter()
        rng = step_streams(self._entropy, step)[0]
        kwargs: dict[str, Any] = {"randomize": self.randomize, "ks": False, "rng": rng,
                                  "center_traps": self.center_traps}
        if self.layers is not None:
            kwargs["layers"] = self.layers
        with torch.no_grad(), small_spectrum_notes() as notes:
            report = analyze(self.model, **kwargs)
        # once per layer for the whole run, not at every analysis
        self._small_warned |= warn_small_spectra(notes, "Monitor", skip=self._small_warned, stacklevel=3)
        feats = self.classifier.report_features(report, train_acc=train_acc)
        feats["step"] = float(step)
        self._features.append(feats)
        self._last_analysed = step
        self._got_train_acc = self._got_train_acc or train_acc is not None
        if (not self._got_train_acc and not self._warned_train_acc and len(self._features) >= 3
                and getattr(self.classifier, "use_train_acc", True)):
            self._warned_train_acc = True
            warnings.warn(f"Monitor: {len(self._features)} analyses and no train_acc yet; the classifier cannot tell "
                          f"memorisation from grokking without it, so the phase may leave pre-grokking before the "
                          f"training set is fitted. Pass it: monitor.step(step, train_acc=...) (a fraction in "
                          f"[0, 1]), or use PhaseClassifier(causal=True, use_train_acc=False).",
                          MissingTrainAccWarning, stacklevel=3)
        phase, confidence = self.classifier.predict_step(self._features.table())
        record = MonitorRecord(
            step=step, phase=phase, confidence=float(confidence), alpha=float(feats["alpha"]),
            n_traps=float(feats["n_traps"]),
            train_acc=float("nan") if train_acc is None else float(train_acc),
            layer_alpha={lay.name: float(getattr(lay, "alpha", float("nan"))) for lay in report.layers},
            layer_traps={lay.name: float(getattr(lay, "n_traps", float("nan"))) for lay in report.layers},
            seconds=time.perf_counter() - t0, report=report)
        self.history.append(record)
        self.phase = phase
        logger.debug("step %d: phase %s (alpha %.3f, traps %g, %.3fs)", step, phase, record.alpha,
                     record.n_traps, record.seconds)
        if phase == UNKNOWN:  # no evidence: neither a phase change nor a signature to note
            return record
        if self.gated_signature_step is None and self.alarm_step is None and phase != "anti-grokking":
            self._note_gated_signature(step, report)
        previous, self._known_phase = self._known_phase, phase
        if phase != previous and not (previous is None and phase == "pre-grokking"):
            if phase == "anti-grokking" and self.alarm_step is None:
                self.alarm_step = step
                layers = ", ".join(f"{k}: alpha {v:.2f}, {record.layer_traps.get(k, float('nan')):g} trap(s)"
                                   for k, v in record.layer_alpha.items())
                logger.warning("anti-grokking began at step %d (%s); the model has started to over-fit "
                               "(test accuracy is likely falling).", step, layers)
            else:
                logger.info("step %d: phase %s -> %s", step, previous, phase)
            if self.on_phase_change is not None:
                self.on_phase_change(previous, record)
        return record

    def _note_gated_signature(self, step: int, report: Any) -> None:
        """Log once when a fitted layer has the over-fitting signature but not the norm gate."""
        from .phases import PhaseClassifier

        if not isinstance(self.classifier, PhaseClassifier):  # a duck-typed classifier: no evidence to read
            return
        with warnings.catch_warnings():  # the featureless and train_acc warnings were given already
            warnings.simplefilter("ignore", NoFeatureWarning)
            warnings.simplefilter("ignore", MissingTrainAccWarning)
            ev = self.classifier.evidence(self._features.table())
        held = ev["layer_signature"][:, -1] & ~ev["layer_gate"][:, -1]
        if not (ev["fitted"][-1] and held.any()):
            return
        from .trajectory import Trajectory  # local: trajectory imports analyze lazily

        self.gated_signature_step = step
        names = self.classifier.analysed_layers(
            Trajectory(steps=np.zeros(1, dtype=np.int64), reports=[report], metrics={}, baselines={}))
        which = ", ".join(f"'{names[j] if j < len(names) else j}' ({ev['layer_norm_ratio'][j, -1]:.2f}x its "
                          f"{'norm at the fit' if self.classifier.rules().get('gate_base') == 'fit' else 'first norm'})"
                          for j in np.flatnonzero(held))
        logger.info("step %d: %s show(s) the over-fitting signature below the norm gate (%gx); not an alarm. "
                    "Under weight decay this came with test-accuracy declines of 2-6 points in the measured "
                    "runs (docs/phases.md).", step, which, self.classifier.rules()["norm_ratio"])

    def to_frame(self):
        """The history as a pandas DataFrame, one row per analysis (pandas imported here)."""
        try:
            import pandas as pd
        except ImportError as exc:  # pragma: no cover
            raise ImportError('Monitor.to_frame needs pandas: pip install pandas') from exc
        rows = []
        for r in self.history:
            row = {k: getattr(r, k) for k in ("step", "phase", "confidence", "alpha", "n_traps",
                                              "train_acc", "seconds")}
            row.update({f"alpha_{k}": v for k, v in r.layer_alpha.items()})
            row.update({f"traps_{k}": v for k, v in r.layer_traps.items()})
            rows.append(row)
        return pd.DataFrame(rows)
