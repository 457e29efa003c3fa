"""Checkpoints from anywhere (issue #13): step names, folders, globs, HF folders, nested and
wrapped state dicts, metrics files beside the checkpoints, Trajectory.with_metrics.

Every fixture is built here with tiny tensors: torch.save, safetensors.torch.save_file and a
hand-written index json."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from htsr_diag.checkpoints import find_checkpoints, load_model_folder, read_metrics_table, step_from_name
from htsr_diag.exceptions import CheckpointError, CorruptMetricsWarning
from htsr_diag.layers import load_state_dict
from htsr_diag.trajectory import METRIC_NAMES, analyze_checkpoints

# the 24-unit test models and the MLP head have fewer than 20 eigenvalues: the small-spectrum warning is expected there and is not under test here
# (tests/test_warn_once.py and tests/test_powerlaw.py test the warning itself)
pytestmark = pytest.mark.filterwarnings("ignore::htsr_diag.exceptions.SmallSpectrumWarning")

FAST = {"randomize": False, "ks": False}  # alpha only: these tests are about finding and loading


def _sd(seed: int, width: int = 24) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"0.weight": torch.randn(width, 16 + width // 2, generator=g), "0.bias": torch.randn(width, generator=g),
            "2.weight": torch.randn(width // 2, width, generator=g)}


# ----------------------------------------------------------------------------- names
@pytest.mark.parametrize("name, step", [
    ("step_00000309.pt", 309), ("step=12.ckpt", 12), ("step-5.safetensors", 5), ("STEP_7.PT", 7),
    ("epoch=2-step=1500.ckpt", 1500), ("global_step=40.pt", 40),
    ("checkpoint-500", 500), ("checkpoint_20", 20),
    ("model_10.pth", 10), ("model-3.bin", 3),
    ("iter_2000.pt", 2000), ("iteration_8.pt", 8), ("iter-9.pt", 9),
    ("000300.pt", 300), ("42", 42),
])
def test_step_from_name_reads_each_form(name, step):
    assert step_from_name(name) == step


@pytest.mark.parametrize("name", ["weights.pt", "model.safetensors", "model-00001-of-00003.safetensors",
                                  "pytorch_model-00002-of-00002.bin", "step_1_step_2.pt", "epoch=3.ckpt",
                                  "resnet50.pt", "laststep.pt"])
def test_step_from_name_refuses_names_without_a_clear_step(name):
    assert step_from_name(name) is None


def test_step_forms_take_precedence_in_order():
    assert step_from_name("iter_5-step_100.pt") == 100  # step_N before iter_N
    assert step_from_name("model_3-checkpoint-9") == 9  # checkpoint-N before model_N


# ----------------------------------------------------------------------------- folders
def test_plain_folder_of_pt_files_the_issue_report(tmp_path):
    """The report of issue #13: step_*.pt files of an nn.Sequential, no checkpoints/, no metrics."""
    for step in (309, 3, 30):
        model = torch.nn.Sequential(torch.nn.Linear(16, 24), torch.nn.ReLU(), torch.nn.Linear(24, 12))
        torch.save(model.state_dict(), tmp_path / f"step_{step:08d}.pt")
    pairs = find_checkpoints(tmp_path)
    assert [s for s, _ in pairs] == [3, 30, 309]
    traj = analyze_checkpoints(tmp_path, rng=0, **FAST)
    assert traj.steps.tolist() == [3, 30, 309]
    assert traj.layer_names == ["0", "2"]
    assert traj.source == str(tmp_path)
    assert sorted(traj.metrics) == sorted(METRIC_NAMES) and np.isnan(traj.metrics["train_acc"]).all()


def test_pt_files_under_checkpoints_are_listed(tmp_path):
    from htsr_diag.train import list_checkpoints

    (tmp_path / "checkpoints").mkdir()
    torch.save(_sd(0), tmp_path / "checkpoints" / "step_10.pt")
    torch.save(_sd(1), tmp_path / "checkpoints" / "step_20.pth")
    save_file(_sd(2), tmp_path / "checkpoints" / "step_30.safetensors")
    (tmp_path / "checkpoints" / ".step_40.safetensors.tmp-123").write_bytes(b"partial")
    assert [(s, p.name) for s, p in list_checkpoints(tmp_path)] == [
        (10, "step_10.pt"), (20, "step_20.pth"), (30, "step_30.safetensors")]
    assert [s for s, _ in find_checkpoints(tmp_path)] == [10, 20, 30]


