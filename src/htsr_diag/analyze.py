"""Whole-model HTSR analysis: a row per layer (alpha, norms, traps, KS vs MP) and the skipped list.

:func:`analyze` finds the layers (:func:`htsr_diag.layers.find_layers`), decomposes the layers
of equal shape and device together (:func:`htsr_diag.spectrum.esd_many`; a CUDA tensor on its
GPU), fits the power-law tail of each spectrum (:func:`htsr_diag.powerlaw.layer_alpha`) and,
with ``randomize=True``, counts the correlation traps of the element-wise shuffled weights and
tests their spectrum against Marchenko-Pastur (:func:`htsr_diag.traps.randomized_analysis`).

A layer that cannot be analysed (NaN weights, a degenerate spectrum, a numerical failure)
gives a row whose ``status`` says why, with NaN values, and a warning; the other layers are
still reported. Randomness: each layer draws from its own stream, derived from ``rng`` and
the layer's name, so analysing a subset of the layers (``layers=[...]``) gives those layers
the same numbers as the full analysis.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import logging
import math
import warnings
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from ._progress import Progress
from ._results import Result
from ._seeding import layer_rng, model_entropy
from ._validation import UNSET, all_finite, check_bool, is_tensor, renamed
from .exceptions import DegenerateSpectrumWarning, HTSRWarning, SmallSpectrumWarning
from .layers import LayerMatrix, LayerSet, SkippedParam, find_layers
from .interop import WeightWatcherComparison  # noqa: F401 - the type of ModelReport.comparison
from .spectrum import esd_many

__all__ = ["LayerReport", "ModelReport", "analyze"]

logger = logging.getLogger(__name__)

_FORMAT = "htsr_diag.ModelReport"
#: Models with at least this many layers get a progress bar by default (on a terminal).
PROGRESS_MIN_LAYERS = 8
#: Layers of equal shape are decomposed in batches of at most this many weight entries, so that
#: a large model's batch does not need all its weights in float64 at once. On a GPU, batching
#: saves kernel launches (2**25 entries: 256 MiB in float64); on the CPU the solvers loop over
#: the batch anyway, so the batch is kept small (2**22 entries: 32 MiB) to bound peak memory.
BATCH_ELEMENTS = 2**25
CPU_BATCH_ELEMENTS = 2**22
_NAN = float("nan")


@dataclass(frozen=True)
class LayerReport(Result):
    """The analysis of one layer.

    Eigenvalues are those of ``W^T W`` (squared singular values, no 1/N; conv slices pooled),
    as in WeightWatcher, so ``alpha``, ``xmin``, ``lambda_max`` and the trap eigenvalues are
    directly comparable with its columns (its ``spectral_norm`` column is our ``lambda_max``).

    Attributes
    ----------
    name, type : str
        Layer name (``"fc1"``) and kind (``"Linear"``, ``"Conv2d"``, ... see
        :data:`htsr_diag.layers.LAYER_KINDS`).
    shape : tuple of int
        The parameter's shape as stored.
    N, M : int
        ``max`` and ``min`` of ``(out, in)`` of one 2-D slice; ``Q = N / M``.
    Q : float
    n_slices : int
        Slices pooled (``prod(kernel)`` for a convolution, else 1).
    n_eigenvalues : int
        ``M * n_slices``.
    alpha, alpha_std, xmin, xmax, ks_distance : float
        Power-law fit of the tail (:class:`htsr_diag.powerlaw.PowerLawFit`); ``ks_distance``
        is the two-sided KS distance of the tail from the fitted law.
    n_tail : int
        Eigenvalues in the fitted tail (0 when no fit).
    lambda_max : float
        Largest eigenvalue (``||W||_2^2``; for a convolution, of the largest slice).
    frobenius_norm : float
        ``||W||_F = sqrt(sum of eigenvalues)``.
    spectral_norm : float
        ``||W||_2 = sqrt(lambda_max)``.
    stable_rank : float
        ``||W||_F^2 / ||W||_2^2``.
    n_traps : int or float
        Correlation traps (NaN without ``randomize``).
    trap_eigenvalues : tuple of float
        Shuffled eigenvalues above the trap threshold (same units as ``lambda_max``).
    trap_threshold, bulk_edge : float
        MP bulk edge + Tracy-Widom margin, and the MP bulk edge, in the same units.
    sigma_mp : float
        Fitted MP scale of the shuffled spectrum rescaled to mean 1 (~1 for random weights).
    ks_statistic, ks_pvalue : float
        KS test of the shuffled spectrum against MP (NaN without ``randomize`` and ``ks``).
    status : str
        ``"ok"``, or what could not be computed and why (``"alpha: ..."``, ``"traps: ..."``,
        ``"non-finite weights ..."``, ``"failed: ..."``).
    warning : str
        HTSR reading of alpha: ``"over-trained"`` (< 2), ``"under-trained"`` (> 6) or ``""``.
    """

    name: str
    type: str
    shape: tuple[int, ...]
    N: int
    M: int
    Q: float
    n_slices: int
    n_eigenvalues: int
    alpha: float = _NAN
    alpha_std: float = _NAN
    xmin: float = _NAN
    xmax: float = _NAN
    ks_distance: float = _NAN
    n_tail: int = 0
    lambda_max: float = _NAN
    frobenius_norm: float = _NAN
    spectral_norm: float = _NAN
    stable_rank: float = _NAN
    n_traps: int | float = _NAN
    trap_eigenvalues: tuple[float, ...] = ()
    trap_threshold: float = _NAN
    bulk_edge: float = _NAN
    sigma_mp: float = _NAN
    ks_statistic: float = _NAN
    ks_pvalue: float = _NAN
    status: str = "ok"
    warning: str = ""


@dataclass(frozen=True)
class ModelReport(Result):
    """The analysis of a whole model: one :class:`LayerReport` per layer, and what was skipped.

    Attributes
    ----------
    layers : list of LayerReport
        In model order.
    skipped : list of SkippedParam
        Every parameter not analysed, with the reason.
    source : str
        What was analysed (model class name, file path, ``"state dict"``).
    randomize, ks : bool
        The options used.
    version : str
        htsr_diag version that made the report.
    center_traps : bool
        Whether the trap counts are of the centred shuffled matrix (:func:`analyze` centres
        by default; the field's own default, False, is what a report serialised before the
        field existed holds: those were uncentred).
    comparison : WeightWatcherComparison or None
        WeightWatcher's alpha, xmin and traps beside ours, with the causes of the
        differences (``analyze(..., compare="weightwatcher")``; :mod:`htsr_diag.interop`).

    Examples
    --------
    >>> import torch, torch.nn as nn
    >>> _ = torch.manual_seed(0)
    >>> report = analyze(nn.Linear(100, 50), rng=0)
    >>> back = ModelReport.from_json(report.to_json())
    >>> back.names, back.layer("").alpha == report.layer("").alpha
    ([''], True)
    """

    _format = _FORMAT
    _json_indent = 1

    layers: list[LayerReport]
    skipped: list[SkippedParam]
    source: str = ""
    randomize: bool = True
    ks: bool = True
    version: str = ""
    center_traps: bool = False
    comparison: WeightWatcherComparison | None = None

    @property
    def names(self) -> list[str]:
        """Layer names in model order."""
        return [lr.name for lr in self.layers]

    def layer(self, name: str) -> LayerReport:
        """The report of the layer called ``name``."""
        for lr in self.layers:
            if lr.name == name:
                return lr
        raise KeyError(f"no layer named {name!r}; layers are {self.names}.")

    @property
    def mean_alpha(self) -> float:
        """Mean alpha over the layers that have one (NaN if none)."""
        vals = [lr.alpha for lr in self.layers if not math.isnan(lr.alpha)]
        return float(np.mean(vals)) if vals else _NAN

    @property
    def n_traps(self) -> float:
        """Total correlation traps over the layers that have a count (NaN if none)."""
        vals = [lr.n_traps for lr in self.layers if not (isinstance(lr.n_traps, float) and math.isnan(lr.n_traps))]
        return float(sum(vals)) if vals else _NAN

    @classmethod
    def from_weightwatcher(cls, details: Any, *, source: str | None = None) -> "ModelReport":
        """A report from a saved WeightWatcher details table (a DataFrame or its CSV file).

        The columns map as in :func:`htsr_diag.interop.report_from_weightwatcher`, so that
        :class:`~htsr_diag.trajectory.Trajectory` and the report tools read runs analysed
        with WeightWatcher.
        """
        from .interop import report_from_weightwatcher

        return report_from_weightwatcher(details, source=source)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ModelReport":
        """Inverse of :meth:`~htsr_diag._results.Result.to_dict` (``skipped`` may be missing)."""
        if not isinstance(d, Mapping) or "layers" not in d:
            raise ValueError(f"not a ModelReport dict: expected a mapping with 'layers' (format {_FORMAT!r}); "
                             f"got {type(d).__name__} with keys {list(d)[:8] if isinstance(d, Mapping) else []}.")
        return super().from_dict({"skipped": [], **d})

    def to_frame(self):
        """A pandas DataFrame with one row per layer (every :class:`LayerReport` field)."""
        try:
            import pandas as pd
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError('ModelReport.to_frame needs pandas: pip install pandas '
                              '(or pip install "htsr-diag[dev]")') from exc
        cols = [f.name for f in dataclasses.fields(LayerReport)]
        return pd.DataFrame([{c: getattr(lr, c) for c in cols} for lr in self.layers], columns=cols)


# ----------------------------------------------------------------------------- computation
_layer_rng = layer_rng  # the per-layer stream (htsr_diag._seeding); kept under this name for streaming.py


def _base(lm: LayerMatrix) -> dict[str, Any]:
    return {"name": lm.name, "type": lm.kind, "shape": lm.shape, "N": lm.N, "M": lm.M, "Q": lm.Q,
            "n_slices": lm.n_slices, "n_eigenvalues": lm.n_eigenvalues}


def _to_device(W: Any, device: Any) -> Any:
    if device is None:
        return W
    import torch

    if not is_tensor(W):
        W = torch.from_numpy(np.ascontiguousarray(W))
    return W.to(device)


def _check_device(device: Any) -> Any:
    if device is None:
        return None
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device must be None, 'cpu', 'cuda', 'cuda:0', ... or a torch.device; got {device!r}.") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was asked for, but CUDA is not available. Pass device=None "
                         f"(analyse weights where they are) or 'cpu'.")
    return dev


def _analyze_layer(lm: LayerMatrix, W: Any, eigs: np.ndarray, randomize: bool, ks: bool,
                   rng: np.random.Generator, center_traps: bool = True) -> LayerReport:
    from .powerlaw import collect_small_notes, layer_alpha

    row = _base(lm)
    status: list[str] = []
    lam_max = float(eigs[-1])
    total = float(eigs.sum())
    row.update(lambda_max=lam_max, frobenius_norm=math.sqrt(total), spectral_norm=math.sqrt(lam_max),
               stable_rank=total / lam_max if lam_max > 0 else _NAN)
    with collect_small_notes() as notes:  # warned once per layer by analyze, naming it
        fit = layer_alpha(eigs, shape=(lm.N, lm.M))
    if notes:
        _note_small(lm, notes[0])
    row.update(alpha=float(fit.alpha), alpha_std=float(fit.alpha_std), xmin=float(fit.xmin),
               xmax=float(fit.xmax), ks_distance=float(fit.ks_distance), n_tail=int(fit.n_tail),
               warning=fit.warning)
    if fit.status != "ok":
        status.append(f"alpha: {fit.status}")
    if randomize:
        from .traps import randomized_analysis

        traps, kst = randomized_analysis(W, rng=rng, center_traps=center_traps)
        n_traps = traps.n_traps
        if isinstance(n_traps, (int, np.integer)) or (isinstance(n_traps, float) and n_traps.is_integer()):
            n_traps = int(n_traps)
        row.update(n_traps=n_traps, trap_eigenvalues=tuple(float(x) for x in np.asarray(traps.trap_eigenvalues)),
                   trap_threshold=float(traps.threshold), bulk_edge=float(traps.bulk_edge),
                   sigma_mp=float(traps.sigma))
        if traps.status != "ok":
            status.append(f"traps: {traps.status}")
        if ks:
            row.update(ks_statistic=float(kst.statistic), ks_pvalue=float(kst.pvalue))
    row["status"] = "; ".join(status) if status else "ok"
    return LayerReport(**row)


#: Per-call collector of the small-spectrum notes of analyse's layers (see :func:`small_spectrum_notes`).
_LAYER_NOTES: contextvars.ContextVar[list[tuple[str, str]] | None] = contextvars.ContextVar(
    "htsr_layer_notes", default=None)


def _note_small(lm: LayerMatrix, note: str) -> None:
    """Hand a layer's small-spectrum note to the active collector, if any."""
    sink = _LAYER_NOTES.get()
    if sink is not None:
        sink.append((lm.name, f"layer {lm.name!r} (shape {tuple(lm.shape)}): {note}"))


