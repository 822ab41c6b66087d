"""The suite collects under the bare `pytest` script too, which (unlike `python -m pytest`) does
not put the repository root on sys.path: tests share helpers through tests/, not the `tests` package."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_every_test_file_collects_under_the_bare_pytest_script():
    script = Path(sys.executable).parent / "pytest"
    if not script.exists():
        pytest.skip(f"no pytest script beside {sys.executable}")
    done = subprocess.run([str(script), "--collect-only", "-q", "-p", "no:cacheprovider", "tests"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
