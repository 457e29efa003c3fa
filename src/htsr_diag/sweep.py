"""Hyperparameter sweeps: a grid of runs trained as batched ensembles, one table, three figures.

:func:`sweep` trains every point of a grid (e.g. learning rate x weight decay) x seeds with the
bundled trainer, grouping the runs that may share one batched model (same architecture, data
size and steps; members differ in ``seed``, ``lr``, ``weight_decay``, ...) into ensembles. For
each run it records the final accuracies, the Liu et al. (2022) phase
(:func:`~htsr_diag.phases.liu_phase`), the weight-only phase sequence of
:class:`~htsr_diag.phases.PhaseClassifier` (and its verdict at an early fraction of the
budget), the Notsawo et al. (2023) loss signature of the first steps
(:func:`~htsr_diag.signature.loss_signature`) and alpha and traps at the last checkpoint.

Layout of the output folder::

    OUT/sweep.json             the sweep's specification (a re-run must match it)
    OUT/ens_000/               one trainer ensemble folder (member_00/, ... ; ensemble.json)
    OUT/ens_000/early_loss.json  per member, the training loss at steps 0 .. signature_steps - 1
    OUT/ens_000/rows.json      the ensemble's table rows, written when it is finished
    OUT/ens_000/timings.json   seconds spent training, replaying the early loss, analysing
    OUT/table.csv, table.json  every run, in grid order
    OUT/liu_phases.png, weight_phases.png, signature.png

A killed sweep run again with the same arguments continues: finished ensembles (``rows.json``)
are read back, an unfinished one resumes from the trainer's own resume state.
"""

from __future__ import annotations

import csv
import itertools
import json
import logging
import math
import numbers
import os
import re
import time
import warnings
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ._json import jsonable
from ._results import Result

__all__ = ["sweep", "SweepResult", "parse_grid", "LIU_COLORS", "MEMBER_FIELDS", "TABLE_COLUMNS"]

logger = logging.getLogger(__name__)

#: TrainConfig fields in which members of one ensemble may differ (the trainer's rule).
MEMBER_FIELDS: tuple[str, ...] = ("seed", "data_seed", "lr", "weight_decay", "label_noise",
                                  "decoder_lr", "decoder_weight_decay")
#: Colours of the four Liu et al. phases in the figures.
LIU_COLORS: dict[str, str] = {"comprehension": "#1f77b4", "grokking": "#2ca02c",
                              "memorization": "#ff7f0e", "confusion": "#d62728"}
#: Columns of the table after the grid's own columns (see :func:`sweep`).
TABLE_COLUMNS: tuple[str, ...] = (
    "run", "ensemble", "member", "seed", "preset", "steps", "final_train_acc", "final_test_acc",
    "peak_test_acc", "liu_phase", "weight_phases", "weight_final", "weight_alarm", "early_step",
    "weight_early", "signature_steps", "activity", "mobility", "complexity", "alpha_end",
    "traps_end", "run_dir")
_SPEC_FORMAT = "htsr_diag.sweep/1"
_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"


