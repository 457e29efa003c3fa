"""Helpers shared by the benchmark scripts (run as `python benchmarks/NAME.py`)."""

from __future__ import annotations

import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or platform's best guess)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


#: The BLAS/OpenMP thread-count variables set for a worker subprocess.
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def rss_kib() -> int:
    """This process's peak resident memory so far (``ru_maxrss``; KiB on Linux)."""
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def spawn_worker(script: str, args: list[str], threads: int | None = None, env: dict | None = None) -> dict:
    """Run ``python SCRIPT ARGS`` in a fresh process (so its peak memory is its own) with the thread
    variables set to ``threads``; returns the JSON object on its last stdout line plus
    ``process_s`` (wall time of the whole process). A failed worker raises with its stderr."""
    import json
    import os
    import subprocess
    import sys
    import time

    full_env = dict(os.environ, **(env or {}))
    if threads:
        full_env.update({k: str(threads) for k in THREAD_VARS})
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, script, *args], capture_output=True, text=True, env=full_env)
    if out.returncode != 0:
        raise RuntimeError(f"worker {Path(script).name} {' '.join(args)} failed (rc {out.returncode}):\n"
                           f"{out.stderr[-3000:]}")
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["process_s"] = time.perf_counter() - t0
    return res


def weightwatcher_analyze(model, randomize: bool):
    """WeightWatcher's ``analyze()`` of a model or a folder (its details DataFrame), with the side
    effects of WeightWatcher (prints, warning filters, root logging handlers, the global NumPy RNG)
    undone by the package's own ``htsr_diag.interop._contained``. Call
    ``htsr_diag.interop._import_weightwatcher()`` before timing: the first import is slow."""
    from htsr_diag.interop import _contained, _import_weightwatcher

    ww = _import_weightwatcher()
    with _contained():
        return ww.WeightWatcher(model=model).analyze(randomize=randomize)
