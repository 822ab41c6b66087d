"""A real two-node Ray cluster on this machine (simulation.cluster: network namespaces joined by a
bridge; needs root and `ip`), serving over mutual TLS with a device token: the workers spread over
both nodes, a device that learns them all from one endpoint, and the second node dying while the
device streams, first by its processes being killed, then (rejoined) by its link going silent.
`make test-cluster` runs it; the default run leaves it out (marker `multinode`)."""

import json

import numpy as np
import pytest

from simulation.cluster.errors import ClusterUnavailable
from simulation.cluster.events import DeviceLinked
from simulation.cluster.failover import stream_through_node_failure, worker_ip
from simulation.cluster.harness import LocalCluster, check_available

pytestmark = pytest.mark.multinode
pytest.importorskip("ray", reason="starts Ray nodes: needs the cloud extra")

# "tls": TLS with client certificates and a per-device token, as in production; "plaintext" runs the
# same suite with --insecure.
SECURITY = "tls"


@pytest.fixture(scope="module")
def cluster(tiny_bundle, tmp_path_factory):
    try:
        check_available()
    except ClusterUnavailable as exc:
        pytest.skip(str(exc))
    events_file = tmp_path_factory.mktemp("cluster") / "events.jsonl"  # kept for a look after a failure
    running = LocalCluster(bundle=tiny_bundle.folder, security=SECURITY, events_file=events_file)
    try:
        try:
            running.up()
        except ClusterUnavailable as exc:
            pytest.skip(str(exc))
        running.serve()
        yield running
    finally:
        running.down()


def images(bundle, count, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (count, *bundle.manifest.input.shape), dtype=np.uint8)


def assert_spread(cluster):
    """One worker per node, each advertising its own node's address."""
    layout = cluster.layout
    hosts = sorted(worker_ip(endpoint) for endpoint in cluster.endpoints)
    assert hosts == sorted([layout.head_ip, layout.node_ip]), cluster.endpoints


def test_workers_spread_over_both_nodes_each_advertising_its_node_address(cluster):
    assert_spread(cluster)


def test_the_device_learns_every_worker_from_one_endpoint(cluster, tiny_bundle):
    device = cluster.start_device(cluster.endpoints[:1], {"deadline_ms": 5000})
    results = []
    # The device starts streaming once one worker is linked; the second link (learnt from the first's
    # endpoint list, TLS and a first token check on that worker) comes a moment later.
    for image in images(tiny_bundle, 400):
        results.append(device.infer(image))
        if len(results) >= 20 and {r["worker_id"] for r in results} == {"worker-0", "worker-1"}:
            break
    device.close()
    assert [r["source"] for r in results] == ["mixed"] * len(results)
    assert {r["worker_id"] for r in results} == {"worker-0", "worker-1"}
    linked = {event.endpoint for event in cluster.events.of(DeviceLinked, device=device.name)}
    assert linked == set(cluster.endpoints)


@pytest.mark.skipif(SECURITY != "tls", reason="the cluster serves plaintext")
def test_a_device_without_a_token_gets_local_answers_that_say_why(cluster, tiny_bundle):
    without_token = {name: path for name, path in cluster.credentials.device_fields().items() if name != "token_file"}
    device = cluster.start_device(cluster.endpoints[:1], {"deadline_ms": 2000}, credentials=without_token,
                                  wait_ready_s=2)
    results = [device.infer(image) for image in images(tiny_bundle, 3)]
    device.close()
    assert [r["source"] for r in results] == ["local_fallback"] * 3
    assert all(r["reason"].startswith("auth: UNAUTHENTICATED") for r in results), results[0]["reason"]


def assert_recovered(report, layout):
    assert report["answered_in_order"]
    assert report["fallbacks_without_reason"] == 0
    assert set(report["sources_after_kill"]) <= {"mixed", "local_fallback"}
    # Ray restarted the killed worker on the surviving node, at that node's address, and the device
    # found it there and offloads to every worker again
    assert report["killed_workers"] and set(report["restarted_endpoints"]) == set(report["killed_workers"])
    assert all(worker_ip(endpoint) == layout.head_ip
               for endpoint in report["restarted_endpoints"].values())
    assert report["offloaded_share_last_inputs"] == 1.0
    assert report["workers_answering_last_inputs"] == ["worker-0", "worker-1"]
    assert report["seconds_from_kill"]["first_mixed_from_restarted_worker"] is not None


def test_a_killed_node_costs_no_input_and_its_worker_comes_back_on_the_head(cluster):
    report = stream_through_node_failure(cluster, "kill")
    print(json.dumps({"multinode_failover": report}))
    assert_recovered(report, cluster.layout)


def test_a_node_gone_silent_costs_one_deadline_and_its_worker_comes_back_on_the_head(cluster):
    # the second node again, and the service afresh (on other ports) so that SPREAD puts a worker there
    cluster.stop_service()
    cluster.rejoin_second_node()
    cluster.serve(port=cluster.layout.worker_port + 10)
    assert_spread(cluster)
    # its link goes down before its processes die: no connection reset reaches the device, which has
    # to notice the silence itself (a missed deadline, then a probe that gets no answer)
    report = stream_through_node_failure(cluster, "power_off")
    print(json.dumps({"multinode_failover": report}))
    assert_recovered(report, cluster.layout)
    assert report["sources_after_kill"].get("local_fallback", 0) <= 3, report["fallback_reason_examples"]
    assert set(report["fallback_reasons"]) <= {"deadline"}
