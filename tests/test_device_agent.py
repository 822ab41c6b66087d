"""The device agent against a real worker server (no Ray): mixing, fallbacks, gate, refusal, sources, CLI.
Tests without a worker also run on a device-only install; the others take `worker_server` and skip there."""

import gzip
import io
import json
import shutil
import time

import numpy as np
import pytest

from agilenn.bundle import Bundle, Manifest, write_manifest
from cloud_worker.config import WorkerConfig
from device_agent import LOCAL_FALLBACK, LOCAL_ONLY_POLICY, MIXED, BundleMismatchError, DeviceAgent, DeviceConfig
from device_agent.cli import main as device_main
from device_agent.sources import SourceError, _read_stream, iter_source


@pytest.fixture(scope="module")
def server(tiny_bundle, worker_server):
    with worker_server(tiny_bundle) as running:
        yield running


@pytest.fixture(scope="module")
def images(tiny_bundle):
    return np.random.default_rng(5).integers(0, 256, (40, *tiny_bundle.manifest.input.shape)).astype(np.uint8)


def offline(bundle, images):
    local, indices = bundle.session("device").run(None, {"image": bundle.prepare(images)})
    (remote,) = bundle.session("remote").run(None, {"remote_indices": indices})
    return local, bundle.mix(local, remote)


def test_offloaded_results_equal_offline_mixing(tiny_bundle, server, images):
    local, mixed = offline(tiny_bundle, images)
    with DeviceAgent(tiny_bundle, DeviceConfig(cloud=[server.address], deadline_ms=5000)) as agent:
        assert agent.wait_ready(30)
        results = [agent.infer(image) for image in images]
    assert [r.source for r in results] == [MIXED] * len(images)
    assert [r.label for r in results] == mixed.argmax(1).tolist()
    assert [r.local_label for r in results] == local.argmax(1).tolist()
    shifted = np.exp(mixed - mixed.max(1, keepdims=True))
    np.testing.assert_allclose([r.probabilities for r in results], shifted / shifted.sum(1, keepdims=True),
                               rtol=1e-4, atol=1e-6)
    first = results[0].to_json()
    assert first["source"] == "mixed" and first["reason"] is None and first["worker_id"] == "worker-0"
    assert set(first["timings_ms"]) == {"device_model", "device_overhead", "cloud_rtt", "total",
                                        "cloud_rtt_p50_estimate", "cloud_rtt_p90_estimate"}
    # the link's estimate after the first answers (the warm-up's round trip is not in it)
    assert first["timings_ms"]["cloud_rtt_p50_estimate"] is None
    assert results[-1].timings_ms["cloud_rtt_p90_estimate"] > 0 and results[-1].on_time_probability == 1.0
    assert first["payload_bytes"] > 0
    json.dumps(first)


def test_no_cloud_answers_locally_and_says_why(tiny_bundle, images):
    with DeviceAgent(tiny_bundle, DeviceConfig()) as agent:
        result = agent.infer(images[0])
    assert result.source == LOCAL_FALLBACK and result.reason.startswith("no_cloud")
    assert result.label == result.local_label


def test_unreachable_worker_answers_locally_without_waiting(tiny_bundle, images):
    import socket

    with socket.socket() as sock:  # a port with nothing listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with DeviceAgent(tiny_bundle, DeviceConfig(cloud=[f"127.0.0.1:{port}"], deadline_ms=60_000)) as agent:
        assert not agent.wait_ready(0.3)
        started = time.monotonic()
        results = [agent.infer(image) for image in images[:5]]
        elapsed = time.monotonic() - started
    assert all(r.source == LOCAL_FALLBACK for r in results)
    assert elapsed < 30  # never the 60 s deadline: nothing waits on a link that is down


def test_deadline_passes_and_the_answer_is_local(tiny_bundle, images, worker_server):
    # the worker holds every batch for 3 s, the device waits 50 ms
    with (worker_server(tiny_bundle, WorkerConfig(max_batch_size=64, max_batch_wait_ms=3000)) as slow,
          DeviceAgent(tiny_bundle, DeviceConfig(cloud=[slow.address], deadline_ms=50)) as agent):
        assert agent.wait_ready(30)
        result = agent.infer(images[0])
    assert result.source == LOCAL_FALLBACK and result.reason.startswith("deadline")
    assert result.timings_ms["cloud_rtt"] is None


def test_confidence_gate_keeps_confident_inputs_local(tiny_bundle, server, images):
    with DeviceAgent(tiny_bundle, DeviceConfig(cloud=[server.address], local_confidence_threshold=0.0,
                                               deadline_ms=5000)) as agent:
        assert agent.wait_ready(30)
        results = [agent.infer(image) for image in images[:5]]
    assert all(r.source == LOCAL_ONLY_POLICY and r.payload_bytes is None for r in results)


@pytest.fixture(scope="module")
def other_bundle(tiny_bundle, tmp_path_factory):
    """The tiny bundle with another mixing weight: another hash."""
    folder = tmp_path_factory.mktemp("other") / "bundle"
    shutil.copytree(tiny_bundle.folder, folder)
    data = json.loads((folder / "manifest.json").read_text())
    data["mixing"]["alpha_local"] = 0.25
    write_manifest(folder, Manifest.model_validate(data))
    return Bundle(folder)


