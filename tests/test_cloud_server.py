"""One worker's gRPC server without Ray: answers, micro-batching, bad input, health, drain, metrics."""

import asyncio
import threading

import grpc
import numpy as np
import pytest

pytest.importorskip("grpc_health", reason="the worker's server needs the cloud extra")

from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from agilenn.v1 import inference_pb2, inference_pb2_grpc
from agilenn.v1.tensors import from_raw_tensor
from cloud_worker.config import WorkerConfig
from cloud_worker.metrics import WorkerMetrics
from cloud_worker.server import MicroBatcher, RequestError
from cloud_worker.testing import ServerThread


@pytest.fixture(scope="module")
def server(tiny_bundle):
    with ServerThread(tiny_bundle, WorkerConfig(max_message_bytes=4096)) as running:
        yield running


@pytest.fixture(scope="module")
def stub(server):
    channel = grpc.insecure_channel(server.address)
    yield inference_pb2_grpc.InferenceStub(channel)
    channel.close()


@pytest.fixture(scope="module")
def samples(tiny_bundle):
    images = np.random.default_rng(3).integers(0, 256, (24, *tiny_bundle.manifest.input.shape)).astype(np.uint8)
    _, indices = tiny_bundle.session("device").run(None, {"image": tiny_bundle.prepare(images)})
    (remote,) = tiny_bundle.session("remote").run(None, {"remote_indices": indices})
    return indices, remote


def request_for(bundle, indices, request_id=1, **changes):
    fields = {"data": bundle.codec.encode(indices), "shape": list(indices.shape), "codec": bundle.codec.codec_id}
    fields.update({k: v for k, v in changes.items() if k in fields})
    return inference_pb2.InferRequest(request_id=request_id, bundle_hash=changes.get("bundle_hash", bundle.bundle_hash),
                                      features=inference_pb2.Tensor(**fields))


def test_service_info_names_the_bundle_and_endpoints(stub, server, tiny_bundle):
    info = stub.GetServiceInfo(inference_pb2.ServiceInfoRequest(), timeout=10)
    assert info.bundle_hash == tiny_bundle.bundle_hash
    assert tuple(info.input.shape) == tuple(tiny_bundle.manifest.input.shape)
    assert tuple(info.remote_shape) == tuple(tiny_bundle.remote_shape)
    assert info.codec == tiny_bundle.codec.codec_id
    assert list(info.endpoints) == [server.address]
    assert info.num_classes == len(tiny_bundle.manifest.labels)


def test_unary_infer_equals_remote_onnx(stub, tiny_bundle, samples):
    indices, remote = samples
    response = stub.Infer(request_for(tiny_bundle, indices[0], request_id=42), timeout=10)
    assert response.request_id == 42 and response.status.code == 0 and response.batch_size >= 1
    np.testing.assert_allclose(from_raw_tensor(response.logits), remote[0], rtol=1e-5, atol=1e-5)


