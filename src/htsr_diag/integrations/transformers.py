"""A ``TrainerCallback`` that runs a :class:`~htsr_diag.Monitor` inside the Hugging Face ``Trainer``.

Needs transformers (``pip install "htsr-diag[transformers]"``, which also brings
``accelerate``, required by the ``Trainer``). The callback analyses the model when training
begins (at ``state.global_step``, 0 for a new run) and after every optimiser step that the
Monitor's schedule selects. Each analysis is logged like the Trainer's own losses:

- bound to the trainer (``HTSRCallback.attach(trainer)`` or ``HTSRCallback(trainer=trainer)``),
  through ``trainer.log``: a row in ``trainer.state.log_history`` (saved in
  ``trainer_state.json`` with every checkpoint) and ``on_log`` to every reporter of
  ``report_to`` (TensorBoard, W&B, MLflow, ...). A loss log due at the same step still
  happens;
- unbound (only passed in ``Trainer(callbacks=[...])``), as a row appended to
  ``state.log_history``; the reporters are not called, since a callback cannot reach them
  without the trainer.

The step is ``state.global_step`` (as in the ``checkpoint-N`` folders), so
:func:`htsr_diag.analyze_checkpoints` on the saved checkpoints reads the same steps. Only the
main process (``state.is_world_process_zero``) analyses.
"""

from __future__ import annotations

import logging
from typing import Any

from ._common import as_fraction, check_monitor_kwargs, check_prefix, check_train_acc_key, missing_extra, \
    record_metrics

try:
    from transformers import TrainerCallback
except ImportError as _exc:  # pragma: no cover - depends on the environment
    raise missing_extra("htsr_diag.integrations.transformers", "transformers", "transformers", _exc) from _exc

__all__ = ["HTSRCallback"]

logger = logging.getLogger(__name__)


class HTSRCallback(TrainerCallback):
    """Layer alpha, correlation traps and the grokking phase of a model trained by the HF ``Trainer``.

    Parameters
    ----------
    trainer : transformers.Trainer, optional
        The trainer to log through (``trainer.log``: log history and reporters). See
        :meth:`attach`, which binds and adds the callback in one call.
    train_acc_key : str, optional
        A key of the log history that holds the training accuracy as a fraction (e.g.
        ``"train_accuracy"`` logged by a ``compute_metrics`` or another callback); its latest
        value is passed to the Monitor at each analysis.
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
        Made when training begins; its ``history``, ``phase`` and ``alarm_step`` are the run's.

    Examples
    --------
    >>> from htsr_diag.integrations.transformers import HTSRCallback
    >>> cb = HTSRCallback(per_decade=20)
    >>> # trainer = transformers.Trainer(model=..., args=..., train_dataset=...)
    >>> # HTSRCallback.attach(trainer, per_decade=20); trainer.train()
    >>> cb.monitor is None
    True
    """

    def __init__(self, trainer: Any = None, *, train_acc_key: str | None = None, prefix: str = "htsr",
                 per_layer: bool = True, **monitor_kwargs: Any) -> None:
        if trainer is not None and not (hasattr(trainer, "log") and hasattr(trainer, "add_callback")):
            raise TypeError(f"trainer must be a transformers.Trainer or None; got {type(trainer).__name__}.")
        self.trainer = trainer
        self.train_acc_key = check_train_acc_key(train_acc_key)
        self.prefix = check_prefix(prefix)
        if not isinstance(per_layer, bool):
            raise TypeError(f"per_layer must be True or False; got {per_layer!r}.")
        self.per_layer = per_layer
        self.monitor_kwargs = check_monitor_kwargs(monitor_kwargs, "HTSRCallback")
        self.monitor: Any = None

    @classmethod
    def attach(cls, trainer: Any, **kwargs: Any) -> "HTSRCallback":
        """Make a callback bound to ``trainer``, add it with ``trainer.add_callback`` and return it."""
        cb = cls(trainer, **kwargs)
        trainer.add_callback(cb)
        return cb

    # ------------------------------------------------------------------ hooks
    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if self.monitor is None:
            if model is None:
                raise ValueError("HTSRCallback: the Trainer passed no model to on_train_begin; build the Trainer "
                                 "with model=... .")
            from ..monitor import Monitor

            self.monitor = Monitor(model, **self.monitor_kwargs)
        self._step(state, control)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._step(state, control)

    # ------------------------------------------------------------------ work
    def _step(self, state: Any, control: Any) -> None:
        if self.monitor is None or not state.is_world_process_zero:
            return
        step = int(state.global_step)
        if step < self.monitor.next_step:  # off the schedule: one comparison, no look-up
            self.monitor.step(step)
            return
        record = self.monitor.step(step, train_acc=self._train_acc(state))
        if record is None:
            return
        metrics = record_metrics(record, prefix=self.prefix, per_layer=self.per_layer)
        if self.trainer is not None:
            pending = control.should_log  # trainer.log -> on_log clears it; a loss log due now must still happen
            self.trainer.log(dict(metrics))
            control.should_log = pending
        else:
            state.log_history.append({**metrics, "step": step})

    def _train_acc(self, state: Any) -> float | None:
        if self.train_acc_key is None:
            return None
        for row in reversed(state.log_history):
            if self.train_acc_key in row:
                return as_fraction(row[self.train_acc_key], self.train_acc_key, "HTSRCallback")
        return None
