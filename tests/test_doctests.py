"""Doctests are on: ``pytest`` (and ``make test``) collects the docstring examples of src/htsr_diag.

The examples themselves run as doctest items (``--doctest-modules`` in pyproject.toml); this file
checks that the configuration that makes them run is still there, and that every example which
is skipped says why."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "htsr_diag"

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")


def test_doctests_are_collected_from_the_package():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert "--doctest-modules" in cfg["addopts"].split()
    assert "src/htsr_diag" in cfg["testpaths"] and "tests" in cfg["testpaths"]


def test_the_package_has_examples():
    n = sum(f.read_text(encoding="utf-8").count(">>> ") for f in PACKAGE.rglob("*.py"))
    assert n > 100  # ~200 example lines when doctests were switched on


def test_every_skipped_example_says_why():
    """A ``+SKIP`` example needs a comment nearby (a line starting "Skipped" or "(needs ...)" in the
    docstring or a ``# needs`` comment on the line) saying what it needs: files, GPU, network, long runs."""
    missing = []
    for f in sorted(PACKAGE.rglob("*.py")):
        lines = f.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            if "+SKIP" not in line:
                continue
            context = " ".join(lines[max(0, i - 12): i + 1]).lower()
            if not re.search(r"skipped:|needs |# slow|# writes", context):
                missing.append(f"{f.relative_to(ROOT)}:{i + 1}")
    assert not missing, f"+SKIP examples without a reason: {missing}"


def test_an_integration_without_its_extra_is_skipped_not_an_error(tmp_path):
    """Without the dev extras (`pip install -e .`), `pytest` must still run: the examples of a
    module whose framework is missing are skipped (--doctest-ignore-import-errors), and the rest
    of the package's examples run. The framework is hidden with a None entry in sys.modules."""
    import subprocess

    code = ("import sys, pytest\n"
            "sys.modules['lightning'] = sys.modules['pytorch_lightning'] = None\n"
            f"sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', {str(PACKAGE / 'integrations')!r}]))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert re.search(r"unable to import module .*lightning\.py", out.stdout), out.stdout[-3000:]
    assert re.search(r"\d+ passed", out.stdout), out.stdout[-3000:]  # _common, transformers, tensorboard