def test_stream_answers_every_request_by_id(stub, tiny_bundle, samples):
    indices, remote = samples
    requests = [request_for(tiny_bundle, x, request_id=i + 1) for i, x in enumerate(indices)]
    answers = {r.request_id: r for r in stub.InferStream(iter(requests), timeout=30)}
    assert sorted(answers) == list(range(1, len(indices) + 1))
    for i in range(len(indices)):
        np.testing.assert_allclose(from_raw_tensor(answers[i + 1].logits), remote[i], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("change, code, words", [
    ({"bundle_hash": "sha256:other"}, grpc.StatusCode.FAILED_PRECONDITION, ["sha256:other", "this worker serves sha256:"]),
    ({"data": b"\x01\x02\x03"}, grpc.StatusCode.INVALID_ARGUMENT, ["payload", "not a whole number of 32-bit words"]),
    ({"shape": [1, 2, 3]}, grpc.StatusCode.INVALID_ARGUMENT, ["shaped (1, 2, 3)", "remote indices are shaped"]),
    ({"codec": "jpeg-v9"}, grpc.StatusCode.INVALID_ARGUMENT, ["'jpeg-v9' is not a known codec", "range-v1"]),
    ({"codec": "bitpack-v1"}, grpc.StatusCode.INVALID_ARGUMENT, ["'bitpack-v1' is known but", "'range-v1'"]),
    ({"data": b"\0" * 8000}, grpc.StatusCode.RESOURCE_EXHAUSTED, ["larger than max"]),
])
def test_bad_unary_requests_get_a_precise_status_and_the_server_keeps_serving(stub, tiny_bundle, samples, change, code,
                                                                              words):
    indices, remote = samples
    with pytest.raises(grpc.RpcError) as caught:
        stub.Infer(request_for(tiny_bundle, indices[0], **change), timeout=10)
    assert caught.value.code() == code
    for word in words:
        assert word in caught.value.details()
    response = stub.Infer(request_for(tiny_bundle, indices[1]), timeout=10)
    np.testing.assert_allclose(from_raw_tensor(response.logits), remote[1], rtol=1e-5, atol=1e-5)


def test_unknown_request_field_is_refused_by_number(stub, tiny_bundle, samples):
    wire = request_for(tiny_bundle, samples[0][0]).SerializeToString() + bytes([(12 << 3) | 0, 1])
    with pytest.raises(grpc.RpcError) as caught:
        stub.Infer(inference_pb2.InferRequest.FromString(wire), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "field numbers [12]" in caught.value.details()


def test_a_bad_request_in_a_stream_gets_an_error_answer_and_the_stream_goes_on(stub, tiny_bundle, samples):
    indices, remote = samples
    requests = [request_for(tiny_bundle, indices[0], request_id=1),
                request_for(tiny_bundle, indices[1], request_id=2, bundle_hash="sha256:elsewhere"),
                request_for(tiny_bundle, indices[2], request_id=3, data=b"garbage")]
    requests.append(request_for(tiny_bundle, indices[3], request_id=4))
    answers = {r.request_id: r for r in stub.InferStream(iter(requests), timeout=30)}
    assert answers[1].status.code == 0 and answers[4].status.code == 0
    assert answers[2].status.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert "sha256:elsewhere" in answers[2].status.message and tiny_bundle.bundle_hash in answers[2].status.message
    assert answers[3].status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert not answers[3].HasField("logits")
    np.testing.assert_allclose(from_raw_tensor(answers[4].logits), remote[3], rtol=1e-5, atol=1e-5)


def test_a_stream_may_name_its_bundle_once_in_metadata(stub, tiny_bundle, samples):
    from agilenn.v1.tensors import BUNDLE_HASH_METADATA

    indices, remote = samples
    bare = [request_for(tiny_bundle, indices[i], request_id=i + 1, bundle_hash="") for i in range(3)]
    assert bare[0].ByteSize() + 71 <= request_for(tiny_bundle, indices[0], request_id=1).ByteSize()
    answers = {r.request_id: r for r in stub.InferStream(
        iter(bare), metadata=((BUNDLE_HASH_METADATA, tiny_bundle.bundle_hash),), timeout=30)}
    assert [answers[i + 1].status.code for i in range(3)] == [0, 0, 0]
    np.testing.assert_allclose(from_raw_tensor(answers[3].logits), remote[2], rtol=1e-5, atol=1e-5)
    # a stream naming another bundle, or none at all: every request is refused, naming the hashes
    wrong = {r.request_id: r for r in stub.InferStream(
        iter(bare), metadata=((BUNDLE_HASH_METADATA, "sha256:other"),), timeout=30)}
    assert all(r.status.code == grpc.StatusCode.FAILED_PRECONDITION.value[0] for r in wrong.values())
    assert "sha256:other" in wrong[1].status.message and tiny_bundle.bundle_hash in wrong[1].status.message
    unnamed = list(stub.InferStream(iter(bare[:1]), timeout=30))
    assert unnamed[0].status.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert BUNDLE_HASH_METADATA in unnamed[0].status.message


def test_health_and_reflection(tiny_bundle):
    # reflection is off unless asked for (tests/test_security.py checks the default)
    with ServerThread(tiny_bundle, WorkerConfig(reflection=True)) as server, \
            grpc.insecure_channel(server.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("", "agilenn.v1.Inference"):
            status = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=10).status
            assert status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        answers = list(reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                                       timeout=10))
        names = {service.name for service in answers[0].list_services_response.service}
        assert {"agilenn.v1.Inference", "grpc.health.v1.Health"} <= names


def test_metrics_count_requests_errors_and_batches(server, stub, tiny_bundle, samples):
    stub.Infer(request_for(tiny_bundle, samples[0][0]), timeout=10)
    text = server.server.metrics.exposition().decode()
    assert 'agilenn_requests_total{code="OK",device="",rpc="Infer"}' in text  # device: "" without tokens
    assert "agilenn_batch_size_count" in text and "agilenn_request_latency_seconds_bucket" in text


def test_metrics_are_served_over_http(tiny_bundle):
    import urllib.request

    with ServerThread(tiny_bundle, WorkerConfig(metrics_port=0)) as running:
        port = running.server.metrics_port
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    assert "agilenn_open_streams" in body


class _FakeSession:
    def __init__(self):
        self.batches = []

    def get_inputs(self):
        return [type("Input", (), {"name": "remote_indices"})()]

    def run(self, _outputs, feeds):
        x = feeds["remote_indices"]
        self.batches.append(len(x))
        return [x.reshape(len(x), -1).sum(axis=1, keepdims=True).astype(np.float32)]


def test_micro_batcher_batches_what_is_queued_up_to_the_maximum():
    session = _FakeSession()

    async def scenario():
        batcher = MicroBatcher(session, WorkerConfig(max_batch_size=2), WorkerMetrics("w"))
        batcher.start()
        futures = [batcher.submit_future(np.full((1, 1, 1), i, np.uint8)) for i in range(5)]
        results = await asyncio.gather(*futures)
        await batcher.stop()
        return results

    results = asyncio.run(scenario())
    assert session.batches == [2, 2, 1]
    assert [float(row[0]) for row, _ in results] == [0, 1, 2, 3, 4]
    assert [size for _, size in results] == [2, 2, 2, 2, 1]


def test_micro_batcher_waits_for_more_when_asked():
    session = _FakeSession()

    async def scenario():
        batcher = MicroBatcher(session, WorkerConfig(max_batch_size=8, max_batch_wait_ms=300), WorkerMetrics("w"))
        batcher.start()
        first = batcher.submit_future(np.zeros((1, 1, 1), np.uint8))
        await asyncio.sleep(0.01)
        second = batcher.submit_future(np.ones((1, 1, 1), np.uint8))
        results = await asyncio.gather(first, second)
        await batcher.stop()
        return results

    results = asyncio.run(scenario())
    assert session.batches == [2] and [size for _, size in results] == [2, 2]


def test_a_model_failure_answers_the_batch_with_internal():
    class Broken(_FakeSession):
        def run(self, _outputs, feeds):
            raise RuntimeError("kaput")

    async def scenario():
        batcher = MicroBatcher(Broken(), WorkerConfig(), WorkerMetrics("w"))
        batcher.start()
        with pytest.raises(RequestError, match="remote model failed: kaput"):
            await batcher.submit_future(np.zeros((1, 1, 1), np.uint8))
        await batcher.stop()

    asyncio.run(scenario())


def test_graceful_stop_answers_requests_in_flight(tiny_bundle, samples):
    indices, _remote = samples
    # a long batch wait keeps the requests in flight until the stop begins
    running = ServerThread(tiny_bundle, WorkerConfig(max_batch_size=64, max_batch_wait_ms=1500))
    answers, errors = [], []
    channel = grpc.insecure_channel(running.address)
    stub = inference_pb2_grpc.InferenceStub(channel)
    gate = threading.Event()

    def requests():
        for i in range(3):
            yield request_for(tiny_bundle, indices[i], request_id=i + 1)
        gate.wait(30)  # keep the stream open from the client's side

    def consume():
        try:
            answers.extend(stub.InferStream(requests(), timeout=60))
        except grpc.RpcError as exc:
            errors.append(exc)

    reader = threading.Thread(target=consume)
    reader.start()
    try:
        for _ in range(600):
            if running.server.servicer.batcher.pending == 3:
                break
            threading.Event().wait(0.01)
        assert running.server.servicer.batcher.pending == 3
        running.stop(grace_s=10)
        reader.join(30)
    finally:
        gate.set()
        channel.close()
    assert not errors, errors
    assert sorted(a.request_id for a in answers) == [1, 2, 3]
    assert all(a.status.code == 0 for a in answers)