def test_glob_and_steps_from(tmp_path):
    for i, step in enumerate((5, 50)):
        torch.save(_sd(i), tmp_path / f"run-a-ckpt{step}.pt")
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match=r"cannot read a step from the name of 2 checkpoint\(s\): "
                                         r"'.*run-a-ckpt5\.pt', '.*run-a-ckpt50\.pt'\. To fix: .*steps_from"):
        find_checkpoints(tmp_path)
    pairs = find_checkpoints(str(tmp_path / "*"), steps_from=r"ckpt(\d+)")
    assert [(s, p.name) for s, p in pairs] == [(5, "run-a-ckpt5.pt"), (50, "run-a-ckpt50.pt")]
    with pytest.raises(ValueError, match=r"steps_from='nope\(\\\\d\+\)' matches no number in 2 checkpoint"):
        find_checkpoints(tmp_path, steps_from=r"nope(\d+)")
    with pytest.raises(ValueError, match="exactly one capture group"):
        find_checkpoints(tmp_path, steps_from=r"ckpt\d+")
    with pytest.raises(ValueError, match="not a valid regular expression"):
        find_checkpoints(tmp_path, steps_from="ckpt(")
    with pytest.raises(ValueError, match=r"matches no checkpoint file .* Check the pattern"):
        find_checkpoints(str(tmp_path / "*.safetensors"))
    with pytest.raises(ValueError, match=r"steps=\[\.\.\.\] needs a list of checkpoint files"):
        find_checkpoints(tmp_path, steps=[1, 2])
    files = sorted(tmp_path.glob("*.pt"))
    assert [s for s, _ in find_checkpoints(files, steps=[7, 3])] == [3, 7]
    traj = analyze_checkpoints(str(tmp_path / "*.pt"), steps_from=r"ckpt(\d+)", rng=0, **FAST)
    assert traj.steps.tolist() == [5, 50]


def test_every_unnamed_file_is_listed_never_dropped(tmp_path):
    torch.save(_sd(0), tmp_path / "step_1.pt")
    for name in ("final.pt", "best.ckpt"):
        torch.save(_sd(0), tmp_path / name)
    with pytest.raises(ValueError, match=r"2 checkpoint\(s\): '.*best\.ckpt', '.*final\.pt'"):
        analyze_checkpoints(tmp_path)


def test_repeated_steps_and_missing_paths(tmp_path):
    torch.save(_sd(0), tmp_path / "step_1.pt")
    save_file(_sd(0), tmp_path / "model_1.safetensors")
    with pytest.raises(ValueError, match=r"step 1 appears more than once \('.*model_1\.safetensors' and "
                                         r"'.*step_1\.pt'\)"):
        find_checkpoints(tmp_path)
    with pytest.raises(ValueError, match=r"sources='.*nope' does not exist"):
        find_checkpoints(tmp_path / "nope")
    with pytest.raises(ValueError, match=r"sources\[0\]='.*gone\.pt' is not a file or a model folder: it does "
                                         r"not exist"):
        find_checkpoints([tmp_path / "gone.pt"])
    with pytest.raises(TypeError, match="sources must be a folder, a glob or a list"):
        find_checkpoints(3)


