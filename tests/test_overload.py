"""Overload shedding without Ray: a worker whose queue is full answers RESOURCE_EXHAUSTED at once, in band on
streams and as the status of unary calls, counts it, and serves what it queued; the device answers those inputs
locally with reason `overloaded` and sends that worker nothing for a while; the fleet reports them.

A long `max_batch_wait_ms` holds the queued requests in the batcher, so the queue is full for as long as a test
needs without a slow model."""

import asyncio
import re
import threading
import time

import grpc
import numpy as np
import pytest

pytest.importorskip("grpc_health", reason="the worker's server needs the cloud extra")

from agilenn.v1 import inference_pb2, inference_pb2_grpc
from cloud_worker.config import WorkerConfig
from cloud_worker.metrics import WorkerMetrics
from cloud_worker.server import MicroBatcher
from device_agent import LOCAL_FALLBACK, MIXED, DeviceAgent, DeviceConfig

RESOURCE_EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
HOLD_MS = 1500  # how long the batcher waits for more requests once it has one: the queue stays full meanwhile


@pytest.fixture(scope="module")
def images(tiny_bundle):
    return np.random.default_rng(11).integers(0, 256, (16, *tiny_bundle.manifest.input.shape)).astype(np.uint8)


@pytest.fixture(scope="module")
def indices(tiny_bundle, images):
    _, remote_indices = tiny_bundle.session("device").run(None, {"image": tiny_bundle.prepare(images)})
    return remote_indices


def request_for(bundle, indices, request_id):
    return inference_pb2.InferRequest(
        request_id=request_id, bundle_hash=bundle.bundle_hash,
        features=inference_pb2.Tensor(data=bundle.codec.encode(indices), shape=list(indices.shape),
                                      codec=bundle.codec.codec_id))


def wait_until(condition, timeout_s=10.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.005)
    return condition()


def test_the_batcher_is_full_at_max_queue_requests_and_has_room_again_once_a_batch_is_taken():
    class Session:
        def get_inputs(self):
            return [type("Input", (), {"name": "x"})()]

        def run(self, _outputs, feeds):
            return [np.zeros((len(feeds["x"]), 1), np.float32)]

    async def scenario():
        batcher = MicroBatcher(Session(), WorkerConfig(max_queue_requests=2), WorkerMetrics("w"))
        batcher.start()
        first = batcher.submit_future(np.zeros((1, 1, 1), np.uint8))
        assert not batcher.full
        second = batcher.submit_future(np.zeros((1, 1, 1), np.uint8))
        full_at_two = batcher.full
        await asyncio.gather(first, second)
        room_after = not batcher.full
        await batcher.stop()
        return full_at_two, room_after

    assert asyncio.run(scenario()) == (True, True)


def test_a_burst_on_a_stream_is_shed_beyond_the_queue_at_once_in_band_and_the_rest_served(
        tiny_bundle, indices, worker_server):
    config = WorkerConfig(max_queue_requests=3, max_batch_size=64, max_batch_wait_ms=HOLD_MS)
    with worker_server(tiny_bundle, config) as server, grpc.insecure_channel(server.address) as channel:
        stub = inference_pb2_grpc.InferenceStub(channel)
        burst = [request_for(tiny_bundle, indices[i], i + 1) for i in range(10)]
        started = time.perf_counter()
        answers = []
        for answer in stub.InferStream(iter(burst), timeout=30):
            answers.append((answer, time.perf_counter() - started))
        text = server.server.metrics.exposition().decode()
    by_id = {answer.request_id: (answer, at) for answer, at in answers}
    assert sorted(by_id) == list(range(1, 11))  # every request answered once
    served = [i for i, (a, _) in by_id.items() if a.status.code == 0]
    refused = [i for i, (a, _) in by_id.items() if a.status.code != 0]
    assert served == [1, 2, 3] and refused == list(range(4, 11))
    for i in refused:
        answer, at = by_id[i]
        assert answer.status.code == RESOURCE_EXHAUSTED.value[0]
        assert "is overloaded" in answer.status.message and "max_queue_requests 3" in answer.status.message
        assert at < HOLD_MS / 1000 / 2, "a shed request waited for the batch it was refused from"
        assert answer.server_ms < 50
    for i in served:
        assert by_id[i][0].batch_size == 3 and by_id[i][1] >= HOLD_MS / 1000 * 0.9
    assert "agilenn_shed_requests_total 7.0" in text
    refusals = re.search(r'agilenn_requests_total\{code="RESOURCE_EXHAUSTED"[^}]*rpc="InferStream"[^}]*\} (\S+)', text)
    assert refusals and float(refusals.group(1)) == 7


def test_a_unary_call_beyond_the_queue_gets_resource_exhausted_as_its_status(tiny_bundle, indices, worker_server):
    config = WorkerConfig(max_queue_requests=1, max_batch_size=64, max_batch_wait_ms=HOLD_MS)
    with worker_server(tiny_bundle, config) as server, grpc.insecure_channel(server.address) as channel:
        stub = inference_pb2_grpc.InferenceStub(channel)
        queued = stub.Infer.future(request_for(tiny_bundle, indices[0], 1), timeout=30)
        assert wait_until(lambda: server.server.servicer.batcher.pending == 1)
        started = time.perf_counter()
        with pytest.raises(grpc.RpcError) as refused:
            stub.Infer(request_for(tiny_bundle, indices[1], 2), timeout=30)
        refused_after_s = time.perf_counter() - started
        assert queued.result().status.code == 0  # the queued one is still served
    assert refused.value.code() == RESOURCE_EXHAUSTED
    assert "is overloaded" in refused.value.details()
    assert refused_after_s < HOLD_MS / 1000 / 2


