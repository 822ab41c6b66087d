"""`agilenn cloud serve` in a child process, for benchmarks that measure the service from outside:
its endpoints, each worker's pid (for CPU and memory figures) and its Prometheus metrics."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_WORKER_LINE = re.compile(r"(worker-\d+) serving at \S+ \(pid (\d+)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class CloudServeProcess:
    """Start `agilenn cloud serve --bundle B --workers N --port P --metrics-port M ARGS...` and wait until
    every worker has said where it serves and under which pid."""

    def __init__(self, bundle: str, workers: int = 1, serve_args: list[str] | None = None,
                 start_timeout_s: float = 120.0) -> None:
        self.metrics_port = free_port()
        self.command = [sys.executable, "-m", "cloud_worker.cli", "serve", "--bundle", bundle,
                        "--workers", str(workers), "--port", str(free_port()),
                        "--metrics-port", str(self.metrics_port), *(serve_args or [])]
        env = dict(os.environ, RAY_AUTH_MODE=os.environ.get("RAY_AUTH_MODE", "disabled"))
        self.process = subprocess.Popen(self.command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True, env=env)
        self.log: list[str] = []
        self.pids: dict[str, int] = {}
        self._workers = workers
        self._all_seen = threading.Event()
        threading.Thread(target=self._read_log, daemon=True).start()
        line = self.process.stdout.readline()
        if not line.strip():
            self.stop()
            raise RuntimeError("cloud serve did not start:\n" + "".join(self.log[-30:]))
        self.endpoints = line.split()
        self.endpoint = self.endpoints[0]
        if not self._all_seen.wait(start_timeout_s):
            self.stop()
            raise RuntimeError("cloud serve did not name its workers' pids:\n" + "".join(self.log[-30:]))
        self.metrics_url = f"http://127.0.0.1:{self.metrics_port}/metrics"

    @property
    def pid(self) -> int:
        """The first worker's pid."""
        return self.pids["worker-0"]

    def _read_log(self) -> None:
        for line in self.process.stderr:
            self.log.append(line)
            found = _WORKER_LINE.search(line)
            if found and found.group(1) not in self.pids:
                self.pids[found.group(1)] = int(found.group(2))
                if len(self.pids) >= self._workers:
                    self._all_seen.set()

    def metric(self, name: str) -> float:
        """The value of an unlabelled metric on the first worker's metrics server (0 when absent)."""
        text = urllib.request.urlopen(self.metrics_url, timeout=10).read().decode()
        found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
        return float(found.group(1)) if found else 0.0

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
