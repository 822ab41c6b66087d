"""The runtime on a real local Ray (one Ray for the whole module): discovery, balancing, the demo,
and a worker killed while a device streams."""

import os
import signal
import time

import grpc
import numpy as np
import pytest

from agilenn.v1 import inference_pb2, inference_pb2_grpc
from cloud_worker.config import ServeConfig
from cloud_worker.service import CloudService
from device_agent import LOCAL_FALLBACK, MIXED, DeviceAgent, DeviceConfig

pytestmark = pytest.mark.cluster
ray = pytest.importorskip("ray")


@pytest.fixture
def service(local_ray, tiny_bundle, request):
    workers = getattr(request, "param", 2)
    running = CloudService(tiny_bundle.folder, ServeConfig(workers=workers, port=0, cpus_per_worker=0.5,
                                                           endpoint_refresh_s=0.5))
    running.start()
    yield running
    running.stop(grace_s=5)


@pytest.fixture(scope="module")
def images(tiny_bundle):
    return np.random.default_rng(9).integers(0, 256, (30, *tiny_bundle.manifest.input.shape)).astype(np.uint8)


def test_workers_list_every_endpoint_and_the_device_finds_them_from_one(service, tiny_bundle, images):
    assert len(service.endpoints) == 2 and len(set(service.endpoints)) == 2
    with grpc.insecure_channel(service.endpoints[0]) as channel:
        info = inference_pb2_grpc.InferenceStub(channel).GetServiceInfo(inference_pb2.ServiceInfoRequest(), timeout=30)
    assert sorted(info.endpoints) == sorted(service.endpoints)
    assert info.bundle_hash == tiny_bundle.bundle_hash
    config = DeviceConfig(cloud=[service.endpoints[0]], deadline_ms=5000)
    with DeviceAgent(tiny_bundle, config) as agent:
        assert agent.wait_ready(60, workers=2)
        results = [agent.infer(image) for image in images]
    assert all(r.source == MIXED for r in results)
    assert {r.worker_id for r in results} == {"worker-0", "worker-1"}


def test_worker_processes_do_not_import_torch(service):
    for actor in service.actors:
        assert not ray.get(actor.modules_loaded.remote(("torch",)), timeout=30)


@pytest.mark.parametrize("service", [1], indirect=True)
def test_a_killed_worker_costs_no_input_and_offloading_resumes(service, tiny_bundle, images):
    config = DeviceConfig(cloud=service.endpoints, deadline_ms=2000, reconnect_initial_s=0.02, reconnect_max_s=0.25)
    results, fed = [], []

    def infer(image):
        fed.append(image)
        results.append(agent.infer(image, sample_id=f"sample-{len(fed) - 1}"))
        return results[-1]

    with DeviceAgent(tiny_bundle, config) as agent:
        assert agent.wait_ready(60)
        for image in images[:5]:
            infer(image)
        pid = service.workers[0]["pid"]
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 120
        resumed = False
        i = 0
        while time.monotonic() < deadline:
            result = infer(images[i % len(images)])
            i += 1
            if result.source == MIXED and any(r.source == LOCAL_FALLBACK for r in results):
                resumed = True
                break
            time.sleep(0.01)
        restarted = service.wait_restarted(0, pid, timeout_s=60)
    assert restarted["pid"] != pid and restarted["endpoint"] == service.endpoints[0]
    assert resumed, "offloading did not resume after Ray restarted the worker"
    # every input answered once, in order, under its own id
    assert [(r.index, r.id) for r in results] == [(k, f"sample-{k}") for k in range(len(fed))]
    fallbacks = [r for r in results if r.source == LOCAL_FALLBACK]
    assert fallbacks and all(r.reason for r in fallbacks)
    assert all(r.source in (MIXED, LOCAL_FALLBACK) for r in results)
    # and each answer is its own input's: the mixed prediction when offloaded, the local one otherwise
    local, indices = tiny_bundle.session("device").run(None, {"image": tiny_bundle.prepare(np.stack(fed))})
    (remote,) = tiny_bundle.session("remote").run(None, {"remote_indices": indices})
    mixed = tiny_bundle.mix(local, remote)
    assert [r.local_label for r in results] == local.argmax(1).tolist()
    assert [r.label for r in results] == [int((mixed if r.source == MIXED else local)[k].argmax())
                                          for k, r in enumerate(results)]


def test_demo_runs_end_to_end_on_the_shared_ray(local_ray, tiny_bundle):
    from commands.demo import format_table, run_demo
    from partitioner.testing import synthetic_dataset

    split = synthetic_dataset().test
    report = run_demo(tiny_bundle.folder, split.images, split.labels, workers=1, progress=False)
    assert report["total"] == report["answered"] == len(split)
    assert report["offloaded_share"] == 1.0
    assert report["mixed_mismatches_vs_evaluate"] == 0
    for key in ("accuracy", "accuracy_local_only", "payload_bytes_median", "cloud_rtt_p50_ms", "cloud_rtt_p99_ms",
                "throughput_per_s", "offloaded_share"):
        assert report[key] is not None, key
    assert "answered" in format_table(report)


@pytest.mark.parametrize("service", [1], indirect=True)
def test_a_worker_restarted_after_the_bundle_store_restarted_still_serves(service, tiny_bundle, images):
    """Nothing a restart needs is a constructor argument in the object store: the bundle store is killed
    (Ray restarts it empty), then a worker; the service refills the store and the worker serves again."""
    pid = service.workers[0]["pid"]
    ray.kill(service._store, no_restart=False)
    os.kill(pid, signal.SIGKILL)  # its restart finds the store restarting, then empty until the service refills it
    restarted = service.wait_restarted(0, pid, timeout_s=90)
    assert restarted["pid"] != pid
    assert ray.get(service._store.has.remote(), timeout=10)
    config = DeviceConfig(cloud=[restarted["endpoint"]], deadline_ms=2000)
    with DeviceAgent(tiny_bundle, config) as agent:
        assert agent.wait_ready(60)
        result = agent.infer(images[0])
    assert result.source == MIXED
