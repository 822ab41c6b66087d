"""The failover scenario: a device streams while the second node dies; the report says what every
input got and how long offloading to the killed worker took to come back, computed from events."""

from __future__ import annotations

import collections
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from simulation.cluster.errors import ClusterError
from simulation.cluster.events import (
    DeviceAnswered,
    DeviceLinked,
    DeviceStarted,
    Event,
    NodeFailed,
    ServiceStarted,
    WorkerServing,
    WorkersRestarted,
    select,
)
from simulation.cluster.harness import LocalCluster


def worker_ip(endpoint: str) -> str:
    return endpoint.rsplit(":", 1)[0].strip("[]")


def placement(endpoints: Sequence[str]) -> dict[str, str]:
    """Worker id -> endpoint: worker i serves at endpoints[i]."""
    return {f"worker-{i}": endpoint for i, endpoint in enumerate(endpoints)}


def stream_through_node_failure(cluster: LocalCluster, failure: str = "kill", gap_s: float = 0.02,
                                timeout_s: float = 120.0, inputs_after: int = 50) -> dict[str, Any]:
    """A device streams from one endpoint while the second node is killed (see `failover_report`)."""
    import numpy as np

    layout = cluster.layout
    placed = placement(cluster.endpoints)
    victims = {worker for worker, endpoint in placed.items() if worker_ip(endpoint) == layout.node_ip}
    if not victims or len(victims) == len(placed):
        raise ClusterError(f"the workers are not spread over both nodes: {placed}")
    shape = _bundle_shape(cluster.bundle)
    rng = np.random.default_rng(0)
    device = cluster.start_device(cluster.endpoints[:1], {"deadline_ms": 1000, "reconnect_initial_s": 0.05,
                                                          "reconnect_max_s": 1.0})

    def feed() -> dict[str, Any]:
        result = device.infer(rng.integers(0, 256, shape, dtype=np.uint8))
        time.sleep(gap_s)
        return result

    # the device was told one endpoint: it learns the others from GetServiceInfo and streams to all
    deadline = time.monotonic() + timeout_s
    offloaded_to: set[str] = set()
    while offloaded_to != set(placed):
        if time.monotonic() > deadline:
            raise ClusterError(f"the device did not stream to every worker: {device.log_tail()}")
        result = feed()
        if result["source"] == "mixed":
            offloaded_to.add(result["worker_id"])

    killed = cluster.kill_second_node(failure)
    back = False
    while not back and time.time() - killed.at < timeout_s:
        result = feed()
        # the killed process cannot answer: a mixed answer from its worker id is its successor's
        back = result["source"] == "mixed" and result["worker_id"] in victims
    for _ in range(inputs_after if back else 0):
        feed()
    device.close()
    return {"security": cluster.security, "nodes": {"head": layout.head_ip, "second": layout.node_ip},
            **failover_report(cluster.events.events(), device.name, inputs_after),
            "load_average": os.getloadavg()}


def failover_report(events: Sequence[Event], device: str, inputs_after: int = 50) -> dict[str, Any]:
    """What `device` got around the last node failure in `events`: every input answered and in order,
    the local answers and their reasons, where the killed workers came back, and seconds from the
    failure to each step of the recovery (None: it did not happen)."""
    killed = select(events, NodeFailed)[-1]
    service = [event for event in select(events, ServiceStarted) if event.at <= killed.at][-1]
    placed = placement(service.endpoints)
    victims = sorted(worker for worker, endpoint in placed.items() if worker_ip(endpoint) == killed.address)
    # an events file may hold several runs, each with a device of this name: this run's began at its start
    started = [event.at for event in select(events, DeviceStarted, device=device) if event.at <= killed.at]
    answers = select(events, DeviceAnswered, since=started[-1] if started else None, device=device)
    after = [answer for answer in answers if answer.at >= killed.at]
    fallbacks = [answer for answer in after if answer.source == "local_fallback"]
    back_at = next((answer.at for answer in after if answer.source == "mixed" and answer.worker_id in victims), None)
    # offloading is whole again from the first mixed answer after the last local one (None: it never was)
    last_local = max((k for k, answer in enumerate(after) if answer.source != "mixed"), default=None)
    whole_again_at = (killed.at if last_local is None else
                      after[last_local + 1].at if last_local + 1 < len(after) else None)
    relinked = _first_per_worker(select(events, DeviceLinked, since=killed.at, device=device), victims)
    serving_again = _first_per_worker(select(events, WorkerServing, since=killed.at), victims)
    restart_seen = next(iter(select(events, WorkersRestarted, since=killed.at)), None)
    tail = answers[-inputs_after:]
    reasons = collections.Counter(answer.reason_code for answer in fallbacks if answer.reason_code)

    def seconds(at: float | None) -> float | None:
        return None if at is None else round(at - killed.at, 3)

    return {
        "failure": killed.failure,
        "workers_before": placed,
        "killed_workers": victims,
        "killed_processes": killed.processes,
        "inputs": len(answers),
        "answered_in_order": [answer.index for answer in answers] == list(range(len(answers))),
        "inputs_after_kill": len(after),
        "sources_after_kill": dict(sorted(collections.Counter(answer.source for answer in after).items())),
        "fallback_reasons": dict(sorted(reasons.items())),
        "fallback_reason_examples": sorted({answer.reason for answer in fallbacks if answer.reason})[:5],
        "fallbacks_without_reason": sum(1 for answer in fallbacks if not answer.reason),
        "restarted_endpoints": {worker: event.endpoint for worker, event in relinked.items()},
        "offloaded_share_last_inputs": sum(answer.source == "mixed" for answer in tail) / len(tail) if tail else 0.0,
        "workers_answering_last_inputs": sorted({answer.worker_id for answer in tail if answer.worker_id}),
        "seconds_from_kill": {
            "restarted_worker_serving": {worker: seconds(event.at) for worker, event in serving_again.items()},
            "service_saw_restart": seconds(restart_seen.at if restart_seen else None),
            "device_relinked": {worker: seconds(event.at) for worker, event in relinked.items()},
            "first_mixed_from_restarted_worker": seconds(back_at),
            "offloaded_share_back_at_100_percent": seconds(whole_again_at),
        },
    }


def _first_per_worker(events, workers) -> dict:
    first: dict = {}
    for event in events:
        if event.worker_id in workers:
            first.setdefault(event.worker_id, event)
    return first


def _bundle_shape(bundle: Path) -> tuple[int, ...]:
    manifest = json.loads((bundle / "manifest.json").read_text())
    return tuple(manifest["input"]["shape"])
