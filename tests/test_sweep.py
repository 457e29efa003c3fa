"""sweep: a tiny 2 x 2 grid end to end (table, figures, resume after a kill, executor == serial),
grid parsing and every error message."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest

import htsr_diag
from htsr_diag import LIU_PHASES
from htsr_diag.sweep import TABLE_COLUMNS, SweepResult, parse_grid, sweep
from htsr_diag.train import read_metrics

pytestmark = pytest.mark.usefixtures("one_thread")

#: A 2 x 2 grid of the fast MNIST preset for 60 steps: seconds on one CPU thread.
TINY = dict(steps=60, signature_steps=20, overrides={"checkpoints_per_decade": 5, "data_dir": "bundled"})
GRID = {"lr": [1e-3, 5e-3], "weight_decay": [0.0, 0.1]}


def same_rows(a: list[dict], b: list[dict]) -> bool:
    """Equal tables, NaN equal to NaN (floats compared exactly: the runs are deterministic)."""
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


@pytest.fixture(scope="module")
def serial(tmp_path_factory) -> SweepResult:
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return sweep("fast", GRID, seeds=(0,), out=tmp_path_factory.mktemp("serial") / "sw", max_ensemble=2, **TINY)
    finally:
        torch.set_num_threads(n)


# --------------------------------------------------------------------------- grid parsing
def test_parse_grid_ranges_and_lists():
    # log-spaced when both ends > 0 (numpy.geomspace), linear otherwise (numpy.linspace)
    name, vals = parse_grid("lr=1e-4:1e-2:7")
    assert name == "lr" and np.allclose(vals, np.geomspace(1e-4, 1e-2, 7), rtol=1e-6)
    assert parse_grid("weight_decay=0:1:6") == ("weight_decay", (0.0, 0.2, 0.4, 0.6, 0.8, 1.0))
    assert parse_grid("lr=1e-3:3e-3:3:lin") == ("lr", (0.001, 0.002, 0.003))
    assert parse_grid(" lr = 1e-3, 2e-3 ") == ("lr", (0.001, 0.002))
    assert parse_grid("lr=5e-3") == ("lr", (0.005,))
    assert parse_grid("lr=1e-3:1e-1:1") == ("lr", (0.001,))


@pytest.mark.parametrize("spec, match", [
    ("lr", r"must be NAME=a:b:n"),
    ("=1,2", r"must be NAME=a:b:n"),
    ("lr=", r"must be NAME=a:b:n"),
    ("lr=1e-4:1e-2", r"a range must be a:b:n"),
    ("lr=1e-4:1e-2:2.5", r"a range must be a:b:n"),
    ("lr=a:b:3", r"a range must be a:b:n"),
    ("lr=1e-4:1e-2:0", r"count n must be >= 1"),
    ("weight_decay=0:1:3:log", r"':log' needs both ends > 0"),
    ("lr=1e-3,abc", r"\['abc'\] are not numbers"),
    ("lr=1e-3,1e-3", r"repeats a value"),
])
def test_parse_grid_errors(spec, match):
    with pytest.raises(ValueError, match=match):
        parse_grid(spec)


def test_parse_grid_type_error():
    with pytest.raises(TypeError, match="must be a string"):
        parse_grid(3)


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(grid={"learning_rate": [1e-3]}), ValueError, r"'learning_rate' is not a TrainConfig field"),
    (dict(grid={"seed": [1, 2]}), ValueError, r"must not name 'seed'"),
    (dict(grid=None), ValueError, r"grid is required"),
    (dict(grid={}), ValueError, r"at least one field"),
    (dict(grid=42), TypeError, r"grid must be a mapping"),
    (dict(grid={"lr": [1e-3]}, seeds=[]), ValueError, r"seeds must be a non-empty list"),
    (dict(grid={"lr": [1e-3]}, seeds="0,x"), ValueError, r"seeds must be whole numbers"),
    (dict(grid={"lr": [1e-3]}, seeds=(1, 1)), ValueError, r"seeds repeat a value"),
    (dict(grid={"lr": [1e-3]}, preset="nope"), ValueError, r"preset must be one of"),
    (dict(grid={"lr": [1e-3]}, preset=3), TypeError, r"preset must be a preset name"),
    (dict(grid={"n_train_per_class": [10.5]}), ValueError, r"takes whole numbers"),
    (dict(grid={"lr": [1e-3]}, max_ensemble=0), ValueError, r"max_ensemble must be a whole number >= 1"),
    (dict(grid={"lr": [1e-3]}, signature_steps=4), ValueError, r"signature_steps must be a whole number from 8"),
    (dict(grid={"lr": [1e-3]}, early_fraction=0), ValueError, r"early_fraction must be in \(0, 1\]"),
    (dict(grid={"lr": [1e-3]}, executor=object()), TypeError, r"executor must be a concurrent.futures"),
    (dict(grid={"lr": [1e-3]}, classifier={"bogus": 1}), TypeError, r"bogus"),
    (dict(grid={"lr": [1e-3]}, overrides={"seed": 3}), ValueError, r"overrides must not set 'seed'"),
])
def test_sweep_bad_arguments(tmp_path, kwargs, exc, match):
    kw = dict(preset="fast", out=tmp_path / "sw", steps=60, signature_steps=20)
    kw.update(kwargs)
    with pytest.raises(exc, match=match):
        sweep(**kw)
    assert not (tmp_path / "sw" / "ens_000").exists()   # nothing trained


def test_exports():
    assert htsr_diag.sweep is sweep and "sweep" in htsr_diag.__all__ and "SweepResult" in htsr_diag.__all__


# --------------------------------------------------------------------------- end to end
def test_table_and_figures(serial):
    res = serial
    assert len(res.rows) == 4 and len(res.timings) == 2           # 4 runs, 2 ensembles of 2
    assert [(r["lr"], r["weight_decay"]) for r in res.rows] == [(1e-3, 0.0), (1e-3, 0.1), (5e-3, 0.0), (5e-3, 0.1)]
    for r in res.rows:
        assert list(r) == ["lr", "weight_decay", *TABLE_COLUMNS]
        assert r["liu_phase"] in LIU_PHASES
        assert r["weight_final"] in ("pre-grokking", "grokking", "anti-grokking")
        assert r["weight_phases"].startswith(f"{r['weight_final']}@") or ">" in r["weight_phases"]
        assert r["signature_steps"] == 20 and r["activity"] > 0 and math.isfinite(r["alpha_end"])
        m = read_metrics(res.out_dir / r["run_dir"])               # the table is the run folder's last row
        assert r["final_test_acc"] == m[-1]["test_acc"] and r["final_train_acc"] == m[-1]["train_acc"]
        assert r["steps"] == m[-1]["step"] == 60
    # table files
    lines = res.table_csv.read_text().splitlines()
    assert len(lines) == 5 and lines[0].startswith("lr,weight_decay,run,")
    assert same_rows(json.loads(res.table_json.read_text())["rows"], res.rows)
    for path in res.figures.values():                              # three PNGs
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    assert set(res.figures) == {"liu", "weights", "signature"}
    # Spearman's rho against an independent computation (ranks, then Pearson; no ties here)
    act, acc = res.column("activity"), res.column("final_test_acc")
    ra, rb = np.argsort(np.argsort(act)), np.argsort(np.argsort(acc))
    assert res.spearman == pytest.approx(np.corrcoef(ra, rb)[0, 1], abs=1e-12)


def test_early_loss_replays_the_trained_run(serial):
    """The replayed loss at steps 0..19 equals the trainer's own train_loss at its checkpoints
    below step 20 (steps 0, 1, 2, ... 16 at 5 per decade): the replay is the same trajectory."""
    for e in range(2):
        early = np.array(json.loads((serial.out_dir / f"ens_{e:03d}" / "early_loss.json").read_text())["losses"])
        for r in range(2):
            m = {row["step"]: row["train_loss"] for row in read_metrics(serial.out_dir / f"ens_{e:03d}" / f"member_{r:02d}")}
            logged = [s for s in m if s < 20]
            assert len(logged) >= 4
            np.testing.assert_allclose(early[r, logged], [m[s] for s in logged], rtol=1e-6)


def test_resume_after_kill(serial, tmp_path, monkeypatch):
    """Killed after the first ensemble (and once inside the second's training): the re-run
    continues and writes the same table as the uninterrupted sweep; the first is not retrained."""
    import htsr_diag.train as tr

    sw = sys.modules["htsr_diag.sweep"]   # the module (htsr_diag.sweep is the function)

    real_group, real_train = sw._run_group, tr.train_ensemble
    calls = []

    def dying_group(task):
        calls.append(task["index"])
        if task["index"] == 1:
            raise KeyboardInterrupt("simulated kill before the second ensemble")
        return real_group(task)

    monkeypatch.setattr(sw, "_run_group", dying_group)
    with pytest.raises(KeyboardInterrupt):
        sweep("fast", GRID, seeds=(0,), out=tmp_path / "sw", max_ensemble=2, **TINY)
    assert (tmp_path / "sw" / "ens_000" / "rows.json").is_file() and not (tmp_path / "sw" / "table.csv").exists()

    # second attempt: killed inside the second ensemble's training at step 25
    def dying_train(*a, **kw):
        def boom(step):
            if step == 25:
                raise KeyboardInterrupt("simulated kill mid-training")
        return real_train(*a, callback=boom, **kw)

    monkeypatch.setattr(sw, "_run_group", real_group)
    monkeypatch.setattr(tr, "train_ensemble", dying_train)
    with pytest.raises(KeyboardInterrupt):
        sweep("fast", GRID, seeds=(0,), out=tmp_path / "sw", max_ensemble=2, **TINY)
    assert not (tmp_path / "sw" / "ens_001" / "rows.json").exists()
    monkeypatch.setattr(tr, "train_ensemble", real_train)
    res = sweep("fast", GRID, seeds=(0,), out=tmp_path / "sw", max_ensemble=2, **TINY)
    assert [t["cached"] for t in res.timings] == [True, False]
    assert same_rows(res.rows, serial.rows)
    # and a third call only reads the table back
    again = sweep("fast", GRID, seeds=(0,), out=tmp_path / "sw", max_ensemble=2, **TINY)
    assert [t["cached"] for t in again.timings] == [True, True] and same_rows(again.rows, serial.rows)


def test_other_spec_in_same_folder_refused(serial):
    with pytest.raises(ValueError, match=r"holds a sweep with another specification \(differs in \['ensembles', 'grid'\]\)"):
        sweep("fast", {"lr": [1e-3], "weight_decay": [0.0]}, seeds=(0,), out=serial.out_dir, max_ensemble=2, **TINY)


def test_executor_equals_serial(serial, tmp_path):
    """Two ensembles on a dask LocalCluster (two worker processes) give the serial table."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") \
            as cluster, distributed.Client(cluster) as client:
        res = sweep("fast", GRID, seeds=(0,), out=tmp_path / "sw", max_ensemble=2,
                    executor=client.get_executor(), **TINY)
    assert [t["cached"] for t in res.timings] == [False, False]
    assert same_rows(res.rows, serial.rows)


