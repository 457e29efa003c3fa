"""Tests of the figures (htsr_diag.plot) and the run-folder report (htsr_diag.report)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg", force=True)
import matplotlib.pyplot as plt  # noqa: E402

from htsr_diag import plot  # noqa: E402
from htsr_diag.phases import PhaseClassifier  # noqa: E402
from htsr_diag.report import (  # noqa: E402
    RunReport,
    check_run_dir,
    representative_checkpoints,
    write_report,
)

# the bundled MLP's 10-unit head (fc3) has fewer than 20 eigenvalues: the small-spectrum warning is expected there and is not under test here
# (tests/test_warn_once.py and tests/test_powerlaw.py test the warning itself)
pytestmark = pytest.mark.filterwarnings("ignore::htsr_diag.exceptions.SmallSpectrumWarning")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PRE, GROK, ANTI = "pre-grokking", "grokking", "anti-grokking"


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


# ----------------------------------------------------------------------------- plot
def test_plot_functions_return_axes_and_draw_on_given_axes():
    fig, ax = plt.subplots()
    steps = [0, 1, 10, 100]
    assert plot.plot_accuracy(steps, [0.1, 0.5, 1, 1], [0.1, 0.2, 0.8, 0.6], ax=ax) is ax
    assert [ln.get_label() for ln in ax.get_lines()] == ["train accuracy", "test accuracy"]
    np.testing.assert_allclose(ax.get_lines()[1].get_ydata(), [0.1, 0.2, 0.8, 0.6])
    # step 0 present: symlog axis; all positive: log axis
    assert ax.get_xscale() == "symlog"
    ax2 = plot.plot_alpha([1, 10, 100], {"fc1": [5, 3, 1.5], "fc2": [3, 2.5, 1.9]})
    assert ax2.get_xscale() == "log"
    labels = [ln.get_label() for ln in ax2.get_lines()]
    assert labels == ["alpha fc1", "alpha fc2", "alpha = 2"]
    assert ax2.get_lines()[-1].get_ydata()[0] == 2.0  # the reference line at alpha = 2
    ax3 = plot.plot_traps([1, 10, 100], {"fc1": [0, 0, 7]})
    assert ax3.get_ylabel() == "correlation traps"


def test_phase_bands_merge_runs_and_split_at_geometric_midpoints():
    ax = plot.plot_phase_bands([1, 10, 100, 1000], [PRE, PRE, GROK, ANTI])
    spans = [p for p in ax.patches]
    assert len(spans) == 3  # the two pre-grokking checkpoints form one band
    # band edges: first step, sqrt(10 * 100) = 31.62..., sqrt(100 * 1000) = 316.2..., last step
    np.testing.assert_allclose([p.get_x() for p in spans], [1, np.sqrt(1000), np.sqrt(1e5)])
    np.testing.assert_allclose([p.get_x() + p.get_width() for p in spans], [np.sqrt(1000), np.sqrt(1e5), 1000])
    colors = [matplotlib.colors.to_hex(p.get_facecolor()) for p in spans]
    assert colors == [plot.PHASE_COLORS[PRE], plot.PHASE_COLORS[GROK], plot.PHASE_COLORS[ANTI]]


def test_phase_bands_unknown_label_is_left_unshaded():
    ax = plot.plot_phase_bands([1, 10, 100], ["", GROK, GROK])
    assert len(ax.patches) == 1


@pytest.mark.parametrize("steps, labels, match", [
    ([10, 1], [PRE, PRE], "strictly increasing"),
    ([], [], "at least one"),
    ([-1, 2], [PRE, PRE], "finite and >= 0"),
    ([1, 2, 3], [PRE, PRE], "one entry per step; got 2 labels for 3 steps"),
])
def test_phase_bands_bad_input(steps, labels, match):
    with pytest.raises(ValueError, match=match):
        plot.plot_phase_bands(steps, labels)


def test_plot_esd_draws_the_fitted_power_law_density():
    rng = np.random.default_rng(0)
    ev = rng.pareto(1.5, 400) + 1.0

    class Fit:  # stands for a PowerLawFit: only alpha, xmin, n_tail are read
        alpha, xmin, n_tail = 2.5, 2.0, 100

    ax = plot.plot_esd(ev, fit=Fit())
    line = next(ln for ln in ax.get_lines() if ln.get_label().startswith("power law"))
    x, y = line.get_xdata(), line.get_ydata()
    # closed form: (n_tail / m) (alpha - 1) / xmin (x / xmin)^-alpha
    np.testing.assert_allclose(y, 100 / 400 * 1.5 / 2.0 * (x / 2.0) ** -2.5)
    assert x.min() == pytest.approx(2.0) and x.max() == pytest.approx(ev.max())
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    # the histogram is a density over all m eigenvalues: integral = 1
    bars = ax.containers[0]
    assert sum(b.get_height() * b.get_width() for b in bars) == pytest.approx(1.0)
    # the largest eigenvalue has its own bar, even after empty bins
    assert max(b.get_x() + b.get_width() for b in bars) == pytest.approx(ev.max())


def test_plot_esd_draws_a_lone_largest_eigenvalue():
    """Regression: 10**log10(948) < 948 in floating point, so the top bin edge dropped it."""
    ev = np.concatenate([np.linspace(1.0, 100.0, 199), [948.0]])  # one outlier a decade above the rest
    ax = plot.plot_esd(ev, bins=40)
    bars = ax.containers[0]
    last = max(bars, key=lambda b: b.get_x())
    # its bar: height 1 / (m * width) > 0, right edge at the outlier
    assert last.get_x() + last.get_width() == pytest.approx(948.0)
    assert last.get_height() == pytest.approx(1.0 / (200 * last.get_width()))


def test_plot_esd_without_positive_eigenvalues_says_so():
    ax = plot.plot_esd(np.zeros(5))
    assert ax.texts[0].get_text() == "no positive eigenvalues"


def test_plot_shuffled_esd_mp_density_edge_and_traps():
    rng = np.random.default_rng(1)
    W = rng.standard_normal((400, 100))
    ev = np.linalg.eigvalsh(W.T @ W)
    ev = np.append(ev / ev.mean(), [4.0, 5.0])  # two outliers above the edge
    ax = plot.plot_shuffled_esd(ev, q=4.0, sigma=1.0, threshold=3.0, n_traps=2)
    mp = next(ln for ln in ax.get_lines() if ln.get_label().startswith("MP fit"))
    x, y = mp.get_xdata(), mp.get_ydata()
    # MP support for q = 4, sigma = 1: [(1 - 1/2)^2, (1 + 1/2)^2] = [0.25, 2.25]
    assert x.min() > 0.25 and x.max() < 2.25
    # the MP density integrates to 1 over its support (closed form: it is a probability law)
    assert np.trapezoid(y, x) == pytest.approx(1.0, abs=0.01)
    vlines = {ln.get_label(): ln.get_xdata()[0] for ln in ax.get_lines() if ln.get_label() in
              ("MP edge", "trap threshold")}
    assert vlines == {"MP edge": pytest.approx(2.25), "trap threshold": 3.0}
    traps = next(ln for ln in ax.get_lines() if "trap(s)" in ln.get_label())
    assert traps.get_label() == "2 trap(s)"
    np.testing.assert_allclose(traps.get_xdata(), [4.0, 5.0])


def test_plot_phases_levels_and_reference_bands():
    ax = plot.plot_phases([1, 10, 100], [PRE, GROK, ANTI], reference=[PRE, PRE, GROK])
    line = ax.get_lines()[0]
    np.testing.assert_array_equal(line.get_ydata(), [0, 1, 2])
    assert len(ax.patches) == 2


def test_figures_have_expected_panels():
    fig = plot.figure_overview([0, 1, 10, 100], train_acc=[0.1, 0.9, 1, 1], test_acc=[0.1, 0.2, 0.8, 0.6],
                               alphas={"fc1": [6, 5, 3, 1.5]}, traps={"fc1": [0, 0, 0, 4]},
                               predicted=[PRE, PRE, GROK, ANTI], from_accuracy=[PRE, PRE, GROK, ANTI])
    assert len(fig.axes) == 3
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "from accuracy: grokking" in legend and "predicted: anti-grokking" in legend
    # the bands are explained once, on the top panel
    lower = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    assert lower == ["alpha fc1", "alpha = 2"]
    fig2 = plot.figure_baselines([1, 10, 100], {"l2_norm": [1, 2, 3], "weight_entropy": [3, 2, 1],
                                                "activation_sparsity": [0.1, 0.2, 0.3]})
    visible = [ax for ax in fig2.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == ["l2 norm", "weight entropy", "activation sparsity"]


def test_use_agg_switches_backend():
    plot.use_agg()
    assert matplotlib.get_backend().lower() == "agg"


# ----------------------------------------------------------------------------- report helpers
def test_representative_checkpoints():
    steps = [0, 1, 10, 100, 1000, 2000]
    labels = [PRE, PRE, PRE, GROK, GROK, ANTI]
    te = [0.1, 0.1, 0.2, 0.9, 0.8, 0.5]
    # pre: middle of indices 0..2 -> 1; grok: peak test accuracy (index 3); anti: last checkpoint
    assert representative_checkpoints(steps, labels, te) == {PRE: 1, GROK: 3, ANTI: 5}
    assert representative_checkpoints(steps, labels) == {PRE: 1, GROK: 3, ANTI: 5}
    assert representative_checkpoints([1, 2], [PRE, PRE]) == {PRE: 0}


def test_check_run_dir_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"run_dir '.*nope' does not exist"):
        check_run_dir(tmp_path / "nope")
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(NotADirectoryError, match=r"'.*file\.txt' is a file, not a run folder"):
        check_run_dir(f)
    with pytest.raises(ValueError, match=r"is not a run folder: it has no checkpoints/ folder"):
        check_run_dir(tmp_path)
    (tmp_path / "member_00").mkdir()
    with pytest.raises(ValueError, match=r"ensemble folder; pass one member"):
        check_run_dir(tmp_path)
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(ValueError, match="has no checkpoint files"):
        check_run_dir(tmp_path)
    with pytest.raises(TypeError, match="run_dir must be a path"):
        check_run_dir(3)


def test_write_report_needs_a_source(tmp_path):
    with pytest.raises(ValueError, match="needs run_dir .* or trajectory"):
        write_report(None, tmp_path)


def test_write_report_argument_errors(tmp_path):
    with pytest.raises(TypeError, match=r"rng must be a non-negative int seed; got -1"):
        write_report(tmp_path, rng=-1)
    with pytest.raises(TypeError, match=r"classifier must be a htsr_diag.PhaseClassifier; got str"):
        write_report(tmp_path, classifier="rules")
    with pytest.raises(TypeError, match=r"trajectory must be a htsr_diag.Trajectory .* got dict"):
        write_report(trajectory={}, out_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match=r"run_dir '.*nope' does not exist"):
        write_report(tmp_path / "nope")


def test_write_report_out_dir_is_a_file(report, tmp_path):
    from htsr_diag.trajectory import Trajectory

    traj = Trajectory.from_json(report.files["trajectory_json"])
    f = tmp_path / "taken"
    f.write_text("x")
    with pytest.raises(NotADirectoryError, match=r"out_dir '.*taken' is a file"):
        write_report(trajectory=traj, out_dir=f)
    with pytest.raises(ValueError, match="out_dir must be given"):
        write_report(trajectory=traj)


# ----------------------------------------------------------------------------- a real run
@pytest.fixture(scope="module")
def run_dir(fast_run_300) -> Path:
    """A real 300-step run of the reference MLP (conftest; shared with test_alarm_figure)."""
    return fast_run_300


@pytest.fixture(scope="module")
def report(run_dir, tmp_path_factory) -> RunReport:
    return write_report(run_dir, tmp_path_factory.mktemp("report"), rng=0)


def test_report_writes_every_file(report):
    for key, path in report.figures.items():
        data = path.read_bytes()
        assert data[:8] == PNG_MAGIC, key
        if key == "alarm_esd" and report.summary.alarm_step is None:
            continue  # a short note: this 300-step run never fits, so no alarm (tests/test_alarm_figure.py)
        assert len(data) > 10_000, key  # a rendered figure, not an empty canvas
    assert set(report.figures) == {"overview", "esd", "shuffled_esd", "baselines", "alarm_esd"}
    for key, path in report.files.items():
        assert path.is_file() and path.stat().st_size > 0, key


def test_report_html_embeds_and_links_every_figure(report):
    page = report.html.read_text()
    assert page.startswith("<!DOCTYPE html>")
    for path in report.figures.values():
        assert f"href='{path.name}'" in page
        assert f"data-file='{path.name}'" in page
    uris = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(uris) == 5
    import base64

    assert sorted(base64.b64decode(u)[:8] for u in uris) == [PNG_MAGIC] * 5
    # the embedded images are the written files
    assert base64.b64decode(uris[0]) == report.figures["overview"].read_bytes()


def test_report_onset_columns_recomputed_from_the_trajectory(report, run_dir, tmp_path):
    # The 300-step run never reaches train_acc 0.99, so with the default threshold the onset and
    # shrink columns are NaN. Count it as fitted at a training accuracy it does reach, and check
    # both columns against values recomputed here from the trajectory's own per-layer numbers.
    from htsr_diag.trajectory import Trajectory

    traj = Trajectory.from_json(report.files["trajectory_json"])
    train = np.asarray(traj.metrics["train_acc"])
    threshold = float(np.sort(train)[train.size // 2])
    clf = PhaseClassifier(train_threshold=threshold)
    rep = write_report(run_dir, tmp_path / "rep", trajectory=traj, classifier=clf, baselines=False)
    rows = [r.split(",") for r in rep.files["phases_csv"].read_text().splitlines()[1:]]
    fit = int(np.flatnonzero(train >= threshold)[0])
    layers = ("fc1", "fc2")
    base = lambda x: np.median(x[..., max(0, fit - 2): fit + 1], axis=-1)  # noqa: E731 (median of 3 at fitting)
    norms = np.vstack([traj.feature("frobenius_norm", name) for name in layers])
    shrink = (norms / base(norms)[:, None]).max(axis=0)
    srank = np.vstack([traj.feature("stable_rank", name) for name in layers]).min(axis=0)
    onset = srank / base(srank)
    got_onset = np.array([float(r[5]) for r in rows])
    got_shrink = np.array([float(r[6]) for r in rows])
    assert np.isfinite(got_shrink).all() and np.isfinite(got_onset).all()
    np.testing.assert_allclose(got_onset, onset, rtol=1e-5)
    np.testing.assert_allclose(got_shrink, shrink, rtol=1e-5)


def test_report_tables_are_consistent_with_the_trajectory(report, run_dir):
    from htsr_diag.train import list_checkpoints, read_metrics
    from htsr_diag.trajectory import Trajectory

    steps = [s for s, _ in list_checkpoints(run_dir)]
    assert report.steps.tolist() == steps
    traj = Trajectory.from_json(report.files["trajectory_json"])
    assert traj.steps.tolist() == steps
    rows = report.files["phases_csv"].read_text().splitlines()
    assert rows[0].split(",") == ["step", "train_acc", "test_acc", "mean_alpha", "n_traps", "onset_ratio",
                                  "shrink", "predicted", "confidence", "from_accuracy"]
    onset = PhaseClassifier().evidence(traj)["onset_ratio"]
    np.testing.assert_allclose([float(r.split(",")[5]) for r in rows[1:]], onset, rtol=1e-5)
    assert [int(r.split(",")[0]) for r in rows[1:]] == steps
    summary = json.loads(report.files["summary_json"].read_text())
    assert summary["n_checkpoints"] == len(steps)
    assert summary["first_step"] == steps[0] and summary["last_step"] == steps[-1]
    metrics = {int(r["step"]): r for r in read_metrics(run_dir)}
    peak_step = max((s for s in steps if s in metrics), key=lambda s: metrics[s]["test_acc"])
    assert summary["peak_test_step"] == peak_step
    assert summary["peak_test_acc"] == pytest.approx(metrics[peak_step]["test_acc"])
    text = report.files["summary_txt"].read_text()
    assert "peak test accuracy" in text and "anti-grokking alarm" in text
    assert f"{summary['peak_test_acc']:.3f}" in text


def test_figure_3_redraws_the_trajectory_shuffles(report, run_dir):
    """layer_stream reproduces analyze_checkpoints' shuffles: the same traps, eigenvalue for eigenvalue."""
    from htsr_diag import correlation_traps, find_layers
    from htsr_diag.report import layer_stream
    from htsr_diag.train import list_checkpoints
    from htsr_diag.trajectory import Trajectory

    traj = Trajectory.from_json(report.files["trajectory_json"])
    for i, (step, path) in enumerate(list_checkpoints(run_dir)):
        for lay in find_layers(path).layers[:2]:
            assert traj.reports[i].center_traps is True  # the report's trajectory counts centred traps
            tr = correlation_traps(lay.weight, rng=layer_stream(0, step, lay.name), center_traps=True)
            row = next(r for r in traj.reports[i].layers if r.name == lay.name)
            assert tr.n_traps == row.n_traps
            np.testing.assert_allclose(tr.trap_eigenvalues, row.trap_eigenvalues, rtol=1e-12)
            assert tr.threshold == pytest.approx(row.trap_threshold, rel=1e-12)