# --------------------------------------------------------------------------- grid parsing
def parse_grid(spec: str) -> tuple[str, tuple[float, ...]]:
    """Parse one ``--grid`` item: ``NAME=a:b:n[:log|:lin]`` or ``NAME=v1,v2,...``.

    ``a:b:n`` is ``n`` values from ``a`` to ``b`` inclusive: log-spaced (``numpy.geomspace``)
    when both ends are > 0, linearly spaced (``numpy.linspace``) when either end is 0 or
    negative. ``:log`` / ``:lin`` force the spacing (``:log`` needs both ends > 0). A comma
    list gives the values as written; one value (``lr=1e-3``) is a list of one.

    Examples
    --------
    >>> parse_grid("lr=1e-4:1e-2:3")
    ('lr', (0.0001, 0.001, 0.01))
    >>> parse_grid("weight_decay=0:1:3")
    ('weight_decay', (0.0, 0.5, 1.0))
    >>> parse_grid("lr=1e-3,2e-3")
    ('lr', (0.001, 0.002))
    """
    if not isinstance(spec, str):
        raise TypeError(f"a grid item must be a string like 'lr=1e-4:1e-2:7'; got {type(spec).__name__}.")
    name, sep, body = spec.partition("=")
    name, body = name.strip(), body.strip()
    if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) or not body:
        raise ValueError(f"grid item {spec!r} must be NAME=a:b:n (n values from a to b; log-spaced when "
                         f"both are > 0) or NAME=v1,v2 (a list), e.g. 'lr=1e-4:1e-2:7' or "
                         f"'weight_decay=0,0.1,1'.")
    if ":" in body:
        parts = body.split(":")
        spacing = None
        if parts[-1].strip().lower() in ("log", "lin"):
            spacing = parts.pop().strip().lower()
        if len(parts) != 3 or not all(re.fullmatch(_NUM, p.strip()) for p in parts[:2]) \
                or not re.fullmatch(r"\d+", parts[2].strip()):
            raise ValueError(f"grid item {spec!r}: a range must be a:b:n with numbers a, b and a whole "
                             f"count n >= 1, optionally :log or :lin; e.g. '{name}=1e-4:1e-2:7'.")
        a, b, n = float(parts[0]), float(parts[1]), int(parts[2])
        if n < 1:
            raise ValueError(f"grid item {spec!r}: the count n must be >= 1; got {n}.")
        if spacing is None:
            spacing = "log" if a > 0 and b > 0 else "lin"
        if spacing == "log":
            if not (a > 0 and b > 0):
                raise ValueError(f"grid item {spec!r}: ':log' needs both ends > 0; got {a:g} and {b:g}. "
                                 f"Use ':lin' or start above 0.")
            values = np.geomspace(a, b, n) if n > 1 else np.array([a])
        else:
            values = np.linspace(a, b, n) if n > 1 else np.array([a])
        vals = tuple(float(f"{v:.6g}") for v in values)   # 1e-4:1e-2:3 -> exactly 0.001 in the middle
    else:
        items = [p.strip() for p in body.split(",")]
        bad = [p for p in items if not re.fullmatch(_NUM, p)]
        if bad:
            raise ValueError(f"grid item {spec!r}: {bad} are not numbers; write a list as "
                             f"'{name}=1e-3,2e-3' or a range as '{name}=a:b:n'.")
        vals = tuple(float(p) for p in items)
    if len(set(vals)) != len(vals):
        raise ValueError(f"grid item {spec!r} repeats a value ({list(vals)}); give each value once.")
    return name, vals


def _check_grid(grid: Any, base: Any) -> dict[str, tuple[Any, ...]]:
    """A grid as {field: values}, from a mapping or a sequence of 'NAME=...' strings."""
    from .train import TrainConfig

    if isinstance(grid, str):
        grid = [grid]
    if isinstance(grid, Mapping):
        items = [(str(k), tuple(np.atleast_1d(np.asarray(v, dtype=object)).tolist())) for k, v in grid.items()]
    elif isinstance(grid, Sequence):
        items = [parse_grid(g) for g in grid]
    else:
        raise TypeError(f"grid must be a mapping {{field: values}} or a list of 'NAME=a:b:n' strings; got "
                        f"{type(grid).__name__}.")
    if not items:
        raise ValueError("grid must name at least one field, e.g. {'lr': [1e-3, 1e-2]} or ['lr=1e-3,1e-2'].")
    fields = set(TrainConfig.__dataclass_fields__)
    out: dict[str, tuple[Any, ...]] = {}
    for name, vals in items:
        if name == "seed":
            raise ValueError("grid must not name 'seed'; pass the seeds as seeds=(0, 1, ...).")
        if name not in fields:
            raise ValueError(f"grid field {name!r} is not a TrainConfig field; use one of "
                             f"{sorted(fields - {'seed'})} (e.g. lr, weight_decay).")
        if name in out:
            raise ValueError(f"grid names {name!r} twice; give one range or list per field.")
        if not vals:
            raise ValueError(f"grid field {name!r} has no values.")
        cur = getattr(base, name)
        if isinstance(cur, numbers.Integral) and not isinstance(cur, bool):
            if any(float(v) != int(float(v)) for v in vals):
                raise ValueError(f"grid field {name!r} takes whole numbers; got {list(vals)}.")
            vals = tuple(int(float(v)) for v in vals)
        out[name] = tuple(vals)
    return out


