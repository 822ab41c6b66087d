"""The device install stays small: the agent never pulls in torch or ray (nor does the serving code, torch)."""

import subprocess
import sys

import pytest

CHECK = """
import sys
import {modules}
heavy = sorted(m for m in sys.modules if m.split('.')[0] in {forbidden!r})
print(','.join(heavy))
"""


def loaded(modules: str, forbidden: tuple[str, ...]) -> str:
    out = subprocess.run([sys.executable, "-c", CHECK.format(modules=modules, forbidden=forbidden)],
                         check=True, capture_output=True, text=True)
    return out.stdout.strip()


def test_device_agent_imports_neither_torch_nor_ray():
    assert loaded("device_agent, device_agent.agent, device_agent.cli, device_agent.sources",
                  ("torch", "ray")) == ""


def test_cloud_service_imports_no_torch():
    pytest.importorskip("ray", reason="the cloud service needs the cloud extra")
    assert loaded("ray, cloud_worker.server, cloud_worker.service, cloud_worker.cli", ("torch",)) == ""
