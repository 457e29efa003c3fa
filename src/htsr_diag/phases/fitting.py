"""The exhaustive threshold search behind :meth:`PhaseClassifier.fit`.

:func:`search_thresholds` scores every candidate combination of the rule thresholds on
labelled feature tables at once: the onset and anti-grokking evidence of all candidates are
computed as boolean arrays (candidates x checkpoints), and the agreement of every pair from
prefix sums of the target ranks.
"""

from __future__ import annotations

import warnings
from typing import Any, Mapping, Sequence

import numpy as np

from .rules import ANTI_RULES, fitted_mask, norm_gate, norm_onset, onset_base, onset_series, resolve_rules

__all__ = ["search_thresholds"]


def search_thresholds(tables: Sequence[Mapping[str, np.ndarray]], targets: Sequence[np.ndarray],
                      knowns: Sequence[np.ndarray], params: Mapping[str, Any], *, search: set[str],
                      causal: bool, in_time: bool) -> tuple[dict[str, Any], float]:
    """The best thresholds on labelled runs and their mean per-run agreement.

    Parameters
    ----------
    tables : feature tables (step order), one per run
    targets : int arrays, the target rank (0, 1, 2) of each checkpoint of each table
    knowns : bool arrays, which checkpoints have a feature (the others count as disagreements)
    params : the classifier's validated parameters (current values, tie-break centre)
    search : the threshold names to search; the others stay at their values in ``params``
    causal : segment as the causal classifier does
    in_time : keep only candidates whose causal alarm is in time on every run (dropped with a
        warning when none is)

    Returns
    -------
    (thresholds, agreement)
        ``thresholds`` has the keys of :data:`~htsr_diag.phases.rules.FITTED_RULES`.
    """
    use_train_acc, train_threshold = params["use_train_acc"], params["train_threshold"]
    absolute = params["alpha_grok"] is not None
    onset_name = "alpha_grok" if absolute else "grok_ratio"
    fitted_masks = [fitted_mask(t["train_acc"], use_train_acc, train_threshold) for t in tables]
    resolved = [resolve_rules(params, t) for t in tables]
    series = [onset_series(t, r["onset"]) for t, r in zip(tables, resolved)]
    if absolute:
        observed = np.concatenate(series)
    else:
        with np.errstate(invalid="ignore", divide="ignore"):
            observed = np.concatenate([x[f] / onset_base(x, f) for x, f in zip(series, fitted_masks)])
        observed = observed[(observed > 0) & (observed <= 1)]
    current_g = float(params[onset_name] if params[onset_name] is not None else resolved[0]["grok_ratio"])
    grid_g = _grid(observed, current_g) if onset_name in search else np.array([current_g])
    grid_a = (_grid(np.concatenate([t["layer_alpha"].ravel() for t in tables]), params["alpha_anti"])
              if "alpha_anti" in search else np.array([float(params["alpha_anti"])]))
    ratios: list[float | None] = [None, 1.0, 1.25, 1.5] if "norm_ratio" in search else []
    if params["norm_ratio"] not in ratios:
        ratios.append(None if params["norm_ratio"] is None else float(params["norm_ratio"]))
    traps_grid = (1, 2, 3, 5, 8) if "min_traps" in search else (int(params["min_traps"]),)
    rules_grid = ANTI_RULES if "anti_rule" in search else (params["anti_rule"],)
    patience_grid = (1, 2, 3) if "patience" in search else (int(params["patience"]),)
    combos = [(a, k, rule, r) for r in ratios for rule in rules_grid for k in traps_grid for a in grid_a]
    combo_a = np.array([c[0] for c in combos])
    combo_k = np.array([c[1] for c in combos], dtype=float)
    combo_r = np.array([ANTI_RULES.index(c[2]) for c in combos])
    combo_n = np.array([ratios.index(c[3]) for c in combos])
    current_r = ratios.index(params["norm_ratio"])
    ratio_dist = np.array([0.0 if i == current_r else (1.0 if (r is None) != (params["norm_ratio"] is None)
                                                       else abs(r - params["norm_ratio"]))
                           for i, r in enumerate(ratios)])
    anti_ev = [_anti_grid(t, combo_a, combo_k, combo_r, combo_n, ratios, use_train_acc,
                          train_threshold, params.get("gate_base", "first"), params.get("alpha_fit_min"))[:, k]
               for t, k in zip(tables, knowns)]
    # predict() segments over the checkpoints with a feature and labels the others "unknown"
    # (a disagreement): score on those checkpoints, weighted by their share of the run
    targets = [t[k] for t, k in zip(targets, knowns)]
    shares = [float(k.sum()) / k.size for k in knowns]
    best, best_key = None, None
    constrained = bool(in_time)
    if constrained:
        feasible = [np.ones(len(combos), dtype=bool) for _ in patience_grid]
        for target, anti in zip(targets, anti_ev):
            hit = np.flatnonzero(target == 2)
            first_ref = int(hit[0]) if hit.size else target.size
            for pi, p in enumerate(patience_grid):
                t_a = _first_streak_many(anti, p) if target.size >= p else np.full(len(combos), target.size)
                feasible[pi] &= (t_a <= first_ref) if hit.size else (t_a >= target.size)
        if not any(f.any() for f in feasible):
            warnings.warn("fit(in_time=True): no candidate flags every labelled collapse in time without a "
                          "false alarm; fitting on agreement alone.", UserWarning, stacklevel=3)
            constrained = False
    grok_ev = []  # onset evidence of every candidate, (G, n) per run; independent of patience
    for a, fit_mask, table, known in zip(series, fitted_masks, tables, knowns):
        limit = grid_g if absolute else grid_g * onset_base(a, fit_mask)
        shrunk = norm_onset(table["layer_norm"], fit_mask, params["shrink_ratio"])
        with np.errstate(invalid="ignore"):
            grok_ev.append((fit_mask[None, :] & ((a[None, :] <= limit[:, None]) | shrunk[None, :]))[:, known])
    for pi, p in enumerate(patience_grid):
        score = np.zeros((grid_g.size, len(combos)))
        for target, grok, anti, share in zip(targets, grok_ev, anti_ev, shares):
            score += _agreement_grid(target, grok, anti, p, causal) * share
        score /= len(tables)
        if absolute:
            score[grid_g[:, None] < combo_a[None, :]] = -1.0  # alpha_anti must not exceed alpha_grok
        if constrained:
            score[:, ~feasible[pi]] = -2.0
        dist = (np.abs(grid_g - current_g)[:, None] * (1.0 if absolute else 10.0)
                + np.abs(combo_a - params["alpha_anti"])[None, :]
                + (np.abs(combo_k - params["min_traps"]) / 4)[None, :]
                + (combo_r != ANTI_RULES.index(params["anti_rule"]))[None, :]
                + ratio_dist[combo_n][None, :] + abs(p - params["patience"]) / 2)
        rounded = np.round(score, 9)
        top = rounded.max()
        cand = np.argwhere(rounded == top)
        i, j = cand[np.argmin(dist[cand[:, 0], cand[:, 1]])]
        key = (float(top), -float(dist[i, j]))
        if best_key is None or key > best_key:
            best_key = key
            best = {"grok_ratio": float(resolved[0]["grok_ratio"]) if absolute else float(grid_g[i]),
                    "alpha_grok": float(grid_g[i]) if absolute else None, "alpha_anti": float(combos[j][0]),
                    "min_traps": int(combos[j][1]), "anti_rule": combos[j][2], "norm_ratio": combos[j][3],
                    "patience": p}
    assert best is not None and best_key is not None
    return best, float(best_key[0])


