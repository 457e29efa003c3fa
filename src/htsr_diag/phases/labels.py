"""The phase labels, in the order a long run goes through them (Prakash & Martin 2025, Figure 1)."""

from __future__ import annotations

import numpy as np

__all__ = ["PRE", "GROK", "ANTI", "PHASES", "UNKNOWN", "RANK", "rank_labels"]

#: Training accuracy high or still rising, test accuracy not yet risen.
PRE = "pre-grokking"
#: Test accuracy rising to, and holding, its peak.
GROK = "grokking"
#: After the peak, test accuracy clearly below it while training accuracy stays ~1.
ANTI = "anti-grokking"
#: The three labels in the order a run goes through them.
PHASES: tuple[str, str, str] = (PRE, GROK, ANTI)
#: The label :meth:`PhaseClassifier.predict` gives a checkpoint with no finite feature in any
#: analysed layer (e.g. NaN weights). Not a phase: not in :data:`PHASES`.
UNKNOWN = "unknown"
#: The rank of each phase (0, 1, 2): the rules segment a run into ranks, monotone in time.
RANK: dict[str, int] = {PRE: 0, GROK: 1, ANTI: 2}


def rank_labels(rank: np.ndarray) -> np.ndarray:
    """Phase names of ranks 0, 1, 2; :data:`UNKNOWN` for -1.

    Examples
    --------
    >>> rank_labels(np.array([0, 1, -1, 2])).tolist()
    ['pre-grokking', 'grokking', 'unknown', 'anti-grokking']
    """
    names = np.asarray(PHASES + (UNKNOWN,), dtype=str)
    return names[np.where(rank >= 0, rank, len(PHASES))]