def _check_seeds(seeds: Any) -> tuple[int, ...]:
    if isinstance(seeds, str):
        try:
            seeds = [int(s) for s in seeds.split(",") if s.strip()]
        except ValueError:
            raise ValueError(f"seeds must be whole numbers like '0,1'; got {seeds!r}.") from None
    if isinstance(seeds, numbers.Integral) and not isinstance(seeds, bool):
        seeds = [seeds]
    seeds = list(seeds)
    if not seeds or any(isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 0 for s in seeds):
        raise ValueError(f"seeds must be a non-empty list of whole numbers >= 0; got {seeds!r}.")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds repeat a value ({seeds}); give each seed once.")
    return tuple(int(s) for s in seeds)


# --------------------------------------------------------------------------- result
@dataclass(frozen=True)
class SweepResult(Result):
    """What :func:`sweep` wrote.

    Attributes
    ----------
    out_dir : Path
    rows : list of dict
        One per run, in grid order (grid fields, then :data:`TABLE_COLUMNS`).
    grid : dict of str -> tuple
        The grid's fields and values.
    seeds : tuple of int
    table_csv, table_json : Path
    figures : dict of str -> Path
        ``"liu"``, ``"weights"``, ``"signature"`` (empty with ``figures=False``).
    spearman : float
        Spearman's rho of the early loss activity against the final test accuracy over the
        runs (NaN with fewer than 3 runs with finite values or a constant column).
    timings : list of dict
        Per ensemble: seconds training, replaying the early loss and analysing (this call's
        work only; 0 for ensembles read back from a previous call).
    """

    out_dir: Path
    rows: list[dict[str, Any]]
    grid: dict[str, tuple[Any, ...]]
    seeds: tuple[int, ...]
    table_csv: Path
    table_json: Path
    figures: dict[str, Path] = field(default_factory=dict)
    spearman: float = math.nan
    timings: list[dict[str, Any]] = field(default_factory=list)

    def column(self, name: str) -> np.ndarray:
        """One column of the table as an array (object dtype for strings)."""
        if self.rows and name not in self.rows[0]:
            raise KeyError(f"no column {name!r}; columns are {list(self.rows[0])}.")
        vals = [r[name] for r in self.rows]
        try:
            return np.asarray(vals, dtype=np.float64)
        except (TypeError, ValueError):
            return np.asarray(vals, dtype=object)

    def to_frame(self):
        """The table as a pandas DataFrame (pandas imported here)."""
        import pandas as pd

        return pd.DataFrame(self.rows)

    def to_dict(self) -> dict[str, Any]:
        return jsonable({"out_dir": str(self.out_dir), "rows": self.rows, "grid": self.grid,
                         "seeds": list(self.seeds), "table_csv": str(self.table_csv),
                         "table_json": str(self.table_json),
                         "figures": {k: str(v) for k, v in self.figures.items()},
                         "spearman": self.spearman, "timings": self.timings})