def test_the_device_answers_a_shed_input_locally_at_once_with_reason_overloaded(tiny_bundle, images, worker_server):
    config = WorkerConfig(max_queue_requests=1, max_batch_size=64, max_batch_wait_ms=HOLD_MS)
    device_config = lambda address: DeviceConfig(cloud=[address], deadline_ms=10_000)
    with worker_server(tiny_bundle, config) as server, \
            DeviceAgent(tiny_bundle, device_config(server.address)) as first:
        assert first.wait_ready(30)  # before the second connects: each warm-up is computed at once
        second = DeviceAgent(tiny_bundle, device_config(server.address))
        assert second.wait_ready(30)
        results = {}
        queued = threading.Thread(target=lambda: results.setdefault("first", first.infer(images[0])))
        queued.start()
        assert wait_until(lambda: server.server.servicer.batcher.pending == 1)
        results["second"] = second.infer(images[1])
        queued.join(30)
        second.close()
    shed, served = results["second"], results["first"]
    assert shed.source == LOCAL_FALLBACK and shed.reason.startswith("overloaded: ")
    assert "is overloaded" in shed.reason
    assert shed.timings_ms["cloud_rtt"] is not None  # the worker answered, at once
    assert shed.timings_ms["total"] < HOLD_MS / 2
    assert shed.label == shed.local_label  # the device's own prediction
    assert served.source == MIXED


def shed_total(server) -> float:
    found = re.search(r"^agilenn_shed_requests_total (\S+)$", server.server.metrics.exposition().decode(), re.MULTILINE)
    return float(found.group(1))


@pytest.mark.parametrize("backoff_ms", [400, 0])
def test_after_an_overloaded_answer_the_device_sends_that_worker_nothing_for_a_while(
        tiny_bundle, images, worker_server, backoff_ms):
    config = WorkerConfig(max_queue_requests=1, max_batch_size=64, max_batch_wait_ms=HOLD_MS)
    with worker_server(tiny_bundle, config) as server, \
            DeviceAgent(tiny_bundle, DeviceConfig(cloud=[server.address], deadline_ms=10_000)) as first:
        # one after the other: each link's warm-up request is computed at once by the idle worker
        assert first.wait_ready(30)
        second = DeviceAgent(tiny_bundle, DeviceConfig(cloud=[server.address], deadline_ms=10_000,
                                                       overload_backoff_ms=backoff_ms))
        assert second.wait_ready(30)
        assert shed_total(server) == 0
        queued = threading.Thread(target=first.infer, args=(images[0],))
        queued.start()
        assert wait_until(lambda: server.server.servicer.batcher.pending == 1)
        refused = second.infer(images[1])
        held_back = second.infer(images[2])
        shed_while_full = shed_total(server)
        queued.join(30)  # the worker's queue is empty again, and more than the longest backoff has passed
        resumed = second.infer(images[3])
        second.close()
    assert refused.reason.startswith("overloaded: ") and refused.timings_ms["cloud_rtt"] is not None
    assert held_back.source == LOCAL_FALLBACK and held_back.reason.startswith("overloaded: ")
    if backoff_ms:
        assert shed_while_full == 1  # the second input was never sent
        assert held_back.timings_ms["cloud_rtt"] is None and "answering locally" in held_back.reason
    else:
        assert shed_while_full == 2  # sent, and refused by the worker again
        assert held_back.timings_ms["cloud_rtt"] is not None
    assert resumed.source == MIXED


def test_the_fleet_reports_shed_inputs_as_overloaded_and_none_unanswered(tiny_bundle, worker_server):
    from simulation.fleet import run_fleet

    config = WorkerConfig(max_queue_requests=1, max_batch_size=64, max_batch_wait_ms=100)
    with worker_server(tiny_bundle, config) as server:
        result = run_fleet(tiny_bundle.folder, server.address, devices=4, rate_hz=20, seconds=1.0,
                           deadline_ms=5000, connect_timeout_s=30, keep_latencies=True)
    assert result["connected"] == 4
    assert result["overloaded"] > 0 and result["local_reasons"]["overloaded"] == result["overloaded"]
    assert result["share_overloaded"] == pytest.approx(result["overloaded"] / result["inferences"])
    assert result["unanswered"] == 0
    assert result["answered_by_cloud"] == result["sources"]["mixed"] > 0
    assert result["answered_by_cloud"] + result["overloaded"] == result["inferences"]
    assert result["latency_answered_ms"]["p50"] <= result["latency_answered_ms"]["p99"]
    assert len(result["answered_latencies_ms"]) == result["answered_by_cloud"]


def test_cloud_serve_takes_max_queue_requests(monkeypatch):
    import cloud_worker.service
    from cloud_worker.cli import main

    seen = {}

    class Stop(Exception):
        pass

    class Service:
        def __init__(self, bundle, config):
            seen["config"] = config
            raise Stop

    monkeypatch.setattr(cloud_worker.service, "CloudService", Service)
    with pytest.raises(Stop):
        main(["serve", "--bundle", "unused", "--max-queue-requests", "7"])
    assert seen["config"].worker.max_queue_requests == 7