def test_cli_sweep(tmp_path, capsys):
    from htsr_diag.cli import main

    code = main(["sweep", "--preset", "fast", "--grid", "lr=1e-3,5e-3", "--seeds", "0", "--steps", "30",
                 "--set", "checkpoints_per_decade=5", "--signature-steps", "10", "--no-figures",
                 "--out", str(tmp_path / "cli")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "2 runs in 1 ensemble(s)" in out and (tmp_path / "cli" / "table.csv").is_file()
    assert not (tmp_path / "cli" / "liu_phases.png").exists()
    assert json.loads((tmp_path / "cli" / "sweep.json").read_text())["base"]["checkpoints_per_decade"] == 5
    code = main(["sweep", "--grid", "lr=1e-3", "--set", "learning=1", "--out", str(tmp_path / "bad")])
    assert code == 1 and "'learning' is not a TrainConfig field" in capsys.readouterr().err


@pytest.mark.parametrize("argv, match", [
    (["--grid", "lr=1e-4:1e-2"], "a range must be a:b:n"),
    (["--grid", "lr=1e-3", "--seeds", "0,a"], "seeds must be whole numbers"),
    (["--grid", "lr=1e-3", "--steps", "0"], "must be a positive whole number"),
])
def test_cli_sweep_bad_arguments(tmp_path, capsys, argv, match):
    from htsr_diag.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["sweep", "--out", str(tmp_path / "x"), *argv])
    assert exc.value.code == 2 and match in capsys.readouterr().err
