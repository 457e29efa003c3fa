"""Big models, streamed: :func:`analyze` on safetensors checkpoints one tensor at a time.

A ``.safetensors`` file, or a Hugging Face model folder whose weights are safetensors
(``model.safetensors``, or shards with ``model.safetensors.index.json``), is analysed without
loading the model: the file headers give every tensor's name, shape and dtype; the layer rules
of :func:`~htsr_diag.layers.find_layers` (2-D ``*weight`` entries, 3-D / 4-D convolution
kernels, at least ``min_eigenvalues`` eigenvalues, ``include`` / ``all_2d``) are applied to
those; then each layer's tensor is read with ``safetensors.safe_open``, analysed (on the CPU,
or on ``device``) and released before the next one is read. Peak memory is therefore set by the
largest layer, not by the model (``docs/benchmarks.md``, "Big models, streamed").

Names and order are those of loading the same checkpoint whole
(:func:`~htsr_diag.layers.load_state_dict`): the index file's ``weight_map`` order for a
sharded folder (not shard order; tensors in a shard but not in the index come after), the
order of the file for a single file; the ``module.`` / ``_orig_mod.`` wrapper prefixes are
removed. So ``analyze(path)`` gives the same report as ``analyze(load_state_dict(path))``
(``tests/test_streaming.py``).

Precision: tensors are read as stored (bf16, fp16, fp32). The spectrum that alpha is fitted
to is computed in float64, as for any weight (:mod:`htsr_diag.spectrum`): the Gram matrix of a
large 2-D layer on the CPU is accumulated in float64 over blocks of at most
:data:`GRAM_BLOCK_ELEMENTS` entries, so no float64 copy of the whole layer is made (the
eigenvalues then differ from :func:`~htsr_diag.spectrum.esd` only by the summation order, a
relative ~1e-13). float64 rather than float32 because alpha's tail starts near the bulk and
the fit's xmin search compares eigenvalues that float32 Gram rounding (relative ~1e-7 times
the matrix size) would reorder; the cost of float64 is in the ``M x M`` eigensolve only.
The shuffled spectrum of the trap count is computed in float32 for half- and single-precision
weights, as in :func:`~htsr_diag.traps.randomized_analysis`.

Not streamed: ``.pt`` / ``.bin`` files (``torch.load`` reads a pickle whole), in-memory models.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from .exceptions import CheckpointError

__all__ = ["is_streamable", "stream_layers", "analyze_streamed", "GRAM_BLOCK_ELEMENTS"]

logger = logging.getLogger(__name__)

#: The float64 Gram matrix of a large 2-D layer on the CPU is accumulated over row (or column)
#: blocks of at most this many weight entries (2**22: a 32 MiB float64 block).
GRAM_BLOCK_ELEMENTS = 2**22

_SAFETENSORS_DTYPES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
    "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool",
}


def _safe_open(path: Path):
    try:
        from safetensors import safe_open
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(f"reading {str(path)!r} needs safetensors: pip install \"htsr-diag[safetensors]\"") from exc
    return safe_open(str(path), framework="pt", device="cpu")


def _weights_file(path: Any) -> tuple[Path, str | None] | None:
    """(folder or file, index file name or None) when ``path`` is streamed, else None."""
    if not isinstance(path, (str, os.PathLike)):
        return None
    p = Path(path)
    if p.is_file():
        return (p, None) if p.suffix.lower() == ".safetensors" else None
    if p.is_dir():
        from .checkpoints import _MODEL_FILES

        present = [f for f in _MODEL_FILES if (p / f).is_file()]
        if present and present[0] == "model.safetensors.index.json":
            return p, present[0]
        if present and present[0] == "model.safetensors":
            return p / present[0], None
    return None


def is_streamable(path: Any) -> bool:
    """True when :func:`analyze` reads ``path`` one tensor at a time: a ``.safetensors`` file, or a
    model folder whose preferred weights are ``model.safetensors`` or its sharded index."""
    return _weights_file(path) is not None


# ----------------------------------------------------------------------------- headers
def _placeholder(shape: list[int], dtype_name: str):
    """A tensor of this shape and dtype that holds one element (an expanded scalar).

    The layer rules of :func:`~htsr_diag.layers.find_layers` read only a weight's shape, dtype
    and memory identity (for tied weights); this gives them all three without reading the data.
    """
    import torch

    dtype = getattr(torch, _SAFETENSORS_DTYPES.get(dtype_name, "uint8"), torch.uint8)
    return torch.empty((), dtype=dtype).expand(*shape) if shape else torch.empty((), dtype=dtype)


def _header(path: Path) -> dict[str, Any]:
    """Placeholders of the tensors of one safetensors file, in file order (as load_file gives them)."""
    from .layers import _checkpoint_path

    p = _checkpoint_path(path)
    try:
        with _safe_open(p) as f:
            names = list(f.offset_keys()) if hasattr(f, "offset_keys") else list(f.keys())
            out = {}
            for name in names:
                sl = f.get_slice(name)
                out[name] = _placeholder(list(sl.get_shape()), str(sl.get_dtype()))
            return out
    except Exception as exc:  # safetensors raises its own SafetensorError and OSError
        raise CheckpointError(f"cannot read {str(p)!r} as a safetensors file ({type(exc).__name__}: {exc}). "
                              f"The file is truncated or not a safetensors checkpoint.") from exc


def _file_entries(path: Path) -> dict[str, tuple[Path, str, Any]]:
    """name (wrapper prefixes removed) -> (file, name in the file, placeholder) of one file."""
    from .layers import _strip_wrappers, _unwrap

    where = f"checkpoint {str(path)!r}"
    raw = _header(path)
    stripped = _strip_wrappers(_unwrap(raw, where), where)
    raw_name = {id(v): k for k, v in raw.items()}
    return {name: (path, raw_name[id(ph)], ph) for name, ph in stripped.items()}


def _entries(path: Any) -> tuple[dict[str, tuple[Path, str, Any]], str]:
    """Every tensor of a streamed checkpoint, in the order of loading it whole, and its description."""
    found = _weights_file(path)
    if found is None:
        raise ValueError(f"{str(path)!r} is not a .safetensors file or a model folder with model.safetensors "
                         f"or model.safetensors.index.json; pass it to analyze() to load it whole.")
    target, index = found
    if index is None:
        return _file_entries(target), str(path)
    from .checkpoints import merge_shards

    order, loaded, extra = merge_shards(target, index, _file_entries)
    out = {name: loaded[name] for name in order}
    out.update({k: loaded[k] for k in extra if k not in out})
    return out, str(path)


def stream_layers(path: Any, *, include: Any = None, all_2d: bool = False) -> tuple[Any, dict[str, tuple[Path, str]]]:
    """The layers of a streamed checkpoint without reading any weight.

    Returns
    -------
    (LayerSet, dict)
        The :class:`~htsr_diag.layers.LayerSet` that :func:`~htsr_diag.layers.find_layers`
        gives for the checkpoint loaded whole, except that each ``weight`` is a placeholder
        (right shape and dtype, no data); and, per parameter name, the file and the name in
        that file to read it from (:func:`read_weight`).
    """
    from .layers import find_layers

    entries, described = _entries(path)
    found = find_layers({name: ph for name, (_, _, ph) in entries.items()}, include=include, all_2d=all_2d)
    where = {name: (file, raw) for name, (file, raw, _) in entries.items()}
    return dataclasses.replace(found, source=described), where


def read_weight(file: Path, name: str) -> Any:
    """One tensor of a safetensors file, as stored (its dtype), on the CPU; the file is closed after."""
    try:
        with _safe_open(file) as f:
            return f.get_tensor(name)
    except Exception as exc:
        raise CheckpointError(f"cannot read tensor {name!r} of {str(file)!r} ({type(exc).__name__}: {exc}). "
                              f"The file is truncated or was changed while it was read.") from exc


# ----------------------------------------------------------------------------- spectra
def _esd_low_memory(W: Any) -> np.ndarray:
    """Eigenvalues of ``W^T W`` of a 2-D CPU tensor, the float64 Gram matrix accumulated over blocks.

    Equals :func:`~htsr_diag.spectrum.esd` up to the summation order of the Gram matrix.
    """
    import torch

    from .spectrum import _blocked_gram, _finish

    return _finish(torch.linalg.eigvalsh(_blocked_gram(W, torch.float64, GRAM_BLOCK_ELEMENTS)).numpy())


def _spectrum(W: Any) -> np.ndarray:
    from ._validation import is_tensor
    from .spectrum import esd_many

    if is_tensor(W) and W.ndim == 2 and W.device.type == "cpu" and W.numel() > GRAM_BLOCK_ELEMENTS:
        return _esd_low_memory(W)
    return esd_many([W])[0]


# ----------------------------------------------------------------------------- analysis
def _release_freed_memory() -> None:
    """Hand the memory freed by the last layer back to the OS (glibc's ``malloc_trim``), so that
    one layer's freed blocks, fragmented by the next layer's different sizes, do not add up to a
    peak above what any one layer needs. A no-op where there is no glibc."""
    global _MALLOC_TRIM
    if _MALLOC_TRIM is None:
        try:
            import ctypes

            _MALLOC_TRIM = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _MALLOC_TRIM = False
    if _MALLOC_TRIM:
        _MALLOC_TRIM(0)


_MALLOC_TRIM: Any = None


def _analyze_one(lm: Any, file: Path, raw: str, dev: Any, randomize: bool, ks: bool, rng: np.random.Generator,
                 center_traps: bool) -> Any:
    """Read one layer's tensor, analyse it as :func:`analyze` does, and drop it: the row.

    Only this frame holds the tensor, so it is freed when the function returns.
    """
    from ._validation import all_finite
    from .analyze import _analyze_layer, _failed, _to_device

    try:
        W = _to_device(read_weight(file, raw), dev)
    except CheckpointError:
        raise
    except Exception as exc:  # e.g. out of memory moving to the device
        return _failed(lm, f"failed: {type(exc).__name__}: {exc}")
    if not all_finite(W):
        return _failed(lm, "non-finite weights (NaN or Inf): check the checkpoint for a diverged run")
    try:
        eigs = _spectrum(W)
    except Exception as exc:
        return _failed(lm, f"failed: eigenvalues: {type(exc).__name__}: {exc}")
    try:
        return _analyze_layer(lm, W, eigs, bool(randomize), bool(ks), rng, bool(center_traps))
    except Exception as exc:
        logger.debug("layer %s failed", lm.name, exc_info=True)
        return _failed(lm, f"failed: {type(exc).__name__}: {exc}")


def analyze_streamed(path: Any, *, randomize: bool, ks: bool, layers: Any, dev: Any, entropy: int,
                     all_2d: bool, progress: bool | None, center_traps: bool) -> Any:
    """:func:`~htsr_diag.analyze.analyze` of a streamed checkpoint (options checked there).

    Each layer's tensor is read, checked for finiteness, decomposed (:func:`_spectrum`) and
    analysed (alpha, norms, traps) by the same per-layer code as :func:`analyze`, with the same
    per-layer random stream, then released before the next tensor is read.
    """
    from . import __version__
    from ._progress import Progress
    from .analyze import PROGRESS_MIN_LAYERS, ModelReport, _LAYER_NOTES, _layer_rng, small_spectrum_notes, \
        warn_small_spectra

    found, where = stream_layers(path, include=layers, all_2d=all_2d)
    n = len(found.layers)
    rows: list[Any] = []
    enabled = progress if progress is not None else (None if n >= PROGRESS_MIN_LAYERS else False)
    outer = _LAYER_NOTES.get()
    with small_spectrum_notes() as notes, Progress(n, "analyze", enabled=enabled) as bar:
        for lm in found.layers:
            file, raw = where[lm.param]
            rows.append(_analyze_one(lm, file, raw, dev, randomize, ks, _layer_rng(entropy, lm.name), center_traps))
            _release_freed_memory()
            bar.update(1, postfix=lm.name[-30:])
    if outer is not None:
        outer.extend(notes)
    else:
        warn_small_spectra(notes, "analyze")
    report = ModelReport(layers=rows, skipped=list(found.skipped),
                         source=found.source, randomize=bool(randomize), ks=bool(ks), version=__version__,
                         center_traps=bool(center_traps))
    logger.debug("analysed %d layers of %s one at a time (%d parameters skipped)", n, found.source,
                 len(found.skipped))
    return report