@contextlib.contextmanager
def small_spectrum_notes() -> Iterator[list[tuple[str, str]]]:
    """Collect the (layer name, message) small-spectrum notes of :func:`analyze` calls instead of warning.

    Internal: :func:`analyze` warns once per layer and call; callers that analyse many
    checkpoints (:func:`~htsr_diag.trajectory.analyze_checkpoints`, the Monitor) collect the
    notes and warn once per layer over all of them (:func:`warn_small_spectra`).
    """
    notes: list[tuple[str, str]] = []
    token = _LAYER_NOTES.set(notes)
    try:
        yield notes
    finally:
        _LAYER_NOTES.reset(token)


def warn_small_spectra(notes: Sequence[tuple[str, str]], where: str, skip: Iterable[str] = (),
                       stacklevel: int = 2) -> set[str]:
    """One :class:`SmallSpectrumWarning` per layer in ``notes`` not in ``skip``; returns the layers warned about."""
    done = set(skip)
    warned: set[str] = set()
    for name, message in notes:
        if name in done:
            continue
        done.add(name)
        warned.add(name)
        warnings.warn(f"{where}: {message}", SmallSpectrumWarning, stacklevel=stacklevel + 1)
    return warned


def _failed(lm: LayerMatrix, status: str) -> LayerReport:
    warnings.warn(f"analyze: layer {lm.name!r} ({lm.param}, shape {lm.shape}): {status}; its row holds NaN.",
                  DegenerateSpectrumWarning if status.startswith("non-finite") else HTSRWarning, stacklevel=3)
    return LayerReport(**_base(lm), status=status)


