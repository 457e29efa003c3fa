"""What a training run's numbers depend on besides its config: threads, libraries, device.

The trainer writes :func:`run_environment` into ``config.json`` (key ``htsr_diag_env``, one
entry per training session whose environment differed from the previous one), so two runs of
the same config that disagree can be traced to a thread count or a library version
(docs/training.md, "What changes results").
"""

from __future__ import annotations

import os
import platform
from typing import Any

__all__ = ["run_environment", "RESULT_KEYS"]

#: Environment keys that change a run's numbers (float rounding) when they differ; the trainer
#: warns when a resumed run differs from the session before it in one of them.
RESULT_KEYS = ("torch_num_threads", "torch", "device", "device_name")

_THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def _version(module: str) -> str | None:
    try:
        from importlib.metadata import version
        return version(module)
    except Exception:  # noqa: BLE001 - not installed, or installed without metadata
        return None


def run_environment(device: Any = "cpu") -> dict[str, Any]:
    """The thread counts, library versions, platform and device a run trains with.

    Parameters
    ----------
    device : str or torch.device
        The device the run trains on.

    Returns
    -------
    dict
        JSON-safe: ``torch_num_threads``, ``torch_num_interop_threads``, ``OMP_NUM_THREADS``,
        ``MKL_NUM_THREADS``, ``OPENBLAS_NUM_THREADS`` (None when unset), ``python``, ``numpy``,
        ``scipy``, ``torch``, ``safetensors``, ``htsr_diag`` (versions), ``platform``,
        ``machine``, ``cpu_count``, ``device`` and ``device_name`` (the GPU's name on CUDA,
        else None), ``cuda`` and ``cudnn`` (versions, None on a CPU build).

    Examples
    --------
    >>> env = run_environment("cpu")
    >>> env["device"], isinstance(env["torch_num_threads"], int)
    ('cpu', True)
    """
    import numpy
    import torch

    from .. import __version__

    dev = torch.device(device)
    name = None
    if dev.type == "cuda" and torch.cuda.is_available():
        name = torch.cuda.get_device_name(dev)
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {
        "torch_num_threads": torch.get_num_threads(),
        "torch_num_interop_threads": torch.get_num_interop_threads(),
        **{k: os.environ.get(k) for k in _THREAD_ENV},
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "scipy": _version("scipy"),
        "torch": torch.__version__,
        "safetensors": _version("safetensors"),
        "htsr_diag": __version__,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "device": str(dev),
        "device_name": name,
        "cuda": torch.version.cuda,
        "cudnn": cudnn,
    }
