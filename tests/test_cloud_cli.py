"""`agilenn cloud serve` and `agilenn device run` as processes: serve, stream, stop on SIGTERM (slow: starts its own Ray)."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.cluster]


def test_serve_then_device_daemon_then_graceful_stop(tiny_bundle, tmp_path):
    env = dict(os.environ, RAY_AUTH_MODE="disabled")
    serve = subprocess.Popen([sys.executable, "-m", "cloud_worker.cli", "serve", "--bundle", str(tiny_bundle.folder),
                              "--workers", "1", "--port", "0", "--cpus-per-worker", "0.5"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        endpoints = serve.stdout.readline().split()
        assert len(endpoints) == 1, serve.stderr.read()
        images = np.random.default_rng(0).integers(0, 256, (12, *tiny_bundle.manifest.input.shape)).astype(np.uint8)
        np.save(tmp_path / "in.npy", images)
        device = subprocess.run([sys.executable, "-m", "device_agent.cli", "run", "--bundle", str(tiny_bundle.folder),
                                 "--cloud", endpoints[0], "--source", "-", "--deadline-ms", "5000"],
                                input=(tmp_path / "in.npy").read_bytes(), capture_output=True, timeout=120, check=False)
        assert device.returncode == 0, device.stderr.decode()
        lines = [json.loads(line) for line in device.stdout.decode().splitlines()]
        assert len(lines) == 12 and {line["source"] for line in lines} == {"mixed"}
    finally:
        serve.send_signal(signal.SIGTERM)
        started = time.monotonic()
        code = serve.wait(120)
    assert code == 0
    assert time.monotonic() - started < 120


def test_serve_and_device_daemon_over_mutual_tls_with_a_token(tiny_bundle, tmp_path):
    pytest.importorskip("cryptography", reason="dev certificates need the cloud extra")
    from commands.cli import main as agilenn

    assert agilenn(["certs", "dev", "--out", str(tmp_path / "certs")]) == 0
    token = subprocess.run([sys.executable, "-m", "commands.cli", "tokens", "add", "--file", str(tmp_path / "tokens.yaml"),
                            "--device", "cam-17"], capture_output=True, text=True, check=True).stdout
    (tmp_path / "cam-17.token").write_text(token)
    certs = tmp_path / "certs"
    env = dict(os.environ, RAY_AUTH_MODE="disabled")
    serve = subprocess.Popen([sys.executable, "-m", "cloud_worker.cli", "serve", "--bundle", str(tiny_bundle.folder),
                              "--workers", "1", "--port", "0", "--cpus-per-worker", "0.5",
                              "--tls-cert", str(certs / "server.pem"), "--tls-key", str(certs / "server.key"),
                              "--client-ca", str(certs / "ca.pem"), "--tokens", str(tmp_path / "tokens.yaml")],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        endpoints = serve.stdout.readline().split()
        assert len(endpoints) == 1, serve.stderr.read()
        images = np.random.default_rng(1).integers(0, 256, (8, *tiny_bundle.manifest.input.shape)).astype(np.uint8)
        np.save(tmp_path / "in.npy", images)
        device = [sys.executable, "-m", "device_agent.cli", "run", "--bundle", str(tiny_bundle.folder),
                  "--cloud", endpoints[0], "--source", str(tmp_path / "in.npy"), "--deadline-ms", "5000",
                  "--ca", str(certs / "ca.pem"), "--cert", str(certs / "client.pem"), "--key", str(certs / "client.key")]
        secured = subprocess.run(device + ["--token-file", str(tmp_path / "cam-17.token")], capture_output=True,
                                 timeout=120, check=False)
        assert secured.returncode == 0, secured.stderr.decode()
        lines = [json.loads(line) for line in secured.stdout.decode().splitlines()]
        assert len(lines) == 8 and {line["source"] for line in lines} == {"mixed"}
        tokenless = subprocess.run(device + ["--wait-ready-s", "1"], capture_output=True, timeout=120, check=False)
        lines = [json.loads(line) for line in tokenless.stdout.decode().splitlines()]
        assert len(lines) == 8 and all(line["reason"].startswith("auth: UNAUTHENTICATED") for line in lines)
    finally:
        serve.send_signal(signal.SIGTERM)
        code = serve.wait(120)
    assert code == 0
