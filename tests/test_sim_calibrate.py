"""`agilenn simulate calibrate`'s model inputs and its loopback measurement, without timing anything."""

import json
import shutil
import subprocess
from types import SimpleNamespace

import numpy as np
import pytest

import device_agent
from agilenn.measured import parse_measured
from simulation import calibrate

LAYER = {"name": "l", "op": "conv", "macs": 1000, "inner": 9}


def _measured(agilenn_folder, local_folder=None):
    schemes = [{"name": "agilenn", "kind": "agilenn", "accuracy": 0.9, "payload_bytes": 10.0, "bundle": str(agilenn_folder),
                "device_layers": [LAYER], "cloud_layers": [LAYER], "levels": 4, "offloaded_channels": 1,
                "codec": "range-v1"}]
    if local_folder is not None:
        schemes.append({"name": "local-tiny", "kind": "local-only", "accuracy": 0.8, "payload_bytes": 0.0,
                        "bundle": str(local_folder), "device_layers": [LAYER]})
    return parse_measured({"schema": "agilenn-simdata-v1", "dataset": "synthetic", "samples": 1,
                           "raw_input_bytes": 256, "classes": 4,
                           "protocol": {"request_overhead_bytes": 0, "response_bytes": 0, "raw_response_bytes": 0},
                           "schemes": schemes, "cuts": [], "tradeoff": []})


def test_every_model_gets_an_input_of_its_own_shape(tiny_bundle, tmp_path):
    from agilenn.onnx_sessions import create_session

    local = tmp_path / "local-tiny"  # a local-only baseline: raw image in, logits out
    local.mkdir()
    shutil.copy(tiny_bundle.folder / "reference.onnx", local / "model.onnx")
    (local / "baseline.json").write_text(json.dumps({"input_shape": list(tiny_bundle.manifest.input.shape)}))
    found = calibrate.models(_measured(tiny_bundle.folder, local))
    assert {label for label, *_ in found} == {"agilenn/device", "agilenn/remote", "local-tiny"}
    for label, path, feed, _ in found:
        if label == "agilenn/remote":
            assert feed.shape == (1, *tiny_bundle.remote_shape) and feed.dtype == np.uint8
            assert feed.max() < tiny_bundle.manifest.quantizer.levels
        else:
            assert feed.shape == (1, *tiny_bundle.manifest.input.shape) and feed.dtype == np.float32
        session = create_session(path, threads=1)
        session.run(None, {session.get_inputs()[0].name: feed})


class _StuckWorker:
    """A worker process that never says it is ready and ignores SIGTERM."""

    def __init__(self, *args, **kwargs):
        self.stdout = SimpleNamespace(readline=lambda: "")
        self.killed = False
        _StuckWorker.last = self

    def terminate(self):
        pass

    def kill(self):
        self.killed = True

    def wait(self, timeout=None):
        if not self.killed:
            raise subprocess.TimeoutExpired("worker", timeout)
        return -9


def test_a_worker_that_ignores_terminate_is_killed(tiny_bundle, monkeypatch):
    monkeypatch.setattr(subprocess, "Popen", _StuckWorker)
    assert calibrate._service_overhead(_measured(tiny_bundle.folder), remote_ms=0.1) is None
    assert _StuckWorker.last.killed


class _ReadyWorker(_StuckWorker):
    def __init__(self, *args, **kwargs):
        super().__init__()
        self.stdout = SimpleNamespace(readline=lambda: "ready 1\n")

    def terminate(self):
        self.killed = True


class _LocalOnlyAgent:
    """An agent whose every answer is local: no request measures a round trip."""

    def __init__(self, *args, **kwargs):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def wait_ready(self, timeout):
        return True

    def infer(self, image):
        return SimpleNamespace(timings_ms={"cloud_rtt": None})


def test_no_measured_round_trip_is_a_clear_error(tiny_bundle, monkeypatch):
    monkeypatch.setattr(subprocess, "Popen", _ReadyWorker)
    monkeypatch.setattr(device_agent, "DeviceAgent", _LocalOnlyAgent)
    monkeypatch.setattr(calibrate, "IDLE_GAP_S", 0.0)
    with pytest.raises(calibrate.CalibrationError, match="no round trip"):
        calibrate._service_overhead(_measured(tiny_bundle.folder), remote_ms=0.1, count=3)
