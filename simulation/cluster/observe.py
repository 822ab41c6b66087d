"""The cluster's processes' output lines as events, read once as each line arrives.

The device daemon logs JSON records and the service logs text; neither carries the worker and the
endpoint as fields of their own, so the two messages the cluster follows are matched here, in one
place, and everything downstream reads typed events.
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

# device_agent.link: "streaming to worker %s at %s"
_DEVICE_LINKED = re.compile(r"streaming to worker (\S+) at (\S+)")
# cloud_worker.service, from each worker actor (Ray forwards it to the driver's standard error):
# "worker %s serving %s at %s (pid %d)"
_WORKER_SERVING = re.compile(r"worker (\S+) serving \S+ at (\S+) \(pid (\d+)\)")
# cloud_worker.service, the driver: "Ray restarted %s" with the worker ids joined by ", "
_WORKERS_RESTARTED = re.compile(r"Ray restarted (\S.*)$")


def device_log_event(device: str, line: str) -> Event | None:
    """A device's structured log record (one JSON line), at the time the record carries."""
    try:
        record = json.loads(line)
        at, message = float(record["ts"]), str(record["msg"])
    except (ValueError, KeyError, TypeError):
        return None
    found = _DEVICE_LINKED.match(message)
    return DeviceLinked(at, device, found.group(1), found.group(2)) if found else None


def service_log_event(at: float, line: str) -> Event | None:
    """A line of `agilenn cloud serve`'s standard error, at the time it arrived."""
    if found := _WORKER_SERVING.search(line):
        return WorkerServing(at, found.group(1), found.group(2), int(found.group(3)))
    if found := _WORKERS_RESTARTED.search(line):
        return WorkersRestarted(at, tuple(worker.strip() for worker in found.group(1).split(",")))
    return None
