"""htsr_diag: Heavy-Tailed Self-Regularization diagnostics from the weights alone.

Per-layer power-law exponents (alpha), correlation traps of the shuffled weights,
a KS test against Marchenko-Pastur, baseline metrics, and grokking / anti-grokking
phase labels for sequences of checkpoints.
"""

from __future__ import annotations

from .exceptions import (
    CheckpointError,
    DegenerateSpectrumWarning,
    HTSRWarning,
    NotFittedError,
    SmallSpectrumWarning,
)
from .spectrum import esd, esd_many, rank_floor

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "esd",
    "esd_many",
    "rank_floor",
    "HTSRWarning",
    "DegenerateSpectrumWarning",
    "SmallSpectrumWarning",
    "CheckpointError",
    "NotFittedError",
]
