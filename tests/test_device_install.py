"""The device install is the declared list: pyproject.toml's core and `device` requirements, resolved
through the installed packages' own requirements (scripts/pin_image_constraints.py, which pins the
images from the same resolution), give exactly deploy/device-packages.txt. A new dependency of the core
or the device extra fails here until the list says so; `make test-device` checks a fresh install too."""

import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DECLARED = ROOT / "deploy" / "device-packages.txt"


def declared() -> set[str]:
    return {line.strip() for line in DECLARED.read_text().splitlines() if line.strip() and not line.startswith("#")}


@pytest.mark.skipif(find_spec("packaging") is None, reason="resolving requirements needs packaging")
def test_the_core_and_device_requirements_resolve_to_the_declared_device_list():
    listed = subprocess.run([sys.executable, str(ROOT / "scripts" / "pin_image_constraints.py"), "--names-for",
                             "device"], check=True, capture_output=True, text=True).stdout.split()
    found = set(listed)
    assert found == declared(), (f"beyond the declared list: {sorted(found - declared())}; "
                                 f"declared but not required: {sorted(declared() - found)}")


def test_no_heavy_or_offline_package_is_on_the_device_list():
    assert not declared() & {"torch", "ray", "pillow", "matplotlib", "cryptography", "onnx", "scikit-learn"}
