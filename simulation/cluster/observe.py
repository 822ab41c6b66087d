"""The cluster's processes' output lines as events, read once as each line arrives.

The device daemon logs JSON records, and the one the cluster follows (a stream to a worker opened)
carries its worker and endpoint as fields. The service logs text, from Ray's worker processes too, so
its two messages are matched here, in one place; everything downstream reads typed events.
"""

from __future__ import annotations

import json
import re

from simulation.cluster.events import (
    DeviceLinked,
    Event,
    WorkerServing,
    WorkersRestarted,
)

# cloud_worker.service, from each worker actor (Ray forwards it to the driver's standard error):
# "worker %s serving %s at %s (pid %d)"
_WORKER_SERVING = re.compile(r"worker (\S+) serving \S+ at (\S+) \(pid (\d+)\)")
# cloud_worker.service, the driver: "Ray restarted %s" with the worker ids joined by ", "
_WORKERS_RESTARTED = re.compile(r"Ray restarted (\S.*)$")


def device_log_event(device: str, line: str) -> Event | None:
    """A device's structured log record (one JSON line), at the time the record carries."""
    try:
        record = json.loads(line)
        if record.get("event") != "linked":
            return None
        return DeviceLinked(float(record["ts"]), device, str(record["worker_id"]), str(record["endpoint"]))
    except (ValueError, KeyError, TypeError, AttributeError):  # not a record, or not one of ours
        return None


def service_log_event(at: float, line: str) -> Event | None:
    """A line of `agilenn cloud serve`'s standard error, at the time it arrived."""
    if found := _WORKER_SERVING.search(line):
        return WorkerServing(at, found.group(1), found.group(2), int(found.group(3)))
    if found := _WORKERS_RESTARTED.search(line):
        return WorkersRestarted(at, tuple(worker.strip() for worker in found.group(1).split(",")))
    return None
