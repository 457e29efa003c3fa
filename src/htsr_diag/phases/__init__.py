"""Grokking phases: reference labels from accuracy curves, and a weight-only classifier.

Three labels, in the order a long run goes through them (Prakash & Martin 2025,
arXiv 2506.04434, Figure 1): ``PRE`` = ``"pre-grokking"`` (training accuracy high or still
rising, test accuracy not yet risen), ``GROK`` = ``"grokking"`` (test accuracy rising to,
and holding, its peak) and ``ANTI`` = ``"anti-grokking"`` (after the peak, test accuracy
clearly below it while training accuracy stays ~1).

Modules:

- :mod:`.labels`: the label constants (and ``UNKNOWN`` = ``"unknown"``, the label of a
  checkpoint with no finite feature, which is not a phase);
- :mod:`.reference`: :func:`phases_from_accuracy`, the reference labels from the accuracy
  curves (test data needed; used to evaluate and calibrate, never as input), and
  :func:`phase_agreement`, and :func:`liu_phase`, the run-level phase of Liu et al. (2022)
  (:data:`LIU_PHASES`: comprehension, grokking, memorization, confusion);
- :mod:`.features`: the feature table the rules read (from a Trajectory or mappings);
- :mod:`.rules`: the rules as pure functions over a feature table and a rules dict;
- :mod:`.estimator`: :class:`PhaseClassifier`, which applies them;
- :mod:`.fitting`: the exhaustive threshold search behind :meth:`PhaseClassifier.fit`.

See ``docs/phases.md`` for the rules, their defaults and the measured accuracy.
"""

from __future__ import annotations

from . import features, fitting, labels, reference, rules
from .estimator import PhaseClassifier
from .features import FEATURES, LAYER_FEATURES
from .labels import ANTI, GROK, PHASES, PRE, UNKNOWN
from .reference import LIU_PHASES, liu_phase, phase_agreement, phases_from_accuracy

__all__ = [
    "PRE",
    "GROK",
    "ANTI",
    "PHASES",
    "UNKNOWN",
    "phases_from_accuracy",
    "PhaseClassifier",
    "phase_agreement",
    "liu_phase",
    "LIU_PHASES",
]
