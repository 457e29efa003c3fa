"""A Lightning callback that runs a :class:`~htsr_diag.Monitor` during ``Trainer.fit``.

Needs Lightning (``pip install "htsr-diag[lightning]"``). The callback analyses the
``LightningModule`` at the start of training (its current ``global_step``, 0 for a new run)
and after every optimiser step that the Monitor's schedule selects, then sends the scalars of
:func:`htsr_diag.integrations.record_metrics` to every logger of the trainer
(``trainer.loggers``: CSV, TensorBoard, W&B, ...) at ``step=trainer.global_step``. The
summary values (``htsr/alpha``, ``htsr/n_traps``, ``htsr/phase``, ``htsr/alarm``) also go
through ``pl_module.log(..., logger=False)``, so they appear in ``trainer.callback_metrics``
for ``EarlyStopping`` or ``ModelCheckpoint``.

The step is Lightning's ``global_step`` (optimiser steps, as in its checkpoint names
``epoch=E-step=N``), so :func:`htsr_diag.analyze_checkpoints` on the saved checkpoints
reads the same steps. Only the global-zero process analyses (the weights are the same on
every rank). A fit resumed from a checkpoint starts a new Monitor: its phase is read from
the analyses of that fit only.
"""

from __future__ import annotations

import logging
from typing import Any

from ._common import as_fraction, check_monitor_kwargs, check_prefix, check_train_acc_key, missing_extra, \
    record_metrics

try:
    from lightning.pytorch import Callback
except ImportError as _exc:  # pragma: no cover - depends on the environment
    try:
        from pytorch_lightning import Callback
    except ImportError:
        raise missing_extra("htsr_diag.integrations.lightning", "Lightning", "lightning", _exc) from _exc

__all__ = ["HTSRCallback"]

logger = logging.getLogger(__name__)

#: The summary keys also logged with ``pl_module.log`` (so callbacks can monitor them).
SUMMARY_KEYS = ("alpha", "n_traps", "phase", "alarm")


class HTSRCallback(Callback):
    """Layer alpha, correlation traps and the grokking phase of a ``LightningModule`` while it trains.

    Parameters
    ----------
    train_acc_key : str, optional
        Name of a metric the module logs with ``self.log`` that holds the training accuracy
        as a fraction (e.g. ``"train_acc"``); read from ``trainer.callback_metrics`` at each
        analysis. Without it the default classifier cannot leave pre-grokking safely (the
        Monitor warns once).
    prefix : str, default "htsr"
        Start of the logged keys (``"htsr/alpha"``).
    per_layer : bool, default True
        Also log ``<prefix>/alpha/<layer>`` and ``<prefix>/traps/<layer>``.
    **monitor_kwargs
        Passed to :class:`~htsr_diag.Monitor` (``schedule``, ``per_decade``, ``classifier``,
        ``randomize``, ``layers``, ``rng``, ``on_phase_change``, ...).

    Attributes
    ----------
    monitor : Monitor or None
        Made at the start of the first fit; its ``history``, ``phase`` and ``alarm_step``
        are the run's.

    Examples
    --------
    >>> from htsr_diag.integrations.lightning import HTSRCallback
    >>> cb = HTSRCallback(train_acc_key="train_acc", per_decade=20)
    >>> # trainer = lightning.pytorch.Trainer(callbacks=[cb], logger=CSVLogger("logs")); trainer.fit(module)
    >>> cb.monitor is None
    True
    """

    def __init__(self, *, train_acc_key: str | None = None, prefix: str = "htsr", per_layer: bool = True,
                 **monitor_kwargs: Any) -> None:
        super().__init__()
        self.train_acc_key = check_train_acc_key(train_acc_key)
        self.prefix = check_prefix(prefix)
        if not isinstance(per_layer, bool):
            raise TypeError(f"per_layer must be True or False; got {per_layer!r}.")
        self.per_layer = per_layer
        self.monitor_kwargs = check_monitor_kwargs(monitor_kwargs, "HTSRCallback")
        self.monitor: Any = None

    # ------------------------------------------------------------------ hooks
    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        if self.monitor is None:
            from ..monitor import Monitor

            self.monitor = Monitor(pl_module, **self.monitor_kwargs)

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self._step(trainer, pl_module, log_module=False)  # the weights before the first step (step 0 of a new run)

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._step(trainer, pl_module, log_module=True)

    # ------------------------------------------------------------------ work
    def _step(self, trainer: Any, pl_module: Any, *, log_module: bool) -> None:
        if self.monitor is None or not trainer.is_global_zero:
            return
        step = int(trainer.global_step)
        if step < self.monitor.next_step:  # off the schedule: one comparison, no metric look-up
            self.monitor.step(step)
            return
        record = self.monitor.step(step, train_acc=self._train_acc(trainer))
        if record is None:
            return
        metrics = record_metrics(record, prefix=self.prefix, per_layer=self.per_layer)
        for lg in trainer.loggers:
            lg.log_metrics(metrics, step=step)
        if log_module:
            for key in SUMMARY_KEYS:
                name = f"{self.prefix}/{key}"
                pl_module.log(name, metrics[name], on_step=True, on_epoch=False, logger=False)

    def _train_acc(self, trainer: Any) -> float | None:
        if self.train_acc_key is None:
            return None
        value = trainer.callback_metrics.get(self.train_acc_key)
        if value is None:
            return None
        return as_fraction(value, self.train_acc_key, "HTSRCallback")
