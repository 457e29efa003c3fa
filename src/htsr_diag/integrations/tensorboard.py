"""TensorBoard scalars from a :class:`~htsr_diag.Monitor` (``torch.utils.tensorboard``).

Needs the ``tensorboard`` package (``pip install "htsr-diag[tensorboard]"``).
:func:`write_record` writes one analysis, :func:`write_history` a whole Monitor's, and
:class:`TensorBoardMonitor` is a Monitor that writes each analysis as it happens. The keys
are those of :func:`htsr_diag.integrations.record_metrics`; a phase change is also written
as text under ``<prefix>/phase_change``.
"""

from __future__ import annotations

import os
from typing import Any

from ..monitor import Monitor, MonitorRecord
from ._common import check_prefix, missing_extra, record_metrics

try:
    from torch.utils.tensorboard import SummaryWriter
except ImportError as _exc:  # pragma: no cover - depends on the environment
    raise missing_extra("htsr_diag.integrations.tensorboard", "tensorboard", "tensorboard", _exc) from _exc

__all__ = ["TensorBoardMonitor", "write_history", "write_record"]


def write_record(writer: Any, record: MonitorRecord, *, prefix: str = "htsr", per_layer: bool = True,
                 previous_phase: str | None = None) -> dict[str, float]:
    """Write one analysis as scalars at ``global_step=record.step``; returns what was written.

    Parameters
    ----------
    writer : torch.utils.tensorboard.SummaryWriter
    record : MonitorRecord
    prefix : str, default "htsr"
    per_layer : bool, default True
        Also the per-layer alpha and trap counts.
    previous_phase : str, optional
        The phase before this record; when given and different, the change is written as
        text (``"step 120: grokking -> anti-grokking"``).
    """
    if not hasattr(writer, "add_scalar"):
        raise TypeError(f"writer must be a torch.utils.tensorboard.SummaryWriter; got {type(writer).__name__}.")
    prefix = check_prefix(prefix)
    metrics = record_metrics(record, prefix=prefix, per_layer=per_layer)
    for key, value in metrics.items():
        writer.add_scalar(key, value, global_step=record.step)
    if previous_phase is not None and previous_phase != record.phase:
        writer.add_text(f"{prefix}/phase_change", f"step {record.step}: {previous_phase} -> {record.phase}",
                        global_step=record.step)
    return metrics


def write_history(writer: Any, monitor: Monitor, *, prefix: str = "htsr", per_layer: bool = True) -> int:
    """Write every analysis of ``monitor.history``; returns how many."""
    previous = None
    for record in monitor.history:
        write_record(writer, record, prefix=prefix, per_layer=per_layer, previous_phase=previous)
        previous = record.phase
    return len(monitor.history)


class TensorBoardMonitor(Monitor):
    """A :class:`~htsr_diag.Monitor` that writes each analysis to TensorBoard.

    Parameters
    ----------
    model : torch.nn.Module
    writer : SummaryWriter, optional
        Where to write (e.g. the writer the training loop already has).
    log_dir : str or path, optional
        Make a ``SummaryWriter(log_dir)`` instead (closed by :meth:`close`). Exactly one of
        ``writer`` and ``log_dir``.
    prefix : str, default "htsr"
    per_layer : bool, default True
    **kwargs
        The other options of :class:`~htsr_diag.Monitor`.

    Examples
    --------
    >>> import tempfile, torch
    >>> model = torch.nn.Sequential(torch.nn.Linear(64, 60), torch.nn.ReLU(), torch.nn.Linear(60, 30))
    >>> with tempfile.TemporaryDirectory() as d:
    ...     mon = TensorBoardMonitor(model, log_dir=d, schedule=[0, 5])
    ...     for step in range(6):
    ...         _ = mon.step(step, train_acc=0.5)
    ...     mon.close()
    >>> [r.step for r in mon.history]
    [0, 5]
    """

    def __init__(self, model: Any, *, writer: Any = None, log_dir: str | os.PathLike | None = None,
                 prefix: str = "htsr", per_layer: bool = True, **kwargs: Any) -> None:
        if (writer is None) == (log_dir is None):
            raise ValueError("TensorBoardMonitor needs exactly one of writer= (a SummaryWriter) and log_dir= (a "
                             f"folder); got writer={writer!r}, log_dir={log_dir!r}.")
        if writer is not None and not hasattr(writer, "add_scalar"):
            raise TypeError(f"writer must be a torch.utils.tensorboard.SummaryWriter; got {type(writer).__name__}.")
        self.prefix = check_prefix(prefix)
        if not isinstance(per_layer, bool):
            raise TypeError(f"per_layer must be True or False; got {per_layer!r}.")
        super().__init__(model, **kwargs)
        self.per_layer = per_layer
        self._owns_writer = writer is None
        self.writer = SummaryWriter(log_dir=os.fspath(log_dir)) if writer is None else writer

    def step(self, *args: Any, **kwargs: Any) -> MonitorRecord | None:
        """:meth:`Monitor.step` (same arguments), then the new analysis (if any) written to TensorBoard."""
        previous = self.history[-1].phase if self.history else None
        record = super().step(*args, **kwargs)
        if record is not None:
            write_record(self.writer, record, prefix=self.prefix, per_layer=self.per_layer, previous_phase=previous)
        return record

    __call__ = step

    def close(self) -> None:
        """Flush the writer, and close it if this Monitor made it."""
        self.writer.flush()
        if self._owns_writer:
            self.writer.close()
