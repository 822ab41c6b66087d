import os
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import pytest

# Written by `python -m partitioner.testing --write tests/data/tiny-bundle`; test_tiny_bundle_is_current.py
# checks that it is what that command trains.
COMMITTED_TINY_BUNDLE = Path(__file__).resolve().parent / "data" / "tiny-bundle"
# What a worker's gRPC server needs beyond the device extra: the cloud extra's serving parts (no Ray).
WORKER_SERVER_MODULES = ("grpc_health", "grpc_reflection", "prometheus_client")


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory):
    """The committed tiny bundle (4 classes of 16x16 images), copied so that no test can change the
    committed files; ONNX files and manifest only, so tests of the device, the cloud and the codec
    need no torch. Tests that need the torch weights take `trained_tiny_bundle`."""
    from agilenn.bundle import Bundle

    folder = tmp_path_factory.mktemp("tiny") / "bundle"
    shutil.copytree(COMMITTED_TINY_BUNDLE, folder)
    return Bundle(folder)


@pytest.fixture(scope="session")
def trained_tiny_bundle(tmp_path_factory):
    """The tiny config trained and exported here, torch weights included (a few seconds on a CPU)."""
    pytest.importorskip("torch", reason="trains a bundle: needs the train extra")
    from partitioner.testing import make_tiny_bundle

    return make_tiny_bundle(tmp_path_factory.mktemp("trained-tiny") / "bundle")


@pytest.fixture(scope="session")
def int8_tiny_bundle(tmp_path_factory):
    """The tiny config exported with its int8 device front (a tiny test split: half a point is one
    sample, so the check allows more)."""
    pytest.importorskip("torch", reason="trains a bundle: needs the train extra")
    from partitioner.testing import make_tiny_bundle

    return make_tiny_bundle(tmp_path_factory.mktemp("int8-tiny") / "bundle",
                            export={"verify_samples": 64, "int8": True, "int8_max_accuracy_drop": 0.05})


@pytest.fixture(scope="session")
def worker_server():
    """`with worker_server(bundle, config) as server:` one worker's gRPC server on a thread (no Ray).
    Tests that take it skip on a device-only install."""
    for name in WORKER_SERVER_MODULES:
        pytest.importorskip(name, reason="starts a worker server: needs the cloud extra")
    from cloud_worker.testing import ServerThread

    return ServerThread


def _start_local_ray(ray, attempts: int = 2) -> str:
    """ray.init in a fresh temp folder, once more when the node does not come up: on a loaded 2-core machine
    Ray's raylet now and then fails to register within Ray's fixed 30 s ("The current node timed out during
    startup"), leaving no log of why. The failed attempt's processes (started with its folder in their
    command line) are stopped first. Returns the folder of the Ray that started."""
    for attempt in range(1, attempts + 1):
        temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
        try:
            ray.init(num_cpus=2, include_dashboard=False, _temp_dir=temp, log_to_driver=False, logging_level="ERROR")
            return temp
        except Exception as exc:
            if attempt == attempts or "timed out during startup" not in str(exc):
                raise
            warnings.warn(f"Ray did not start (attempt {attempt} of {attempts}), starting it again: {exc}",
                          stacklevel=1)
            ray.shutdown()
            subprocess.run(["pkill", "-f", temp], check=False)
            shutil.rmtree(temp, ignore_errors=True)
    raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for a test module (~3 s and ~0.8 GiB to start), yielded as the `ray` module: no auth
    token written to the user's ~/.ray, its own short temp folder (Ray's socket paths must stay short)."""
    ray = pytest.importorskip("ray", reason="starts Ray: needs the cloud extra")
    previous = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    temp = _start_local_ray(ray)
    try:
        yield ray
    finally:
        ray.shutdown()
        if previous is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = previous
        shutil.rmtree(temp, ignore_errors=True)
