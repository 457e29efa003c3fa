"""Every ```python block of the user docs runs as written (issue #14), so a broken sample fails CI.

Blocks run one by one, each in a fresh namespace, in a temporary folder, on one torch thread.
A block that needs a long training run or a GPU is marked on the line before its fence with
``<!-- docs-test: skip (REASON) -->`` and is skipped with that reason. The library's warnings fail
a block unless the line before its fence names them, ``<!-- docs-test: warns NAME[, NAME] (REASON) -->``,
and then each named warning must be raised (a user who copies the block sees it; the docs say why).
A block that reads the demo's run folder or other tools' checkpoint folders is marked
``<!-- docs-test: demo -->`` and runs in a copy of the ``docs_world`` fixture: ``runs/demo`` from a
300-step ``htsr-diag demo``, and small folders laid out as the docs name them.
"""

from __future__ import annotations

import re
import shlex
import warnings
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ("README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md")))
SKIP = re.compile(r"<!--\s*docs-test:\s*skip\s*\((?P<reason>[^)]+)\)\s*-->")
DEMO = re.compile(r"<!--\s*docs-test:\s*demo\s*-->")
WARNS = re.compile(r"<!--\s*docs-test:\s*warns\s+(?P<names>[\w, ]+?)\s*\((?P<reason>[^)]+)\)\s*-->")


class Block(NamedTuple):
    line: int  # of the fence
    code: str
    skip: str | None  # the reason, when skipped
    warns: tuple[str, ...]  # names of the warnings it is expected to raise
    demo: bool  # runs where runs/demo exists


def python_blocks(text: str) -> list[Block]:
    """The ```python blocks of a markdown text, with their markers."""
    lines = text.splitlines()
    out = []
    i = 0
    while i < len(lines):
        if lines[i].strip() == "```python":
            start = i
            j = i + 1
            while j < len(lines) and lines[j].strip() != "```":
                j += 1
            prev = next((lines[k] for k in range(start - 1, -1, -1) if lines[k].strip()), "")
            m, w = SKIP.search(prev), WARNS.search(prev)
            warns = tuple(n.strip() for n in w.group("names").split(",")) if w else ()
            out.append(Block(start + 1, "\n".join(lines[start + 1:j]) + "\n", m.group("reason") if m else None,
                             warns, bool(DEMO.search(prev))))
            i = j
        i += 1
    return out


def _copy_world(world: Path, tmp_path: Path) -> Path:
    """A private copy of the ``docs_world`` fixture for one block (blocks write into it)."""
    import shutil

    return Path(shutil.copytree(world, tmp_path / "world", symlinks=True))


def _cases():
    for doc in DOCS:
        for b in python_blocks((ROOT / doc).read_text()):
            marks = [pytest.mark.skip(reason=f"{doc}:{b.line}: {b.skip}")] if b.skip else []
            yield pytest.param(doc, b, id=f"{doc}:{b.line}", marks=marks)


def test_the_extractor_reads_fences_and_markers():
    text = ("x\n```python\na = 1\n```\n<!-- docs-test: skip (needs a GPU) -->\n```python\nb = 2\n```\n```bash\nls\n```\n"
            "<!-- docs-test: warns SmallSpectrumWarning, NoFeatureWarning (a 10-unit head) -->\n```python\nc = 3\n```\n"
            "<!-- docs-test: demo --> <!-- docs-test: warns SmallSpectrumWarning (head) -->\n```python\nd = 4\n```\n")
    assert python_blocks(text) == [(2, "a = 1\n", None, (), False), (6, "b = 2\n", "needs a GPU", (), False),
                                   (13, "c = 3\n", None, ("SmallSpectrumWarning", "NoFeatureWarning"), False),
                                   (17, "d = 4\n", None, ("SmallSpectrumWarning",), True)]


def test_skip_markers_are_few():
    blocks = [b for doc in DOCS for b in python_blocks((ROOT / doc).read_text())]
    skipped = [b for b in blocks if b.skip]
    assert len(blocks) >= 6 and len(skipped) <= len(blocks) // 2


