"""Tests of the htsr-diag command: the demo end to end, analyze / phases / report, and errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from htsr_diag.cli import main  # noqa: E402

# the test models' 10-unit heads have fewer than 20 eigenvalues: the small-spectrum warning is expected there and is not under test here
# (tests/test_warn_once.py and tests/test_powerlaw.py test the warning itself)
pytestmark = pytest.mark.filterwarnings("ignore::htsr_diag.exceptions.SmallSpectrumWarning")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FIGURES = ("overview.png", "esd.png", "shuffled_esd.png", "baselines.png", "alarm_esd.png")


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    """`htsr-diag demo --steps 300 --checkpoints-per-decade 3 --out OUT`: the whole study, short."""
    import torch

    out = tmp_path_factory.mktemp("demo") / "out"
    threads = torch.get_num_threads()
    assert main(["demo", "--steps", "300", "--checkpoints-per-decade", "3", "--out", str(out)]) == 0
    assert torch.get_num_threads() == threads  # the demo's 1-thread default is undone on return
    return out


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    cap = capsys.readouterr()
    return code, cap.out, cap.err


# ----------------------------------------------------------------------------- demo
def test_demo_writes_the_report_folder(demo):
    for name in FIGURES:
        data = (demo / name).read_bytes()
        assert data[:8] == PNG_MAGIC, name
        if name == "alarm_esd.png" and "alarm (causal, weights only): did not fire" in (demo / "summary.txt").read_text():
            continue  # a short note: the smoke demo never fits, so no alarm (tests/test_alarm_figure.py)
        assert len(data) > 10_000, name  # a rendered figure, not an empty canvas
    for name in ("trajectory.csv", "trajectory.json", "phases.csv", "summary.txt", "summary.json"):
        assert (demo / name).stat().st_size > 0, name
    page = (demo / "report.html").read_text()
    for name in FIGURES:
        assert f"href='{name}'" in page  # the HTML references every figure file ...
    assert len(re.findall(r"src='data:image/png;base64,", page)) == len(FIGURES)  # ... and embeds it
    assert (demo / "run" / "config.json").is_file()
    assert json.loads((demo / "run" / "config.json").read_text())["steps"] == 300


def test_demo_trajectory_covers_every_checkpoint(demo):
    from htsr_diag.train import list_checkpoints

    steps = [s for s, _ in list_checkpoints(demo / "run")]
    assert steps[0] == 0 and steps[-1] == 300
    summary = json.loads((demo / "summary.json").read_text())
    assert summary["n_checkpoints"] == len(steps)
    csv_steps = sorted({int(r.split(",")[0]) for r in (demo / "phases.csv").read_text().splitlines()[1:]})
    assert csv_steps == steps


# ----------------------------------------------------------------------------- analyze
def test_analyze_table_and_json(demo, capsys):
    from htsr_diag.analyze import analyze
    from htsr_diag.train import list_checkpoints

    step, path = list_checkpoints(demo / "run")[-1]
    code, out, err = _run(capsys, "analyze", str(path))
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["layer", "shape", "alpha"]
    rows = {ln.split()[0]: ln.split() for ln in lines[1:] if ln.strip()}
    assert {"fc1", "fc2", "fc3"} <= set(rows)
    assert rows["fc1"][1] == "200x784"
    direct = analyze(path, rng=0)
    fc1 = next(lay for lay in direct.layers if lay.name == "fc1")
    assert float(rows["fc1"][2]) == pytest.approx(fc1.alpha, abs=0.005)  # printed with 2 decimals
    code, out, err = _run(capsys, "analyze", str(path), "--json")
    assert code == 0, err
    assert json.loads(out) == json.loads(direct.to_json())


def test_phases_table_json_and_plot(demo, capsys, tmp_path):
    from htsr_diag.train import list_checkpoints

    steps = [s for s, _ in list_checkpoints(demo / "run")]
    code, out, err = _run(capsys, "phases", str(demo / "run"))
    assert code == 0, err
    body = out.splitlines()
    assert body[0].split()[:2] == ["step", "train"]
    assert [int(ln.split()[0]) for ln in body[1:1 + len(steps)]] == steps
    assert any(ln.startswith("anti-grokking alarm (causal):") for ln in body[-2:])
    plot_file = tmp_path / "ph.png"
    code, out, err = _run(capsys, "phases", str(demo / "run"), "--json", "--plot", str(plot_file))
    assert code == 0, err
    data = json.loads(out)
    assert [r["step"] for r in data["checkpoints"]] == steps
    assert {r["predicted"] for r in data["checkpoints"]} <= {"pre-grokking", "grokking", "anti-grokking"}
    # the per-layer evidence explains the label: anti-grokking starts where a fitted checkpoint first
    # has a layer with the signature that passes the norm gate
    rows = data["checkpoints"]
    assert all(set(r["layers"]) == {"fc1", "fc2"} for r in rows)
    assert all(set(v) == {"alpha", "n_traps", "stable_rank", "norm_ratio", "shrink", "signature", "norm_gate"}
               for r in rows for v in r["layers"].values())
    fitted = [r["train_acc"] is None or r["train_acc"] >= 0.99 for r in rows]
    hits = [i for i, r in enumerate(rows) if fitted[i]
            and any(v["signature"] and v["norm_gate"] for v in r["layers"].values())]
    anti = [i for i, r in enumerate(rows) if r["predicted"] == "anti-grokking"]
    assert (hits[:1] or [None])[0] == (anti[:1] or [None])[0]
    # ... and grokking where a fitted checkpoint's onset ratio (smaller stable rank over its base) first
    # reaches grok_ratio, or its shrink (largest layer norm over its norm at fitting) reaches
    # shrink_ratio, or at the alarm if that comes first
    assert data["onset"] == "stable_rank" and data["grok_ratio"] == 0.85
    for r in rows:
        srs = [v["stable_rank"] for v in r["layers"].values()]
        assert r["onset_ratio"] is None or all(x is not None for x in srs)
    for r in rows:
        shrinks = [v["shrink"] for v in r["layers"].values()]
        assert r["shrink"] == (None if None in shrinks else pytest.approx(max(shrinks)))
    shrink_ratio = data["shrink_ratio"]
    onset = [i for i, r in enumerate(rows) if fitted[i] and (
        (r["onset_ratio"] is not None and r["onset_ratio"] <= data["grok_ratio"])
        or (shrink_ratio is not None and r["shrink"] is not None and r["shrink"] <= shrink_ratio))]
    grok = [i for i, r in enumerate(rows) if r["predicted"] != "pre-grokking"]
    assert (grok[:1] or [None])[0] == min(onset[:1] + anti[:1], default=None)
    # the gate's ratio is against the norm at the fit: unknown (null) before the training set is fitted
    fitted = [i for i, r in enumerate(rows) if r["train_acc"] is not None and r["train_acc"] >= 0.99]
    assert all(rows[i]["layers"]["fc1"]["norm_ratio"] is None for i in range(fitted[0] if fitted else len(rows)))
    if fitted:
        assert rows[fitted[0]]["layers"]["fc1"]["norm_ratio"] == pytest.approx(1.0, abs=0.05)
    assert plot_file.read_bytes()[:8] == PNG_MAGIC


def test_report_command(demo, capsys, tmp_path):
    code, out, err = _run(capsys, "report", str(demo / "run"), "--out", str(tmp_path / "rep"), "--no-baselines")
    assert code == 0, err
    assert "peak test accuracy" in out
    assert out.strip().splitlines()[-1] == f"report: {tmp_path / 'rep' / 'report.html'}"
    for name in FIGURES:
        assert (tmp_path / "rep" / name).read_bytes()[:8] == PNG_MAGIC


# ----------------------------------------------------------------------------- errors
def _assert_clean_error(code: int, err: str, needle: str, expected_code: int = 2) -> None:
    assert code == expected_code
    assert needle in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) <= 2


def test_analyze_errors(capsys, tmp_path):
    missing = tmp_path / "missing.safetensors"
    code, _, err = _run(capsys, "analyze", str(missing))
    _assert_clean_error(code, err, f"PATH {str(missing)!r} does not exist")
    code, _, err = _run(capsys, "analyze", str(tmp_path))
    _assert_clean_error(code, err, f"PATH {str(tmp_path)!r} is a folder")
    txt = tmp_path / "notes.txt"
    txt.write_text("hello")
    code, _, err = _run(capsys, "analyze", str(txt))
    _assert_clean_error(code, err, f"PATH {str(txt)!r} has the suffix '.txt'")
    bad = tmp_path / "garbage.safetensors"
    bad.write_bytes(b"\x00\x01 not a safetensors file")
    code, _, err = _run(capsys, "analyze", str(bad))
    _assert_clean_error(code, err, str(bad))


@pytest.mark.parametrize("command", ["phases", "report"])
def test_run_folder_errors(capsys, tmp_path, command):
    missing = tmp_path / "nope"
    code, _, err = _run(capsys, command, str(missing))
    _assert_clean_error(code, err, f"CHECKPOINTS {str(missing)!r} does not exist")
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = _run(capsys, command, str(empty))
    _assert_clean_error(code, err, f"CHECKPOINTS {str(empty)!r}: sources={str(empty)!r} holds no checkpoint")
    f = tmp_path / "model.safetensors"
    f.write_bytes(b"x")
    code, _, err = _run(capsys, command, str(f))
    _assert_clean_error(code, err, f"CHECKPOINTS {str(f)!r} is a file, not a folder or glob of checkpoints")
    assert err.startswith(f"htsr-diag {command}: error:")


def test_usage_errors(capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--steps", "0", "--out", str(tmp_path)])
    assert exc.value.code == 2
    assert "argument --steps: must be a positive whole number; got '0'" in capsys.readouterr().err
    code, _, err = _run(capsys)
    assert code == 2 and "usage: htsr-diag" in err
    f = tmp_path / "file"
    f.write_text("x")
    code, _, err = _run(capsys, "demo", "--out", str(f), "--steps", "10")
    _assert_clean_error(code, err, f"--out {str(f)!r} is a file")


def test_threads_option(capsys, tmp_path):
    code, _, err = _run(capsys, "--threads", "0", "phases", str(tmp_path))
    _assert_clean_error(code, err, "--threads must be >= 1; got 0")


def test_train_subcommand_is_registered(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--help"])
    assert exc.value.code == 0
    assert "usage: htsr-diag train" in capsys.readouterr().out


def test_console_script_exit_code_and_message(tmp_path):
    """The installed entry point: non-zero exit, one-line message naming the path, no traceback."""
    exe = Path(sys.executable).with_name("htsr-diag")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "htsr_diag.cli"]
    missing = tmp_path / "nowhere"
    proc = subprocess.run(cmd + ["phases", str(missing)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert str(missing) in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_demo_outputs_are_numbers_not_nan(demo):
    """The short demo's summary has a real peak test accuracy (from the run's metrics)."""
    summary = json.loads((demo / "summary.json").read_text())
    assert 0.0 < summary["peak_test_acc"] <= 1.0
    assert np.isfinite(summary["final_train_acc"])


def test_a_library_warning_is_one_line_once_per_command(capsys, tmp_path, monkeypatch):
    """`htsr-diag phases` on checkpoints without training accuracy: the note is printed once (the
    command asks the classifier four questions), as `warning: MESSAGE (Category)`, no source line."""
    import warnings

    import torch

    from conftest import seeded_mlp

    folder = tmp_path / "c"
    folder.mkdir()
    for step in (0, 10, 100):
        torch.save(seeded_mlp(120, 80, 60, seed=step).state_dict(), folder / f"step_{step}.pt")
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("default")  # as outside pytest: shown, not raised
        code, out, err = _run(capsys, "phases", "c")
    assert code == 0 and "pre-grokking" in out
    lines = [x for x in err.splitlines() if "training accuracy" in x]
    assert lines == [lines[0]] and re.fullmatch(r"warning: no training accuracy at any checkpoint: .* "
                                                r"\(MissingTrainAccWarning\)", lines[0]), err
    assert "cli.py" not in err
