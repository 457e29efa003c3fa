"""Figure (5) of the report: the ESD and shuffled ESD at the alarm checkpoint, traps marked (issue #14)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg", force=True)
import matplotlib.pyplot as plt  # noqa: E402

from htsr_diag.phases import PhaseClassifier  # noqa: E402
from htsr_diag.report import alarm_figure, write_report  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
#: (step, number of planted outlier entries in fc1). An entry of 40 in a matrix of N(0, 1) entries
#: is its own rank-one spike: after any shuffle it still gives one eigenvalue ~40^2 far above the
#: Marchenko-Pastur edge (~(sqrt(200) + sqrt(300))^2 ~ 990 vs 1600), so k planted entries are k
#: traps (an independent count: the construction).
PLANTED = ((1, 0), (10, 0), (100, 3), (1000, 6))


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def ckpt_dir(tmp_path_factory) -> Path:
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    d = tmp_path_factory.mktemp("planted") / "checkpoints"
    d.mkdir()
    rng = np.random.default_rng(0)
    W1, W2 = rng.normal(size=(200, 300)), rng.normal(size=(100, 200))
    for step, k in PLANTED:
        a = W1.copy()
        a.flat[rng.choice(a.size, k, replace=False)] = 40.0
        save_file({"fc1.weight": torch.tensor(a, dtype=torch.float32),
                   "fc2.weight": torch.tensor(W2, dtype=torch.float32)}, str(d / f"step_{step}.safetensors"))
    return d


#: Fires at the first checkpoint where some layer has >= 2 traps (no accuracies in the folder).
ALARM = dict(use_train_acc=False, anti_rule="traps", min_traps=2, norm_ratio=None)


@pytest.fixture(scope="module")
def report(ckpt_dir, tmp_path_factory):
    return write_report(ckpt_dir, tmp_path_factory.mktemp("rep"), classifier=PhaseClassifier(**ALARM),
                        baselines=False, rng=0)


def _crosses(ax) -> int:
    """Number of points drawn as red crosses (the traps) in one panel."""
    return sum(len(ln.get_xdata()) for ln in ax.get_lines() if ln.get_marker() == "x")


def test_alarm_figure_written_and_embedded(report):
    assert report.summary.alarm_step == 100  # the first checkpoint with >= 2 planted traps
    path = report.figures["alarm_esd"]
    assert path.name == "alarm_esd.png" and path.read_bytes()[:8] == PNG_MAGIC
    assert path.stat().st_size > 10_000  # a drawn figure, not the "did not fire" note
    page = report.html.read_text()
    assert "data-file='alarm_esd.png'" in page and "id='alarm_esd'" in page
    assert len(re.findall(r"src='data:image/png;base64,", page)) == len(report.figures)


@pytest.mark.parametrize("step", [100, 1000, 10])
def test_marked_traps_equal_the_trajectory_count(report, ckpt_dir, step):
    from htsr_diag.checkpoints import find_checkpoints
    from htsr_diag.trajectory import Trajectory

    traj = Trajectory.from_json(report.files["trajectory_json"])
    i = int(np.flatnonzero(np.asarray(traj.steps) == step)[0])
    paths = {int(s): Path(p) for s, p in find_checkpoints(str(ckpt_dir))}
    fig = alarm_figure(paths, traj, step, ["fc1", "fc2"], rng=0)
    axes = np.asarray(fig.axes).reshape(2, 2)
    planted = dict(PLANTED)[step]
    for (ax_esd, ax_shuffled), name, expected in zip(axes, ("fc1", "fc2"), (planted, 0)):
        n_traps = next(r.n_traps for r in traj.reports[i].layers if r.name == name)
        assert n_traps == expected, name  # the trajectory finds the planted traps ...
        assert _crosses(ax_shuffled) == n_traps, name  # ... and the figure marks exactly those
        assert _crosses(ax_esd) == 0
        assert f"{n_traps:g} trap(s)" in ax_shuffled.get_title()
        assert f"step {step:,}" in ax_shuffled.get_title()


def test_alarm_figure_without_alarm_says_so(ckpt_dir, tmp_path):
    rep = write_report(ckpt_dir, tmp_path, classifier=PhaseClassifier(**{**ALARM, "min_traps": 100}),
                       baselines=False, rng=0)
    assert rep.summary.alarm_step is None
    fig = alarm_figure({}, None, None, ["fc1"], rng=0)
    assert any("alarm did not fire" in t.get_text() for t in fig.axes[0].texts)
    assert rep.figures["alarm_esd"].read_bytes()[:8] == PNG_MAGIC


def test_trap_panel_has_headroom_above_the_largest_count():
    """The overview's phase strip covers the top of each panel: the largest trap count stays below it."""
    from htsr_diag import plot

    ax = plot.plot_traps([0, 10, 100, 1000], {"fc1": [0, 1, 1, 3], "fc2": [0, 0, 0, np.nan]})
    bottom, top = ax.get_ylim()
    assert bottom < 0 and top >= 1.2 * 3
    ax = plot.plot_traps([1, 10], {"fc1": [0, 0]})  # no traps at all: still a visible 0 line
    assert ax.get_ylim()[1] > 0
