"""Finding the weight matrices of a model: modules, state dicts, checkpoint files, arrays.

:func:`find_layers` turns anything that holds weights into a :class:`LayerSet`: the named
weight matrices to analyse (:class:`LayerMatrix`, oriented ``(out, in, *kernel)``) and every
other parameter with the reason it is not analysed (:class:`SkippedParam`). Nothing is
dropped silently: WeightWatcher 0.7.7 drops Conv1d layers and layers with more than
15,000 eigenvalues or N > 50,000 without a word; here there is no size ceiling and every
parameter not analysed is listed.

Recognised layers
-----------------
===============  =======================  ==========================================
kind             stored weight            orientation used
===============  =======================  ==========================================
``Linear``       (out, in)                as stored
``Conv1d``       (out, in/groups, k)      k slices ``W[:, :, i]`` pooled
``Conv2d``       (out, in/groups, kh, kw) kh*kw slices ``W[:, :, i, j]`` pooled
``Embedding``    (num_embeddings, dim)    as stored
``Conv1D``       (in, out)                transposed (GPT-2 / HF transformers Conv1D)
``matrix``       2-D ``*weight`` entry    as stored (from a state dict: type unknown)
``Parameter``    any other 2-D parameter  as stored (only with ``all_2d=True``)
===============  =======================  ==========================================

From a state dict the module types are unknown: 2-D entries whose key ends in ``weight``
are ``matrix``, 3-D and 4-D ones are ``Conv1d`` / ``Conv2d`` kernels. The spectrum of a
matrix does not depend on its orientation, so a GPT-2 ``Conv1D`` weight read from a state
dict gives the same eigenvalues, N, M and Q as from the module.

Loading a checkpoint never executes code from it: ``.safetensors`` files are read with
safetensors, anything else with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Collection, Iterator, Mapping

import numpy as np

from ._results import Result
from ._validation import check_bool, is_tensor
from .exceptions import CheckpointError
from .spectrum import matrix_dims

__all__ = [
    "LayerMatrix",
    "SkippedParam",
    "LayerSet",
    "LAYER_KINDS",
    "find_layers",
    "load_state_dict",
]

logger = logging.getLogger(__name__)

#: Every layer kind :func:`find_layers` can return (the values accepted by ``types=``).
LAYER_KINDS: tuple[str, ...] = ("Linear", "Conv1d", "Conv2d", "Embedding", "Conv1D", "matrix", "Parameter")
_DEFAULT_KINDS = frozenset(LAYER_KINDS) - {"Parameter"}
#: Keys under which training scripts commonly nest the state dict of a checkpoint, in order of
#: precedence: the trained weights before an EMA copy, which is read only when nothing else is there.
_NESTED_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "weights", "ema", "model_ema",
                "state_dict_ema")
#: Name prefixes added by wrappers: DistributedDataParallel / DataParallel, torch.compile.
_WRAPPER_PREFIX = re.compile(r"(?:^|(?<=\.))_orig_mod\.")
DEFAULT_MIN_EIGENVALUES = 8
"""Layers with fewer pooled eigenvalues are skipped as too small (WeightWatcher's ``min_evals``)."""


# ----------------------------------------------------------------------------- results
@dataclass(frozen=True)
class LayerMatrix:
    """One weight to analyse.

    Attributes
    ----------
    name : str
        Module name (``"fc1"``, ``"0"``, ``"encoder.layer.3.attention.self.query"``); for a
        state dict the key without its ``.weight`` suffix.
    param : str
        Full parameter name (``"fc1.weight"``).
    kind : str
        One of :data:`LAYER_KINDS`.
    weight : ndarray or torch.Tensor, shape (out, in) or (out, in, *kernel)
        The weight in ``(out, in, ...)`` orientation (a transposed view for ``Conv1D``),
        detached, on its original device. Not copied.
    shape : tuple of int
        Shape of the parameter as stored.
    N, M : int
        ``max(out, in)`` and ``min(out, in)`` of one 2-D slice.
    Q : float
        ``N / M >= 1``.
    n_slices : int
        2-D slices pooled into the spectrum (1 for a matrix, prod(kernel) for a convolution).
    """

    name: str
    param: str
    kind: str
    weight: Any = field(repr=False)
    shape: tuple[int, ...]
    N: int
    M: int
    Q: float
    n_slices: int

    @property
    def n_eigenvalues(self) -> int:
        """Eigenvalues in the pooled spectrum: ``M * n_slices``."""
        return self.M * self.n_slices

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of every field except the weight."""
        return {"name": self.name, "param": self.param, "kind": self.kind, "shape": list(self.shape),
                "N": self.N, "M": self.M, "Q": self.Q, "n_slices": self.n_slices}


@dataclass(frozen=True)
class SkippedParam(Result):
    """A parameter that is not analysed, and why.

    Attributes
    ----------
    name : str
        Full parameter name (``"fc1.bias"``).
    shape : tuple of int
        Its shape (``()`` when it is not an array).
    code : str
        Short machine-readable reason: ``"1-D"``, ``"too-small"``, ``"filtered-name"``,
        ``"filtered-type"``, ``"not-weight"``, ``"unsupported"``, ``"not-array"``, ``"tied"``.
    reason : str
        Human-readable explanation, with the option that would include it where there is one.
    """

    name: str
    shape: tuple[int, ...]
    code: str
    reason: str



@dataclass(frozen=True)
class LayerSet:
    """The layers found in a model and the parameters skipped.

    Iterating yields the :class:`LayerMatrix` objects; ``layer_set["fc1"]`` looks one up by name.
    """

    layers: list[LayerMatrix]
    skipped: list[SkippedParam]
    source: str = ""

    @property
    def names(self) -> list[str]:
        """Layer names, in model order."""
        return [lm.name for lm in self.layers]

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self) -> Iterator[LayerMatrix]:
        return iter(self.layers)

    def __getitem__(self, name: str) -> LayerMatrix:
        for lm in self.layers:
            if lm.name == name or lm.param == name:
                return lm
        raise KeyError(f"no layer named {name!r}; layers are {self.names}.")


# ----------------------------------------------------------------------------- loading
def _checkpoint_path(path: Any) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike; got {type(path).__name__}.")
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"checkpoint file {str(p)!r} does not exist. Check the path.")
    if not p.is_file():
        raise CheckpointError(f"checkpoint path {str(p)!r} is not a file and not a model folder (none of "
                              f"model.safetensors, model.safetensors.index.json, pytorch_model.bin in it). "
                              f"Pass a .safetensors, .pt, .pth, .bin or .ckpt file, or a save_pretrained folder.")
    if p.stat().st_size == 0:
        raise CheckpointError(f"checkpoint file {str(p)!r} is empty (0 bytes); it was not written completely.")
    return p


def _load_safetensors(p: Path) -> dict[str, Any]:
    try:
        from safetensors.torch import load_file
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(f"reading {str(p)!r} needs safetensors: pip install \"htsr-diag[safetensors]\"") from exc
    try:
        return dict(load_file(str(p), device="cpu"))
    except Exception as exc:  # safetensors raises its own SafetensorError and OSError
        raise CheckpointError(f"cannot read {str(p)!r} as a safetensors file ({type(exc).__name__}: {exc}). "
                              f"The file is truncated or not a safetensors checkpoint.") from exc


def _load_torch(p: Path) -> Any:
    import pickle

    import torch

    try:
        return torch.load(str(p), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        msg = re.sub(r"\x1b\[[0-?]*[ -/]*[@-~]", "", str(exc))  # torch's message has ANSI bold
        if "weights_only" in msg or "Weights only load failed" in msg or "GLOBAL" in msg:
            found = [ln.strip() for ln in msg.splitlines() if "Unsupported global" in ln or "GLOBAL" in ln]
            raise CheckpointError(
                f"refusing to load {str(p)!r}: its pickle needs to run code (a class or function "
                f"other than tensors and plain containers), which could execute anything. "
                f"htsr_diag loads with torch.load(weights_only=True) only. Re-save the weights with "
                f"torch.save(model.state_dict(), path) or safetensors. "
                f"Details: {(found or msg.splitlines())[0]}") from exc
        raise CheckpointError(f"{str(p)!r} is not a PyTorch checkpoint (unpickling failed: {msg.splitlines()[0]}).") from exc
    except Exception as exc:  # RuntimeError (bad zip), EOFError (truncated), ...
        raise CheckpointError(f"cannot read {str(p)!r} as a PyTorch checkpoint ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else 'no details'}). The file is "
                              f"truncated, corrupt, or not a checkpoint.") from exc


def _has_tensor(obj: Mapping[Any, Any]) -> bool:
    return any(is_tensor(v) or isinstance(v, np.ndarray) for v in obj.values())


def _nested(obj: Mapping[Any, Any], depth: int) -> Mapping[str, Any] | None:
    """The first mapping holding tensors: ``obj`` itself, else under the first of _NESTED_KEYS that has one."""
    if _has_tensor(obj):
        return obj
    if depth == 0:
        return None
    for key in _NESTED_KEYS:
        value = obj.get(key)
        if isinstance(value, Mapping):
            found = _nested(value, depth - 1)
            if found is not None:
                return found
    return None


def _unwrap(obj: Any, where: str) -> Mapping[str, Any]:
    """The state dict inside a loaded checkpoint (possibly nested under 'state_dict' etc.)."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{where} holds a {type(obj).__name__}, not a state dict (a mapping of "
                              f"parameter names to tensors). Save model.state_dict().")
    found = _nested(obj, 3)
    if found is None:
        raise CheckpointError(f"{where} holds a mapping without any tensor (keys: {list(obj)[:8]}), also under "
                              f"{', '.join(repr(k) for k in _NESTED_KEYS)}; it is not a state dict.")
    return found