@pytest.mark.parametrize("doc, block", list(_cases()))
def test_docs_python_block_runs(doc, block, tmp_path, monkeypatch, request):
    import htsr_diag.exceptions as exc

    line, code, warns = block.line, block.code, block.warns
    if block.demo:
        tmp_path = _copy_world(request.getfixturevalue("docs_world"), tmp_path)

    torch = pytest.importorskip("torch")
    pytest.importorskip("matplotlib").use("Agg", force=True)
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            exec(compile(code, f"{doc}:{line}", "exec"), {"__name__": "__docs__"})  # noqa: S102 - our own docs
    finally:
        torch.set_num_threads(threads)
        import matplotlib.pyplot as plt

        plt.close("all")
    seen = {w.category.__name__ for w in record if issubclass(w.category, exc.HTSRWarning)}
    unknown = [n for n in warns if not isinstance(getattr(exc, n, None), type)]
    assert not unknown, f"{doc}:{line}: the docs-test marker names {unknown}, not warnings of htsr_diag.exceptions"
    assert seen <= set(warns), (f"{doc}:{line}: raised {sorted(seen - set(warns))}, which the docs do not "
                                f"announce: {[str(w.message) for w in record]}")
    assert set(warns) <= seen, f"{doc}:{line}: announces {sorted(set(warns) - seen)}, which it no longer raises"


