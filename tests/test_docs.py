"""Every ```python block of the user docs runs as written (issue #14), so a broken sample fails CI.

Blocks run one by one, each in a fresh namespace, in a temporary folder, on one torch thread.
A block that needs a long training run or a GPU is marked on the line before its fence with
``<!-- docs-test: skip (REASON) -->`` and is skipped with that reason.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ("docs/quickstart.md", "docs/usage.md")
SKIP = re.compile(r"<!--\s*docs-test:\s*skip\s*\((?P<reason>[^)]+)\)\s*-->")


def python_blocks(text: str) -> list[tuple[int, str, str | None]]:
    """(line of the fence, code, skip reason or None) of each ```python block of a markdown text."""
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
            m = SKIP.search(prev)
            out.append((start + 1, "\n".join(lines[start + 1:j]) + "\n", m.group("reason") if m else None))
            i = j
        i += 1
    return out


def _cases():
    for doc in DOCS:
        for line, code, reason in python_blocks((ROOT / doc).read_text()):
            marks = [pytest.mark.skip(reason=f"{doc}:{line}: {reason}")] if reason else []
            yield pytest.param(doc, line, code, id=f"{doc}:{line}", marks=marks)


def test_the_extractor_reads_fences_and_markers():
    text = "x\n```python\na = 1\n```\n<!-- docs-test: skip (needs a GPU) -->\n```python\nb = 2\n```\n```bash\nls\n```\n"
    assert python_blocks(text) == [(2, "a = 1\n", None), (6, "b = 2\n", "needs a GPU")]


def test_skip_markers_are_few():
    blocks = [b for doc in DOCS for b in python_blocks((ROOT / doc).read_text())]
    skipped = [b for b in blocks if b[2]]
    assert len(blocks) >= 6 and len(skipped) <= len(blocks) // 2


@pytest.mark.parametrize("doc, line, code", list(_cases()))
def test_docs_python_block_runs(doc, line, code, tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    pytest.importorskip("matplotlib").use("Agg", force=True)
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        exec(compile(code, f"{doc}:{line}", "exec"), {"__name__": "__docs__"})  # noqa: S102 - our own docs
    finally:
        torch.set_num_threads(threads)
        import matplotlib.pyplot as plt

        plt.close("all")