def _strip_wrappers(sd: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Names without the ``module.`` prefix of (Distributed)DataParallel, when every name has it, and
    without the ``_orig_mod.`` component torch.compile adds (anywhere in a name)."""
    out = {str(k): v for k, v in sd.items()}
    while True:
        if out and all(k.startswith("module.") for k in out):
            new = {k[len("module."):]: v for k, v in out.items()}
        elif any(_WRAPPER_PREFIX.search(k) for k in out):
            new = {}
            for k, v in out.items():
                name = _WRAPPER_PREFIX.sub("", k)
                if name in new:
                    raise CheckpointError(f"{where}: {k!r} and another entry both become {name!r} without the "
                                          f"'_orig_mod.' prefix of torch.compile. Save the state dict of the "
                                          f"uncompiled model (model._orig_mod.state_dict()).")
                new[name] = v
        else:
            return out
        out = new


def load_state_dict(path: str | os.PathLike) -> dict[str, Any]:
    """Read a state dict from a checkpoint file, never executing code from it.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.safetensors`` file; a ``.pt`` / ``.pth`` / ``.bin`` / ``.ckpt`` file written by
        ``torch.save``; or a Hugging Face model folder, one file or sharded with an index
        (:func:`htsr_diag.checkpoints.load_model_folder`). A state dict nested in the file is
        found under the first of ``"state_dict"``, ``"model_state_dict"``, ``"model"``,
        ``"module"``, ``"net"``, ``"weights"``, ``"ema"``, ``"model_ema"``, ``"state_dict_ema"``
        that holds tensors (up to three levels deep): the trained weights come before an EMA
        copy. The ``module.`` prefix of ``DistributedDataParallel`` (when every name has it) and
        the ``_orig_mod.`` of ``torch.compile`` are removed from the names.

    Returns
    -------
    dict of str -> torch.Tensor
        On the CPU.

    Raises
    ------
    CheckpointError
        Missing, empty, truncated or non-checkpoint file; a pickle that would execute code
        (``torch.load(weights_only=True)`` refuses it and so does this function); a file
        that holds something other than a state dict. The message names the file.

    Examples
    --------
    >>> import torch, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "m.pt")
    >>> torch.save(torch.nn.Linear(3, 2).state_dict(), path)
    >>> sorted(load_state_dict(path))
    ['bias', 'weight']
    """
    if isinstance(path, (str, os.PathLike)) and Path(path).is_dir():
        from .checkpoints import is_model_folder, load_model_folder

        if is_model_folder(path):
            return load_model_folder(path)
    p = _checkpoint_path(path)
    if p.suffix.lower() == ".safetensors":
        obj: Any = _load_safetensors(p)
    else:
        obj = _load_torch(p)
    sd = _strip_wrappers(_unwrap(obj, f"checkpoint {str(p)!r}"), f"checkpoint {str(p)!r}")
    logger.debug("loaded %d entries from %s", len(sd), p)
    return sd


# ----------------------------------------------------------------------------- filters
def _name_filter(spec: Any, arg: str):
    """None | regex string | collection of exact names -> (predicate, exact-name set or None)."""
    if spec is None:
        return None, None
    if isinstance(spec, str):
        try:
            pattern = re.compile(spec)
        except re.error as exc:
            raise ValueError(f"{arg} must be a regular expression or a list of layer names; {spec!r} "
                             f"is not a valid regular expression ({exc}).") from exc
        return (lambda name, param: bool(pattern.search(name)) or bool(pattern.search(param))), None
    if isinstance(spec, Collection) and all(isinstance(s, str) for s in spec):
        names = set(spec)
        return (lambda name, param: name in names or param in names), names
    raise TypeError(f"{arg} must be None, a regular expression string or a list of layer names; "
                    f"got {spec!r}.")


def _check_types(types: Any) -> frozenset[str]:
    if types is None:
        return _DEFAULT_KINDS
    if isinstance(types, str):
        types = (types,)
    bad = [t for t in types if t not in LAYER_KINDS]
    if bad:
        raise ValueError(f"types must be a subset of {list(LAYER_KINDS)}; got unknown {bad}.")
    return frozenset(types)


def _ptr(x: Any) -> tuple:
    """Identity of the memory holding x (to detect tied weights)."""
    if is_tensor(x):
        return (str(x.device), x.data_ptr(), tuple(x.shape), tuple(x.stride()))
    if isinstance(x, np.ndarray):
        return ("numpy", x.__array_interface__["data"][0], x.shape, x.strides)
    return ("obj", id(x))


# ----------------------------------------------------------------------------- candidates
def _module_candidates(model: Any) -> Iterator[tuple[str, str, str | None, Any, str, tuple]]:
    """(layer name, param name, kind or None, weight oriented (out, in, ...), detail) per parameter."""
    import torch.nn as nn

    for mod_name, module in model.named_modules():
        for p_name, param in module.named_parameters(recurse=False):
            full = f"{mod_name}.{p_name}" if mod_name else p_name
            W = param.detach()
            kind: str | None = None
            cls = type(module).__name__
            if p_name == "weight":
                if isinstance(module, nn.Linear):
                    kind = "Linear"
                elif isinstance(module, nn.Conv1d):
                    kind = "Conv1d"
                elif isinstance(module, nn.Conv2d):
                    kind = "Conv2d"
                elif isinstance(module, nn.Embedding):
                    kind = "Embedding"
                elif cls == "Conv1D" and W.ndim == 2:
                    kind = "Conv1D"
                    W = W.T
            yield (mod_name if kind is not None else full), full, kind, W, cls, tuple(param.shape)


def _mapping_candidates(sd: Mapping[Any, Any]) -> Iterator[tuple[str, str, str | None, Any, str, tuple]]:
    for key, value in sd.items():
        key = str(key)
        kind: str | None = None
        name = key
        if (is_tensor(value) or isinstance(value, np.ndarray)) and key.endswith("weight") and value.ndim in (2, 3, 4):
            kind = {2: "matrix", 3: "Conv1d", 4: "Conv2d"}[value.ndim]
            name = key[: -len(".weight")] if key.endswith(".weight") else key
        shape = tuple(value.shape) if hasattr(value, "shape") else ()
        yield name, key, kind, (value.detach() if is_tensor(value) else value), "state dict", shape


# ----------------------------------------------------------------------------- the finder
def find_layers(source: Any, *, include: Any = None, exclude: Any = None, types: Any = None,
                all_2d: bool = False, min_eigenvalues: int = DEFAULT_MIN_EIGENVALUES) -> LayerSet:
    """The weight matrices of a model, and every parameter not analysed with the reason.

    Parameters
    ----------
    source : torch.nn.Module, mapping, str, os.PathLike, ndarray or torch.Tensor
        A model; a state dict or any mapping of names to numpy arrays / tensors; a checkpoint
        file (``.safetensors``, or ``.pt`` / ``.pth`` read with ``weights_only=True``); a
        single weight array (named ``"W"``); or a :class:`LayerSet` (returned as is; it cannot be
        filtered again).
    include : str or list of str, optional
        Keep only layers whose name (or parameter name) matches: a regular expression
        (``re.search``) or a list of exact names. Names in a list that match nothing raise.
    exclude : str or list of str, optional
        Drop the layers that match (same forms as ``include``).
    types : str or collection of str, optional
        Layer kinds to keep (see :data:`LAYER_KINDS`). Default: all (``"Parameter"`` only
        with ``all_2d=True``).
    all_2d : bool, default False
        Also analyse 2-D parameters that belong to no recognised layer (kind
        ``"Parameter"``, e.g. ``nn.MultiheadAttention.in_proj_weight``, positional embeddings).
    min_eigenvalues : int, default 8
        Layers whose pooled spectrum (``M * n_slices``) is smaller are skipped as too small
        (8 is WeightWatcher's ``min_evals``; a power-law fit needs far more to mean anything).

    Returns
    -------
    LayerSet
        ``.layers`` in model order, ``.skipped`` with a reason for every other parameter.
        Tied weights (the same memory under two names) are analysed once.

    Raises
    ------
    TypeError
        ``source`` of an unsupported type; bad ``include`` / ``exclude`` / ``all_2d``.
    ValueError
        Unknown ``types``; names in an ``include`` list that match no layer; no analysable layer
        at all (the message lists why each parameter was skipped).
    CheckpointError
        An unreadable or unsafe checkpoint file (see :func:`load_state_dict`).

    Examples
    --------
    >>> import torch.nn as nn
    >>> ls = find_layers(nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 4)))
    >>> [(lm.name, lm.kind, lm.N, lm.M) for lm in ls]
    [('0', 'Linear', 30, 20)]
    >>> [(s.name, s.code) for s in ls.skipped]
    [('0.bias', '1-D'), ('2.weight', 'too-small'), ('2.bias', '1-D')]
    """
    if isinstance(source, LayerSet):
        if include is not None or exclude is not None or types is not None or all_2d:
            raise ValueError("source is already a LayerSet: include, exclude, types and all_2d cannot be "
                             "applied to it. Call find_layers on the model itself with these options.")
        return source
    all_2d = check_bool(all_2d, "all_2d")
    from ._validation import check_positive_int

    min_eigenvalues = check_positive_int(min_eigenvalues, "min_eigenvalues")
    keep_types = _check_types(types)
    if all_2d and types is None:
        keep_types = keep_types | {"Parameter"}
    inc, inc_names = _name_filter(include, "include")
    exc, _ = _name_filter(exclude, "exclude")

    described: str
    try:
        import torch.nn as nn
    except ImportError:  # pragma: no cover
        nn = None  # type: ignore[assignment]
    if nn is not None and isinstance(source, nn.Module):
        candidates = list(_module_candidates(source))
        described = type(source).__name__
    elif isinstance(source, (str, os.PathLike)):
        candidates = list(_mapping_candidates(load_state_dict(source)))
        described = str(source)
    elif isinstance(source, Mapping):
        candidates = list(_mapping_candidates(source))
        described = "state dict"
    elif is_tensor(source) or isinstance(source, np.ndarray):
        candidates = [("W", "W", {2: "matrix", 3: "Conv1d", 4: "Conv2d"}.get(source.ndim), source, "array",
                       tuple(source.shape))]
        described = "array"
    else:
        raise TypeError(f"source must be a torch.nn.Module, a state dict (mapping of names to arrays), a "
                        f"checkpoint path or an array; got {type(source).__name__}.")

    layers: list[LayerMatrix] = []
    skipped: list[SkippedParam] = []
    seen: dict[tuple, str] = {}
    matched: set[str] = set()

    def skip(full: str, shape: tuple[int, ...], code: str, reason: str) -> None:
        skipped.append(SkippedParam(full, shape, code, reason))

    for name, full, kind, W, detail, stored in candidates:
        if not (is_tensor(W) or isinstance(W, np.ndarray)):
            skip(full, (), "not-array", f"not an array ({type(W).__name__})")
            continue
        shape = tuple(int(s) for s in stored)
        if kind is None:
            if W.ndim < 2:
                what = "bias" if full.endswith("bias") else "vector"
                skip(full, shape, "1-D", f"{W.ndim}-D {what}: no spectrum")
                continue
            if W.ndim == 2 and all_2d:
                kind = "Parameter"
            elif W.ndim == 2:
                where = f"of a {detail} module" if detail != "state dict" else "whose key does not end in 'weight'"
                skip(full, shape, "not-weight", f"2-D parameter {where}; pass all_2d=True to analyse it")
                continue
            else:
                skip(full, shape, "unsupported", f"{W.ndim}-D parameter of a {detail} module: only Linear, "
                                                 f"Conv1d, Conv2d, Embedding and Conv1D layers are supported")
                continue
        if is_tensor(W) and not W.is_floating_point() or isinstance(W, np.ndarray) and not np.issubdtype(W.dtype, np.floating):
            skip(full, shape, "not-array", f"dtype {W.dtype} is not floating point")
            continue
        if inc is not None and not inc(name, full):
            skip(full, shape, "filtered-name", "not selected by include")
            continue
        if inc_names is not None:
            matched.update(inc_names & {name, full})
        if exc is not None and exc(name, full):
            skip(full, shape, "filtered-name", "excluded by exclude")
            continue
        if kind not in keep_types:
            skip(full, shape, "filtered-type", f"kind {kind} not in types={sorted(keep_types)}")
            continue
        key = _ptr(W)
        if key in seen:
            skip(full, shape, "tied", f"same memory as {seen[key]} (tied weight), analysed once")
            continue
        seen[key] = full
        N, M, Q = matrix_dims(W.shape)
        n_slices = int(np.prod(W.shape[2:])) if W.ndim > 2 else 1
        if M * n_slices < min_eigenvalues:
            skip(full, shape, "too-small", f"{M * n_slices} eigenvalues < min_eigenvalues={min_eigenvalues}")
            continue
        layers.append(LayerMatrix(name=name, param=full, kind=kind, weight=W, shape=shape,
                                  N=N, M=M, Q=Q, n_slices=n_slices))

    if inc_names is not None and inc_names - matched:
        available = [c[0] for c in candidates if c[2] is not None]
        raise ValueError(f"include names {sorted(inc_names - matched)} match no layer of {described}; "
                         f"layers are {available}.")
    if not layers:
        why = "; ".join(f"{s.name} {list(s.shape)}: {s.reason}" for s in skipped[:10])
        more = f" (and {len(skipped) - 10} more)" if len(skipped) > 10 else ""
        raise ValueError(f"{described} has no analysable layer (Linear, Conv1d, Conv2d, Embedding, "
                         f"Conv1D or 2-D weight with at least {min_eigenvalues} eigenvalues). Skipped: "
                         f"{why or 'no parameters at all'}{more}.")
    for s in skipped:
        logger.debug("skipped %s %s: %s", s.name, s.shape, s.reason)
    return LayerSet(layers=layers, skipped=skipped, source=described)
