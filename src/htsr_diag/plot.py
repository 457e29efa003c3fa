"""Figures: accuracy, alpha and traps over training; ESDs with their fits; baselines.

Every ``plot_*`` function draws on one matplotlib ``Axes`` (a new figure when ``ax`` is
None) and returns it; ``figure_*`` functions build a multi-panel ``Figure`` from them.
matplotlib is imported inside the functions (it is the ``plot`` extra), nothing is shown
and no global style is changed. To save files from a script without a display, call
:func:`use_agg` first (the CLI and the report do).

The step axis is logarithmic and spans exactly the checkpoints: ``log`` where all steps
are positive, and when the first checkpoint is the initialisation (step 0) ``symlog`` with
``linthresh=1`` (linear between steps 0 and 1, drawn as wide as one decade) starting at
step 0, so no negative half is drawn. Every step-axis figure uses it.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

__all__ = [
    "PHASE_COLORS",
    "use_agg",
    "plot_phase_bands",
    "plot_accuracy",
    "plot_alpha",
    "plot_traps",
    "plot_esd",
    "plot_shuffled_esd",
    "plot_series",
    "plot_phases",
    "figure_overview",
    "figure_baselines",
]

#: Colour of each phase label in every figure (labels from :mod:`htsr_diag.phases`).
PHASE_COLORS: dict[str, str] = {
    "pre-grokking": "#9e9e9e",
    "grokking": "#2ca02c",
    "anti-grokking": "#d62728",
}
_UNKNOWN_COLOR = "#ffffff"


def _mpl():
    try:
        import matplotlib
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - matplotlib is in the dev extra
        raise ImportError('htsr_diag.plot needs matplotlib: pip install "htsr-diag[plot]"') from exc
    return matplotlib, plt


def use_agg() -> None:
    """Switch matplotlib to the non-interactive Agg backend (for writing files).

    Call it before the first figure of a script that only saves PNG files; it is what
    the ``htsr-diag`` command and :func:`htsr_diag.report.write_report` do.
    """
    matplotlib, _ = _mpl()
    matplotlib.use("Agg", force=True)


def _new_ax(ax):
    if ax is not None:
        return ax
    _, plt = _mpl()
    _, ax = plt.subplots(figsize=(6.4, 3.6))
    return ax


def _as_steps(steps: Any) -> np.ndarray:
    s = np.asarray(steps, dtype=float).ravel()
    if s.size == 0:
        raise ValueError("steps must hold at least one checkpoint step; got an empty array.")
    if not np.all(np.isfinite(s)) or np.any(s < 0):
        raise ValueError(f"steps must be finite and >= 0; got min {np.nanmin(s)!r}. "
                         "Pass the training steps of the checkpoints.")
    if np.any(np.diff(s) <= 0):
        raise ValueError("steps must be strictly increasing; sort the checkpoints by step first.")
    return s


def _log_step_axis(ax, steps: np.ndarray) -> None:
    """The step axis of every figure: log, or symlog from step 0 when the first checkpoint is step 0."""
    if steps.size and steps[0] <= 0:
        ax.set_xscale("symlog", linthresh=1.0, linscale=1.0)
        ax.set_xlim(0.0, max(float(steps[-1]), 1.0))
    else:
        ax.set_xscale("log")
        if steps.size > 1:
            ax.set_xlim(float(steps[0]), float(steps[-1]))
    ax.set_xlabel("training step")


def _band_edges(steps: np.ndarray) -> np.ndarray:
    """Edges between consecutive checkpoints (geometric midpoints, arithmetic from step 0)."""
    s = steps
    mids = np.where(s[:-1] > 0, np.sqrt(s[:-1] * s[1:]), 0.5 * (s[:-1] + s[1:]))
    lo = s[0]
    hi = s[-1]
    return np.concatenate([[lo], mids, [hi]])


def plot_phase_bands(steps: Sequence[float], labels: Sequence[str], *, ax=None,
                     ymin: float = 0.0, ymax: float = 1.0, alpha: float = 0.2,
                     label_prefix: str = "", legend: bool = True) -> Any:
    """Shade the step axis by phase label.

    Parameters
    ----------
    steps : array of shape (n,)
        Checkpoint steps, strictly increasing.
    labels : sequence of n str
        Phase of each checkpoint (``"pre-grokking"``, ``"grokking"``, ``"anti-grokking"``;
        anything else is left unshaded). A band runs between the midpoints to the
        neighbouring checkpoints (geometric midpoints on the log axis).
    ax : matplotlib Axes, optional
    ymin, ymax : float
        Vertical extent in axes coordinates (0..1): a thin strip (e.g. 0.93..1) marks a
        second labelling on top of full-height bands.
    alpha : float
        Opacity of the shading.
    label_prefix : str
        Prefix of the legend entries (e.g. ``"predicted "``); each phase gets one entry.
    legend : bool, default True
        False: the bands get no legend entries (e.g. on the lower panels of a figure).

    Returns
    -------
    matplotlib Axes

    Examples
    --------
    >>> from htsr_diag.plot import plot_phase_bands
    >>> ax = plot_phase_bands([1, 10, 100], ["pre-grokking", "grokking", "grokking"])
    """
    s = _as_steps(steps)
    labs = [str(v) for v in labels]
    if len(labs) != s.size:
        raise ValueError(f"labels must have one entry per step; got {len(labs)} labels for "
                         f"{s.size} steps.")
    ax = _new_ax(ax)
    edges = _band_edges(s)
    seen: set[str] = set()
    i = 0
    while i < s.size:
        j = i
        while j + 1 < s.size and labs[j + 1] == labs[i]:
            j += 1
        color = PHASE_COLORS.get(labs[i])
        if color is not None:
            entry = f"{label_prefix}{labs[i]}" if legend and labs[i] not in seen else None
            seen.add(labs[i])
            ax.axvspan(edges[i], edges[j + 1], ymin=ymin, ymax=ymax, color=color, alpha=alpha,
                       lw=0, label=entry)
        i = j + 1
    return ax


def plot_accuracy(steps: Sequence[float], train_acc: Sequence[float], test_acc: Sequence[float],
                  *, ax=None) -> Any:
    """Train and test accuracy against the (log) training step.

    Parameters
    ----------
    steps : array of shape (n,)
    train_acc, test_acc : arrays of shape (n,)
        Fractions in [0, 1]; NaN where unknown (not drawn).
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib Axes

    Examples
    --------
    >>> from htsr_diag.plot import plot_accuracy
    >>> ax = plot_accuracy([1, 10, 100], [0.2, 1.0, 1.0], [0.1, 0.5, 0.9])
    """
    s = _as_steps(steps)
    ax = _new_ax(ax)
    ax.plot(s, np.asarray(train_acc, float), "-", color="#1f77b4", label="train accuracy")
    ax.plot(s, np.asarray(test_acc, float), "-", color="#ff7f0e", label="test accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("accuracy")
    _log_step_axis(ax, s)
    return ax


def plot_alpha(steps: Sequence[float], alphas: Mapping[str, Sequence[float]], *, ax=None,
               reference: float | None = 2.0) -> Any:
    """Per-layer power-law exponent alpha against the (log) step, with a line at 2.

    Parameters
    ----------
    steps : array of shape (n,)
    alphas : mapping layer name -> array of shape (n,)
        NaN where a fit failed (gaps in the line).
    ax : matplotlib Axes, optional
    reference : float or None
        Draw a dashed horizontal line here (HTSR's boundary of over-fitting, 2).

    Returns
    -------
    matplotlib Axes

    Examples
    --------
    >>> from htsr_diag.plot import plot_alpha
    >>> ax = plot_alpha([1, 10, 100], {"fc1": [5.0, 3.5, 1.2]})
    """
    s = _as_steps(steps)
    ax = _new_ax(ax)
    for name, a in alphas.items():
        ax.plot(s, np.asarray(a, float), "-", marker=".", ms=3, label=f"alpha {name}")
    if reference is not None:
        ax.axhline(reference, color="k", ls="--", lw=0.8, label=f"alpha = {reference:g}")
    ax.set_ylabel("alpha")
    _log_step_axis(ax, s)
    return ax


def plot_traps(steps: Sequence[float], traps: Mapping[str, Sequence[float]], *, ax=None) -> Any:
    """Per-layer correlation-trap counts against the (log) step.

    Parameters
    ----------
    steps : array of shape (n,)
    traps : mapping layer name -> array of shape (n,)
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib Axes

    Examples
    --------
    >>> from htsr_diag.plot import plot_traps
    >>> ax = plot_traps([1, 10, 100], {"fc1": [0, 0, 7]})
    """
    s = _as_steps(steps)
    ax = _new_ax(ax)
    for name, t in traps.items():
        ax.step(s, np.asarray(t, float), where="mid", label=f"traps {name}")
    # headroom: the phase strip of figure_overview covers the top of the panel, and the largest
    # count must not hide under it (issue #14: a final count of 3 sat on the top edge)
    finite = [np.asarray(t, float)[np.isfinite(np.asarray(t, float))] for t in traps.values()]
    top = max([float(f.max()) for f in finite if f.size] + [1.0])
    ax.set_ylim(-0.05 * top, 1.2 * top)
    ax.set_ylabel("correlation traps")
    _log_step_axis(ax, s)
    return ax


def _log_bins(x: np.ndarray, bins: int) -> np.ndarray:
    lo, hi = float(x.min()), float(x.max())
    if hi <= lo:
        hi = lo * 1.01 + 1e-12
    edges = np.logspace(np.log10(lo), np.log10(hi), bins + 1)
    edges[0], edges[-1] = lo, hi  # 10**log10(x) can round below x and drop the largest eigenvalue
    return edges


def plot_esd(eigenvalues: Sequence[float], *, fit: Any = None, ax=None, bins: int = 40,
             title: str | None = None) -> Any:
    """Empirical spectral density on log-log axes with the fitted power-law tail.

    Parameters
    ----------
    eigenvalues : array of shape (m,)
        Eigenvalues of W^T W (e.g. :func:`htsr_diag.esd`); values <= 0 are not drawn.
    fit : PowerLawFit, optional
        Anything with ``alpha``, ``xmin`` and (optionally) ``n_tail``: the density
        ``(n_tail / m) (alpha - 1) / xmin (x / xmin)^(-alpha)`` is drawn for ``x >= xmin``
        with a dotted line at ``xmin``.
    ax : matplotlib Axes, optional
    bins : int
        Number of logarithmic histogram bins.
    title : str, optional

    Returns
    -------
    matplotlib Axes

    Examples
    --------
    >>> import numpy as np
    >>> from htsr_diag.plot import plot_esd
    >>> ax = plot_esd(np.random.default_rng(0).pareto(2.0, 200) + 1.0)
    """
    ev = np.asarray(eigenvalues, dtype=float).ravel()
    m = ev.size
    ev = ev[np.isfinite(ev) & (ev > 0)]
    ax = _new_ax(ax)
    if ev.size == 0:
        ax.text(0.5, 0.5, "no positive eigenvalues", ha="center", va="center", transform=ax.transAxes)
        return ax
    edges = _log_bins(ev, bins)
    counts, _ = np.histogram(ev, bins=edges)
    dens = counts / (max(m, 1) * np.diff(edges))
    # bars for the non-empty bins only (a filled outline dropping to 0 suits no log axis)
    pos = counts > 0
    ax.bar(edges[:-1][pos], dens[pos], width=np.diff(edges)[pos], align="edge", alpha=0.5,
           color="#1f77b4", linewidth=0, label="ESD")
    alpha = float(getattr(fit, "alpha", np.nan)) if fit is not None else np.nan
    xmin = float(getattr(fit, "xmin", np.nan)) if fit is not None else np.nan
    if np.isfinite(alpha) and np.isfinite(xmin) and xmin > 0 and alpha > 1:
        n_tail = getattr(fit, "n_tail", None)
        frac = (float(n_tail) / m) if n_tail is not None and m else float(np.mean(ev >= xmin))
        x = np.logspace(np.log10(xmin), np.log10(ev.max()), 100)
        ax.plot(x, frac * (alpha - 1.0) / xmin * (x / xmin) ** (-alpha), "r-", lw=1.5,
                label=f"power law, alpha = {alpha:.2f}")
        ax.axvline(xmin, color="r", ls=":", lw=1, label=f"xmin = {xmin:.3g}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    from matplotlib.ticker import NullFormatter

    ax.xaxis.set_minor_formatter(NullFormatter())  # a narrow range labels minor ticks, which overlap
    ax.set_xlabel("eigenvalue of W^T W")
    ax.set_ylabel("density")
    if title:
        ax.set_title(title, fontsize=9)
    return ax


def plot_shuffled_esd(eigenvalues: Sequence[float], *, q: float, sigma: float,
                      edge: float | None = None, threshold: float | None = None,
                      n_traps: float | None = None, ax=None, bins: int = 50,
                      title: str | None = None) -> Any:
    """Spectrum of the element-wise shuffled matrix with the fitted Marchenko-Pastur law.

    Parameters
    ----------
    eigenvalues : array of shape (m,)
        Eigenvalues of the shuffled matrix, on the scale of the MP fit (e.g. normalised to
        mean 1 as in :func:`htsr_diag.correlation_traps`).
    q : float
        Aspect ratio N / M >= 1.
    sigma : float
        Fitted MP scale; the density ``mp_pdf(x, q, sigma)`` is drawn on its support.
    edge : float, optional
        MP bulk edge (dashed line); defaults to ``sigma^2 (1 + 1/sqrt(q))^2``.
    threshold : float, optional
        Trap threshold (edge plus Tracy-Widom margin, dotted line). Eigenvalues above it
        are marked as traps (red crosses); without it, those above ``edge`` are.
    n_traps : float, optional
        Trap count for the legend (e.g. ``TrapReport.n_traps``, the median over shuffles
        when several shuffles are pooled); default: the number of marked eigenvalues.
    ax : matplotlib Axes, optional
    bins : int
    title : str, optional

    Returns
    -------
    matplotlib Axes

    Examples
    --------
    >>> import numpy as np
    >>> from htsr_diag.plot import plot_shuffled_esd
    >>> W = np.random.default_rng(0).normal(size=(400, 100))
    >>> ev = np.linalg.eigvalsh(W.T @ W); ev = ev / ev.mean()
    >>> ax = plot_shuffled_esd(ev, q=4.0, sigma=1.0)
    """
    ev = np.asarray(eigenvalues, dtype=float).ravel()
    ev = ev[np.isfinite(ev)]
    ax = _new_ax(ax)
    if ev.size == 0:
        ax.text(0.5, 0.5, "no eigenvalues", ha="center", va="center", transform=ax.transAxes)
        return ax
    from .mp import mp_edges, mp_pdf

    q = float(q)
    sigma = float(sigma)
    has_fit = np.isfinite(sigma) and sigma > 0 and np.isfinite(q) and q >= 1
    lo_mp, hi_mp = mp_edges(q, sigma) if has_fit else (np.nan, float(ev.max()))
    if edge is None:
        edge = hi_mp if has_fit else np.nan
    edge = float(edge)
    cut = threshold if threshold is not None else edge
    traps = ev[ev > cut] if np.isfinite(cut) else ev[:0]
    bulk = ev[ev <= cut] if np.isfinite(cut) else ev
    top = max(float(ev.max()), float(edge) if np.isfinite(edge) else 0.0)
    hist_edges = np.linspace(0.0, max(float(bulk.max()) if bulk.size else top, hi_mp) * 1.05, bins + 1)
    counts, _ = np.histogram(ev, bins=hist_edges)
    ax.stairs(counts / (ev.size * np.diff(hist_edges)), hist_edges, fill=True, alpha=0.5,
              color="#1f77b4", label="shuffled ESD")
    if has_fit:
        x = np.linspace(lo_mp, hi_mp, 400)[1:-1]
        ax.plot(x, mp_pdf(x, q, sigma), "k-", lw=1.2, label=f"MP fit, sigma = {sigma:.3f}")
    if np.isfinite(edge):
        ax.axvline(edge, color="k", ls="--", lw=0.8, label="MP edge")
    if threshold is not None and np.isfinite(threshold):
        ax.axvline(threshold, color="r", ls=":", lw=1, label="trap threshold")
    if traps.size:
        count = traps.size if n_traps is None else n_traps
        ax.plot(traps, np.zeros_like(traps), "rx", ms=8, mew=2, clip_on=False,
                label=f"{count:g} trap(s)")
        ax.set_xlim(right=max(top * 1.05, ax.get_xlim()[1]))
    ax.set_xlabel("eigenvalue (shuffled W, mean 1)")
    ax.set_ylabel("density")
    if title:
        ax.set_title(title, fontsize=9)
    return ax


def plot_series(steps: Sequence[float], values: Sequence[float], *, ax=None,
                label: str | None = None, ylabel: str | None = None) -> Any:
    """One quantity against the (log) step (used for the baselines).

    Parameters
    ----------
    steps, values : arrays of shape (n,)
    ax : matplotlib Axes, optional
    label, ylabel : str, optional

    Returns
    -------
    matplotlib Axes

    Examples
    --------
    >>> from htsr_diag.plot import plot_series
    >>> ax = plot_series([1, 10, 100], [90.0, 95.0, 120.0], ylabel="l2 norm")
    """
    s = _as_steps(steps)
    ax = _new_ax(ax)
    ax.plot(s, np.asarray(values, float), "-", marker=".", ms=3, label=label)
    if ylabel:
        ax.set_ylabel(ylabel)
    _log_step_axis(ax, s)
    return ax


_PHASE_LEVEL = {"pre-grokking": 0, "grokking": 1, "anti-grokking": 2}


def plot_phases(steps: Sequence[float], labels: Sequence[str], *,
                reference: Sequence[str] | None = None, ax=None) -> Any:
    """Phase label per checkpoint as a step plot (0 pre-grokking, 1 grokking, 2 anti-grokking).

    Parameters
    ----------
    steps : array of shape (n,)
    labels : sequence of n str
        Predicted labels (solid line).
    reference : sequence of n str, optional
        Labels from accuracy (shaded bands behind the line).
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib Axes

    Examples
    --------
    >>> from htsr_diag.plot import plot_phases
    >>> ax = plot_phases([1, 10, 100], ["pre-grokking", "grokking", "anti-grokking"])
    """
    s = _as_steps(steps)
    ax = _new_ax(ax)
    if reference is not None:
        plot_phase_bands(s, reference, ax=ax, label_prefix="from accuracy: ")
    y = np.array([_PHASE_LEVEL.get(str(v), np.nan) for v in labels], float)
    ax.step(s, y, where="mid", color="k", label="predicted")
    ax.set_yticks([0, 1, 2], ["pre-grokking", "grokking", "anti-grokking"])
    ax.set_ylim(-0.3, 2.3)
    _log_step_axis(ax, s)
    return ax


def figure_overview(steps: Sequence[float], *, train_acc: Sequence[float],
                    test_acc: Sequence[float], alphas: Mapping[str, Sequence[float]],
                    traps: Mapping[str, Sequence[float]],
                    predicted: Sequence[str] | None = None,
                    from_accuracy: Sequence[str] | None = None) -> Any:
    """Figure 1 of the report: accuracy, alpha and traps over log steps with phase bands.

    Accuracy-derived phases shade each panel at full height; predicted phases are the
    strip along the top of each panel.

    Parameters
    ----------
    steps : array of shape (n,)
    train_acc, test_acc : arrays of shape (n,)
    alphas, traps : mapping layer name -> array of shape (n,)
    predicted, from_accuracy : sequences of n phase labels, optional

    Returns
    -------
    matplotlib Figure with three stacked panels sharing the step axis.

    Examples
    --------
    >>> from htsr_diag.plot import figure_overview
    >>> fig = figure_overview([1, 10, 100], train_acc=[0.1, 1, 1], test_acc=[0.1, 0.2, 0.9],
    ...                       alphas={"fc1": [6, 4, 3]}, traps={"fc1": [0, 0, 0]})
    """
    _, plt = _mpl()
    fig, axes = plt.subplots(3, 1, figsize=(8, 8.5), sharex=True)
    plot_accuracy(steps, train_acc, test_acc, ax=axes[0])
    plot_alpha(steps, alphas, ax=axes[1])
    plot_traps(steps, traps, ax=axes[2])
    for k, ax in enumerate(axes):
        if from_accuracy is not None:
            plot_phase_bands(steps, from_accuracy, ax=ax, alpha=0.22, label_prefix="from accuracy: ",
                             legend=k == 0)
        if predicted is not None:
            plot_phase_bands(steps, predicted, ax=ax, ymin=0.93, ymax=1.0, alpha=0.7,
                             label_prefix="predicted: ", legend=k == 0)
        handles, labels = ax.get_legend_handles_labels()
        keep = [(h, lab) for h, lab in zip(handles, labels) if lab and not lab.startswith("_")]
        if keep:
            ax.legend(*zip(*keep), fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    for ax in axes[:-1]:
        ax.set_xlabel("")
    axes[0].set_title("accuracy, layer alpha and correlation traps "
                      "(bands: phases from accuracy; top strip: predicted)", fontsize=9)
    fig.tight_layout()
    return fig


def figure_baselines(steps: Sequence[float], baselines: Mapping[str, Sequence[float]], *,
                     from_accuracy: Sequence[str] | None = None) -> Any:
    """Figure 4 of the report: one panel per baseline metric over log steps.

    Parameters
    ----------
    steps : array of shape (n,)
    baselines : mapping name -> array of shape (n,)
        E.g. ``l2_norm``, ``activation_sparsity``, ``weight_entropy``, ``circuit_complexity``.
    from_accuracy : sequence of n phase labels, optional
        Shaded behind each panel.

    Returns
    -------
    matplotlib Figure (a 2-column grid of panels).

    Examples
    --------
    >>> from htsr_diag.plot import figure_baselines
    >>> fig = figure_baselines([1, 10, 100], {"l2_norm": [90, 95, 130]})
    """
    _, plt = _mpl()
    names = list(baselines)
    n = max(len(names), 1)
    ncols = 2 if n > 1 else 1
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(5 * ncols, 3.2 * nrows), squeeze=False)
    flat = axes.ravel()
    for k, (ax, name) in enumerate(zip(flat, names)):
        plot_series(steps, baselines[name], ax=ax, ylabel=name.replace("_", " "))
        if from_accuracy is not None:
            plot_phase_bands(steps, from_accuracy, ax=ax, alpha=0.22, label_prefix="from accuracy: ",
                             legend=k == 0)
        ax.set_title(name.replace("_", " "), fontsize=9)
    for ax in flat[len(names):]:
        ax.set_visible(False)
    if not names:
        flat[0].set_visible(True)
        flat[0].text(0.5, 0.5, "no baselines recorded", ha="center", va="center",
                     transform=flat[0].transAxes)
    handles, labels = flat[0].get_legend_handles_labels()
    keep = [(h, lab) for h, lab in zip(handles, labels) if lab.startswith("from accuracy: ")]
    if keep:  # one legend for the bands of every panel, above them
        fig.legend(*zip(*keep), fontsize=8, loc="upper center", ncol=len(keep), frameon=False,
                   bbox_to_anchor=(0.5, 1.0))
        fig.tight_layout(rect=(0, 0, 1, 0.95))
    else:
        fig.tight_layout()
    return fig
