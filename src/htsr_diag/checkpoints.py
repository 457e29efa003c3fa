"""Checkpoints from anywhere: finding checkpoint files, their steps, and the metrics beside them.

:func:`find_checkpoints` turns a folder, a glob or a list of paths into ``[(step, path), ...]``;
:func:`load_model_folder` reads a Hugging Face model folder (one file or shards with an index)
as one state dict; :func:`read_metrics_table` reads the training metrics saved next to the
checkpoints (our ``metrics.jsonl``, a ``metrics.json`` / ``.jsonl`` / ``.csv`` with a ``step``
column, the HF Trainer's ``trainer_state.json``, Lightning's ``CSVLogger`` ``metrics.csv``).
:func:`~htsr_diag.trajectory.analyze_checkpoints` and the ``htsr-diag`` commands use them.

Steps from names
----------------
:func:`step_from_name` reads the step from a file name (without its suffix) or a folder name,
case-insensitively, trying these forms in order; the first form that matches gives the step:

===================================  ==============================  =====
form                                 example                         step
===================================  ==============================  =====
``step_N``, ``step=N``, ``step-N``   ``step_000300.safetensors``     300
``epoch=E-step=N`` (Lightning)       ``epoch=2-step=1500.ckpt``      1500
``checkpoint-N`` (HF Trainer)        ``checkpoint-500/``             500
``iter_N``, ``iteration_N``          ``iter_2000.pt``                2000
``model_N``, ``model-N``             ``model_10.pth``                10
``N`` (the whole name)               ``000300.pt``                   300
===================================  ==============================  =====

A form that appears twice with different numbers (``step_1_step_2``) is ambiguous and gives
None; so do shard names (``model-00001-of-00003``). A file whose own name has no step takes
the step of its folder (``checkpoint-500/pytorch_model.bin``). Anything else needs
``steps_from=REGEX`` (one capture group) or explicit ``steps=``: a checkpoint whose step cannot
be found is an error that lists it, never dropped.

Loading never executes code from a file (``torch.load(..., weights_only=True)`` or safetensors).
"""

from __future__ import annotations

import csv
import glob
import json
import logging
import math
import os
import re
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .exceptions import CheckpointError, CorruptMetricsWarning

__all__ = [
    "CHECKPOINT_SUFFIXES",
    "METRICS_FILES",
    "step_from_name",
    "is_model_folder",
    "find_checkpoints",
    "metrics_home",
    "read_metrics_table",
    "load_model_folder",
    "check_accuracy",
]

logger = logging.getLogger(__name__)

#: File suffixes read as checkpoints (``.safetensors`` with safetensors, the rest with torch.load).
CHECKPOINT_SUFFIXES: tuple[str, ...] = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")
#: Metrics files looked for next to the checkpoints, in this order; the first found is read.
METRICS_FILES: tuple[str, ...] = ("metrics.jsonl", "metrics.json", "metrics.csv", "trainer_state.json")
#: Files that make a folder a Hugging Face model folder, in the order they are preferred.
_MODEL_FILES = ("model.safetensors.index.json", "model.safetensors", "pytorch_model.bin.index.json",
                "pytorch_model.bin")
_END = r"(?!\d|-of-)"  # the number ends here, and is not a shard number (model-00001-of-00003)
_STEP_FORMS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("step_N", re.compile(r"(?<![a-z0-9])step[_=-]?(\d+)" + _END)),
    ("checkpoint-N", re.compile(r"(?<![a-z0-9])checkpoint[-_=]?(\d+)" + _END)),
    ("iter_N", re.compile(r"(?<![a-z0-9])iter(?:ation)?[_=-]?(\d+)" + _END)),
    ("model_N", re.compile(r"(?<![a-z0-9])model[_=-](\d+)" + _END)),
    ("N", re.compile(r"^(\d+)$")),
)
_STEP_HELP = ("name the checkpoints with their step (step_N, step=N, epoch=E-step=N, checkpoint-N/, "
              "model_N, iter_N), or pass steps_from=REGEX (CLI: --steps-from) with one capture group "
              "for the step, or a list of files with steps=[...]")