def analyze(model: Any, *, randomize: bool = True, ks: bool = True, layers: str | Sequence[str] | None = None,
            device: Any = None, rng: Any = 0, all_2d: bool = False,
            progress: bool | None = None, center_traps: bool = True, center: Any = UNSET,
            compare: str | None = None) -> ModelReport:
    """Analyse every layer of a model: alpha, norms, correlation traps and the KS test vs MP.

    Parameters
    ----------
    model : torch.nn.Module, state dict, checkpoint path, array or LayerSet
        Anything :func:`htsr_diag.layers.find_layers` accepts. A ``.safetensors`` file or a
        model folder of safetensors (sharded with ``model.safetensors.index.json`` or not) is
        read one tensor at a time (:mod:`htsr_diag.streaming`), with the same result.
    randomize : bool, default True
        Shuffle each layer's weights and count correlation traps (``n_traps``,
        ``trap_eigenvalues``, ``sigma_mp``). One extra decomposition per layer (5 for
        layers with fewer than 100 eigenvalues).
    ks : bool, default True
        Also report the KS test of the shuffled spectrum against Marchenko-Pastur. It reuses
        the shuffled spectrum (no extra cost); ignored when ``randomize`` is False.
    layers : str or list of str, optional
        Only these layers: a regular expression or a list of exact names (``include`` of
        :func:`~htsr_diag.layers.find_layers`); the others are listed as skipped.
    device : None, str or torch.device
        None (default): analyse each weight where it is (a CUDA tensor on its GPU, numpy on
        the CPU). ``"cuda"``: move every weight there first; ``"cpu"``: bring them to the CPU.
    rng : None, int or numpy.random.Generator, default 0
        Seeds the shuffles. Each layer uses its own stream derived from ``rng`` and its name.
        Default 0, as every entry point (``analyze_checkpoints``, the Monitor, the report,
        the CLI), so the same checkpoint gives the same numbers run after run; None draws
        fresh entropy.
    all_2d : bool, default False
        Also analyse 2-D parameters of unrecognised modules (see ``find_layers``).
    progress : bool, optional
        Progress bar on stderr. Default: on for models with 8 or more layers when stderr is
        a terminal.
    center_traps : bool, default True
        Subtract each layer's mean weight before shuffling (``center_traps`` of
        :func:`~htsr_diag.traps.correlation_traps`). A non-zero mean survives shuffling and
        makes one outlier eigenvalue of its own, which the uncentred count (False, as
        WeightWatcher and the study) reports as a trap. Centred is the default of every
        entry point, and what the phase classifier is calibrated on (docs/quantities.md).
        ``center=`` is accepted as an old name, with a FutureWarning.
    compare : {None, "weightwatcher"}
        Also run WeightWatcher 0.7.7 on the same layers (``pip install "htsr-diag[compare]"``)
        and put its alpha, xmin and trap count beside ours, with where and why they differ,
        in ``report.comparison`` (:func:`htsr_diag.interop.compare_weightwatcher`).

    Returns
    -------
    ModelReport

    Raises
    ------
    TypeError, ValueError, CheckpointError
        Unsupported ``model``, a bad option, no analysable layer, an unreadable checkpoint.
        A layer that fails does not raise: its row has a ``status`` and NaN values.

    Examples
    --------
    >>> import torch.nn as nn
    >>> model = nn.Sequential(nn.Linear(784, 200), nn.ReLU(), nn.Linear(200, 200))
    >>> report = analyze(model, rng=0)
    >>> report.names, [lr.n_traps for lr in report.layers]
    (['0', '2'], [0, 0])
    >>> [s.name for s in report.skipped]
    ['0.bias', '2.bias']
    """
    if compare is not None:
        if compare != "weightwatcher":
            raise ValueError(f"compare must be None or 'weightwatcher'; got {compare!r}.")
        from .interop import compare_weightwatcher

        report = analyze(model, randomize=randomize, ks=ks, layers=layers, device=device, rng=rng, all_2d=all_2d,
                         progress=progress, center_traps=center_traps, center=center)  # the same numbers as without
        return dataclasses.replace(report, comparison=compare_weightwatcher(model, report, rng=rng, layers=layers,
                                                                            all_2d=all_2d))
    center_traps = renamed(center, "center", center_traps, "center_traps", True, "analyze")
    randomize, ks = check_bool(randomize, "randomize"), check_bool(ks, "ks")
    center_traps = check_bool(center_traps, "center_traps")
    progress = check_bool(progress, "progress", allow_none=True)
    dev = _check_device(device)
    entropy = model_entropy(rng)
    from .streaming import analyze_streamed, is_streamable

    if is_streamable(model):  # a safetensors file or model folder: one tensor in memory at a time
        return analyze_streamed(model, randomize=randomize, ks=ks, layers=layers, dev=dev, entropy=entropy,
                                all_2d=all_2d, progress=progress, center_traps=center_traps)
    found: LayerSet = find_layers(model, include=layers, all_2d=all_2d)

    # move, check finiteness, group by (shape, device) for batched decompositions
    rows: dict[int, LayerReport] = {}
    weights: dict[int, Any] = {}
    groups: dict[tuple, list[int]] = {}
    for i, lm in enumerate(found.layers):
        try:
            W = _to_device(lm.weight, dev)
            if not all_finite(W):
                rows[i] = _failed(lm, "non-finite weights (NaN or Inf): check the checkpoint for a diverged run")
                continue
        except Exception as exc:  # e.g. out of memory moving to the device
            rows[i] = _failed(lm, f"failed: {type(exc).__name__}: {exc}")
            continue
        weights[i] = W
        key = (tuple(W.shape), str(W.device) if is_tensor(W) else "numpy")
        groups.setdefault(key, []).append(i)
    per_batch = {key: max(1, (CPU_BATCH_ELEMENTS if key[1] in ("numpy", "cpu") else BATCH_ELEMENTS)
                          // int(np.prod(key[0]))) for key in groups}
    batches = [(key, idx[k:k + per_batch[key]]) for key, idx in groups.items()
               for k in range(0, len(idx), per_batch[key])]

    outer = _LAYER_NOTES.get()
    with small_spectrum_notes() as notes:
        report = _analyze_batches(found, rows, weights, batches, randomize, ks, entropy, center_traps, progress)
    if outer is not None:
        outer.extend(notes)
    else:
        warn_small_spectra(notes, "analyze")
    return report


def _analyze_batches(found: LayerSet, rows: dict[int, LayerReport], weights: dict[int, Any], batches: list,
                     randomize: bool, ks: bool, entropy: int, center_traps: bool,
                     progress: bool | None) -> ModelReport:
    """The decompositions and per-layer analyses of :func:`analyze` (inputs checked there)."""
    from . import __version__

    n = len(found.layers)
    enabled = progress if progress is not None else (None if n >= PROGRESS_MIN_LAYERS else False)
    with Progress(n, "analyze", enabled=enabled) as bar:
        bar.update(len(rows))
        for (shape, where), idx in batches:
            try:
                spectra = esd_many([weights[i] for i in idx])
            except Exception:
                logger.debug("batched decomposition of %d layers of shape %s failed", len(idx), shape, exc_info=True)
                spectra = [None] * len(idx)
                for j, i in enumerate(idx):
                    try:
                        spectra[j] = esd_many([weights[i]])[0]
                    except Exception as exc_i:  # noqa: PERF203 - one bad layer must not stop the others
                        rows[i] = _failed(found.layers[i], f"failed: eigenvalues: {type(exc_i).__name__}: {exc_i}")
            for j, i in enumerate(idx):
                lm = found.layers[i]
                if spectra[j] is None:
                    bar.update(1)
                    continue
                try:
                    rows[i] = _analyze_layer(lm, weights[i], spectra[j], bool(randomize), bool(ks),
                                             _layer_rng(entropy, lm.name), bool(center_traps))
                except Exception as exc:
                    logger.debug("layer %s failed", lm.name, exc_info=True)
                    rows[i] = _failed(lm, f"failed: {type(exc).__name__}: {exc}")
                bar.update(1, postfix=lm.name[-30:])
    report = ModelReport(layers=[rows[i] for i in range(n)], skipped=list(found.skipped), source=found.source,
                         randomize=bool(randomize), ks=bool(ks), version=__version__,
                         center_traps=bool(center_traps))
    logger.debug("analysed %d layers of %s (%d parameters skipped)", n, found.source, len(found.skipped))
    return report