def _grid(values: np.ndarray, current: float) -> np.ndarray:
    """Candidate thresholds: midpoints of the observed values (at most 120 quantiles), plus ``current``."""
    v = np.unique(values[np.isfinite(values)])
    mids = (v[1:] + v[:-1]) / 2 if v.size > 1 else v
    if mids.size > 120:  # keep the search small: quantiles of the midpoints
        mids = np.quantile(mids, np.linspace(0, 1, 120))
    return np.unique(np.append(mids, current))


def _first_streak_many(evidence: np.ndarray, patience: int) -> np.ndarray:
    """Row-wise :func:`~htsr_diag.phases.rules.first_streak` of a (rows, n) boolean array; n where none."""
    n = evidence.shape[1]
    cs = np.concatenate([np.zeros((evidence.shape[0], 1), np.int64), np.cumsum(evidence, axis=1)], axis=1)
    run = cs[:, patience:] - cs[:, :-patience]          # window sums ending at t = patience-1 .. n-1
    hit = run >= patience
    first = np.where(hit.any(axis=1), hit.argmax(axis=1) + patience - 1, n)
    return first


def _anti_grid(table: Mapping[str, np.ndarray], combo_a: np.ndarray, combo_k: np.ndarray, combo_r: np.ndarray,
               combo_n: np.ndarray, ratios: Sequence[float | None], use_train_acc: bool,
               train_threshold: float, gate_base: str = "first",
               alpha_fit_min: float | None = None) -> np.ndarray:
    """Anti-grokking evidence of every (alpha_anti, min_traps, rule, norm_ratio) combo, shape (C, n)."""
    la, lk, tr = table["layer_alpha"], table["layer_n_traps"], table["train_acc"]
    with np.errstate(invalid="ignore"):
        fitted = fitted_mask(tr, use_train_acc, train_threshold)
        low = la[None, :, :] < combo_a[:, None, None]                  # (C, L, n)
        if alpha_fit_min is not None:
            base = np.array([onset_base(np.asarray(r, dtype=np.float64), fitted) for r in la])
            low &= (base >= alpha_fit_min)[None, :, None]
        trap = lk[None, :, :] >= combo_k[:, None, None]
    gates = np.stack([norm_gate(table["layer_norm"], r, fitted, gate_base) for r in ratios])   # (R, L, n)
    rule = combo_r[:, None, None]
    layer = np.where(rule == 0, low & trap, np.where(rule == 1, low | trap, np.where(rule == 2, trap, low)))
    return fitted[None, :] & (layer & gates[combo_n]).any(axis=1)


def _agreement_grid(target: np.ndarray, grok: np.ndarray, anti: np.ndarray, patience: int,
                    causal: bool) -> np.ndarray:
    """Agreement with ``target`` of every (onset candidate, anti combo) pair, shape (G, C).

    ``grok`` (G, n) and ``anti`` (C, n) are the per-checkpoint evidence of each candidate.
    """
    n = target.size
    if n < patience:
        return np.mean(target == 0) * np.ones((grok.shape[0], anti.shape[0]))
    lag = 0 if causal else patience - 1
    t_g = _first_streak_many(grok, patience)
    t_a = _first_streak_many(anti, patience)
    s_a = np.where(t_a < n, t_a - lag, n)                          # (C,)
    s_g = np.minimum(np.where(t_g < n, t_g - lag, n)[:, None], s_a[None, :])  # (G, C)
    prefix = [np.concatenate([[0], np.cumsum(target == r)]) for r in range(3)]
    total2 = prefix[2][-1]
    return (prefix[0][s_g] + prefix[1][s_a][None, :] - prefix[1][s_g]
            + (total2 - prefix[2][s_a])[None, :]) / n
