"""The compact return: remote logits as q8-v1 (int8 with a scale), asked for per stream by the device."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import numpy as np
import pytest

from agilenn.bundle import Bundle
from agilenn.predict import evaluation_split, predict, q8_round_trip
from agilenn.v1 import inference_pb2, inference_pb2_grpc
from agilenn.v1.tensors import BUNDLE_HASH_METADATA, LOGITS_CODEC_METADATA, Q8, TensorError, from_raw_tensor, q8_tensor

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "tests" / "data" / "tiny-bundle"


def test_q8_round_trip_is_within_half_a_step():
    logits = np.array([3.5, -12.0, 0.0, 7.25, 11.9], dtype=np.float32)
    tensor = q8_tensor(logits)
    assert tensor.codec == Q8 and len(tensor.data) == 4 + 5
    np.testing.assert_allclose(from_raw_tensor(tensor), logits, atol=12.0 / 127 / 2 + 1e-6)
    assert from_raw_tensor(q8_tensor(np.zeros(3))).tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(TensorError, match="needs 9 bytes, got 8"):
        from_raw_tensor(inference_pb2.Tensor(data=tensor.data[:-1], shape=[5], codec=Q8))


def _stream(server, bundle, metadata):
    channel = grpc.insecure_channel(server.address)
    stub = inference_pb2_grpc.InferenceStub(channel)
    image = np.random.default_rng(0).integers(0, 256, (1, *bundle.manifest.input.shape), dtype=np.uint8)
    _, indices = bundle.session("device").run(None, {"image": bundle.prepare(image)})
    request = inference_pb2.InferRequest(request_id=1, features=inference_pb2.Tensor(
        data=bundle.codec.encode(indices[0]), shape=list(bundle.remote_shape), codec=bundle.codec.codec_id))
    try:
        return list(stub.InferStream(iter([request]), metadata=((BUNDLE_HASH_METADATA, bundle.bundle_hash),) + metadata,
                                     timeout=10))
    finally:
        channel.close()


def test_a_stream_that_asks_for_q8_gets_it(worker_server):
    bundle = Bundle(BUNDLE)
    with worker_server(bundle) as server:
        (plain,) = _stream(server, bundle, ())
        (compact,) = _stream(server, bundle, ((LOGITS_CODEC_METADATA, Q8),))
    assert plain.logits.codec == "raw-f32le" and compact.logits.codec == Q8
    assert len(compact.logits.data) == 4 + len(bundle.manifest.labels)
    assert compact.ByteSize() < plain.ByteSize()
    step = float(np.abs(from_raw_tensor(plain.logits)).max()) / 127
    np.testing.assert_allclose(from_raw_tensor(compact.logits), from_raw_tensor(plain.logits), atol=step / 2 + 1e-6)


def test_an_unknown_logits_codec_is_refused_by_name(worker_server):
    bundle = Bundle(BUNDLE)
    with worker_server(bundle) as server, pytest.raises(grpc.RpcError) as caught:
        _stream(server, bundle, ((LOGITS_CODEC_METADATA, "float16"),))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'float16' is not a logits codec" in caught.value.details()


def test_the_device_agent_mixes_q8_answers(worker_server):
    from device_agent import MIXED, DeviceAgent, DeviceConfig

    bundle = Bundle(BUNDLE)
    images = np.random.default_rng(2).integers(0, 256, (8, *bundle.manifest.input.shape), dtype=np.uint8)
    with worker_server(bundle) as server:
        labels = {}
        for codec in ("raw-f32le", "q8-v1"):
            with DeviceAgent(bundle, DeviceConfig(cloud=[server.address], logits_codec=codec)) as agent:
                assert agent.wait_ready(10)
                results = [agent.infer(image) for image in images]
            assert all(r.source == MIXED for r in results)
            labels[codec] = [r.label for r in results]
    assert sum(a == b for a, b in zip(labels["raw-f32le"], labels["q8-v1"])) >= 7


@pytest.mark.parametrize("name", ["fashion-mnist", "cluttered-fashion-mnist"])
def test_q8_keeps_the_committed_bundles_accuracy_within_five_hundredths_of_a_point(name):
    pytest.importorskip("onnxruntime")
    if name.startswith("cluttered"):
        pytest.importorskip("PIL", reason="the cluttered canvases come from Pillow (the data extra)")
    bundle = Bundle(ROOT / "bundles" / name)
    _, split = evaluation_split(bundle)
    out = predict(bundle, split.images)
    compact = bundle.mix(out.local_logits, q8_round_trip(out.remote_logits))
    accuracy, accuracy_q8 = ((logits.argmax(1) == split.labels).mean() for logits in (out.mixed_logits, compact))
    assert abs(accuracy_q8 - accuracy) <= 0.0005


def test_simulation_counts_the_compact_return(capsys):
    from simulation.cli import main

    returns = {}
    for codec in ("raw-f32le", "q8-v1"):
        assert main(["--workload", "cluttered-fashion-mnist", "--link", "ble-270kbps", "--logits-codec", codec,
                     "--json"]) == 0
        result = json.loads(capsys.readouterr().out)
        returns[codec] = next(s for s in result["schemes"] if s["name"] == "agilenn")["latency_ms"]["return_ms"]
    # 26 bytes fewer at 270 kbps: 0.77 ms
    assert returns["raw-f32le"] - returns["q8-v1"] == pytest.approx(26 * 8 / 270e3 * 1e3, rel=0.01)
