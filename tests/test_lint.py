"""The linters the project is configured for (pyproject.toml) pass on the whole tree: ruff everywhere, mypy on
core/ and storage/. A finding fails with the linter's own report, file and line first."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests.helpers import ROOT


def _run(*args: str, timeout: int) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_ruff_finds_nothing():
    out = _run("ruff", "check", "--no-cache", "--output-format", "concise", ".", timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.slow  # a cold mypy run over core/ and storage/ takes over a minute of CPU
def test_mypy_finds_nothing_in_core_and_storage():
    out = _run("mypy", timeout=900)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Success: no issues found" in out.stdout