# --------------------------------------------------------------------------- the work of one ensemble
def _atomic_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(jsonable(obj), indent=1, allow_nan=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _early_losses(configs: list[Any], n: int, device: Any) -> np.ndarray:
    """Training loss (on each member's whole training set, the loss the trainer logs) at steps
    0 .. n-1, replaying the ensemble's first steps with the trainer's engine (same seeds, same
    batches, so the same trajectory as the trained run on the same device). Shape (R, n)."""
    import torch

    from .train.trainer import _make_engine, resolve_device

    dev = resolve_device(device if device is not None else configs[0].device)
    out = np.empty((len(configs), n), dtype=np.float64)
    with torch.no_grad():
        eng = _make_engine(configs, dev, configs[0].torch_dtype)
        idx = eng.batch_indices(0, max(n - 1, 1))
        for i in range(n):
            out[:, i] = _train_loss(eng)
            if i < n - 1:
                eng.step_fn(idx[i])
                eng.step += 1
    return out


def _train_loss(eng: Any) -> np.ndarray:
    import torch

    if hasattr(eng, "models"):  # module engine (modular, Liu toy): cross-entropy
        vals = [torch.nn.functional.cross_entropy(m(d[0]), d[1]).item() for m, d in zip(eng.models, eng.data)]
        return np.asarray(vals, dtype=np.float64)
    from .train.trainer import _forward  # the MLP engine: MSE on one-hot, as evaluate()

    out = _forward(eng.layout.views(eng.params), eng.x_train)
    return ((out - eng.t_train) ** 2).mean(dim=(1, 2)).double().cpu().numpy()


def _compress(steps: np.ndarray, labels: Sequence[str]) -> str:
    """'pre-grokking@0>grokking@1585': each label where it starts."""
    parts, prev = [], None
    for s, lab in zip(steps, labels):
        if lab != prev:
            parts.append(f"{lab}@{int(s)}")
            prev = lab
    return ">".join(parts)


def _run_group(task: dict[str, Any]) -> dict[str, Any]:
    """Train, replay and analyse one ensemble; returns {"rows": [...], "timings": {...}}.

    A module-level function of plain data, so any executor (process pool, dask) can run it.
    """
    import torch

    from .exceptions import SmallSpectrumWarning
    from .phases import PhaseClassifier, liu_phase
    from .phases.labels import ANTI
    from .signature import loss_signature
    from .train import TrainConfig, read_metrics, train_ensemble
    from .trajectory import analyze_checkpoints

    folder = Path(task["folder"])
    done = folder / "rows.json"
    if done.is_file():
        return {"rows": json.loads(done.read_text())["rows"],
                "timings": {"ensemble": task["index"], "train_s": 0.0, "replay_s": 0.0, "analysis_s": 0.0,
                            "cached": True}}
    configs = [TrainConfig.from_dict(c) for c in task["configs"]]
    threads_before = torch.get_num_threads()
    if task["num_threads"] is not None:
        torch.set_num_threads(task["num_threads"])
    try:
        t0 = time.perf_counter()
        dirs = train_ensemble(configs, folder, device=task["device"], progress=False)
        t1 = time.perf_counter()
        n_sig = task["signature_steps"]
        loss_path = folder / "early_loss.json"
        if loss_path.is_file():
            early = np.asarray(json.loads(loss_path.read_text())["losses"], dtype=np.float64)
        else:
            early = _early_losses(configs, n_sig, task["device"])
            _atomic_json(loss_path, {"steps": list(range(n_sig)), "losses": early.tolist(),
                                     "loss": "training loss on the member's whole training set"})
        t2 = time.perf_counter()
        clf = PhaseClassifier(**task["classifier"])
        rows = []
        for r, (cfg, d, run_index) in enumerate(zip(configs, dirs, task["runs"])):
            with warnings.catch_warnings():  # the small heads (10 or 97 outputs) are expected to be small
                warnings.simplefilter("ignore", SmallSpectrumWarning)
                traj = analyze_checkpoints(d, rng=task["rng"], num_threads=task["num_threads"], progress=False)
            m = read_metrics(d)
            steps = np.array([row["step"] for row in m], dtype=np.int64)
            tr = np.array([row["train_acc"] for row in m], dtype=np.float64)
            te = np.array([row["test_acc"] for row in m], dtype=np.float64)
            labels = [str(x) for x in clf.predict(traj)]
            early_steps = traj.steps[traj.steps <= task["early_fraction"] * cfg.steps]
            k = len(early_steps) - 1
            layers = clf.analysed_layers(traj)
            last = traj.reports[-1]
            alpha = [last.layer(n).alpha for n in layers]
            traps = [last.layer(n).n_traps for n in layers]
            sig = loss_signature(early[r], detrend=task["detrend"])
            row = {k_: getattr(cfg, k_) for k_ in task["grid_fields"]}
            row.update({
                "run": run_index, "ensemble": task["index"], "member": r, "seed": cfg.seed,
                "preset": cfg.preset, "steps": cfg.steps,
                "final_train_acc": float(tr[-1]), "final_test_acc": float(te[-1]),
                "peak_test_acc": float(te.max()),
                "liu_phase": liu_phase(steps, tr, te, threshold=task["liu_threshold"], gap=task["liu_gap"]),
                "weight_phases": _compress(traj.steps, labels), "weight_final": labels[-1],
                "weight_alarm": bool(any(lab == ANTI for lab in labels)),
                "early_step": int(early_steps[-1]) if k >= 0 else -1,
                "weight_early": labels[k] if k >= 0 else "unknown",
                "signature_steps": n_sig, "activity": sig.activity, "mobility": sig.mobility,
                "complexity": sig.complexity,
                "alpha_end": float(np.nanmean(alpha)) if np.isfinite(alpha).any() else math.nan,
                "traps_end": int(np.nansum(traps)),
                "run_dir": str(Path(d).relative_to(Path(task["out"]))),
            })
            rows.append(row)
        t3 = time.perf_counter()
    finally:
        torch.set_num_threads(threads_before)
    _atomic_json(done, {"rows": rows})
    timings = {"ensemble": task["index"], "members": len(configs), "train_s": t1 - t0, "replay_s": t2 - t1,
               "analysis_s": t3 - t2, "cached": False}
    _atomic_json(folder / "timings.json", timings)
    return {"rows": rows, "timings": timings}


# --------------------------------------------------------------------------- public API
def sweep(preset: Any = "fast", grid: Any = None, seeds: Any = (0,), out: str | os.PathLike = "runs/sweep", *,
          steps: int | None = None, overrides: Mapping[str, Any] | None = None,
          max_ensemble: int | None = None, executor: Executor | None = None, device: str | None = None,
          signature_steps: int = 200, detrend: str | None = "linear", early_fraction: float = 0.1,
          liu_threshold: float = 0.9, liu_gap: float = 1000, classifier: Mapping[str, Any] | None = None,
          rng: int = 0, num_threads: int | None = 1, figures: bool = True) -> SweepResult:
    """Train a hyperparameter grid x seeds as batched ensembles and tabulate every run.

    Parameters
    ----------
    preset : str or TrainConfig, default "fast"
        The trainer preset (``htsr_diag.train.PRESETS``) or a config every run starts from.
    grid : mapping {field: values} or list of str
        TrainConfig fields and their values, e.g. ``{"lr": [1e-3, 1e-2], "weight_decay": [0, 1]}``
        or ``["lr=1e-4:1e-2:7", "weight_decay=0:1:6"]`` (:func:`parse_grid`: ``a:b:n`` is
        log-spaced when both ends are > 0, else linear). The runs are the product of the
        grid with ``seeds``.
    seeds : sequence of int or "0,1", default (0,)
    out : path, default "runs/sweep"
        Output folder. A second call with the same specification resumes; a different one
        raises ValueError.
    steps : int, optional
        Override the preset's number of steps.
    overrides : mapping, optional
        Other TrainConfig changes for every run (e.g. ``{"checkpoints_per_decade": 10}``).
    max_ensemble : int, optional
        Most runs per ensemble (None: every run that can share one). Smaller ensembles give an
        executor more pieces to spread.
    executor : concurrent.futures.Executor, optional
        Runs the ensembles in parallel (``ProcessPoolExecutor`` with the "spawn" context, a
        dask ``client.get_executor()``); None: one after the other here. The table is the same.
    device : {"auto", "cpu", "cuda"}, optional
        Training device (default: the preset's, "auto" = CUDA when available).
    signature_steps : int, default 200
        The loss signature reads the training loss at steps ``0 .. signature_steps - 1``
        (the loss on each run's whole training set, recorded by replaying the first steps).
    detrend : {"linear", "constant", None}, default "linear"
        Passed to :func:`~htsr_diag.signature.loss_signature`.
    early_fraction : float in (0, 1], default 0.1
        ``weight_early`` is the causal weight-only label at the last checkpoint with
        ``step <= early_fraction * steps``.
    liu_threshold, liu_gap
        ``threshold`` and ``gap`` of :func:`~htsr_diag.phases.liu_phase`.
    classifier : mapping, optional
        Keyword arguments of :class:`~htsr_diag.phases.PhaseClassifier` (default
        ``{"causal": True}``: each label uses only the checkpoints up to it).
    rng : int, default 0
        Seed of the analysis's shuffles (:func:`~htsr_diag.trajectory.analyze_checkpoints`).
    num_threads : int or None, default 1
        Torch threads while an ensemble trains and is analysed (fixed so that every number is
        the same whichever process runs it); None keeps the process's setting.
    figures : bool, default True
        Draw ``liu_phases.png``, ``weight_phases.png`` and ``signature.png`` (matplotlib).

    Returns
    -------
    SweepResult

    Examples
    --------
    Skipped: trains eight models for 3,000 steps each.

    >>> res = sweep("modular", {"lr": [1e-3, 3e-3], "weight_decay": [0.0, 1.0]}, seeds=(0, 1),
    ...             out="runs/sweep_mod", steps=3000)        # doctest: +SKIP
    >>> res.spearman                                          # doctest: +SKIP
    """
    from .phases import PhaseClassifier
    from .train import TrainConfig, get_preset

    # ---- validate everything before any training
    if isinstance(preset, TrainConfig):
        base = preset
    elif isinstance(preset, str):
        base = get_preset(preset)
    else:
        raise TypeError(f"preset must be a preset name (e.g. 'fast') or a TrainConfig; got {type(preset).__name__}.")
    if grid is None:
        raise ValueError("grid is required, e.g. grid={'lr': [1e-3, 1e-2]} or ['lr=1e-4:1e-2:7'].")
    changes = dict(overrides or {})
    if "seed" in changes:
        raise ValueError("overrides must not set 'seed'; pass seeds=(...).")
    if steps is not None:
        changes["steps"] = steps
    if device is not None:
        changes["device"] = device
    base = base.replace(**changes) if changes else base
    grid_d = _check_grid(grid, base)
    seeds_t = _check_seeds(seeds)
    if max_ensemble is not None and (isinstance(max_ensemble, bool) or not isinstance(max_ensemble, numbers.Integral)
                                     or max_ensemble < 1):
        raise ValueError(f"max_ensemble must be a whole number >= 1 or None; got {max_ensemble!r}.")
    if executor is not None and not hasattr(executor, "submit"):
        raise TypeError(f"executor must be a concurrent.futures.Executor (or have .submit); got "
                        f"{type(executor).__name__}.")
    if isinstance(signature_steps, bool) or not isinstance(signature_steps, numbers.Integral) \
            or not 8 <= signature_steps <= base.steps + 1:
        raise ValueError(f"signature_steps must be a whole number from 8 to steps + 1 ({base.steps + 1}); got "
                         f"{signature_steps!r}.")
    if not isinstance(early_fraction, numbers.Real) or not 0 < early_fraction <= 1:
        raise ValueError(f"early_fraction must be in (0, 1]; got {early_fraction!r}.")
    clf_kw = {"causal": True} if classifier is None else dict(classifier)
    PhaseClassifier(**clf_kw)  # bad keywords fail here, not in a worker
    out_dir = Path(out)

    # ---- runs and ensembles
    names = list(grid_d)
    configs = []
    for point in itertools.product(*grid_d.values()):
        for s in seeds_t:
            configs.append(base.replace(seed=s, **dict(zip(names, point))))  # validates the values
    groups: dict[tuple, list[int]] = {}
    for i, c in enumerate(configs):
        d = c.to_dict()
        key = tuple((k, repr(v)) for k, v in sorted(d.items()) if k not in MEMBER_FIELDS)
        groups.setdefault(key, []).append(i)
    chunks: list[list[int]] = []
    for idx in groups.values():
        size = max_ensemble or len(idx)
        chunks.extend(idx[j:j + size] for j in range(0, len(idx), size))

    spec = {"format": _SPEC_FORMAT, "base": base.to_dict(), "grid": {k: list(v) for k, v in grid_d.items()},
            "seeds": list(seeds_t), "ensembles": chunks, "signature_steps": int(signature_steps),
            "detrend": detrend, "early_fraction": float(early_fraction), "liu_threshold": float(liu_threshold),
            "liu_gap": float(liu_gap), "classifier": clf_kw, "rng": int(rng)}
    out_dir.mkdir(parents=True, exist_ok=True)
    spec_path = out_dir / "sweep.json"
    if spec_path.is_file():
        old = json.loads(spec_path.read_text())
        old_cmp = {k: v for k, v in old.items() if k != "base"}
        new_cmp = json.loads(json.dumps(jsonable({k: v for k, v in spec.items() if k != "base"})))
        base_diff = {k for k, v in jsonable(spec["base"]).items() if k != "device" and old["base"].get(k) != v}
        if old_cmp != new_cmp or base_diff:
            diff = sorted({k for k in new_cmp if old_cmp.get(k) != new_cmp[k]} | base_diff)
            raise ValueError(f"out {str(out_dir)!r} holds a sweep with another specification (differs in {diff}); "
                             f"choose a new folder, or repeat the original arguments to resume it.")
    _atomic_json(spec_path, spec)

    tasks = [{"index": e, "folder": str(out_dir / f"ens_{e:03d}"), "out": str(out_dir),
              "configs": [configs[i].to_dict() for i in idx], "runs": idx, "grid_fields": names,
              "device": device, "signature_steps": int(signature_steps), "detrend": detrend,
              "early_fraction": float(early_fraction), "liu_threshold": float(liu_threshold),
              "liu_gap": float(liu_gap), "classifier": clf_kw, "rng": int(rng), "num_threads": num_threads}
             for e, idx in enumerate(chunks)]
    logger.info("sweep: %d runs in %d ensembles -> %s", len(configs), len(tasks), out_dir)
    if executor is None:
        results = [_run_group(t) for t in tasks]
    else:
        futures = [executor.submit(_run_group, t) for t in tasks]
        results = [f.result() for f in futures]
    rows = sorted((r for res in results for r in res["rows"]), key=lambda r: r["run"])
    timings = [res["timings"] for res in results]
    return _finish(out_dir, rows, grid_d, seeds_t, timings, figures)


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    from scipy.stats import spearmanr

    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3 or np.ptp(x[ok]) == 0 or np.ptp(y[ok]) == 0:
        return math.nan
    return float(spearmanr(x[ok], y[ok]).statistic)


def _finish(out_dir: Path, rows: list[dict], grid: dict, seeds: tuple[int, ...], timings: list[dict],
            figures: bool) -> SweepResult:
    csv_path, json_path = out_dir / "table.csv", out_dir / "table.json"
    cols = list(rows[0])
    tmp = csv_path.with_name(f".{csv_path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in r.items()})
    os.replace(tmp, csv_path)
    _atomic_json(json_path, {"grid": {k: list(v) for k, v in grid.items()}, "seeds": list(seeds), "rows": rows})
    act = np.array([r["activity"] for r in rows], dtype=np.float64)
    acc = np.array([r["final_test_acc"] for r in rows], dtype=np.float64)
    rho = _spearman(act, acc)
    figs: dict[str, Path] = {}
    if figures:
        figs = _draw(out_dir, rows, grid, seeds, rho)
    return SweepResult(out_dir=out_dir, rows=rows, grid=dict(grid), seeds=seeds, table_csv=csv_path,
                       table_json=json_path, figures=figs, spearman=rho, timings=timings)


# --------------------------------------------------------------------------- figures
def _fmt(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def plot_grid(rows: Sequence[Mapping[str, Any]], grid: Mapping[str, Sequence[Any]], column: str,
              colors: Mapping[str, str], *, seeds: Sequence[int], mark: str | None = None, ax: Any = None):
    """The grid's first two fields as a table of cells, each cell split into one strip per
    seed coloured by ``column`` (a hatched strip where the boolean column ``mark`` is true).
    A one-field grid puts the seeds on the y axis. Returns the Axes."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch, Rectangle

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4.5))
    names = list(grid)
    xn = names[0]
    yn = names[1] if len(names) > 1 else None
    xs = list(grid[xn])
    ys = list(grid[yn]) if yn else [None]
    ns = len(seeds)
    for r in rows:
        i = xs.index(r[xn])
        j = ys.index(r[yn]) if yn else 0
        k = list(seeds).index(r["seed"])
        lab = str(r[column])
        hatch = "xx" if mark and r.get(mark) else None
        ax.add_patch(Rectangle((i - 0.45 + 0.9 * k / ns, j - 0.45), 0.9 / ns, 0.9,
                               facecolor=colors.get(lab, "#ffffff"), edgecolor="k", lw=0.5, hatch=hatch))
    ax.set_xlim(-0.6, len(xs) - 0.4)
    ax.set_ylim(-0.6, len(ys) - 0.4)
    ax.set_xticks(range(len(xs)), [_fmt(v) for v in xs], rotation=45)
    ax.set_yticks(range(len(ys)), [_fmt(v) for v in ys] if yn else [""])
    ax.set_xlabel(xn)
    ax.set_ylabel(yn or "")
    present = sorted({str(r[column]) for r in rows}, key=lambda s: list(colors).index(s) if s in colors else 99)
    handles = [Patch(facecolor=colors.get(s, "#ffffff"), edgecolor="k", label=s) for s in present]
    if mark and any(r.get(mark) for r in rows):
        handles.append(Patch(facecolor="white", edgecolor="k", hatch="xx", label="anti-grokking alarm"))
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return ax


def _draw(out_dir: Path, rows: list[dict], grid: dict, seeds: tuple[int, ...], rho: float) -> dict[str, Path]:
    from .plot import PHASE_COLORS, use_agg

    use_agg()
    import matplotlib.pyplot as plt

    seeds_txt = f"{len(seeds)} seed(s) per cell, left to right {list(seeds)}"
    paths = {}
    fig, ax = plt.subplots(figsize=(7, 4.8))
    plot_grid(rows, grid, "liu_phase", LIU_COLORS, seeds=seeds, ax=ax)
    ax.set_title(f"Liu phase (accuracy curves); {seeds_txt}", fontsize=9)
    paths["liu"] = out_dir / "liu_phases.png"
    fig.savefig(paths["liu"], dpi=110, bbox_inches="tight")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4.8))
    colors = dict(PHASE_COLORS)
    colors.setdefault("unknown", "#ffffff")
    plot_grid(rows, grid, "weight_final", colors, seeds=seeds, mark="weight_alarm", ax=ax)
    ax.set_title(f"weight-only verdict at the end (hatched: anti-grokking alarm fired); {seeds_txt}", fontsize=9)
    paths["weights"] = out_dir / "weight_phases.png"
    fig.savefig(paths["weights"], dpi=110, bbox_inches="tight")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4.5))
    act = np.array([r["activity"] for r in rows], dtype=np.float64)
    acc = np.array([r["final_test_acc"] for r in rows], dtype=np.float64)
    for ph in LIU_COLORS:
        sel = np.array([r["liu_phase"] == ph for r in rows])
        if sel.any():
            ax.scatter(act[sel], acc[sel], c=LIU_COLORS[ph], label=ph, edgecolors="k", linewidths=0.4)
    fin = act[np.isfinite(act)]
    if fin.size and np.all(fin > 0) and fin.max() > 10 * fin.min():  # log axis when it spans a decade
        ax.set_xscale("log")
    n_sig = rows[0]["signature_steps"]
    ax.set_xlabel(f"Hjorth activity of the training loss, steps 0-{n_sig - 1}")
    ax.set_ylabel("final test accuracy")
    ax.set_title(f"Spearman rho = {rho:.3f} (n = {len(rows)} runs)")
    ax.legend(fontsize=8)
    paths["signature"] = out_dir / "signature.png"
    fig.savefig(paths["signature"], dpi=110, bbox_inches="tight")
    plt.close(fig)
    return paths
