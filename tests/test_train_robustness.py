"""Trainer robustness by fault injection (issue #13) and the recorded environment (issue #14).

Each test injects one fault seen in the field (a missing config.json with changed options, two
writers on one folder, a damaged metrics line, silently wrong options, a damaged config or
pickle) and checks the trainer refuses it with a message naming the file and the fix, or sets
the damaged data aside with a warning. The MNIST MLP and the module engine (modular, Liu toy)
share the run-folder code, and both are exercised.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import json
import logging
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import numpy
import pytest
import torch

from conftest import Kill, final_checkpoint, killer, tiny_config
from htsr_diag.exceptions import CheckpointError
from htsr_diag.train import (
    CorruptMetricsWarning,
    RunLockedError,
    list_checkpoints,
    load_checkpoint,
    read_metrics,
    train,
    train_ensemble,
)
from htsr_diag.train import cli as train_cli
from htsr_diag.train import trainer as T

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

ROOT = Path(__file__).resolve().parents[1]
ANSI = "\x1b"

# Tiny configs (tests/conftest.py::tiny_config).
SMALL, MOD, LIU = tiny_config("mnist"), tiny_config("modular"), tiny_config("liu-toy")
TASKS = pytest.mark.parametrize("cfg", [SMALL, MOD, LIU], ids=["mnist", "modular", "liu_toy"])


def _rows(run):
    return [{k: v for k, v in r.items() if k != "wall_time"} for r in read_metrics(run)]


@pytest.fixture
def cli_logging():
    """Remove the stderr handler ``htsr_diag.cli.main`` installs (it would outlive capsys)."""
    yield
    root = logging.getLogger("htsr_diag")
    for h in [h for h in root.handlers if getattr(h, "_htsr_cli", False)]:
        root.removeHandler(h)


# ----------------------------------------------------------------------------- config hash
def test_config_hash_covers_the_fields_that_change_results():
    # the reference: SHA-256 of the canonical JSON of every field but preset/device/steps/data_dir
    fields = {k: v for k, v in SMALL.to_dict().items() if k not in ("preset", "device", "steps", "data_dir")}
    blob = json.dumps([fields], sort_keys=True, separators=(",", ":"))
    assert T._config_hash([SMALL]) == hashlib.sha256(blob.encode()).hexdigest()[:16]
    same = SMALL.replace(preset="other", steps=7, data_dir=None, device="auto")
    assert T._config_hash([same]) == T._config_hash([SMALL])
    for change in ({"lr": 1e-3}, {"seed": 1}, {"weight_decay": 0.1}, {"dtype": "float32"}, {"data_seed": 3}):
        assert T._config_hash([SMALL.replace(**change)]) != T._config_hash([SMALL]), change


@TASKS
def test_resume_state_refuses_another_config_without_config_json(tmp_path, cfg):
    run = tmp_path / "run"
    with pytest.raises(Kill):
        train(cfg, run, progress=False, callback=killer(12))
    (run / "config.json").unlink()  # the fault: nothing left to compare the options with
    changed = cfg.replace(lr=cfg.lr * 2)
    h_old, h_new = T._config_hash([cfg]), T._config_hash([changed])
    with pytest.raises(ValueError) as err:
        train(changed, run, progress=False)
    msg = str(err.value)
    assert f"resume.safetensors was trained with another config: its config hash is {h_old}, this run's " \
           f"is {h_new}" in msg
    assert f"'lr': ({cfg.lr}, {changed.lr})" in msg and "new out_dir / --out folder" in msg
    assert "the options the saved run used" in msg and ANSI not in msg
    assert not (run / "config.json").exists()  # nothing was written
    # the same options resume it, and the result is the uninterrupted run's
    ref = train(cfg, tmp_path / "ref", progress=False)
    train(cfg, run, progress=False)
    for k, v in final_checkpoint(ref).items():
        assert torch.equal(v, final_checkpoint(run)[k]), k
    assert _rows(run) == _rows(ref)


def test_ensemble_state_names_the_member_that_differs(tmp_path):
    cfgs = [SMALL.replace(seed=0), SMALL.replace(seed=1)]
    with pytest.raises(Kill):
        train_ensemble(cfgs, tmp_path / "ens", progress=False, callback=killer(12))
    (tmp_path / "ens" / "ensemble.json").unlink()
    for d in ("member_00", "member_01"):
        (tmp_path / "ens" / d / "config.json").unlink()
    with pytest.raises(ValueError, match=r"\{'member 1: weight_decay': \(0\.0, 0\.1\)\}"):
        train_ensemble([cfgs[0], cfgs[1].replace(weight_decay=0.1)], tmp_path / "ens", progress=False)
    with pytest.raises(ValueError, match=r"'members': \(2, 3\)"):
        train_ensemble(cfgs + [SMALL.replace(seed=2)], tmp_path / "ens", progress=False)


# ----------------------------------------------------------------------------- one writer
_HOLD = """
import fcntl, sys, time
fh = open(sys.argv[1], "a+")
fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
fh.seek(0); fh.truncate(); fh.write("pid 4242 on testhost"); fh.flush()
print("locked", flush=True)
sys.stdin.read()  # hold until the test closes stdin
"""


def test_second_writer_is_refused_while_another_process_holds_the_lock(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(run / ".train.lock")], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError, match=r"run is being written by another trainer \(.*\.train\.lock is "
                                                 r"locked by pid 4242 on testhost\).*another out_dir / --out"):
            train(SMALL, run, progress=False)
        assert not (run / "metrics.jsonl").exists() and not (run / "config.json").exists()
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    train(SMALL.replace(steps=3), run, progress=False)  # released: trains
    assert [r["step"] for r in read_metrics(run)] == [0, 1, 2, 3]


def test_second_trainer_process_exits_with_a_clear_message(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    with open(run / ".train.lock", "a+") as fh:  # this test process is the first writer
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        proc = subprocess.run([sys.executable, "-m", "htsr_diag.train", "--out", str(run), "--preset", "paper",
                               "--steps", "3", "--hidden", "8,8", "--n-train-per-class", "5", "--batch-size", "10",
                               "--data-dir", "bundled", "--device", "cpu", "--threads", "1"],
                              capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "htsr-diag train: error: " in proc.stderr and "is being written by another trainer" in proc.stderr
    assert ANSI not in proc.stderr and not (run / "metrics.jsonl").exists()


@TASKS
def test_trainer_started_during_a_run_is_refused_and_lines_are_not_duplicated(tmp_path, cfg):
    run = tmp_path / "run"
    refused = []

    def second_writer(step):
        if step == 5:
            with pytest.raises(RunLockedError, match="another trainer") as err:
                train(cfg, run, progress=False)
            refused.append(str(err.value))

    train(cfg, run, progress=False, callback=second_writer)
    assert len(refused) == 1
    lines = (run / "metrics.jsonl").read_text().splitlines()
    steps = [json.loads(x)["step"] for x in lines]
    assert steps == sorted(set(steps)) == [s for s, _ in list_checkpoints(run)]


def test_ensemble_locks_its_members_too(tmp_path):
    cfgs = [SMALL.replace(seed=0), SMALL.replace(seed=1)]
    refused = []

    def cb(step):
        if step == 3:
            with pytest.raises(RunLockedError, match="member_01 is being written"):
                train(cfgs[1], tmp_path / "ens" / "member_01", progress=False)
            refused.append(step)

    train_ensemble(cfgs, tmp_path / "ens", progress=False, callback=cb)
    assert refused == [3]


# ----------------------------------------------------------------------------- damaged metrics
@TASKS
def test_damaged_metrics_line_is_kept_aside_and_warned(tmp_path, cfg):
    run = tmp_path / "run"
    with pytest.raises(Kill):
        train(cfg, run, progress=False, callback=killer(25))
    path = run / "metrics.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    assert len(lines) >= 5
    lost_step = json.loads(lines[2])["step"]
    lines[2] = lines[2][:20] + "\x00garbage\n"  # a damaged line in the middle (e.g. a bad sector)
    path.write_text("".join(lines))
    with pytest.warns(CorruptMetricsWarning, match=r"metrics\.jsonl: 1 damaged line\(s\) \(line number\(s\) \[3\]"):
        assert lost_step not in [r["step"] for r in read_metrics(run)]
    with pytest.warns(CorruptMetricsWarning, match=r"line number\(s\) \[3\].*were moved to .*metrics\.corrupt\.jsonl"):
        train(cfg, run, progress=False)  # resume
    aside = [json.loads(x) for x in (run / "metrics.corrupt.jsonl").read_text().splitlines()]
    assert aside == [{"line": 3, "text": lines[2].rstrip("\n"), "resumed_at_step": aside[0]["resumed_at_step"]}]
    assert 0 < aside[0]["resumed_at_step"] < 25
    steps = [r["step"] for r in read_metrics(run)]  # no warning now: the file is clean
    assert lost_step not in steps and steps == sorted(steps) and steps[-1] == cfg.steps


def test_partial_last_line_is_still_a_silent_kill(tmp_path, recwarn):
    run = train(SMALL.replace(steps=3), tmp_path / "run", progress=False)
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write('{"step": 4, "train_lo')
    assert [r["step"] for r in read_metrics(run)] == [0, 1, 2, 3]
    assert not [w for w in recwarn if issubclass(w.category, CorruptMetricsWarning)]


# ----------------------------------------------------------------------------- wrong options
def _parse_error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        train_cli.main(argv)
    assert exc.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--seeds", ""], r"argument --seeds: expected at least one value \(e\.g\. 0,1,2\); got ''"),
    (["--seeds", " , "], r"argument --seeds: expected at least one value"),
    (["--seeds", "0,1,0"], r"argument --seeds: expected distinct values; got '0,1,0', which lists 0 more than once"),
    (["--lrs", "1e-3,0.001"], r"argument --lrs: expected distinct values; .* lists 0\.001 more than once"),
    (["--weight-decays", ""], r"argument --weight-decays: expected at least one value"),
    (["--threads", "0"], r"argument --threads: expected an integer >= 1; got '0'"),
])
def test_cli_rejects_silently_wrong_sweeps(tmp_path, capsys, argv, message):
    import re
    err = _parse_error(["--out", str(tmp_path / "r")] + argv, capsys)
    assert re.search(message, err), err
    assert not (tmp_path / "r").exists()


def test_duplicate_members_are_refused_by_the_api(tmp_path):
    with pytest.raises(ValueError, match=r"members 0 and 2 have the same config \(seed 0, lr 0\.005, "
                                         r"weight_decay 0\.0\).*Remove the duplicate"):
        train_ensemble([SMALL, SMALL.replace(seed=1), SMALL.replace(preset="x")], tmp_path / "e", progress=False)
    with pytest.raises(ValueError, match="members 0 and 1 have the same config"):
        train_ensemble([MOD, MOD], tmp_path / "m", progress=False)


@pytest.mark.parametrize("command", ["report", "demo"])
def test_workers_below_one_are_refused(tmp_path, capsys, cli_logging, command):
    from htsr_diag.cli import main
    argv = [command, str(tmp_path)] if command == "report" else [command, "--out", str(tmp_path / "d")]
    with pytest.raises(SystemExit) as exc:
        main(argv + ["--workers", "0"])
    assert exc.value.code == 2
    assert "argument --workers: must be a positive whole number; got '0'" in capsys.readouterr().err


def test_example_rejects_workers_and_threads_below_one(monkeypatch, capsys):
    spec = importlib.util.spec_from_file_location("mnist_grokking", ROOT / "examples" / "mnist_grokking.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for opt in ("--workers", "--threads"):
        monkeypatch.setattr(sys, "argv", ["mnist_grokking.py", opt, "0"])
        with pytest.raises(SystemExit):
            mod.main()
        assert f"argument {opt}: must be an integer >= 1; got '0'" in capsys.readouterr().err


def test_batch_larger_than_the_training_set_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"batch_size must be at most the training-set size \(10 classes x "
                                         r"n_train_per_class 20 = 200\); got 201\..*lower batch_size"):
        train(SMALL.replace(batch_size=201), tmp_path / "r", progress=False)
    assert not (tmp_path / "r" / "config.json").exists()
    run = train(SMALL.replace(batch_size=200, steps=2), tmp_path / "full", progress=False)  # full batch is fine
    assert [r["step"] for r in read_metrics(run)] == [0, 1, 2]


def test_module_tasks_take_a_batch_above_the_split_as_full_batch(tmp_path):
    # documented (docs/training.md): for modular / liu_toy, batch_size >= the training split = full batch
    a = train(MOD.replace(steps=3, batch_size=10**6), tmp_path / "a", progress=False)
    b = train(MOD.replace(steps=3, batch_size=10**5), tmp_path / "b", progress=False)
    assert _rows(a) == _rows(b)


@TASKS
def test_steps_below_the_runs_step_are_refused(tmp_path, cfg):
    run = train(cfg.replace(steps=20), tmp_path / "run", progress=False)
    with pytest.raises(ValueError) as err:
        train(cfg.replace(steps=10), run, progress=False)
    msg = str(err.value)
    assert "it is at step 20 (its config.json has steps=20); got steps=10. A run cannot be shortened." in msg
    assert "Rerun with steps >= 20" in msg and "new out_dir / --out folder" in msg and str(run) in msg
    assert json.loads((run / "config.json").read_text())["steps"] == 20  # untouched
    train(cfg.replace(steps=30), run, progress=False)  # extending is allowed
    assert read_metrics(run)[-1]["step"] == 30


# ----------------------------------------------------------------------------- messages name the file
def test_damaged_config_json_is_named(tmp_path, capsys):
    run = train(SMALL.replace(steps=3), tmp_path / "run", progress=False)
    (run / "config.json").write_text('{"lr": 0.005, "seed"')
    with pytest.raises(ValueError) as err:
        train(SMALL.replace(steps=3), run, progress=False)
    msg = str(err.value)
    assert msg.startswith(f"{run / 'config.json'} is not valid JSON (") and "delete it" in msg and ANSI not in msg
    (run / "config.json").write_text('{"lr": 0.005, "colour": "red"}')
    with pytest.raises(ValueError, match=r"config\.json is not a valid trainer config \(unknown TrainConfig "
                                         r"field\(s\) \['colour'\]"):
        train(SMALL.replace(steps=3), run, progress=False)
    (run / "config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"config\.json must hold a JSON object .*got list"):
        train(SMALL.replace(steps=3), run, progress=False)
    # the CLI prints the same, without a traceback
    assert train_cli.main(["--out", str(run), "--preset", "paper", "--steps", "3", "--hidden", "16,16",
                           "--n-train-per-class", "20", "--batch-size", "50", "--lr", "5e-3", "--init-scale", "2",
                           "--checkpoints-per-decade", "3", "--data-dir", "bundled", "--device", "cpu"]) == 2
    err_text = capsys.readouterr().err
    assert f"htsr-diag train: error: {run / 'config.json'} must hold a JSON object" in err_text
    assert ANSI not in err_text


def test_damaged_ensemble_json_is_named(tmp_path):
    cfgs = [SMALL.replace(seed=0, steps=3), SMALL.replace(seed=1, steps=3)]
    train_ensemble(cfgs, tmp_path / "ens", progress=False)
    (tmp_path / "ens" / "ensemble.json").write_text("{oops")
    with pytest.raises(ValueError, match=r"ensemble\.json is not valid JSON .*ensemble's member list is damaged"):
        train_ensemble(cfgs, tmp_path / "ens", progress=False)


class _Payload:
    def __reduce__(self):
        return (print, ("ran",))


def test_refused_pickle_names_the_file_without_ansi_escapes(tmp_path, capsys, cli_logging):
    from htsr_diag.cli import main
    from htsr_diag.layers import load_state_dict
    evil = tmp_path / "evil.pt"
    torch.save({"fc.weight": torch.zeros(3, 3), "x": _Payload()}, evil)
    with pytest.raises(CheckpointError) as err:
        load_state_dict(evil)
    msg = str(err.value)
    assert ANSI not in msg and str(evil) in msg
    assert "Details: WeightsUnpickler error: Unsupported global" in msg  # the useful line of torch's message
    assert main(["analyze", str(evil)]) == 2
    out = capsys.readouterr()
    assert ANSI not in out.err and str(evil) in out.err and "ran" not in out.out


@pytest.mark.parametrize("error", [RuntimeError, ValueError, CheckpointError])
def test_cli_strips_ansi_escapes_from_any_error(tmp_path, capsys, cli_logging, monkeypatch, error):
    import htsr_diag.cli as cli

    def boom(args):
        raise error(f"\x1b[1mdo this only if you trust\x1b[0m {tmp_path / 'x.pt'}")

    monkeypatch.setattr(cli, "_cmd_analyze", boom)
    assert cli.main(["analyze", str(tmp_path / "x.pt")]) in (1, 2)
    err = capsys.readouterr().err
    assert f"htsr-diag analyze: error: do this only if you trust {tmp_path / 'x.pt'}" in err and ANSI not in err


# ----------------------------------------------------------------------------- environment (issue #14)
def test_config_json_records_threads_and_versions(tmp_path):
    run = train(SMALL.replace(steps=3), tmp_path / "run", progress=False)
    env = json.loads((run / "config.json").read_text())["htsr_diag_env"]
    assert len(env) == 1
    e = env[0]
    assert e["from_step"] == 0 and e["torch_num_threads"] == 1  # the one_thread fixture
    assert e["torch_num_interop_threads"] == torch.get_num_interop_threads()
    assert e["OMP_NUM_THREADS"] == os.environ.get("OMP_NUM_THREADS")
    assert e["MKL_NUM_THREADS"] == os.environ.get("MKL_NUM_THREADS")
    assert (e["numpy"], e["torch"], e["scipy"]) == (numpy.__version__, torch.__version__, version("scipy"))
    assert e["python"] == "%d.%d.%d" % sys.version_info[:3]
    assert e["htsr_diag"] == version("htsr-diag") and e["device"] == "cpu" and e["platform"]


def test_resume_with_other_threads_is_recorded_and_logged(tmp_path, caplog):
    cfg = SMALL.replace(steps=30)
    with pytest.raises(Kill):
        train(cfg, tmp_path / "run", progress=False, callback=killer(12))
    torch.set_num_threads(2)  # the one_thread fixture restores the count afterwards
    with caplog.at_level(logging.WARNING, logger="htsr_diag.train.trainer"):
        train(cfg, tmp_path / "run", progress=False)
    assert "with a different environment (before, now) {'torch_num_threads': (1, 2)}" in caplog.text
    env = json.loads((tmp_path / "run" / "config.json").read_text())["htsr_diag_env"]
    assert [(e["from_step"], e["torch_num_threads"]) for e in env] == [(0, 1), (10, 2)]
    torch.set_num_threads(1)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="htsr_diag.train.trainer"):
        train(cfg, tmp_path / "run", progress=False)  # finished: nothing trains, nothing to warn about
    assert "different environment" not in caplog.text


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_example_and_demo_write_bit_identical_metrics(tmp_path):
    # The issue: the example (torch's default thread count) and `htsr-diag demo` (1 thread) disagreed
    # from the same config.json. Both now train with one thread unless told otherwise.
    short = ["--steps", "100", "--checkpoints-per-decade", "1"]
    demo = _cli("-m", "htsr_diag.cli", "demo", "--out", str(tmp_path / "demo"), *short, cwd=tmp_path)
    assert demo.returncode == 0, demo.stderr[-2000:]
    ex = _cli(str(ROOT / "examples" / "mnist_grokking.py"), "--out", str(tmp_path / "ex"), *short, cwd=tmp_path)
    assert ex.returncode == 0, ex.stderr[-2000:]
    a, b = tmp_path / "demo" / "run", tmp_path / "ex" / "run"
    ca, cb = (json.loads((d / "config.json").read_text()) for d in (a, b))
    assert ca.pop("htsr_diag_env")[0]["torch_num_threads"] == cb.pop("htsr_diag_env")[0]["torch_num_threads"] == 1
    assert ca == cb
    assert _rows(a) == _rows(b) and len(_rows(a)) == 4  # steps 0, 1, 10, 100: every float equal
    for (_, pa), (_, pb) in zip(list_checkpoints(a), list_checkpoints(b)):
        wa, wb = load_checkpoint(pa), load_checkpoint(pb)
        assert all(torch.equal(wa[k], wb[k]) for k in wa), pa.name


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_ensemble_member_is_bit_identical_to_its_single_run_on_cpu(tmp_path, dtype):
    # docs/training.md, "What changes results": on the CPU an ensemble changes nothing
    cfg = SMALL.replace(dtype=dtype, steps=40)
    single = train(cfg, tmp_path / "single", progress=False)
    member = train_ensemble([cfg, cfg.replace(seed=1, lr=1e-3)], tmp_path / "ens", progress=False)[0]
    assert _rows(single) == _rows(member)
    a, b = final_checkpoint(single), final_checkpoint(member)
    assert all(torch.equal(a[k], b[k]) for k in a)