# ----------------------------------------------------------------------------- steps
def step_from_name(name: str) -> int | None:
    """The training step written in a checkpoint's file or folder name, or None.

    Parameters
    ----------
    name : str
        A file name (its checkpoint suffix is ignored) or a folder name; not a whole path.

    Returns
    -------
    int or None
        The step, from the first of the forms in the module docstring that matches; None when
        no form matches or a form matches twice with different numbers.

    Examples
    --------
    >>> [step_from_name(n) for n in ("step_000300.safetensors", "epoch=2-step=1500.ckpt",
    ...                              "checkpoint-500", "iter_20.pt", "model_7.pth", "0042.pt")]
    [300, 1500, 500, 20, 7, 42]
    >>> step_from_name("model-00001-of-00003.safetensors") is None
    True
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str (a file or folder name); got {type(name).__name__}.")
    stem = name.lower()
    for suffix in CHECKPOINT_SUFFIXES:
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    for _, pattern in _STEP_FORMS:
        found = {int(m) for m in pattern.findall(stem)}
        if len(found) == 1:
            return found.pop()
        if len(found) > 1:
            return None
    return None


def _compile_steps_from(steps_from: Any) -> re.Pattern[str] | None:
    if steps_from is None:
        return None
    if not isinstance(steps_from, str):
        raise TypeError(f"steps_from must be a regular expression string with one capture group; got "
                        f"{type(steps_from).__name__}.")
    try:
        pattern = re.compile(steps_from)
    except re.error as exc:
        raise ValueError(f"steps_from={steps_from!r} is not a valid regular expression ({exc}).") from exc
    if pattern.groups != 1:
        raise ValueError(f"steps_from must have exactly one capture group, the step, e.g. r'ckpt(\\d+)'; "
                         f"{steps_from!r} has {pattern.groups}.")
    return pattern


def _step_of(path: Path, pattern: re.Pattern[str] | None) -> int | None:
    if pattern is not None:
        for text in (path.name, path.as_posix()):  # the name first, then the whole path
            m = pattern.search(text)
            if m is not None:
                digits = m.group(1)
                return int(digits) if digits is not None and digits.isdigit() else None
        return None
    step = step_from_name(path.name)
    if step is None and path.is_file():  # checkpoint-500/pytorch_model.bin: the folder's step
        step = step_from_name(path.parent.name)
    return step


# ----------------------------------------------------------------------------- discovery
def is_model_folder(path: str | os.PathLike) -> bool:
    """True when ``path`` is a Hugging Face model folder (``model.safetensors``, a sharded
    ``model.safetensors.index.json``, ``pytorch_model.bin`` or its index)."""
    p = Path(path)
    return p.is_dir() and any((p / f).is_file() for f in _MODEL_FILES)


def _is_glob(text: str) -> bool:
    return any(c in text for c in "*?[")


def _candidates(folder: Path) -> list[Path]:
    """Checkpoint files and model folders directly inside ``folder`` (hidden files skipped)."""
    own_model = is_model_folder(folder)
    out = []
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):
            continue  # temporary files of an interrupted write, editor files
        if p.is_dir():
            if is_model_folder(p):
                out.append(p)
        elif p.suffix.lower() in CHECKPOINT_SUFFIXES and not (own_model and _is_model_file(p.name)):
            out.append(p)
    if own_model:
        out.insert(0, folder)  # the model at the folder's top level is a checkpoint too
    return out


def _is_model_file(name: str) -> bool:
    """A weight file of an HF model folder (its single file or one of its shards)."""
    return name in _MODEL_FILES or bool(re.fullmatch(r"(model|pytorch_model)-\d+-of-\d+\.(safetensors|bin)", name))


def _expand(sources: Any, what: str) -> tuple[list[Path], Path | None, bool]:
    """(checkpoint paths, the folder to look for metrics in, is one of our run folders)."""
    if isinstance(sources, (str, os.PathLike)):
        text = os.fspath(sources)
        path = Path(text)
        if not path.exists() and _is_glob(text):
            matches = []
            for m in sorted(glob.glob(text, recursive=True)):
                p = Path(m)
                if p.is_file() and _is_model_file(p.name) and is_model_folder(p.parent):
                    p = p.parent  # a shard or weight file of a model folder: the folder is the checkpoint
                if p not in matches:
                    matches.append(p)
            found = [p for p in matches if (p.is_file() and p.suffix.lower() in CHECKPOINT_SUFFIXES
                                            and not p.name.startswith(".")) or is_model_folder(p)]
            if not found:
                raise ValueError(f"{what}={text!r} matches no checkpoint file ({', '.join(CHECKPOINT_SUFFIXES)}) "
                                 f"and no model folder ({len(matches)} path(s) matched). Check the pattern.")
            return found, metrics_home(found), False
        if not path.exists():
            raise ValueError(f"{what}={text!r} does not exist. Pass a folder of checkpoints, a glob such as "
                             f"'runs/x/*.pt', or a list of files.")
        if path.is_file() or is_model_folder(path) and not any(
                is_model_folder(p) or p.suffix.lower() in CHECKPOINT_SUFFIXES and not _is_model_file(p.name)
                for p in path.iterdir()):
            return [path], metrics_home([path]), False
        if (path / "ensemble.json").is_file() or any(path.glob("member_*")):
            members = sorted(p.name for p in path.glob("member_*"))
            raise ValueError(f"{what}={text!r} is an ensemble folder; analyse one member at a time, "
                             f"e.g. {str(path / (members[0] if members else 'member_00'))!r}.")
        inner = path / "checkpoints"
        folder = inner if inner.is_dir() else path
        found = _candidates(folder)
        if not found:
            where = f"{str(folder)!r}" + ("" if folder is path else f" (the checkpoints/ of {text!r})")
            raise ValueError(f"{what}={text!r} holds no checkpoint: no file ending in "
                             f"{', '.join(CHECKPOINT_SUFFIXES)} and no model folder (with model.safetensors, "
                             f"model.safetensors.index.json or pytorch_model.bin) in {where}. Pass a folder of "
                             f"checkpoints, a glob such as '{text}/**/*.pt', or a list of files.")
        ours = inner.is_dir() and (path / "metrics.jsonl").is_file()
        return found, path, ours
    if isinstance(sources, (list, tuple)):
        if not sources:
            raise ValueError(f"{what} must hold at least one checkpoint; got an empty sequence.")
        paths = []
        for i, item in enumerate(sources):
            if not isinstance(item, (str, os.PathLike)):
                raise TypeError(f"{what}[{i}] must be a path; got {type(item).__name__}.")
            p = Path(item)
            if not (p.is_file() or is_model_folder(p)):
                state = "does not exist" if not p.exists() else "is a folder without model.safetensors, " \
                                                                 "model.safetensors.index.json or pytorch_model.bin"
                raise ValueError(f"{what}[{i}]={str(p)!r} is not a file or a model folder: it {state}. Pass "
                                 f"existing checkpoint files, or a folder or glob as the only source.")
            paths.append(p)
        return paths, metrics_home(paths), False
    raise TypeError(f"{what} must be a folder, a glob or a list of checkpoint paths; got {type(sources).__name__}.")


def metrics_home(paths: Sequence[str | os.PathLike]) -> Path | None:
    """The folder where the metrics of these checkpoints are looked for.

    The deepest folder holding all of them (a folder checkpoint counts as its own parent's
    entry), one level up when that folder is named ``checkpoints`` (our trainer's and
    Lightning's layout). None for an empty list.
    """
    if not paths:
        return None
    parents = [os.path.abspath(Path(p).parent) for p in paths]
    home = Path(os.path.commonpath(parents))
    return home.parent if home.name == "checkpoints" else home


def find_checkpoints(sources: Any, *, steps: Sequence[int] | None = None,
                     steps_from: str | None = None) -> list[tuple[int, Path]]:
    """``[(step, path), ...]`` of the checkpoints in a folder, a glob or a list, by step.

    Parameters
    ----------
    sources : str, os.PathLike or sequence of them
        - a folder: its checkpoint files (``.safetensors``, ``.pt``, ``.pth``, ``.bin``,
          ``.ckpt``) and model folders (see :func:`is_model_folder`); those of its
          ``checkpoints/`` subfolder when it has one (our trainer's run folders, Lightning's
          ``version_N/``). Hidden files are skipped. A model folder with no other checkpoint
          in it is one checkpoint;
        - a glob (``"runs/x/*.pt"``, ``"out/checkpoint-*"``, ``**`` recurses): the matching
          checkpoint files and model folders;
        - one checkpoint file or model folder, or a list of them.
    steps : sequence of int, optional
        The step of each path of a list, in its order. Not for a folder or a glob (their
        order is not the user's): use ``steps_from`` there.
    steps_from : str, optional
        A regular expression with one capture group, the step, searched in each checkpoint's
        name, then in its whole path. Default: :func:`step_from_name`.

    Returns
    -------
    list of (int, pathlib.Path)
        Sorted by step.

    Raises
    ------
    ValueError
        A missing path; a folder or glob with no checkpoint; checkpoints whose step cannot
        be found (all listed); two checkpoints at one step; bad ``steps`` / ``steps_from``.
    TypeError
        ``sources`` of another type.

    Examples
    --------
    Skipped: needs a Lightning log folder.

    >>> find_checkpoints("lightning_logs/version_0")     # doctest: +SKIP
    [(500, PosixPath('lightning_logs/version_0/checkpoints/epoch=0-step=500.ckpt')), ...]
    """
    pattern = _compile_steps_from(steps_from)
    paths, _, _ = _expand(sources, "sources")
    if steps is not None:
        if pattern is not None:
            raise ValueError("give steps or steps_from, not both.")
        if not isinstance(sources, (list, tuple)):
            raise ValueError("steps=[...] needs a list of checkpoint files (a folder's or a glob's order is not "
                             "yours to number); for a folder or glob pass steps_from=REGEX, or a sorted list "
                             "of its files with steps=[...].")
        arr = np.asarray(steps)
        if arr.ndim != 1 or arr.size != len(paths):
            raise ValueError(f"steps must give one step per source ({len(paths)}); got shape {arr.shape}.")
        if arr.size and (not np.issubdtype(arr.dtype, np.integer) or (arr < 0).any()):
            raise ValueError(f"steps must be non-negative integers; got {arr.tolist()[:5]}...")
        found = [int(s) for s in arr]
    else:
        found = [_step_of(p, pattern) for p in paths]
        missing = [str(p) for p, s in zip(paths, found) if s is None]
        if missing:
            shown = ", ".join(repr(m) for m in missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
            how = (f"steps_from={steps_from!r} matches no number in" if pattern is not None
                   else "cannot read a step from the name of")
            fix = ("check the pattern against these names" if pattern is not None else _STEP_HELP)
            raise ValueError(f"{how} {len(missing)} checkpoint(s): {shown}. To fix: {fix}.")
    by_step: dict[int, Path] = {}
    for step, path in zip(found, paths):
        if step in by_step:
            raise ValueError(f"steps must be unique; step {step} appears more than once ({str(by_step[step])!r} and "
                             f"{str(path)!r}). Remove one, or number them with steps_from / steps.")
        by_step[step] = path
    return sorted(by_step.items())


# ----------------------------------------------------------------------------- loading

def merge_shards(folder: Path, index: str, read: Any) -> tuple[list[str], dict[str, Any], list[str]]:
    """Read every shard named by the index file ``folder/index`` with ``read(path) -> mapping``
    and check that each holds the tensors the index puts in it. Returns the index's name order,
    the merged mapping, and the names found in a shard but not in the index."""
    order, shards = _shard_order(folder, index)
    loaded: dict[str, Any] = {}
    extra: list[str] = []
    for shard, names in shards.items():
        entries = read(folder / shard)
        lost = [n for n in names if n not in entries]
        if lost:
            raise CheckpointError(f"shard {str(folder / shard)!r} lacks {len(lost)} tensor(s) that "
                                  f"{str(folder / index)!r} puts in it, e.g. {lost[:3]}. The index and the shards "
                                  f"do not belong together.")
        loaded.update(entries)
        listed = set(names)
        extra.extend(k for k in entries if k not in listed)
    return order, loaded, extra

def _shard_order(folder: Path, index_name: str) -> tuple[list[str], dict[str, list[str]]]:
    """(tensor names in index order, shard file -> its names) of a sharded model's index file."""
    index = folder / index_name
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
        weight_map = data["weight_map"]
        if not isinstance(weight_map, Mapping) or not all(isinstance(v, str) for v in weight_map.values()):
            raise TypeError("weight_map is not a mapping of tensor names to shard files")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"cannot read the index {str(index)!r} ({type(exc).__name__}: {exc}). It must be "
                              f"JSON with a 'weight_map' of tensor names to shard files, as Hugging Face "
                              f"writes it.") from exc
    shards: dict[str, list[str]] = {}
    for name, shard in weight_map.items():
        shards.setdefault(shard, []).append(name)
    missing = [s for s in shards if not (folder / s).is_file()]
    if missing:
        raise CheckpointError(f"the index {str(index)!r} names shard(s) that are not in the folder: {missing}. "
                              f"Copy the missing shards, or the model is incomplete.")
    return list(weight_map), shards


def load_model_folder(path: str | os.PathLike) -> dict[str, Any]:
    """Read a Hugging Face model folder as one state dict, never executing code from it.

    Parameters
    ----------
    path : str or os.PathLike
        A folder with, in this order of preference, ``model.safetensors.index.json`` and its
        shards (``model-00001-of-00003.safetensors`` ...), ``model.safetensors``,
        ``pytorch_model.bin.index.json`` and its shards, or ``pytorch_model.bin``
        (what ``save_pretrained`` and the HF Trainer's ``checkpoint-N/`` hold).

    Returns
    -------
    dict of str -> torch.Tensor
        On the CPU. For a sharded model the names follow the index file's order (tensors in a
        shard but not in the index come after, in shard order).

    Raises
    ------
    CheckpointError
        Not a model folder; an unreadable index; a shard named by the index that is missing,
        or one that lacks a tensor the index puts in it; any unreadable file.

    Examples
    --------
    Skipped: needs an HF Trainer checkpoint folder.

    >>> sd = load_model_folder("out/checkpoint-500")     # doctest: +SKIP
    """
    from .layers import load_state_dict

    folder = Path(path)
    present = [f for f in _MODEL_FILES if (folder / f).is_file()] if folder.is_dir() else []
    if not present:
        raise CheckpointError(f"{str(folder)!r} is not a model folder: it has none of {list(_MODEL_FILES)}. "
                              f"Pass a checkpoint file, or a folder written by save_pretrained.")
    chosen = present[0]
    if not chosen.endswith(".index.json"):
        return load_state_dict(folder / chosen)
    order, loaded, extra = merge_shards(folder, chosen, load_state_dict)
    if extra:
        logger.debug("%d tensors of %s are in a shard but not in its index: %s", len(extra), folder, extra[:5])
    out = {name: loaded[name] for name in order}
    out.update({k: loaded[k] for k in extra if k not in out})
    return out


# ----------------------------------------------------------------------------- metrics
def _number(value: Any) -> float:
    """A float from a JSON / CSV value; NaN for empty, non-numeric or bool values."""
    if isinstance(value, bool) or value is None:
        return math.nan
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value) if value.strip() else math.nan
        except ValueError:
            return math.nan
    return math.nan


