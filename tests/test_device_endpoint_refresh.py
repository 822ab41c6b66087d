"""A worker that comes back at another address (Ray restarted it on another node) is found again: the
device asks a live worker for the endpoint list while it reaches fewer workers than the list names."""

import time

import numpy as np

from device_agent import MIXED, DeviceAgent, DeviceConfig

# Nothing listens on port 1 of loopback: the address a worker had on a node that is gone.
GONE = "127.0.0.1:1"


def test_a_moved_worker_is_found_again_and_its_old_address_dropped(tiny_bundle, worker_server):
    image = np.zeros(tiny_bundle.manifest.input.shape, dtype=np.uint8)
    with worker_server(tiny_bundle, worker_id="worker-0") as first, \
            worker_server(tiny_bundle, worker_id="worker-1") as moved:
        listed = [first.address, GONE]
        first.server.servicer._endpoints = lambda: list(listed)
        config = DeviceConfig(cloud=[first.address], deadline_ms=5000, endpoint_refresh_s=0.05,
                              reconnect_initial_s=0.02, reconnect_max_s=0.1)
        with DeviceAgent(tiny_bundle, config) as agent:
            assert agent.wait_ready(30)
            assert not agent.wait_ready(0.5, workers=2)  # worker-1's old address answers nothing
            listed[1] = moved.address  # the service now lists worker-1 where it restarted
            assert agent.wait_ready(30, workers=2)
            deadline = time.monotonic() + 10
            while GONE in {link.address for link in agent._links} and time.monotonic() < deadline:
                time.sleep(0.02)
            assert {link.address for link in agent._links} == {first.address, moved.address}
            results = [agent.infer(image) for _ in range(6)]
    assert all(r.source == MIXED for r in results)
    assert {r.worker_id for r in results} == {"worker-0", "worker-1"}
