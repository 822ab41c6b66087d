"""The local cluster's events and the failover report computed from them, without a cluster: the
lines its processes write become events, events survive their JSON lines, and the report reads them."""

import json
import logging

from simulation.cluster.events import (
    DeviceAnswered,
    DeviceLinked,
    EventLog,
    NodeFailed,
    ServiceStarted,
    WorkerServing,
    WorkersRestarted,
    read_events,
)
from simulation.cluster.failover import failover_report
from simulation.cluster.observe import device_log_event, service_log_event

HEAD, SECOND = "10.77.0.1", "10.77.0.2"


def test_the_lines_the_cluster_follows_become_events():
    from device_agent.cli import JsonLogFormatter

    linked = logging.LogRecord("device_agent.link", logging.INFO, __file__, 1, "streaming to worker %s at %s",
                               ("worker-1", f"{SECOND}:50052"), None)
    linked.fields = {"event": "linked", "worker_id": "worker-1", "endpoint": f"{SECOND}:50052"}
    line = JsonLogFormatter().format(linked)  # as the device daemon writes it
    assert device_log_event("device-0", line) == DeviceLinked(round(linked.created, 3), "device-0", "worker-1",
                                                              f"{SECOND}:50052")
    assert device_log_event("device-0", json.dumps({**json.loads(line), "event": "other"})) is None
    assert device_log_event("device-0", "not a record") is None
    assert device_log_event("device-0", "[1, 2]") is None

    serving = (f"(WorkerActor pid=4242) 2026-01-01 00:00:00,000 INFO cloud_worker.service: worker worker-1 "
               f"serving 0f1e2d at {HEAD}:50052 (pid 4242)")
    assert service_log_event(3.0, serving) == WorkerServing(3.0, "worker-1", f"{HEAD}:50052", 4242)
    restarted = "2026-01-01 00:00:01,000 WARNING cloud_worker.service: Ray restarted worker-1, worker-3"
    assert service_log_event(4.0, restarted) == WorkersRestarted(4.0, ("worker-1", "worker-3"))
    # the driver's own start-up line names no bundle hash: not a restarted worker
    assert service_log_event(5.0, f"INFO agilenn.cloud: worker-0 serving at {HEAD}:50051 (pid 7)") is None


def answer(at, index, source="mixed", worker="worker-0", reason=None):
    return DeviceAnswered(at, "device-0", index, source, worker if source == "mixed" else None,
                          reason and "deadline", reason)


def a_failover():
    """Two workers, the second node killed at t=10, its worker back on the head at t=13."""
    events = [ServiceStarted(1.0, (f"{HEAD}:50051", f"{SECOND}:50052")),
              answer(2.0, 0, worker="worker-0"), answer(3.0, 1, worker="worker-1"),
              NodeFailed(10.0, SECOND, "power_off", 5),
              answer(10.5, 2, worker="worker-0"),
              answer(11.0, 3, "local_fallback", reason="deadline: no answer within 1000 ms"),
              WorkersRestarted(12.0, ("worker-1",)),
              WorkerServing(12.5, "worker-1", f"{HEAD}:50052", 99),
              DeviceLinked(12.8, "device-0", "worker-1", f"{HEAD}:50052"),
              DeviceLinked(12.9, "device-1", "worker-1", f"{HEAD}:50052")]  # another device: not counted
    events += [answer(13.0 + k, 4 + k, worker=f"worker-{(k + 1) % 2}") for k in range(4)]
    return events


def test_the_failover_report_reads_the_events_of_the_last_failure():
    report = failover_report(a_failover(), "device-0", inputs_after=4)
    assert report["failure"] == "power_off"
    assert report["killed_workers"] == ["worker-1"] and report["killed_processes"] == 5
    assert report["inputs"] == 8 and report["answered_in_order"]
    assert report["inputs_after_kill"] == 6
    assert report["sources_after_kill"] == {"local_fallback": 1, "mixed": 5}
    assert report["fallback_reasons"] == {"deadline": 1} and report["fallbacks_without_reason"] == 0
    assert report["restarted_endpoints"] == {"worker-1": f"{HEAD}:50052"}
    assert report["offloaded_share_last_inputs"] == 1.0
    assert report["workers_answering_last_inputs"] == ["worker-0", "worker-1"]
    assert report["seconds_from_kill"] == {
        "restarted_worker_serving": {"worker-1": 2.5}, "service_saw_restart": 2.0,
        "device_relinked": {"worker-1": 2.8}, "first_mixed_from_restarted_worker": 3.0,
        "offloaded_share_back_at_100_percent": 3.0}


def test_a_worker_that_never_came_back_is_reported_as_none():
    events = [event for event in a_failover() if not (isinstance(event, DeviceAnswered) and event.at > 12)]
    timings = failover_report(events, "device-0", inputs_after=4)["seconds_from_kill"]
    assert timings["first_mixed_from_restarted_worker"] is None
    assert timings["offloaded_share_back_at_100_percent"] is None


def test_events_written_as_json_lines_read_back_the_same(tmp_path):
    log = EventLog(tmp_path / "events.jsonl")
    for event in a_failover():
        log.emit(event)
    lines = (tmp_path / "events.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["event"] == "service_started"
    assert read_events(tmp_path / "events.jsonl") == log.events() == a_failover()
    assert log.of(DeviceLinked, device="device-1") == [a_failover()[-5]]
