"""htsr_diag: Heavy-Tailed Self-Regularization diagnostics from the weights alone.

Per-layer power-law exponents (alpha), correlation traps of the shuffled weights,
a KS test against Marchenko-Pastur, baseline metrics, and grokking / anti-grokking
phase labels for sequences of checkpoints; the spectral signature of a loss curve and the
Liu et al. run-level phase from accuracy curves.
"""

from __future__ import annotations

from .analyze import LayerReport, ModelReport, analyze
from .baselines import (
    ActivationSparsity,
    CircuitComplexity,
    L2Norm,
    WeightEntropy,
    activation_sparsity,
    circuit_complexity,
    compute_baselines,
    l2_norm,
    weight_entropy,
)
from .exceptions import (
    CheckpointError,
    CorruptMetricsWarning,
    DegenerateSpectrumWarning,
    HTSRWarning,
    MissingTrainAccWarning,
    NoFeatureWarning,
    NotFittedError,
    SmallSpectrumWarning,
)
from .layers import LayerMatrix, LayerSet, SkippedParam, find_layers, load_state_dict
from .monitor import Monitor, MonitorRecord, log_schedule
from .mp import (
    fit_mp_sigma,
    mp_cdf,
    mp_edges,
    mp_pdf,
    mp_ppf,
    tracy_widom_cdf,
    tracy_widom_quantile,
    tracy_widom_scale,
)
from .powerlaw import PowerLawFit, layer_alpha
from .report import RunReport, RunSummary, write_report
from .phases import (
    ANTI,
    GROK,
    LIU_PHASES,
    PHASES,
    PRE,
    UNKNOWN,
    PhaseClassifier,
    liu_phase,
    phase_agreement,
    phases_from_accuracy,
)
from .signature import LossSignature, loss_signature
from .sweep import SweepResult, sweep
from .spectrum import esd, esd_many, rank_floor
from .checkpoints import find_checkpoints, step_from_name
from .trajectory import Trajectory, analyze_checkpoints
from .traps import (
    KSTrapResult,
    TrapReport,
    correlation_traps,
    ks_trap_test,
    randomized_analysis,
    randomized_esd,
)

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "analyze_checkpoints",
    "find_checkpoints",
    "step_from_name",
    "Trajectory",
    "phases_from_accuracy",
    "phase_agreement",
    "liu_phase",
    "LIU_PHASES",
    "loss_signature",
    "sweep",
    "SweepResult",
    "LossSignature",
    "PhaseClassifier",
    "PRE",
    "GROK",
    "ANTI",
    "PHASES",
    "UNKNOWN",
    "esd",
    "esd_many",
    "rank_floor",
    "layer_alpha",
    "PowerLawFit",
    "mp_edges",
    "mp_pdf",
    "mp_cdf",
    "mp_ppf",
    "tracy_widom_scale",
    "tracy_widom_cdf",
    "tracy_widom_quantile",
    "fit_mp_sigma",
    "randomized_esd",
    "correlation_traps",
    "ks_trap_test",
    "randomized_analysis",
    "TrapReport",
    "KSTrapResult",
    "analyze",
    "ModelReport",
    "LayerReport",
    "find_layers",
    "load_state_dict",
    "LayerSet",
    "LayerMatrix",
    "SkippedParam",
    "activation_sparsity",
    "weight_entropy",
    "circuit_complexity",
    "l2_norm",
    "compute_baselines",
    "ActivationSparsity",
    "WeightEntropy",
    "CircuitComplexity",
    "L2Norm",
    "Monitor",
    "MonitorRecord",
    "log_schedule",
    "write_report",
    "RunReport",
    "RunSummary",
    "HTSRWarning",
    "DegenerateSpectrumWarning",
    "SmallSpectrumWarning",
    "NoFeatureWarning",
    "MissingTrainAccWarning",
    "CorruptMetricsWarning",
    "CheckpointError",
    "NotFittedError",
]
