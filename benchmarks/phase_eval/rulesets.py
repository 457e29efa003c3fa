"""Every rule version of the PhaseClassifier, each written out in full: the one table the
scoring scripts of this folder read (``score.py``, ``score_zoo.py``).

Each entry gives every constructor parameter of :class:`htsr_diag.PhaseClassifier` except
``causal`` (a scoring choice), so a version keeps its meaning when the library's defaults
move on. ``tests/test_rulesets.py`` checks that every entry is complete and that the library's
default is the newest version. docs/phases.md has what each version changed and why, with its
scores; the commit that made each one the default is named beside it.

Usage (from this folder's scripts)::

    from rulesets import RULESETS, classifier
    clf = classifier("v6", causal=True)
"""

from __future__ import annotations

from typing import Any

#: Parameters no version has changed.
_COMMON: dict[str, Any] = dict(alpha_grok=None, alpha_anti=2.0, patience=1, use_train_acc=True,
                               train_threshold=0.99, layers="auto", min_layer_dim=50, alpha_scale=0.25)

#: The onset, anti rule and gates of each version. The grokking onset of v2-v4 is the mean
#: alpha at 0.78 x its value at the fit; from v5 the smaller layer stable rank at 0.85 x.
RULESETS: dict[str, dict[str, Any]] = {
    # 360ae1e: anti rule "both" (alpha < 2 and 1 trap in a layer), norm gate 1.0 x the first norm
    "v2": {**_COMMON, "onset": "alpha", "grok_ratio": 0.78, "shrink_ratio": None, "min_traps": 1,
           "anti_rule": "both", "norm_ratio": 1.0, "gate_base": "first", "alpha_fit_min": None},
    # ba57771 (v3_preregistration.md): anti rule "either", 2 traps
    "v3": {**_COMMON, "onset": "alpha", "grok_ratio": 0.78, "shrink_ratio": None, "min_traps": 2,
           "anti_rule": "either", "norm_ratio": 1.0, "gate_base": "first", "alpha_fit_min": None},
    # 7902be0 (v4_preregistration.md): norm gate 1.5 x the first norm
    "v4": {**_COMMON, "onset": "alpha", "grok_ratio": 0.78, "shrink_ratio": None, "min_traps": 2,
           "anti_rule": "either", "norm_ratio": 1.5, "gate_base": "first", "alpha_fit_min": None},
    # 3d89a9c (v5_preregistration.md): grokking onset from the smaller layer stable rank
    "v5": {**_COMMON, "onset": "stable_rank", "grok_ratio": 0.85, "shrink_ratio": None, "min_traps": 2,
           "anti_rule": "either", "norm_ratio": 1.5, "gate_base": "first", "alpha_fit_min": None},
    # 472a795 (v6_preregistration.md): plus the norm onset (every layer's norm <= 0.85 x its norm at the fit)
    "v6": {**_COMMON, "onset": "stable_rank", "grok_ratio": 0.85, "shrink_ratio": 0.85, "min_traps": 2,
           "anti_rule": "either", "norm_ratio": 1.5, "gate_base": "first", "alpha_fit_min": None},
    # acdb68e (zoo_candidate_preregistration.md): norm gate against the norm at the fit, and the
    # alpha signal only in layers whose alpha at the fit was >= 3.0
    "v7": {**_COMMON, "onset": "stable_rank", "grok_ratio": 0.85, "shrink_ratio": 0.85, "min_traps": 2,
           "anti_rule": "either", "norm_ratio": 1.5, "gate_base": "fit", "alpha_fit_min": 3.0},
}

#: The version that is the library's default (``PhaseClassifier()``).
CURRENT = "v7"


def classifier(name: str, **overrides: Any):
    """A :class:`~htsr_diag.PhaseClassifier` with the rules of version ``name`` (``overrides``,
    e.g. ``causal=True``, passed on)."""
    from htsr_diag import PhaseClassifier

    if name not in RULESETS:
        raise KeyError(f"unknown rule version {name!r}; known: {sorted(RULESETS)}.")
    return PhaseClassifier(**{**RULESETS[name], **overrides})