def test_refuses_to_mix_with_a_worker_serving_another_bundle(other_bundle, tiny_bundle, server, images):
    assert other_bundle.bundle_hash != tiny_bundle.bundle_hash
    with DeviceAgent(other_bundle, DeviceConfig(cloud=[server.address], deadline_ms=5000)) as agent:
        with pytest.raises(BundleMismatchError) as caught:
            agent.wait_ready(30)
        result = agent.infer(images[0])
    assert other_bundle.bundle_hash in str(caught.value) and tiny_bundle.bundle_hash in str(caught.value)
    assert result.source == LOCAL_FALLBACK and result.reason.startswith("bundle_mismatch")
    assert other_bundle.bundle_hash in result.reason and tiny_bundle.bundle_hash in result.reason


def test_broken_stream_answers_locally_then_reconnects(tiny_bundle, images, worker_server):
    first = worker_server(tiny_bundle)
    port = first.port
    config = DeviceConfig(cloud=[first.address], deadline_ms=5000, reconnect_initial_s=0.02, reconnect_max_s=0.2)
    with DeviceAgent(tiny_bundle, config) as agent:
        assert agent.wait_ready(30)
        assert agent.infer(images[0]).source == MIXED
        first.stop(grace_s=0)
        for _ in range(500):
            if not agent.connected:
                break
            time.sleep(0.01)
        down = agent.infer(images[1])
        assert down.source == LOCAL_FALLBACK and down.reason
        with worker_server(tiny_bundle, port=port) as second:
            assert agent.wait_ready(30)
            assert agent.infer(images[2]).source == MIXED
            assert second.port == port


# -- sources and the daemon --

def test_sources_read_npy_files_directories_idx_and_streams(tmp_path, images):
    shape = images.shape[1:]
    np.save(tmp_path / "batch.npy", images[:3, 0])  # (N, H, W): a batch of one-channel images
    folder = tmp_path / "dir"
    folder.mkdir()
    np.save(folder / "b.npy", images[1])
    np.save(folder / "a.npy", images[0, 0])
    header = bytes([0, 0, 8, 3]) + b"".join(int(d).to_bytes(4, "big") for d in (2, *shape[1:]))
    with gzip.open(tmp_path / "x.idx.gz", "wb") as f:
        f.write(header + images[:2, 0].tobytes())
    assert [i for i, _ in iter_source(str(tmp_path / "batch.npy"), shape)] == ["batch.npy[0]", "batch.npy[1]",
                                                                                "batch.npy[2]"]
    assert [i for i, _ in iter_source(str(folder), shape)] == ["a.npy", "b.npy"]
    idx = list(iter_source(str(tmp_path / "x.idx.gz"), shape))
    assert np.array_equal(idx[1][1], images[1])
    stream = io.BytesIO()
    np.save(stream, images[:2])
    np.save(stream, images[2])
    stream.seek(0)
    assert [i for i, _ in _read_stream(stream, shape)] == ["stdin:0[0]", "stdin:0[1]", "stdin:1"]


def test_sources_name_what_is_wrong(tmp_path):
    np.save(tmp_path / "wrong.npy", np.zeros((3, 5, 5), np.uint8))
    with pytest.raises(SourceError, match=r"shaped \(3, 5, 5\); the bundle takes one sample \(1, 16, 16\)"):
        list(iter_source(str(tmp_path / "wrong.npy"), (1, 16, 16)))
    with pytest.raises(SourceError, match="does not exist"):
        list(iter_source(str(tmp_path / "missing.npy"), (1, 16, 16)))


def test_daemon_writes_one_json_line_per_input(tiny_bundle, server, images, tmp_path):
    np.save(tmp_path / "inputs.npy", images[:7])
    sink = tmp_path / "results.jsonl"
    code = device_main(["run", "--bundle", str(tiny_bundle.folder), "--cloud", server.address,
                        "--source", str(tmp_path / "inputs.npy"), "--sink", str(sink), "--deadline-ms", "5000"])
    assert code == 0
    lines = [json.loads(line) for line in sink.read_text().splitlines()]
    assert len(lines) == 7 and all(line["source"] == "mixed" for line in lines)
    assert [line["id"] for line in lines] == [f"inputs.npy[{i}]" for i in range(7)]


def test_the_agent_prepares_inputs_as_the_bundle_does_and_names_a_wrong_shape(tiny_bundle, images):
    from agilenn.bundle import BundleError

    with DeviceAgent(tiny_bundle, DeviceConfig()) as agent:
        one_channel = agent.infer(images[0][0])  # (H, W) for a one-channel bundle
        assert one_channel.label == agent.infer(images[0]).label
        with pytest.raises(BundleError, match=r"input shaped \(1, 8, 8\) per sample, the bundle takes \(1, 16, 16\)"):
            agent.infer(np.zeros((1, 8, 8), np.uint8))