# ----------------------------------------------------------------------------- shell blocks
# Every ```bash block of docs/ that names `htsr-diag` (or `python -m htsr_diag...`) runs, line by
# line, in a copy of a small world of inputs (below), with these rewrites so that it takes seconds:
#   - `train`, `demo` and `sweep` (and `python -m htsr_diag.train`) run for SHELL_STEPS steps;
#   - `--device cuda` becomes `--device cpu` when there is no CUDA device; `--workers N` at most 2;
#   - a path under /tmp/ lands in the world; a `step_N.safetensors` the short demo did not write
#     is replaced by the demo's last checkpoint.
# `make` lines are the README's commands and are not run here (CI runs `make test`; docs/training.md
# times `make demo`); any other program is not run. Each command must exit 0; the library's
# warnings are shown as the command would show them, not turned into errors (a command in the docs
# may warn, e.g. about a run that logged no training accuracy: the docs say so beside it).
SHELL_DOCS = tuple(sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md")))
SHELL_FENCES = ("```bash", "```sh", "```shell")
SHELL_STEPS = "300"


def shell_blocks(text: str) -> list[tuple[int, list[str]]]:
    """(line of the fence, commands) of each shell block that names htsr-diag / htsr_diag.

    Comments are dropped and backslash-continued lines joined; each command is one string.
    """
    lines = text.splitlines()
    out = []
    i = 0
    while i < len(lines):
        if lines[i].strip() in SHELL_FENCES:
            start, j = i, i + 1
            while j < len(lines) and lines[j].strip() != "```":
                j += 1
            body = "\n".join(lines[start + 1:j]).replace("\\\n", " ")
            commands = [shlex.join(shlex.split(c, comments=True)) for c in body.splitlines()]
            commands = [c for c in commands if c]
            if any("htsr-diag" in c or "htsr_diag" in c for c in commands):
                out.append((start + 1, commands))
            i = j
        i += 1
    return out


def _rewrite(argv: list[str], world: Path) -> list[str]:
    """The rewrites listed above, applied to one command's arguments (not to argv[0])."""
    import torch

    args = list(argv)
    sub = next((a for a in args if not a.startswith("-")), None)
    runs_long = sub in ("train", "demo", "sweep") or args[:2] == ["-m", "htsr_diag.train"]
    for k, a in enumerate(args):
        prev = args[k - 1] if k else ""
        if prev == "--steps" and runs_long:
            args[k] = SHELL_STEPS
        elif prev == "--device" and a.startswith("cuda") and not torch.cuda.is_available():
            args[k] = "cpu"
        elif prev == "--workers":
            args[k] = str(min(int(a), 2))
        elif a.startswith("/tmp/"):
            args[k] = str(world / "tmp" / a[len("/tmp/"):])
        elif re.search(r"step_\d+\.safetensors$", a) and not (world / a).exists():
            found = sorted((world / a).parent.glob("step_*.safetensors"))
            assert found, f"{a}: no checkpoint in its folder to stand in for it"
            args[k] = str(found[-1])
    if runs_long and "--steps" not in args:
        args += ["--steps", SHELL_STEPS]
    return args


def test_shell_extractor_and_rewrites(tmp_path):
    text = ("```bash\nmake demo   # the main job\nhtsr-diag train --preset paper --steps 1e7 \\\n"
            "    --out runs/x   # long\n```\n```bash\nls -l\n```\n")
    assert shell_blocks(text) == [(1, ["make demo", "htsr-diag train --preset paper --steps 1e7 --out runs/x"])]
    (tmp_path / "ck").mkdir()
    (tmp_path / "ck" / "step_000000300.safetensors").touch()
    args = _rewrite(["demo", "--out", "/tmp/smoke", "--workers", "8", "--device", "cuda"], tmp_path)
    assert args[:4] == ["demo", "--out", str(tmp_path / "tmp" / "smoke"), "--workers"] and args[4] == "2"
    assert args[-2:] == ["--steps", SHELL_STEPS]
    assert _rewrite(["analyze", "ck/step_000010000.safetensors"], tmp_path)[1].endswith("step_000000300.safetensors")
    assert _rewrite(["phases", "runs/x", "--steps-from", "(\\d+)"], tmp_path) == ["phases", "runs/x", "--steps-from", "(\\d+)"]


def _mlp_state(seed: int, prefix: str = "") -> dict:
    import torch

    g = torch.Generator().manual_seed(seed)
    return {f"{prefix}0.weight": torch.randn(64, 96, generator=g), f"{prefix}0.bias": torch.zeros(64),
            f"{prefix}2.weight": torch.randn(32, 64, generator=g)}


@pytest.fixture(scope="module")
def docs_world(tmp_path_factory):
    """What the docs' code reads: a short demo (runs/demo), model.safetensors, an HF Trainer output
    folder (out/checkpoint-N with trainer_state.json), a Lightning CSVLogger folder, a folder of
    .pt files named ckptN with a metrics.csv (exp/) and one of step_N.pt files (ckpts/)."""
    import csv
    import json

    import torch
    from safetensors.torch import save_file

    from htsr_diag.cli import main

    world = tmp_path_factory.mktemp("docs_world")
    (world / "tmp").mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(world)
        assert main(["demo", "--steps", SHELL_STEPS, "--out", "runs/demo"]) == 0
    save_file(_mlp_state(0), world / "model.safetensors")
    log = []
    for step in (100, 500):
        folder = world / "out" / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        save_file(_mlp_state(step), folder / "model.safetensors")
        (folder / "config.json").write_text(json.dumps({"model_type": "toy"}))
        log += [{"loss": 1.0 / step, "step": step}, {"eval_accuracy": step / 1000, "step": step}]
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": log}))
    version = world / "lightning_logs" / "version_0"
    (version / "checkpoints").mkdir(parents=True)
    with open(version / "metrics.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["epoch", "step", "train_acc", "val_acc"])
        for i, step in enumerate((49, 99)):
            torch.save({"epoch": i, "global_step": step + 1, "state_dict": _mlp_state(i, "model.")},
                       version / "checkpoints" / f"epoch={i}-step={step}.ckpt")
            w.writerows([[i, step, 0.5 + i / 4, ""], [i, step, "", 0.4 + i / 4]])
    (world / "exp").mkdir()
    with open(world / "exp" / "metrics.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["step", "acc"])
        for step in (10, 20, 40):
            torch.save(_mlp_state(step), world / "exp" / f"run-ckpt{step}.pt")
            w.writerow([step, step / 50])
    (world / "ckpts").mkdir()
    for step in (0, 309):
        torch.save(_mlp_state(step), world / "ckpts" / f"step_{step:08d}.pt")
    return world


def _shell_cases():
    for doc in SHELL_DOCS:
        for line, commands in shell_blocks((ROOT / doc).read_text()):
            yield pytest.param(doc, line, commands, id=f"{doc}:{line}")


def test_shell_blocks_are_found():
    found = [c for doc in SHELL_DOCS for _, cs in shell_blocks((ROOT / doc).read_text()) for c in cs]
    assert sum(c.startswith("htsr-diag ") for c in found) >= 15  # quickstart, training and usage


@pytest.mark.slow
@pytest.mark.parametrize("doc, line, commands", list(_shell_cases()))
def test_docs_shell_block_runs(doc, line, commands, docs_world, tmp_path, capsys, monkeypatch):
    import subprocess
    import sys

    from htsr_diag.cli import main

    world = _copy_world(docs_world, tmp_path)
    monkeypatch.chdir(world)
    ran = 0
    for command in commands:
        argv = shlex.split(command)
        if argv[0] == "htsr-diag":
            with warnings.catch_warnings():
                warnings.simplefilter("always")
                rc = main(_rewrite(argv[1:], world))
        elif argv[0] == "python" and argv[1:3] == ["-m", "htsr_diag.train"]:
            rc = subprocess.run([sys.executable, *_rewrite(argv[1:], world)], capture_output=True).returncode
        elif argv[0] == "python" and argv[1].endswith(".py"):
            rc = subprocess.run([sys.executable, str(ROOT / argv[1]), *argv[2:]], capture_output=True).returncode
        else:
            continue  # `make ...` and other programs: see the note above
        assert rc == 0, f"{doc}:{line}: `{command}` exited {rc}:\n{capsys.readouterr().err[-2000:]}"
        ran += 1
    assert ran, f"{doc}:{line}: no htsr-diag command was run"
