"""Warnings and errors raised by htsr_diag.

Bad input raises ``ValueError`` / ``TypeError`` (or the subclasses below, which are
also ``ValueError``). Degenerate data (an all-zero matrix, too few eigenvalues for a
fit) is not an error: the affected fields are NaN, the result's ``status`` says why,
and a :class:`DegenerateSpectrumWarning` is emitted so the rest of an analysis
carries on.
"""

from __future__ import annotations

__all__ = [
    "HTSRWarning",
    "DegenerateSpectrumWarning",
    "SmallSpectrumWarning",
    "NoFeatureWarning",
    "MissingTrainAccWarning",
    "CorruptMetricsWarning",
    "CheckpointError",
    "NotFittedError",
]


class HTSRWarning(UserWarning):
    """Base class of every warning htsr_diag emits."""


class DegenerateSpectrumWarning(HTSRWarning):
    """A spectrum could not be fitted (all-zero matrix, equal eigenvalues, too few
    eigenvalues above the numerical rank cut). The result holds NaN and a status."""


class SmallSpectrumWarning(HTSRWarning):
    """A fit was made on so few eigenvalues that its value is unreliable."""


class NoFeatureWarning(HTSRWarning):
    """A checkpoint has no finite feature (alpha, trap count, norm or stable rank) in any
    analysed layer, e.g. a model whose weights are NaN. The phase classifier labels it
    ``"unknown"`` (confidence NaN) instead of guessing a phase."""


class MissingTrainAccWarning(HTSRWarning):
    """The phase classifier was asked to use the training accuracy (``use_train_acc=True``)
    and got none at any checkpoint: it cannot tell memorisation from grokking without it."""


class CorruptMetricsWarning(HTSRWarning):
    """A line of a ``metrics.jsonl`` could not be read (not JSON, or, in the trainer's own file,
    no integer ``step``). Reading leaves it out and says which line; the trainer, on resume, also
    sets it aside in ``metrics.corrupt.jsonl`` with its line number."""


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, not a checkpoint, or unsafe to load."""


class NotFittedError(ValueError, AttributeError):
    """An estimator was used before ``fit`` (scikit-learn's contract)."""