def test_report_from_trajectory_without_run_folder(report, tmp_path):
    from htsr_diag.trajectory import Trajectory

    traj = Trajectory.from_json(report.files["trajectory_json"])
    rep = write_report(trajectory=traj, out_dir=tmp_path)
    assert rep.figures["esd"].read_bytes()[:8] == PNG_MAGIC
    assert rep.summary.n_checkpoints == len(traj.steps)


def test_report_explains_every_label(report):
    """report.html and summary.txt say per checkpoint why it has its label, from the classifier's evidence."""
    from htsr_diag.explain import explain_labels
    from htsr_diag.trajectory import Trajectory

    traj = Trajectory.from_json(report.files["trajectory_json"])
    clf = PhaseClassifier()
    expected = explain_labels(clf.evidence(traj), clf.features(traj), clf.predict(traj), report.from_accuracy,
                              rules=clf.rules())
    assert [e.to_dict() for e in report.explanations] == [e.to_dict() for e in expected]
    assert len(report.explanations) == report.steps.size
    assert all(e.layers.startswith("fc1: alpha ") and "; fc2: alpha " in e.layers and "fc3" not in e.layers
               for e in report.explanations)
    assert all(e.rule.startswith(e.label) for e in report.explanations)
    page = report.html.read_text()
    assert page.index("How to read this") < page.index("<h2>Summary</h2>")
    import html as html_mod

    for e in report.explanations:
        assert html_mod.escape(e.rule) in page
    text = report.files["summary_txt"].read_text()
    assert "why each checkpoint has its label" in text
    for e in report.explanations:
        assert e.text() in text
    assert report.to_dict()["explanations"][0]["step"] == int(report.steps[0])


