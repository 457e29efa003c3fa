"""The prepared GPU check (benchmarks/gpu/run_all.py, issue #17) in its --dry-run mode, on the CPU.

The real run needs a CUDA device; this checks that every code path of the script works before it
meets one: all four items, the compile path (eager backend in a dry run), the trajectory files,
an item skipped for the budget, and an item that fails while the run goes on.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu" / "run_all.py"
ITEMS = ["trainer", "ensembles", "paper", "analysis"]
STATUSES = {"ok", "skipped-budget", "failed"}


@pytest.fixture(scope="module")
def run_all():
    spec = importlib.util.spec_from_file_location("gpu_run_all", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def _read(out: Path) -> tuple[dict, str]:
    assert (out / "gpu_check.json").is_file() and (out / "gpu_check.md").is_file()
    return json.loads((out / "gpu_check.json").read_text()), (out / "gpu_check.md").read_text()


def test_dry_run_all_items(tmp_path):
    """The whole script as a command; $OUT is the default output folder."""
    env = dict(os.environ, OUT=str(tmp_path), PYTHONPATH="")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--dry-run"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary, md = _read(tmp_path)
    assert summary["schema"] == "htsr_diag.gpu_check/1"
    assert summary["environment"]["dry_run"] is True and summary["environment"]["torch"]
    assert [it["key"] for it in summary["items"]] == ITEMS
    for it in summary["items"]:
        assert it["status"] == "ok", it
        assert it["wall_s"] >= 0 and it["title"] in md
    res = {it["key"]: it["results"] for it in summary["items"]}
    loops = {(r["dtype"], r["loop"]): r for r in res["trainer"]["rows"]}
    assert len(loops) == 6 and all(r["status"] == "ok" and r["steps_per_s"] > 0 for r in loops.values())
    assert set(res["trainer"]["speedup"]) == {"float32", "float64"}
    assert {(r["mode"], r["R"]) for r in res["ensembles"]["rows"]} == {
        ("eager", 1), ("eager", 2), ("compile=True", 1), ("compile=True", 2)}
    paper = res["paper"]
    assert paper["steps_done"] > 0 and [m["preset"] for m in paper["members"]] == ["paper", "paper-wd"]
    for m in paper["members"]:
        traj = json.loads((tmp_path / m["trajectory_file"]).read_text())
        assert len(traj["steps"]) == m["checkpoints"] == len(m["labels"]) == len(m["reference"])
        assert 0.0 <= m["agreement"] <= 1.0
    assert {c["case"] for c in res["analysis"]["cases"]} == {"layer", "gpt2"}
    assert all(c["same_alpha"] for c in res["analysis"]["cases"])
    # the summaries and the trajectories only: no checkpoints in the output folder
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "gpu_check.json", "gpu_check.md", "trajectory_paper-wd.json", "trajectory_paper.json"]
    for key in ("### 1.", "### 2.", "### 3.", "### 4.", "DRY RUN"):
        assert key in md


def test_tiny_budget_skips_later_items(run_all, tmp_path):
    assert run_all.main(["--dry-run", "--budget-s", "0.6", "--out", str(tmp_path)]) == 0
    summary, md = _read(tmp_path)
    status = [it["status"] for it in summary["items"]]
    assert set(status) <= STATUSES
    assert status[0] == "ok" and status[1:] == ["skipped-budget"] * 3
    assert md.count("**skipped-budget**") == 3
    assert not list(tmp_path.glob("trajectory_*.json"))


def test_failed_item_is_recorded_and_the_run_goes_on(run_all, tmp_path):
    assert run_all.main(["--dry-run", "--items", "trainer,ensembles", "--fail", "trainer",
                         "--out", str(tmp_path)]) == 0
    summary, md = _read(tmp_path)
    first, second = summary["items"]
    assert first["status"] == "failed" and "injected failure" in first["error"] and first["traceback"]
    assert second["status"] == "ok" and second["results"]["rows"]
    assert "**failed**" in md and "injected failure" in md


def test_bad_arguments(run_all):
    with pytest.raises(SystemExit):
        run_all.main(["--dry-run", "--items", "nope"])
    with pytest.raises(SystemExit):
        run_all.main(["--dry-run", "--budget-s", "-1"])
