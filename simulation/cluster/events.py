"""What happens in the local cluster, as typed events written as JSON lines.

The harness emits an event for each of its own steps (a node started or failed, the service
started), for each answer a device gives, and for what the cluster's processes report as it arrives
(`simulation.cluster.observe`). Reports are computed from the events alone, in memory or read back
from the file. Times are wall-clock seconds (`time.time()`), comparable across namespaces.
"""

from __future__ import annotations

import json
import threading
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar, TypeVar


@dataclass(frozen=True)
class NodeStarted:
    kind: ClassVar[str] = "node_started"
    at: float
    role: str  # "head" or "second"
    address: str


@dataclass(frozen=True)
class NodeFailed:
    kind: ClassVar[str] = "node_failed"
    at: float
    address: str
    failure: str  # "kill": its processes died; "power_off": its link went down first
    processes: int  # how many processes were killed


@dataclass(frozen=True)
class ServiceStarted:
    kind: ClassVar[str] = "service_started"
    at: float
    endpoints: tuple[str, ...]  # worker i at endpoints[i]


@dataclass(frozen=True)
class ServiceStopped:
    kind: ClassVar[str] = "service_stopped"
    at: float


@dataclass(frozen=True)
class WorkerServing:
    """A worker process serving: at start, and again after Ray restarted it."""

    kind: ClassVar[str] = "worker_serving"
    at: float
    worker_id: str
    endpoint: str
    pid: int


@dataclass(frozen=True)
class WorkersRestarted:
    """The service saw that Ray restarted these workers."""

    kind: ClassVar[str] = "workers_restarted"
    at: float
    worker_ids: tuple[str, ...]


@dataclass(frozen=True)
class DeviceStarted:
    kind: ClassVar[str] = "device_started"
    at: float
    device: str
    cloud: tuple[str, ...]  # the endpoints it was given


@dataclass(frozen=True)
class DeviceLinked:
    """A device opened a stream to a worker."""

    kind: ClassVar[str] = "device_linked"
    at: float
    device: str
    worker_id: str
    endpoint: str


@dataclass(frozen=True)
class DeviceAnswered:
    kind: ClassVar[str] = "device_answered"
    at: float  # when the answer reached the harness
    device: str
    index: int
    source: str  # "mixed", "local_fallback", ...
    worker_id: str | None
    reason_code: str | None
    reason: str | None


EVENT_TYPES = (NodeStarted, NodeFailed, ServiceStarted, ServiceStopped, WorkerServing, WorkersRestarted,
               DeviceStarted, DeviceLinked, DeviceAnswered)
_BY_KIND = {event_type.kind: event_type for event_type in EVENT_TYPES}
Event = NodeStarted | NodeFailed | ServiceStarted | ServiceStopped | WorkerServing | WorkersRestarted | \
    DeviceStarted | DeviceLinked | DeviceAnswered
E = TypeVar("E")


def to_record(event: Event) -> dict[str, Any]:
    return {"event": event.kind, **asdict(event)}


def from_record(record: dict[str, Any]) -> Event:
    event_type = _BY_KIND.get(record.get("event"))
    if event_type is None:
        raise ValueError(f"unknown event {record.get('event')!r}: one of {sorted(_BY_KIND)}")
    values = {f.name: record[f.name] for f in fields(event_type)}
    return event_type(**{name: tuple(value) if isinstance(value, list) else value for name, value in values.items()})


def read_events(path: str | Path) -> list[Event]:
    return [from_record(json.loads(line)) for line in Path(path).read_text().splitlines() if line.strip()]


def select(events, event_type: type[E], since: float | None = None, **equal: Any) -> list[E]:
    """The events of one type, in order, at or after `since`, whose fields equal `equal`."""
    return [event for event in events if isinstance(event, event_type)
            and (since is None or event.at >= since)
            and all(getattr(event, name) == value for name, value in equal.items())]


class EventLog:
    """Events in the order they were emitted (from any thread), each also written to `path` as one
    JSON line when a path is given."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._events: list[Event] = []
        self._lock = threading.Lock()

    def emit(self, event: Event) -> Event:
        with self._lock:
            self._events.append(event)
            if self.path is not None:  # opened per event: a few hundred a run, each on disk at once
                with open(self.path, "a") as out:
                    out.write(json.dumps(to_record(event)) + "\n")
        return event

    def events(self) -> list[Event]:
        with self._lock:
            return list(self._events)

    def of(self, event_type: type[E], since: float | None = None, **equal: Any) -> list[E]:
        return select(self.events(), event_type, since, **equal)