def test_step_axis_starts_at_step_0_without_a_negative_half():
    ax = plot.plot_alpha([0, 1, 10, 100], {"fc1": [6, 5, 3, 1.5]})
    assert ax.get_xscale() == "symlog" and ax.get_xlim() == (0.0, 100.0)
    ax = plot.plot_phases([0, 1, 10, 1000], [PRE, PRE, GROK, ANTI], reference=[PRE, GROK, GROK, ANTI])
    assert ax.get_xlim()[0] == 0.0  # before: symlog margins ran to -10^2
    ax = plot.plot_traps([10, 100, 1000], {"fc1": [0, 0, 3]})
    assert ax.get_xscale() == "log" and ax.get_xlim() == (10.0, 1000.0)


def test_bands_visible_with_legends():
    steps, labs = [0, 1, 10, 100], [PRE, GROK, GROK, ANTI]
    fig = plot.figure_overview(steps, train_acc=[0.1, 1, 1, 1], test_acc=[0.1, 0.8, 0.9, 0.6],
                               alphas={"fc1": [6, 4, 3, 1.5]}, traps={"fc1": [0, 0, 0, 4]}, from_accuracy=labs)
    bands = [p for p in fig.axes[0].patches if p.get_alpha() is not None]
    assert bands and all(0.15 <= p.get_alpha() <= 0.25 for p in bands)
    fig = plot.figure_baselines(steps, {"l2_norm": [1, 2, 3, 4], "weight_entropy": [4, 3, 2, 1]},
                                from_accuracy=labs)
    assert len(fig.legends) == 1
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [
        "from accuracy: pre-grokking", "from accuracy: grokking", "from accuracy: anti-grokking"]


def test_a_report_without_training_accuracy_warns_once(tmp_path):
    """The report asks the classifier five questions of one trajectory; the missing-train-accuracy
    note is shown once, not once per question (issue #14: one warning per run)."""
    import warnings

    import torch

    from conftest import seeded_mlp
    from htsr_diag.exceptions import MissingTrainAccWarning

    folder = tmp_path / "ckpts"
    folder.mkdir()
    for step in (0, 10, 100):
        torch.save(seeded_mlp(120, 80, 60, seed=step).state_dict(), folder / f"step_{step}.pt")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        write_report(folder, tmp_path / "report", rng=0)
    missing = [w for w in caught if issubclass(w.category, MissingTrainAccWarning)]
    assert len(missing) == 1, [str(w.message) for w in missing]
    assert missing[0].filename == __file__  # points at the caller, not inside the library
