"""Hooks that run a :class:`~htsr_diag.Monitor` inside the training frameworks people use.

Each submodule imports its framework when it is imported, and says which extra to install
when the framework is missing:

================================================  =====================================  ==========================================
module                                            hook                                   extra
================================================  =====================================  ==========================================
:mod:`htsr_diag.integrations.lightning`           ``HTSRCallback`` (a Lightning          ``pip install "htsr-diag[lightning]"``
                                                  ``Callback``)
:mod:`htsr_diag.integrations.transformers`        ``HTSRCallback`` (a ``TrainerCallback``  ``pip install "htsr-diag[transformers]"``
                                                  for the Hugging Face ``Trainer``)
:mod:`htsr_diag.integrations.tensorboard`         ``TensorBoardMonitor``, ``write_record``  ``pip install "htsr-diag[tensorboard]"``
================================================  =====================================  ==========================================

All of them log the same scalars (:func:`record_metrics`): ``htsr/alpha``, ``htsr/n_traps``,
``htsr/phase`` (0 pre-grokking, 1 grokking, 2 anti-grokking, NaN unknown), ``htsr/alarm``
(1 from the step anti-grokking is reported), ``htsr/confidence``, and per layer
``htsr/alpha/<layer>`` and ``htsr/traps/<layer>``.
"""

from __future__ import annotations

from ._common import PHASE_CODES, record_metrics

__all__ = ["PHASE_CODES", "record_metrics"]
