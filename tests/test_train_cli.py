"""The ``train`` sub-command: options map to TrainConfig fields, sweeps become ensembles."""

from __future__ import annotations

import argparse
import json

import pytest

from htsr_diag.train import PRESETS, TrainConfig, list_checkpoints, read_metrics
from htsr_diag.train import cli


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _parse(argv):
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    cli.add_parser(sub)
    return parser.parse_args(["train", *argv])


def test_options_override_preset_fields():
    args = _parse(["--preset", "paper", "--steps", "1e7", "--out", "runs/paper", "--device", "cpu",
                   "--seed", "3", "--dtype", "float32", "--hidden", "64,32", "--betas", "0.8,0.99"])
    assert args.func is cli.run
    (cfg,) = cli.configs_from_args(args)
    assert cfg == PRESETS["paper"].replace(steps=10**7, device="cpu", seed=3, dtype="float32",
                                           hidden=(64, 32), betas=(0.8, 0.99))


def test_sweep_is_the_product_of_lists():
    args = _parse(["--preset", "fast", "--seeds", "0,1,2", "--weight-decays", "0,0.01", "--out", "x"])
    cfgs = cli.configs_from_args(args)
    assert [(c.seed, c.weight_decay) for c in cfgs] == [(s, w) for s in (0, 1, 2) for w in (0.0, 0.01)]
    assert all(c.lr == PRESETS["fast"].lr for c in cfgs)


def test_bad_values_are_rejected(capsys):
    with pytest.raises(SystemExit):
        _parse(["--steps", "1.5", "--out", "x"])
    assert "expected an integer; got '1.5'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _parse(["--hidden", "200", "--out", "x"])
    assert "expected two comma-separated values" in capsys.readouterr().err
    args = _parse(["--lr", "-1", "--out", "x"])
    assert cli.run(args) == 2
    assert "lr must be a finite number > 0" in capsys.readouterr().err


def test_cli_trains_resumes_and_sweeps(tmp_path, capsys):
    common = ["--steps", "20", "--hidden", "16,16", "--n-train-per-class", "10", "--batch-size", "50",
              "--data-dir", "bundled", "--checkpoints-per-decade", "2", "--device", "cpu", "--no-progress"]
    assert cli.main([*common, "--out", str(tmp_path / "one")]) == 0
    assert [r["step"] for r in read_metrics(tmp_path / "one")] == [0, 1, 3, 10, 20]
    cfg = TrainConfig.from_dict(json.loads((tmp_path / "one" / "config.json").read_text()))
    assert cfg.preset == "fast" and cfg.hidden == (16, 16)
    assert cli.main([*common, "--out", str(tmp_path / "one")]) == 0  # resumes: nothing to do
    assert cli.main([*common, "--out", str(tmp_path / "one"), "--no-resume"]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert cli.main([*common, "--seeds", "0,1", "--weight-decays", "0,0.1", "--out", str(tmp_path / "sw")]) == 0
    ens = json.loads((tmp_path / "sw" / "ensemble.json").read_text())
    assert [(m["config"]["seed"], m["config"]["weight_decay"]) for m in ens["members"]] == \
        [(0, 0.0), (0, 0.1), (1, 0.0), (1, 0.1)]
    assert all(len(list_checkpoints(tmp_path / "sw" / m["dir"])) == 5 for m in ens["members"])


def test_global_threads_option_is_not_overwritten_by_the_subcommand():
    # Regression: the sub-command's own --threads default (None) used to replace the value of
    # `htsr-diag --threads 1 train ...`, so runs silently used torch's default thread count.
    from htsr_diag.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["--threads", "1", "train", "--out", "x"]).threads == 1
    assert parser.parse_args(["train", "--out", "x", "--threads", "3"]).threads == 3
    assert getattr(parser.parse_args(["train", "--out", "x"]), "threads", None) is None