def _rows_from_records(records: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(records, list) or not all(isinstance(r, Mapping) for r in records):
        raise ValueError(f"{where} must hold a list of row objects, a mapping of columns to lists, or a "
                         f"'log_history' list; got {type(records).__name__}.")
    return [dict(r) for r in records]


def _read_rows(path: Path) -> list[dict[str, Any]]:
    where = f"the metrics file {str(path)!r}"
    if path.suffix == ".jsonl":
        rows: list[Any] = []
        bad: list[int] = []
        with open(path, encoding="utf-8") as fh:
            lines = fh.readlines()
        for i, line in enumerate(lines, 1):
            if not line.strip():
                continue
            if not line.endswith("\n"):
                continue  # a partial last line: a run killed while writing (as the trainer's read_metrics)
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                bad.append(i)
        if bad:
            warnings.warn(f"{path}: {len(bad)} line(s) are not JSON (line number(s) {bad[:10]}"
                          f"{' ...' if len(bad) > 10 else ''}); they are left out, the file is not changed. "
                          f"To fix: repair or delete those lines.", CorruptMetricsWarning, stacklevel=4)
        return _rows_from_records(rows, where)
    if path.suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as fh:
            return [dict(r) for r in csv.DictReader(fh)]
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read {where} as JSON ({exc}). Fix the file or move it away.") from exc
    if isinstance(data, Mapping) and "log_history" in data:
        return _rows_from_records(data["log_history"], f"{where} (log_history)")
    if isinstance(data, Mapping) and all(isinstance(v, list) for v in data.values()) and data:
        lengths = {len(v) for v in data.values()}
        if len(lengths) != 1:
            raise ValueError(f"{where} maps columns to lists of different lengths ({sorted(lengths)}); each "
                             f"column must have one value per row.")
        n = lengths.pop()
        return [{k: v[i] for k, v in data.items()} for i in range(n)]
    return _rows_from_records(data, where)


def _merge(rows: list[dict[str, Any]], where: str) -> dict[int, dict[str, float]]:
    """Rows keyed by step; rows that repeat a step are merged column by column (last value wins)."""
    out: dict[int, dict[str, float]] = {}
    if rows and not any("step" in r for r in rows):
        columns = sorted({k for r in rows for k in r})
        raise ValueError(f"{where} has no 'step' column (columns: {columns[:12]}). Name the column that "
                         f"holds the training step 'step'.")
    for i, row in enumerate(rows):
        if "step" not in row or row["step"] in (None, ""):
            continue  # e.g. HF's final summary entry, or a Lightning row of epoch-level values
        step = _number(row["step"])
        if not math.isfinite(step) or step != round(step) or step < 0:
            raise ValueError(f"{where}: row {i} has step {row['step']!r}; steps must be whole numbers >= 0.")
        merged = out.setdefault(int(step), {})
        for key, value in row.items():
            v = _number(value)
            if key != "step" and math.isfinite(v):
                merged[str(key)] = v
    return out


def read_metrics_table(folder: str | os.PathLike,
                       model_folders: Sequence[str | os.PathLike] = ()) -> tuple[Path | None, dict[int, dict[str, float]]]:
    """The training metrics saved in ``folder``, keyed by step.

    The first of :data:`METRICS_FILES` found in ``folder`` is read (``metrics.jsonl``,
    ``metrics.json``, ``metrics.csv``, ``trainer_state.json``); failing those, the
    ``trainer_state.json`` of each of ``model_folders`` (the HF Trainer's ``checkpoint-N/``),
    merged. Rows without a ``step`` are skipped; rows that repeat a step (Lightning's
    ``CSVLogger`` writes training and validation values on separate rows) are merged column by
    column, a later value replacing an earlier one; empty and non-numeric cells are ignored.

    Parameters
    ----------
    folder : str or os.PathLike
    model_folders : sequence of paths, optional
        Checkpoint folders that may hold their own ``trainer_state.json``.

    Returns
    -------
    (path or None, dict of int -> dict of str -> float)
        The file read (the first, when several ``trainer_state.json``) and the rows by step;
        ``(None, {})`` when there is no metrics file.

    Raises
    ------
    ValueError
        A metrics file that cannot be read, has no ``step`` column, or has a step that is not a
        whole number >= 0; the message names the file.
    """
    home = Path(folder)
    for name in METRICS_FILES:
        path = home / name
        if path.is_file():
            logger.info("metrics read from %s", path)
            return path, _merge(_read_rows(path), f"the metrics file {str(path)!r}")
    states = [Path(m) / "trainer_state.json" for m in model_folders if (Path(m) / "trainer_state.json").is_file()]
    if not states:
        return None, {}
    merged: dict[int, dict[str, float]] = {}
    for path in states:
        for step, row in _merge(_read_rows(path), f"the metrics file {str(path)!r}").items():
            merged.setdefault(step, {}).update(row)
    logger.info("metrics read from %d trainer_state.json files (first %s)", len(states), states[0])
    return states[0], merged


def check_accuracy(name: str, values: Any, where: str = "") -> np.ndarray:
    """``values`` as a float array, checked to be accuracies as fractions (NaN allowed).

    Raises ValueError when a finite value is above 1 (percentages) or below 0, with the fix.
    """
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    finite = arr[np.isfinite(arr)]
    if finite.size and finite.max() > 1:
        raise ValueError(f"{name}{where} must be a fraction in [0, 1]; got values up to {finite.max():g}, which "
                         f"look like percentages. Divide them by 100 (e.g. traj.with_metrics({name}=values / 100)), "
                         f"or write the column as fractions.")
    if finite.size and finite.min() < 0:
        raise ValueError(f"{name}{where} must be a fraction in [0, 1]; got {finite.min():g}. Check which column "
                         f"holds the accuracy.")
    return arr