# ----------------------------------------------------------------------------- loading
def test_nested_state_dicts_and_wrapper_prefixes(tmp_path):
    sd = _sd(0)
    cases = {
        "lightning.ckpt": {"epoch": 1, "global_step": 10, "state_dict": sd, "optimizer_states": [{"lr": 0.1}]},
        "model.pt": {"model": sd, "ema": _sd(9), "step": 3},
        "module.pt": {"module": sd},
        "ema_only.pt": {"ema": sd, "config": {"hidden": 24}},
        "ddp.pt": {f"module.{k}": v for k, v in sd.items()},
        "compiled.pt": {f"_orig_mod.{k}": v for k, v in sd.items()},
        "ddp_compiled.pt": {"state_dict": {f"module._orig_mod.{k}": v for k, v in sd.items()}},
    }
    for name, obj in cases.items():
        torch.save(obj, tmp_path / name)
        got = load_state_dict(tmp_path / name)
        assert list(got) == list(sd), name
        for k in sd:
            torch.testing.assert_close(got[k], sd[k], msg=name)
    # 'model' wins over 'ema' (the trained weights before their average); a submodule named 'module' stays
    torch.testing.assert_close(load_state_dict(tmp_path / "model.pt")["2.weight"], sd["2.weight"])
    torch.save({"module.w": sd["0.weight"], "head.weight": sd["2.weight"]}, tmp_path / "partial.pt")
    assert sorted(load_state_dict(tmp_path / "partial.pt")) == ["head.weight", "module.w"]
    torch.save({"_orig_mod.a.weight": sd["0.weight"], "a.weight": sd["0.weight"]}, tmp_path / "clash.pt")
    with pytest.raises(CheckpointError, match=r"clash\.pt.*both become 'a\.weight'.*_orig_mod"):
        load_state_dict(tmp_path / "clash.pt")
    save_file({f"module.{k}": v for k, v in sd.items()}, tmp_path / "ddp.safetensors")
    assert sorted(load_state_dict(tmp_path / "ddp.safetensors")) == sorted(sd)  # safetensors sorts names


def test_a_pickle_that_runs_code_is_refused(tmp_path):
    import argparse

    torch.save({"state_dict": _sd(0), "args": argparse.Namespace(lr=0.1)}, tmp_path / "step_2.pt")
    with pytest.raises(CheckpointError, match=r"refusing to load .*step_2\.pt.*weights_only=True"):
        analyze_checkpoints(tmp_path, **FAST)


