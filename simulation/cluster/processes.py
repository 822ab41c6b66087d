"""The cluster's child processes: their output read on threads, and the device daemon driven over
standard input and output."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import queue
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from simulation.cluster.errors import ClusterError
from simulation.cluster.events import DeviceAnswered, EventLog

log = logging.getLogger(__name__)


class Pump:
    """Reads a child's output lines on a thread: into a log file, a list stamped with the arrival
    time (wall clock, comparable across namespaces), a queue for whoever waits on them, and
    `observe(arrived_at, line)` when given."""

    def __init__(self, stream, log_path: Path, observe: Callable[[float, str], None] | None = None) -> None:
        self.lines: list[tuple[float, str]] = []
        self.queue: queue.Queue[str | None] = queue.Queue()
        self._observe = observe
        self._thread = threading.Thread(target=self._run, args=(stream, log_path), daemon=True)
        self._thread.start()

    def _run(self, stream, log_path: Path) -> None:
        try:
            with open(log_path, "a", buffering=1) as log:
                for raw in iter(stream.readline, b""):
                    line = raw.decode(errors="replace").rstrip("\n")
                    arrived_at = time.time()
                    self.lines.append((arrived_at, line))
                    log.write(line + "\n")
                    if self._observe is not None:
                        try:
                            self._observe(arrived_at, line)
                        except Exception:  # the pipe must keep draining, or the child blocks
                            log.exception("observing a line failed; reading on")
                    self.queue.put(line)
        except (OSError, ValueError):
            pass
        finally:
            self.queue.put(None)

    def next_line(self, timeout_s: float) -> str | None:
        """The next line, or None at the end of the stream; raises queue.Empty on a timeout."""
        return self.queue.get(timeout=timeout_s)

    def tail(self, lines: int = 20) -> str:
        return "\n".join(line for _, line in self.lines[-lines:])


class DeviceProcess:
    """`agilenn device run --source -` in the device namespace: one .npy array in, one JSON line out;
    every answer is emitted as a DeviceAnswered event."""

    def __init__(self, name: str, process: subprocess.Popen, stdout: Pump, stderr: Pump, events: EventLog) -> None:
        self.name, self.process, self.stdout, self.stderr, self.events = name, process, stdout, stderr, events

    def infer(self, image, timeout_s: float = 30.0) -> dict[str, Any]:
        import numpy as np

        buffer = io.BytesIO()
        np.lib.format.write_array(buffer, np.ascontiguousarray(image), allow_pickle=False)
        self.process.stdin.write(buffer.getvalue())
        self.process.stdin.flush()
        try:
            line = self.stdout.next_line(timeout_s)
        except queue.Empty:
            raise ClusterError(f"the device gave no answer within {timeout_s:g} s: {self.log_tail()}") from None
        if line is None:
            raise ClusterError(f"the device exited: {self.log_tail()}")
        result = json.loads(line)
        self.events.emit(DeviceAnswered(self.stdout.lines[-1][0], self.name, result["index"], result["source"],
                                        result.get("worker_id"), result.get("reason_code"), result.get("reason")))
        return result

    def log_tail(self, lines: int = 20) -> str:
        return self.stderr.tail(lines)

    def close(self, timeout_s: float = 10.0) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.process.stdin.close()  # the end of the source: the daemon answers what it has and exits
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
