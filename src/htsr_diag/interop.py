"""Interop with WeightWatcher 0.7.7: its numbers beside ours, and its saved tables read into our reports.

Users switching from WeightWatcher trust its numbers first. :func:`compare_weightwatcher`
runs WeightWatcher on the same model (its ``analyze``, with its defaults) and puts its
alpha, xmin and trap count beside ours, one :class:`LayerComparison` per layer, with the
cause of every difference found in its source (``weightwatcher/weightwatcher.py``,
``WW_powerlaw.py``, version 0.7.7):

==================  ==============================================================================
cause               what WeightWatcher does
==================  ==============================================================================
``abs-cut``         drops eigenvalues ``<= 1e-5`` before the fit (``EVALS_THRESH``, an absolute
                    cut): a layer with small weights loses part or all of its spectrum (alpha
                    ``-1``, status ``failed``), where htsr_diag cuts relative to ``lambda_max``
``conv-scale``      multiplies Conv2d weights by ``sqrt(1/2)`` (``conv2d_norm``, on by default), so
                    its xmin and ``lambda_max`` of a conv layer are half of ``W``'s eigenvalues
                    (alpha is scale-free and unaffected)
``swapped-dims``    swaps N and M of a Conv2d whose ``out < in`` when the kernel has an even
                    number of slices (2x2, 4x4): its aspect ratio Q, MP bulk edge and trap
                    threshold are those of the transposed shape
``skipped``         gives no row for a Conv1d layer, a layer with more than 15000 eigenvalues
                    (``max_evals``) or ``N > 50000`` (``max_N``), fewer than 8 (``min_evals``) or
                    a kind it does not know
``trap-rule``       counts traps above bulk edge + ``sqrt`` of its Tracy-Widom term (about 10x
                    the TW scale), with a KDE-fitted sigma, on a shuffle of its own (the global
                    NumPy RNG) of the uncentred matrix; htsr_diag uses the TW quantile at
                    ``false_alarm``, centred by default
``near-tie``        two xmin candidates whose KS distances tie to rounding: the two
                    decompositions (its SVD, our ``eigh``) pick different ones
``fp16``            on a machine where torch sees CUDA, rounds the weights to float16 before
                    its SVD (``RMT_Util.torch_T_to_np``): alphas then differ by ~1e-4 relative
``unexplained``     a difference none of the above explains (please report it)
==================  ==============================================================================

``ModelReport.from_weightwatcher(details)`` (:func:`report_from_weightwatcher`) reads a
saved WeightWatcher details table (a DataFrame or its CSV file) into a
:class:`~htsr_diag.analyze.ModelReport`, so that trajectories and reports can be built
from runs analysed with WeightWatcher.

Importing WeightWatcher has side effects: it configures the root logger
(``logging.basicConfig``), silences every warning of the process
(``warnings.simplefilter("ignore")`` in ``WW_powerlaw.py``) and prints to stdout; its
randomisation uses the global NumPy RNG. This module imports and runs it with the logging
handlers, the warning filters and the global RNG state restored afterwards and its output
captured; the global RNG is seeded from ``rng`` for the run, so the comparison is
reproducible.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import math
import numbers
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ._results import Result

__all__ = ["LayerComparison", "WeightWatcherComparison", "compare_weightwatcher", "report_from_weightwatcher",
           "ALPHA_RTOL", "WW_EVALS_THRESH", "WW_VERSION"]

logger = logging.getLogger(__name__)

#: The WeightWatcher release whose behaviour this module describes.
WW_VERSION = "0.7.7"
#: WeightWatcher's absolute eigenvalue cut (``constants.EVALS_THRESH``): eigenvalues ``<=`` it are dropped.
WW_EVALS_THRESH = 1e-5
#: Its layer filters (``DEFAULT_MIN_EVALS``, ``DEFAULT_MAX_EVALS``, ``DEFAULT_MAX_N``).
WW_MIN_EVALS, WW_MAX_EVALS, WW_MAX_N = 8, 15000, 50000
#: Relative tolerance under which two alphas are the same number. Both tools fit the same
#: eigenvalues with the same xmin rule (``WWFit``); the eigenvalues come from two float64
#: decompositions (its SVD, our ``eigh`` of ``W^T W``) that agree to ~1e-12 relative for the
#: tail eigenvalues, which moves alpha by about as much (measured: <= 2e-14 on the nine dense
#: float32 layers of tests/test_interop.py; 2.6e-9 on its float64 layer, which WeightWatcher
#: rounds to float32 first, ``RMT_Util.torch_T_to_np``). One eigenvalue more or less in a tail of n changes alpha by about
#: (alpha - 1) / n, >= 1e-4 for the at most 15000 eigenvalues WeightWatcher fits, so 1e-6
#: separates rounding from a different fit with margins of 1000x on both sides.
ALPHA_RTOL = 1e-6

_NAN = float("nan")
_TYPES = {"dense": "Linear", "conv2d": "Conv2d", "conv1d": "Conv1d", "embedding": "Embedding"}
_CAUSES = ("abs-cut", "conv-scale", "swapped-dims", "skipped", "trap-rule", "near-tie", "fp16", "unexplained")


# ----------------------------------------------------------------------------- results
@dataclass(frozen=True)
class LayerComparison(Result):
    """One layer analysed by htsr_diag and WeightWatcher, side by side.

    Attributes
    ----------
    name : str
        Layer name (WeightWatcher's ``longname``).
    type : str
        Our layer kind (``"Linear"``, ``"Conv2d"``, ...), or WeightWatcher's for a layer only it analysed.
    N, M, n_eigenvalues : int
        Ours (0 when we did not analyse the layer).
    N_ww, M_ww, n_eigenvalues_ww : int
        WeightWatcher's ``N``, ``M`` and ``num_evals`` (0 without a row).
    alpha, xmin, n_traps : float
        Ours (NaN when not analysed; traps NaN without ``randomize``).
    alpha_ww, xmin_ww, n_traps_ww : float
        WeightWatcher's ``alpha``, ``xmin`` and ``num_traps`` (its ``-1`` "no fit" as NaN).
    alpha_agrees : bool
        Both alphas finite and equal within :data:`ALPHA_RTOL`, or both NaN.
    causes : tuple of str
        The codes of the module table that apply (empty when the two agree).
    difference : str
        Where and why the two differ, in words; ``""`` when they agree.
    """

    name: str
    type: str
    N: int = 0
    M: int = 0
    n_eigenvalues: int = 0
    N_ww: int = 0
    M_ww: int = 0
    n_eigenvalues_ww: int = 0
    alpha: float = _NAN
    alpha_ww: float = _NAN
    xmin: float = _NAN
    xmin_ww: float = _NAN
    n_traps: float = _NAN
    n_traps_ww: float = _NAN
    alpha_agrees: bool = False
    causes: tuple[str, ...] = ()
    difference: str = ""


@dataclass(frozen=True)
class WeightWatcherComparison(Result):
    """htsr_diag's analysis of a model beside WeightWatcher's, layer by layer.

    Attributes
    ----------
    layers : tuple of LayerComparison
        Our layers in model order, then the layers only WeightWatcher analysed.
    weightwatcher_version : str
    randomize : bool
        Whether trap counts were computed (by both).
    center_traps : bool
        Whether our trap counts are of the centred matrix (WeightWatcher's never are).
    rtol : float
        The alpha tolerance used (:data:`ALPHA_RTOL`).
    """

    _format = "htsr_diag.WeightWatcherComparison"

    layers: tuple[LayerComparison, ...]
    weightwatcher_version: str = ""
    randomize: bool = True
    center_traps: bool = False
    rtol: float = ALPHA_RTOL

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.layers]

    def layer(self, name: str) -> LayerComparison:
        for c in self.layers:
            if c.name == name:
                return c
        raise KeyError(f"no layer named {name!r} in the comparison; layers are {self.names}.")

    @property
    def n_agree(self) -> int:
        """Layers analysed by both whose alphas agree."""
        return sum(1 for c in self.layers if c.alpha_agrees and c.N and c.N_ww)

    def to_frame(self):
        """A pandas DataFrame, one row per layer, one column per :class:`LayerComparison` field."""
        try:
            import pandas as pd
        except ImportError as exc:  # pragma: no cover - pandas comes with weightwatcher
            raise ImportError('WeightWatcherComparison.to_frame needs pandas: pip install "htsr-diag[compare]"') from exc
        cols = [f.name for f in dataclasses.fields(LayerComparison)]
        return pd.DataFrame([{c: getattr(row, c) for c in cols} for row in self.layers], columns=cols)

    def to_text(self) -> str:
        """A plain-text table (the CLI's ``--compare`` output)."""
        width = max([len("layer")] + [len(c.name) for c in self.layers]) + 2
        head = (f"{'layer':<{width}}{'alpha':>8}{'alpha_ww':>10}{'xmin':>11}{'xmin_ww':>11}{'traps':>7}"
                f"{'traps_ww':>9}  difference")
        lines = [head]
        for c in self.layers:
            lines.append(f"{c.name:<{width}}{_f(c.alpha, '.3f'):>8}{_f(c.alpha_ww, '.3f'):>10}{_f(c.xmin, '.4g'):>11}"
                         f"{_f(c.xmin_ww, '.4g'):>11}{_f(c.n_traps, 'g'):>7}{_f(c.n_traps_ww, 'g'):>9}  "
                         f"{c.difference or 'agree'}")
        n_both = sum(1 for c in self.layers if c.N and c.N_ww)
        lines.append(f"alpha agrees (rtol {self.rtol:g}) on {self.n_agree} of {n_both} layers analysed by both "
                     f"(WeightWatcher {self.weightwatcher_version}).")
        return "\n".join(lines)


def _f(x: float, spec: str) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


# ----------------------------------------------------------------------------- running WeightWatcher
@contextlib.contextmanager
def _contained(seed: int | None = None):
    """Run WeightWatcher code with its side effects undone: root logging handlers and level, the
    warning filters, the global NumPy RNG (seeded with ``seed`` inside), and its prints captured."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    ww_logger = logging.getLogger("weightwatcher")
    ww_level = ww_logger.level
    state = np.random.get_state()
    out = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            warnings.simplefilter("ignore")
            ww_logger.setLevel(logging.ERROR)
            if seed is not None:
                np.random.seed(seed)
            yield out
    finally:
        np.random.set_state(state)
        ww_logger.setLevel(ww_level)
        for h in list(root.handlers):
            if h not in handlers:
                root.removeHandler(h)
        root.setLevel(level)


def _import_weightwatcher():
    try:
        with _contained():
            import weightwatcher
    except ImportError as exc:
        raise ImportError(f"compare='weightwatcher' needs WeightWatcher {WW_VERSION}, which is not installed ({exc}). "
                          f'Install it with: pip install "htsr-diag[compare]"') from exc
    version = str(getattr(weightwatcher, "__version__", ""))
    if version and version != WW_VERSION:
        logger.warning("WeightWatcher %s is installed; the differences are described for %s", version, WW_VERSION)
    return weightwatcher


def _ww_input(model: Any, found: Any) -> Any:
    """What WeightWatcher is given: the module itself, else a state dict of torch tensors."""
    import torch

    if isinstance(model, torch.nn.Module):
        return model
    if isinstance(model, (str, os.PathLike)):
        from .layers import load_state_dict

        model = load_state_dict(model)
    if isinstance(model, Mapping):
        return {str(k): (v if isinstance(v, torch.Tensor) else torch.as_tensor(np.asarray(v))).detach().cpu()
                for k, v in model.items() if hasattr(v, "shape")}
    # an array or a LayerSet: the weights we analysed, under their parameter names
    return {lm.param if lm.param.endswith(".weight") else f"{lm.param}.weight":
            (lm.weight if isinstance(lm.weight, torch.Tensor) else torch.as_tensor(np.asarray(lm.weight))).detach().cpu()
            for lm in found.layers}


def weightwatcher_rounds_to_half() -> bool:
    """Whether the installed WeightWatcher rounds weights to float16 (it does when torch sees CUDA)."""
    ww = _import_weightwatcher()
    import torch

    to_np = getattr(getattr(ww, "RMT_Util", None), "torch_T_to_np", None)
    if to_np is None:  # pragma: no cover - another version's layout
        return bool(torch.cuda.is_available())
    return np.asarray(to_np(torch.tensor([1.0 / 3.0]))).dtype == np.float16


def run_weightwatcher(model: Any, *, randomize: bool = True, seed: int = 0) -> Any:
    """WeightWatcher 0.7.7's details DataFrame for ``model`` (its defaults; side effects contained).

    ``model`` is a ``torch.nn.Module`` or a state dict (a path is loaded with
    :func:`htsr_diag.layers.load_state_dict` first). The global NumPy RNG is seeded with
    ``seed`` for the run (its shuffles) and restored afterwards.
    """
    ww = _import_weightwatcher()
    from .layers import find_layers

    obj = model
    if not hasattr(model, "named_modules"):
        obj = _ww_input(model, None if isinstance(model, (str, os.PathLike, Mapping)) else find_layers(model))
    with _contained(seed):
        return ww.WeightWatcher(model=obj).analyze(randomize=bool(randomize), plot=False)


# ----------------------------------------------------------------------------- comparing
def _ww_float(x: Any) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return _NAN
    return _NAN if (not math.isfinite(v) or v == -1.0) else v


def _rel(a: float, b: float) -> float:
    if math.isnan(a) or math.isnan(b):
        return _NAN
    return abs(a - b) / max(abs(a), abs(b), 1e-300)


def _ww_distance(eigs: np.ndarray, xmin: float) -> float:
    """WeightWatcher's (WWFit's) one-sided KS distance of the tail ``eigs >= xmin`` from its MLE power law."""
    x = eigs[eigs >= xmin]
    n = x.size
    if n < 2:
        return _NAN
    alpha = 1.0 + n / (np.sum(np.log(x)) - n * math.log(xmin))
    return float(np.max(np.abs(1.0 - (x / xmin) ** (1.0 - alpha) - np.arange(n) / n)))


def _why_not_in_ww(lay: Any) -> str:
    if lay.type == "Conv1d" or (lay.type == "Conv1D" and len(lay.shape) == 3):
        return "WeightWatcher 0.7.7 gives no row for Conv1d layers (3-D weights are dropped without a message)"
    if lay.N > WW_MAX_N:
        return f"WeightWatcher skips layers with N > {WW_MAX_N} (max_N); this one has N = {lay.N}"
    if lay.n_eigenvalues > WW_MAX_EVALS:
        return (f"WeightWatcher skips layers with more than {WW_MAX_EVALS} eigenvalues (max_evals); this one has "
                f"{lay.n_eigenvalues}")
    if lay.n_eigenvalues < WW_MIN_EVALS:
        return f"WeightWatcher skips layers with fewer than {WW_MIN_EVALS} eigenvalues (min_evals)"
    if lay.type in ("Parameter", "matrix"):
        return f"WeightWatcher does not analyse this kind of parameter ({lay.type})"
    return "WeightWatcher gave no row for this layer (no rule of 0.7.7 explains it)"


def _compare_layer(lay: Any, row: Mapping[str, Any] | None, weight: Any, rtol: float, randomize: bool,
                   center_traps: bool, half: bool = False) -> LayerComparison:
    ours = dict(name=lay.name, type=lay.type, N=int(lay.N), M=int(lay.M), n_eigenvalues=int(lay.n_eigenvalues),
                alpha=float(lay.alpha), xmin=float(lay.xmin), n_traps=float(lay.n_traps))
    if row is None:
        return LayerComparison(**ours, causes=("skipped",), difference=_why_not_in_ww(lay))
    ww = dict(N_ww=int(row.get("N", 0)), M_ww=int(row.get("M", 0)), n_eigenvalues_ww=int(row.get("num_evals", 0)),
              alpha_ww=_ww_float(row.get("alpha")), xmin_ww=_ww_float(row.get("xmin")),
              n_traps_ww=_ww_float(row.get("num_traps")) if randomize else _NAN)
    a, a_ww = ours["alpha"], ww["alpha_ww"]
    agrees = (math.isnan(a) and math.isnan(a_ww)) or _rel(a, a_ww) <= rtol
    causes: list[str] = []
    words: list[str] = []

    lam_ww = _ww_float(row.get("lambda_max"))
    scale = lam_ww / lay.lambda_max if lay.lambda_max > 0 and not math.isnan(lam_ww) else 1.0
    if (ww["N_ww"], ww["M_ww"]) == (lay.M, lay.N) and lay.N != lay.M:
        causes.append("swapped-dims")
        words.append(f"N and M swapped (its N={ww['N_ww']}, M={ww['M_ww']}: an even number of kernel slices with "
                     f"out < in), so its Q is {ww['N_ww'] / max(ww['M_ww'], 1):.3g} instead of {lay.Q:.3g} and its MP "
                     f"bulk edge and trap threshold are those of the transposed shape")
    if _rel(scale, 1.0) > 1e-6:
        causes.append("conv-scale")
        why = " (its conv2d_norm multiplies Conv2d weights by sqrt(1/2))" if abs(scale - 0.5) < 1e-6 else ""
        words.append(f"its eigenvalues are {scale:.4g} x ours{why}: xmin and lambda_max scale with them, "
                     f"alpha does not")
    if not agrees or (math.isnan(a_ww) and not math.isnan(a)):
        eigs = _eigenvalues(weight)
        n_cut_ww = int(np.sum(eigs * scale <= WW_EVALS_THRESH))
        n_cut = int(lay.n_eigenvalues - _n_fitted(eigs, lay))
        if n_cut_ww != n_cut:
            causes.append("abs-cut")
            lost = "all" if n_cut_ww >= eigs.size else f"{n_cut_ww}"
            words.append(f"its absolute {WW_EVALS_THRESH:g} eigenvalue cut dropped {lost} of {eigs.size} eigenvalues "
                         f"(lambda_max {lay.lambda_max * scale:.3g} in its units) where htsr_diag's cut relative to "
                         f"lambda_max dropped {n_cut}"
                         + ("; it has no fit (alpha -1, status failed)" if math.isnan(a_ww) else ""))
        elif not math.isnan(a_ww) and not math.isnan(a):
            d_ours = _ww_distance(eigs, lay.xmin)
            d_ww = _ww_distance(eigs, ww["xmin_ww"] / scale)
            if _rel(d_ours, d_ww) <= 1e-8:
                causes.append("near-tie")
                words.append(f"its xmin {ww['xmin_ww']:.4g} and ours {lay.xmin:.4g} tie in KS distance "
                             f"({d_ours:.6g}) to rounding: the two decompositions pick different candidates")
        if half and (len(causes) == 0 or causes[-1] not in ("abs-cut", "near-tie")):
            causes.append("fp16")
            words.append("on a machine with CUDA, WeightWatcher rounds the weights to float16 before its SVD "
                         "(RMT_Util.torch_T_to_np), which moves alpha by ~1e-4 relative")
        if len(causes) == 0 or causes[-1] not in ("abs-cut", "near-tie", "fp16"):
            causes.append("unexplained")
            words.append(f"alpha differs ({a:.6g} vs {a_ww:.6g}) for no known cause; please report it")
    traps, traps_ww = ours["n_traps"], ww["n_traps_ww"]
    if randomize and not (math.isnan(traps) and math.isnan(traps_ww)) and traps != traps_ww:
        causes.append("trap-rule")
        words.append(f"trap counts differ ({_f(traps, 'g')} vs its {_f(traps_ww, 'g')}) by rule: its threshold is the "
                     f"bulk edge + sqrt of its Tracy-Widom term (~10x the TW scale), with a KDE-fitted sigma, on a "
                     f"shuffle of its own" + ("; ours are of the centred matrix (center_traps), its are not"
                                           if center_traps else ""))
    return LayerComparison(**ours, **ww, alpha_agrees=bool(agrees), causes=tuple(causes), difference="; ".join(words))


def _eigenvalues(weight: Any) -> np.ndarray:
    from .spectrum import esd

    return np.asarray(esd(weight), dtype=np.float64)


def _n_fitted(eigs: np.ndarray, lay: Any) -> int:
    from .powerlaw import layer_alpha

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = layer_alpha(eigs, shape=(lay.N, lay.M))
    return int(fit.n_fitted)


def compare_weightwatcher(model: Any, report: Any = None, *, rng: Any = None, randomize: bool | None = None,
                          rtol: float = ALPHA_RTOL, layers: Any = None, all_2d: bool = False) -> WeightWatcherComparison:
    """Run WeightWatcher 0.7.7 on ``model`` and put its alpha, xmin and trap count beside ours.

    Parameters
    ----------
    model : torch.nn.Module, state dict, checkpoint path, array or LayerSet
        What :func:`~htsr_diag.analyze.analyze` accepts. A module is given to WeightWatcher as
        is (its layer detection applies); anything else as a state dict of torch tensors.
    report : ModelReport, optional
        Our analysis of the same model (:func:`~htsr_diag.analyze.analyze`); made with ``rng``,
        ``randomize``, ``layers`` and ``all_2d`` when None.
    rng : None, int or numpy Generator
        Seeds our analysis (when ``report`` is None) and WeightWatcher's shuffles (the global
        NumPy RNG, restored afterwards).
    randomize : bool, optional
        Compare trap counts too (WeightWatcher's ``randomize=True``). Default: the report's
        setting, else True.
    rtol : float, default :data:`ALPHA_RTOL`
        Relative tolerance under which two alphas agree.
    layers, all_2d
        Passed to :func:`~htsr_diag.analyze.analyze` when ``report`` is None.

    Returns
    -------
    WeightWatcherComparison

    Raises
    ------
    ImportError
        WeightWatcher is not installed (``pip install "htsr-diag[compare]"``).
    """
    from ._validation import check_rng
    from .analyze import ModelReport, analyze
    from .layers import find_layers

    if not (isinstance(rtol, numbers.Real) and not isinstance(rtol, bool) and 0 < float(rtol) < 1):
        raise ValueError(f"rtol must be a number in (0, 1); got {rtol!r}.")
    if randomize is not None and not isinstance(randomize, (bool, np.bool_)):
        raise TypeError(f"randomize must be None, True or False; got {randomize!r}.")
    if report is not None and not isinstance(report, ModelReport):
        raise TypeError(f"report must be a ModelReport from htsr_diag.analyze() of the same model, or None; got "
                        f"{type(report).__name__}.")
    gen = check_rng(rng)
    seed = int(gen.integers(0, 2**32))
    if report is None:
        report = analyze(model, randomize=True if randomize is None else bool(randomize), rng=gen, layers=layers,
                         all_2d=all_2d, progress=False)
    randomize = bool(report.randomize if randomize is None else randomize) and bool(report.randomize)
    ww = _import_weightwatcher()
    found = find_layers(model, include=layers, all_2d=all_2d)
    weights = {lm.name: lm.weight for lm in found.layers}
    foreign = [lay.name for lay in report.layers if lay.name not in weights]
    if foreign:
        raise ValueError(f"report is not an analysis of this model: its layers {foreign[:5]} are not among the model's "
                         f"{list(weights)[:8]}. Pass the report of the same model (and the same layers=), or "
                         f"report=None.")
    with _contained(seed):
        details = ww.WeightWatcher(model=_ww_input(model, found)).analyze(randomize=randomize, plot=False)
    half = weightwatcher_rounds_to_half()
    rows = {}
    for rec in details.to_dict("records"):
        key = str(rec.get("longname") or rec.get("name"))
        rows.setdefault(key, rec)
    out = []
    center = bool(getattr(report, "center_traps", False))
    for lay in report.layers:
        out.append(_compare_layer(lay, rows.pop(lay.name, None), weights.get(lay.name), float(rtol), randomize, center,
                                  half))
    skipped = {s.name: s.reason for s in report.skipped}
    for key, rec in rows.items():
        reason = next((r for n, r in skipped.items() if n in (key, f"{key}.weight")), None)
        why = (f"htsr_diag skipped it: {reason}" if reason is not None else
               "not analysed by htsr_diag (excluded by layers= or a parameter it does not list)")
        out.append(LayerComparison(name=key, type=_TYPES.get(str(rec.get("layer_type", "")).lower(),
                                                             str(rec.get("layer_type", ""))),
                                   N_ww=int(rec.get("N", 0)), M_ww=int(rec.get("M", 0)),
                                   n_eigenvalues_ww=int(rec.get("num_evals", 0)), alpha_ww=_ww_float(rec.get("alpha")),
                                   xmin_ww=_ww_float(rec.get("xmin")),
                                   n_traps_ww=_ww_float(rec.get("num_traps")) if randomize else _NAN,
                                   causes=("skipped",), difference=why))
    return WeightWatcherComparison(layers=tuple(out), weightwatcher_version=str(getattr(ww, "__version__", "")),
                                   randomize=randomize, center_traps=center, rtol=float(rtol))


# ----------------------------------------------------------------------------- reading its tables
_REQUIRED = ("alpha", "N", "M")


def report_from_weightwatcher(details: Any, *, source: str | None = None) -> Any:
    """A :class:`~htsr_diag.analyze.ModelReport` from a WeightWatcher details table.

    Parameters
    ----------
    details : pandas.DataFrame, str or path
        What ``WeightWatcher.analyze()`` returned, or the CSV file it was saved to
        (``details.to_csv(path)``, with or without the index column).
    source : str, optional
        The report's ``source`` (default: ``"weightwatcher details"`` or the CSV path).

    Returns
    -------
    ModelReport
        One :class:`~htsr_diag.analyze.LayerReport` per row, in the table's order:

        - ``name``: ``longname`` (else ``name``); ``type``: ``Linear`` / ``Conv2d`` /
          ``Conv1d`` / ``Embedding`` from ``layer_type``;
        - ``N``, ``M`` sorted so that ``N >= M`` (it swaps them for some conv layers),
          ``n_slices`` = ``rf``, ``n_eigenvalues`` = ``num_evals``; ``shape`` =
          ``(N, M)``, or ``(N, M, rf)`` for a conv layer: the table does not hold the
          stored shape;
        - ``alpha``, ``xmin``, ``xmax``, ``alpha_std`` (its ``sigma``), ``n_tail``
          (``num_pl_spikes``), ``lambda_max``, ``frobenius_norm`` (``sqrt(norm)``: its
          ``norm`` is the sum of the eigenvalues), ``spectral_norm`` (``sqrt(lambda_max)``),
          ``stable_rank``, ``warning``; its ``-1`` (no fit) as NaN;
        - ``n_traps`` = ``num_traps`` (else ``rand_num_spikes``; NaN when the table has no
          randomisation), ``sigma_mp`` = ``rand_sigma_mp``;
        - ``ks_distance`` NaN (its ``D`` is the one-sided distance, not ours), ``status``
          ``"ok"`` or ``"alpha: no fit (WeightWatcher status failed)"``.

        Conv2d values derived from eigenvalues (xmin, lambda_max, norms) carry its
        ``conv2d_norm`` factor 1/2; alpha is scale-free.

    Raises
    ------
    ValueError
        Not a WeightWatcher details table (a required column missing), or an unreadable file.
    """
    try:
        import pandas as pd
    except ImportError as exc:  # pragma: no cover - pandas comes with weightwatcher
        raise ImportError('ModelReport.from_weightwatcher needs pandas: pip install "htsr-diag[compare]"') from exc
    from . import __version__
    from .analyze import LayerReport, ModelReport

    if isinstance(details, (str, os.PathLike)):
        path = Path(details)
        if not path.is_file():
            raise ValueError(f"details must be a WeightWatcher details DataFrame or the CSV file it was saved to; "
                             f"{str(path)!r} is not a file.")
        try:
            frame = pd.read_csv(path)
        except Exception as exc:
            raise ValueError(f"could not read {str(path)!r} as a CSV table: {type(exc).__name__}: {exc}") from exc
        source = source or str(path)
    elif isinstance(details, pd.DataFrame):
        frame = details
    else:
        raise TypeError(f"details must be a pandas DataFrame from WeightWatcher.analyze() or a CSV path; got "
                        f"{type(details).__name__}.")
    missing = [c for c in _REQUIRED if c not in frame.columns]
    if missing or not ({"longname", "name"} & set(frame.columns)):
        raise ValueError(f"not a WeightWatcher details table: columns {missing + ([] if {'longname', 'name'} & set(frame.columns) else ['longname or name'])} "
                         f"are missing (it has {list(frame.columns)[:12]}). Pass the DataFrame that "
                         f"WeightWatcher.analyze() returned, or its to_csv() file.")
    layers = []
    for rec in frame.to_dict("records"):
        layers.append(_layer_from_row(rec, LayerReport))
    randomized = "num_traps" in frame.columns or "rand_num_spikes" in frame.columns
    return ModelReport(layers=layers, skipped=[], source=source or "weightwatcher details", randomize=randomized,
                       ks=False, version=__version__, center_traps=False)


def _layer_from_row(rec: Mapping[str, Any], LayerReport: type) -> Any:
    def num(key: str, *alts: str) -> float:
        for k in (key, *alts):
            if k in rec:
                return _ww_float(rec[k])
        return _NAN

    name = rec.get("longname")
    if name is None or (isinstance(name, float) and math.isnan(name)) or str(name) == "":
        name = rec.get("name", "")
    n_, m_ = int(rec["N"]), int(rec["M"])
    N, M = max(n_, m_), min(n_, m_)
    rf_v = num("rf")
    rf = 1 if math.isnan(rf_v) else max(int(rf_v), 1)
    kind = _TYPES.get(str(rec.get("layer_type", "")).lower().replace("layer_type.", ""), "matrix")
    n_eigs_v = num("num_evals")
    n_eigs = M * rf if math.isnan(n_eigs_v) else int(n_eigs_v)
    traps = num("num_traps", "rand_num_spikes")
    lam = num("lambda_max", "spectral_norm")
    norm = num("norm")
    alpha = num("alpha")
    n_tail = num("num_pl_spikes")
    status = "ok" if not math.isnan(alpha) else "alpha: no fit (WeightWatcher status failed)"
    warning = rec.get("warning", "")
    warning = "" if warning is None or (isinstance(warning, float) and math.isnan(warning)) else str(warning)
    return LayerReport(
        name=str(name), type=kind, shape=(N, M) if rf == 1 else (N, M, rf), N=N, M=M, Q=N / M if M else _NAN,
        n_slices=rf, n_eigenvalues=n_eigs, alpha=alpha, alpha_std=num("sigma"), xmin=num("xmin"), xmax=num("xmax"),
        n_tail=0 if math.isnan(n_tail) else int(n_tail), lambda_max=lam,
        frobenius_norm=math.sqrt(norm) if norm >= 0 else _NAN, spectral_norm=math.sqrt(lam) if lam >= 0 else _NAN,
        stable_rank=num("stable_rank"), n_traps=traps if math.isnan(traps) else int(traps), sigma_mp=num("rand_sigma_mp"),
        status=status, warning=warning)