def _hf_sharded(folder: Path, seed: int) -> dict[str, torch.Tensor]:
    """A sharded HF model folder written by hand: two shards and an index whose order is not shard order."""
    folder.mkdir(parents=True)
    sd = _sd(seed)
    save_file({"2.weight": sd["2.weight"]}, folder / "model-00001-of-00002.safetensors")
    save_file({"0.weight": sd["0.weight"], "0.bias": sd["0.bias"]}, folder / "model-00002-of-00002.safetensors")
    index = {"metadata": {"total_size": 0},
             "weight_map": {"0.weight": "model-00002-of-00002.safetensors",
                            "0.bias": "model-00002-of-00002.safetensors",
                            "2.weight": "model-00001-of-00002.safetensors"}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    (folder / "config.json").write_text(json.dumps({"model_type": "toy"}))
    return sd


def test_hf_model_folders_single_sharded_and_bin(tmp_path):
    sharded = _hf_sharded(tmp_path / "out" / "checkpoint-20", 0)
    got = load_model_folder(tmp_path / "out" / "checkpoint-20")
    assert list(got) == ["0.weight", "0.bias", "2.weight"]  # index order, not shard order
    for k in got:
        torch.testing.assert_close(got[k], sharded[k])
    single = tmp_path / "out" / "checkpoint-10"
    single.mkdir()
    save_file(_sd(1), single / "model.safetensors")
    binary = tmp_path / "out" / "checkpoint-30"
    binary.mkdir()
    torch.save(_sd(2), binary / "pytorch_model.bin")
    assert list(load_state_dict(binary)) == list(_sd(2))
    pairs = find_checkpoints(tmp_path / "out")
    assert [(s, p.name) for s, p in pairs] == [(10, "checkpoint-10"), (20, "checkpoint-20"), (30, "checkpoint-30")]
    # a glob over the shards finds the folder once
    assert [s for s, _ in find_checkpoints(str(tmp_path / "out" / "*" / "*.safetensors"))] == [10, 20]
    assert [s for s, _ in find_checkpoints(tmp_path / "out" / "checkpoint-20")] == [20]
    traj = analyze_checkpoints(str(tmp_path / "out" / "checkpoint-*"), rng=0, **FAST)
    assert traj.steps.tolist() == [10, 20, 30] and traj.layer_names == ["0", "2"]


def test_hf_output_folder_with_its_own_final_model_needs_a_step(tmp_path):
    _hf_sharded(tmp_path / "out" / "checkpoint-20", 0)
    save_file(_sd(3), tmp_path / "out" / "model.safetensors")
    with pytest.raises(ValueError, match=r"cannot read a step from the name of 1 checkpoint\(s\): '.*out'"):
        find_checkpoints(tmp_path / "out")


def test_broken_hf_folders(tmp_path):
    folder = tmp_path / "checkpoint-1"
    _hf_sharded(folder, 0)
    (folder / "model-00001-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"names shard\(s\) that are not in the folder: "
                                              r"\['model-00001-of-00002\.safetensors'\]"):
        load_state_dict(folder)
    save_file({"other": torch.zeros(2, 2)}, folder / "model-00001-of-00002.safetensors")
    with pytest.raises(CheckpointError, match=r"lacks 1 tensor\(s\) .* e\.g\. \['2\.weight'\]"):
        load_state_dict(folder)
    (folder / "model.safetensors.index.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"cannot read the index .*weight_map"):
        load_state_dict(folder)
    with pytest.raises(CheckpointError, match=r"is not a model folder"):
        load_model_folder(tmp_path)
    with pytest.raises(CheckpointError, match=r"is not a file and not a model folder"):
        load_state_dict(tmp_path)


# ----------------------------------------------------------------------------- metrics
def test_hf_trainer_state_and_column_mapping(tmp_path):
    out = tmp_path / "out"
    for step in (10, 20):
        _hf_sharded(out / f"checkpoint-{step}", step)
    log = [{"loss": 2.0, "step": 5, "epoch": 0.5}, {"loss": 1.5, "step": 10, "epoch": 1.0},
           {"eval_loss": 1.2, "eval_accuracy": 0.6, "step": 10},
           {"loss": 1.0, "step": 20}, {"eval_accuracy": 0.8, "train_accuracy": 0.9, "step": 20},
           {"train_runtime": 3.0, "step": 20}, {"total_flos": 1}]
    (out / "checkpoint-20" / "trainer_state.json").write_text(json.dumps({"global_step": 20, "log_history": log}))
    path, rows = read_metrics_table(out, [out / "checkpoint-10", out / "checkpoint-20"])
    assert path == out / "checkpoint-20" / "trainer_state.json"
    assert sorted(rows) == [5, 10, 20] and rows[10] == {"loss": 1.5, "epoch": 1.0, "eval_loss": 1.2,
                                                        "eval_accuracy": 0.6}
    traj = analyze_checkpoints(out, rng=0, train_acc="train_accuracy", test_acc="eval_accuracy", **FAST)
    np.testing.assert_array_equal(traj.metrics["test_acc"], [0.6, 0.8])
    np.testing.assert_array_equal(traj.metrics["train_acc"], [np.nan, 0.9])  # no row value at 10: NaN
    np.testing.assert_array_equal(traj.metrics["loss"], [1.5, 1.0])  # the step-5 row has no checkpoint
    with pytest.raises(ValueError, match=r"train_acc='acc' is not a column of '.*trainer_state\.json'; its "
                                         r"columns are \['epoch', 'eval_accuracy'"):
        analyze_checkpoints(out, train_acc="acc", **FAST)
    with pytest.raises(TypeError, match=r"train_acc must be the name of a metrics column .*with_metrics"):
        analyze_checkpoints(out, train_acc=[0.1, 0.2], **FAST)


def test_lightning_csvlogger_rows_are_merged(tmp_path):
    version = tmp_path / "lightning_logs" / "version_0"
    (version / "checkpoints").mkdir(parents=True)
    for i, step in enumerate((49, 99)):
        torch.save({"epoch": i, "global_step": step + 1, "state_dict": {f"model.{k}": v for k, v in _sd(i).items()}},
                   version / "checkpoints" / f"epoch={i}-step={step}.ckpt")
    with open(version / "metrics.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["epoch", "step", "train_loss", "train_acc", "val_acc"])
        w.writerows([[0, 24, 1.1, 0.4, ""], [0, 49, 0.9, 0.5, ""], [0, 49, "", "", 0.45],
                     [1, 99, 0.5, 0.8, ""], [1, 99, "", "", 0.7]])
    traj = analyze_checkpoints(tmp_path / "lightning_logs" / "version_0", rng=0, test_acc="val_acc", **FAST)
    assert traj.steps.tolist() == [49, 99]
    assert traj.layer_names == ["model.0", "model.2"]
    np.testing.assert_array_equal(traj.metrics["train_acc"], [0.5, 0.8])
    np.testing.assert_array_equal(traj.metrics["test_acc"], [0.45, 0.7])
    np.testing.assert_array_equal(traj.metrics["val_acc"], [0.45, 0.7])
    np.testing.assert_array_equal(traj.metrics["epoch"], [0, 1])


def test_metrics_json_jsonl_and_percentages(tmp_path):
    for step in (1, 2):
        torch.save(_sd(step), tmp_path / f"step_{step}.pt")
    (tmp_path / "metrics.json").write_text(json.dumps({"step": [1, 2, 3], "acc": [50.0, 90.0, 99.0]}))
    with pytest.raises(ValueError, match=r"train_acc \(column 'acc' of '.*metrics\.json'\) must be a fraction "
                                         r"in \[0, 1\]; got values up to 90, which look like percentages\. "
                                         r"Divide them by 100"):
        analyze_checkpoints(tmp_path, train_acc="acc", **FAST)
    (tmp_path / "metrics.json").write_text(json.dumps([{"step": 1, "acc": 0.5}, {"step": 2, "acc": 0.9}]))
    traj = analyze_checkpoints(tmp_path, train_acc="acc", rng=0, **FAST)
    np.testing.assert_array_equal(traj.metrics["train_acc"], [0.5, 0.9])
    (tmp_path / "metrics.json").unlink()
    (tmp_path / "metrics.jsonl").write_text('{"step": 2, "train_acc": 0.7, "lr": 0.1}\nnot json\n{"step": 1, '
                                            '"train_acc": 0.2}\n{"step": 3, "train_a')
    with pytest.warns(CorruptMetricsWarning, match=r"line number\(s\) \[2\]"):  # the partial last line is silent
        traj = analyze_checkpoints(tmp_path, rng=0, **FAST)
    np.testing.assert_array_equal(traj.metrics["train_acc"], [0.2, 0.7])
    np.testing.assert_array_equal(traj.metrics["lr"], [np.nan, 0.1])
    (tmp_path / "metrics.jsonl").write_text('{"iteration": 1, "acc": 0.1}\n')
    with pytest.raises(ValueError, match=r"metrics\.jsonl' has no 'step' column \(columns: \['acc', "
                                         r"'iteration'\]\)\. Name the column"):
        analyze_checkpoints(tmp_path, **FAST)
    (tmp_path / "metrics.jsonl").write_text('{"step": 1.5, "acc": 0.1}\n')
    with pytest.raises(ValueError, match=r"row 0 has step 1\.5; steps must be whole numbers"):
        analyze_checkpoints(tmp_path, **FAST)
    (tmp_path / "metrics.jsonl").unlink()
    with pytest.raises(ValueError, match=r"train_acc='acc' names a metrics column, but no metrics file was found "
                                         r"next to the checkpoints in '.*'.*with_metrics"):
        analyze_checkpoints(tmp_path, train_acc="acc", **FAST)


def test_our_run_folder_keeps_its_metric_columns(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    for step in (0, 10):
        save_file(_sd(step), tmp_path / "checkpoints" / f"step_{step:09d}.safetensors")
    rows = [{"step": s, "train_acc": a, "test_acc": a / 2, "train_loss": 1.0, "test_loss": 2.0, "l2_norm": 3.0,
             "wall_time": 0.1} for s, a in ((0, 0.1), (5, 0.3), (10, 0.9))]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    traj = analyze_checkpoints(tmp_path, rng=0, **FAST)
    assert sorted(traj.metrics) == sorted(METRIC_NAMES)  # wall_time is the trainer's, not a metric
    np.testing.assert_array_equal(traj.metrics["train_acc"], [0.1, 0.9])


# ----------------------------------------------------------------------------- with_metrics
def test_with_metrics_returns_a_new_trajectory(tmp_path):
    for step in (3, 1, 2):
        torch.save(_sd(step), tmp_path / f"step_{step}.pt")
    traj = analyze_checkpoints(tmp_path, rng=0, **FAST)
    new = traj.with_metrics(train_acc=[0.1, 0.5, 1.0])
    assert np.isnan(traj.metrics["train_acc"]).all()  # unchanged
    np.testing.assert_array_equal(new.metrics["train_acc"], [0.1, 0.5, 1.0])
    assert new.reports == traj.reports
    assert new.steps.tolist() == [1, 2, 3] and new.source == traj.source
    both = new.with_metrics({"eval_loss": np.arange(3.0)}, test_acc=np.zeros(3))
    assert set(both.metrics) >= {"train_acc", "test_acc", "eval_loss"}
    np.testing.assert_array_equal(both.feature("eval_loss"), [0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match=r"metric 'train_acc' must have one value per checkpoint \(3, in step "
                                         r"order\); got shape \(2,\)"):
        traj.with_metrics(train_acc=[0.1, 0.2])
    with pytest.raises(ValueError, match=r"train_acc must be a fraction in \[0, 1\]; got values up to 97.*"
                                         r"Divide them by 100"):
        traj.with_metrics(train_acc=[10.0, 50.0, 97.0])
    with pytest.raises(TypeError, match="mapping of metric names to values"):
        traj.with_metrics([0.1, 0.2, 0.3])
    with pytest.raises(TypeError, match=r"metric 'x' must be numbers"):
        traj.with_metrics(x=["a", "b", "c"])
    with pytest.raises(TypeError, match="metric names must be str"):
        traj.with_metrics({3: [1, 2, 3]})


# ----------------------------------------------------------------------------- the command line
def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    from htsr_diag.cli import main

    code = main(list(argv))
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def _pt_folder(folder: Path, names: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        torch.save({"model": _sd(i, width=128)}, folder / name)  # the classifier reads layers of >= 50
    return folder


def test_cli_phases_and_report_read_any_folder(capsys, tmp_path):
    folder = _pt_folder(tmp_path / "plain", ["ck-a10.pt", "ck-a20.pt", "ck-a30.pt"])
    (folder / "log.csv").write_text("unused")
    (folder / "metrics.csv").write_text("step,acc,val\n10,0.2,0.1\n20,0.6,0.3\n30,0.9,0.5\n40,1.0,0.6\n")
    code, out, err = _cli(capsys, "phases", str(folder), "--json")
    assert code == 2 and "cannot read a step from the name of 3 checkpoint(s)" in err and "--steps-from" in err
    code, out, err = _cli(capsys, "phases", str(folder), "--json", "--steps-from", r"a(\d+)",
                          "--train-acc", "acc", "--test-acc", "val")
    assert code == 0, err
    rows = json.loads(out)["checkpoints"]
    assert [r["step"] for r in rows] == [10, 20, 30] and [r["train_acc"] for r in rows] == [0.2, 0.6, 0.9]
    code, _, err = _cli(capsys, "phases", str(folder / "*.pt"), "--steps-from", r"a(\d+)", "--train-acc", "nope")
    assert code == 2 and "--train-acc 'nope' is not a column of" in err and "Traceback" not in err
    code, _, err = _cli(capsys, "phases", str(folder), "--steps-from", r"a\d+")
    assert code == 2 and "--steps-from must have exactly one capture group" in err
    code, out, err = _cli(capsys, "report", str(folder / "*.pt"), "--steps-from", r"a(\d+)",
                          "--out", str(tmp_path / "rep"), "--train-acc", "acc", "--test-acc", "val")
    assert code == 0, err
    assert (tmp_path / "rep" / "report.html").is_file() and (tmp_path / "rep" / "esd.png").is_file()


def test_cli_analyze_reads_a_model_folder(capsys, tmp_path):
    _hf_sharded(tmp_path / "checkpoint-5", 0)
    code, out, err = _cli(capsys, "analyze", str(tmp_path / "checkpoint-5"), "--json", "--no-randomize")
    assert code == 0, err
    assert [lay["name"] for lay in json.loads(out)["layers"]] == ["0", "2"]
    code, _, err = _cli(capsys, "analyze", str(tmp_path))
    assert code == 2 and "is a folder but not a model folder" in err


def test_a_non_json_metrics_line_is_left_out_with_a_warning_naming_it(tmp_path):
    text = '{"step": 1, "acc": 0.5}\n{"step": 2, "acc": \n{"step": 3, "acc": 0.7}\n{"step": 4'  # line 4: partial
    (tmp_path / "metrics.jsonl").write_text(text)
    with pytest.warns(CorruptMetricsWarning, match=r"metrics\.jsonl: 1 line\(s\) are not JSON \(line number\(s\) \[2\]\)"):
        path, rows = read_metrics_table(tmp_path)
    assert path == tmp_path / "metrics.jsonl" and rows == {1: {"acc": 0.5}, 3: {"acc": 0.7}}
    assert (tmp_path / "metrics.jsonl").read_text() == text  # reading never changes the file
