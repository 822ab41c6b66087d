"""A real two-node Ray cluster on one machine, serving agilenn (needs root and `ip`).

Network namespaces stand in for machines, each with a veth into a bridge (`layout.Layout`):

    agc-head  10.77.0.1  Ray head, and `agilenn cloud serve --ray-address` (the Ray driver)
    agc-node  10.77.0.2  a second Ray node (`ray start --address`)
    agc-dev   10.77.0.3  the device (`agilenn device run`, inputs on stdin, results on stdout)

The bridge sits in a namespace of its own (agc-sw), so the host's interfaces, routes and firewall are
untouched and no packet can leave the bridge. Every process in a namespace is the cluster's own:
killing the second node is killing every process in agc-node (its raylet and its workers), and
teardown is the same for every namespace. Ray runs with token authentication, a fresh token per
cluster in RAY_AUTH_TOKEN, and HOME in the cluster's own temporary folder, so nothing is written
to the user's ~/.ray and no `ray stop` (which stops every Ray on the machine) is ever needed.

Serving is over mutual TLS with a per-device token (`cloud_worker.dev_credentials.write_dev_security`,
the server certificate valid for both nodes' addresses) unless `security="plaintext"`. Every step,
answer and observed restart is an event in `LocalCluster.events` (`simulation.cluster.events`).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloud_worker.dev_credentials import DevSecurity, write_dev_security
from simulation import netns
from simulation.cluster.errors import ClusterError, ClusterUnavailable
from simulation.cluster.events import (
    DeviceStarted,
    EventLog,
    NodeFailed,
    NodeStarted,
    ServiceStarted,
    ServiceStopped,
)
from simulation.cluster.layout import MARKER, Layout, build_network, teardown
from simulation.cluster.observe import device_log_event, service_log_event
from simulation.cluster.processes import DeviceProcess, Pump

REPO = Path(__file__).resolve().parents[2]
DEFAULT_BUNDLE = REPO / "tests" / "data" / "tiny-bundle"
SECURITIES = ("plaintext", "tls")
FAILURES = ("kill", "power_off")


def check_available() -> None:
    try:
        netns.check_available()
    except netns.NamespacesUnavailable as exc:
        raise ClusterUnavailable(str(exc)) from None


def _bin(name: str) -> str:
    """A console script of this interpreter's environment (the venv's `ray`, `agilenn`)."""
    path = Path(sys.executable).with_name(name)
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if found is None:
        raise ClusterUnavailable(f"`{name}` not found beside {sys.executable} or on PATH")
    return found


@contextlib.contextmanager
def _network_step():
    """The namespace helpers' errors as the cluster's."""
    try:
        yield
    except netns.NamespacesUnavailable as exc:
        raise ClusterUnavailable(str(exc)) from None
    except netns.NetworkCommandFailed as exc:
        raise ClusterError(str(exc)) from None


@dataclass
class LocalCluster:
    bundle: Path = DEFAULT_BUNDLE
    security: str = "tls"
    layout: Layout = field(default_factory=Layout)
    workers: int = 2
    cpus_per_node: int = 2
    events_file: Path | None = None  # JSON lines; None: events.jsonl in the cluster's folder, removed with it
    # state
    folder: Path | None = field(default=None, init=False)
    events: EventLog = field(default_factory=EventLog, init=False)
    credentials: DevSecurity | None = field(default=None, init=False)
    endpoints: list[str] = field(default_factory=list, init=False)
    serve_process: subprocess.Popen | None = field(default=None, init=False)
    devices: list[DeviceProcess] = field(default_factory=list, init=False)
    second_node_starts: int = field(default=0, init=False)
    services_started: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.security not in SECURITIES:
            raise ValueError(f"security {self.security!r}: one of {SECURITIES}")
        self.bundle = Path(self.bundle).resolve()
        # the cluster's own credentials for Ray: a fresh token, and a HOME nothing else uses
        self._ray_token = secrets.token_hex(32)

    # -- environment --

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(HOME=str(self.folder / "home"), RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=self._ray_token,
                   RAY_USAGE_STATS_ENABLED="0", RAY_DEDUP_LOGS="0", PYTHONUNBUFFERED="1",
                   PYTHONPATH=os.pathsep.join(filter(None, (str(REPO), env.get("PYTHONPATH")))))
        return env

    def _run_in(self, ns: str, *command: str, log: str, timeout_s: float = 120.0) -> str:
        done = subprocess.run(netns.in_namespace(ns, *command), check=False, env=self._env(), capture_output=True,
                              text=True, timeout=timeout_s, cwd=self.folder)
        (self.folder / log).write_text(done.stdout + done.stderr)
        if done.returncode:
            raise ClusterError(f"`{' '.join(command)}` in {ns} failed ({done.returncode}): "
                               f"{(done.stdout + done.stderr).strip()[-3000:]}")
        return done.stdout

    def _start_in(self, ns: str, *command: str, log: str, stdin: bool = False, observe_stderr=None
                  ) -> tuple[subprocess.Popen, Pump, Pump]:
        process = subprocess.Popen(netns.in_namespace(ns, *command), env=self._env(), cwd=self.folder,
                                   stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        return (process, Pump(process.stdout, self.folder / f"{log}.out"),
                Pump(process.stderr, self.folder / f"{log}.err", observe_stderr))

    def _write_config(self, name: str, fields: dict[str, Any]) -> Path:
        path = self.folder / name
        path.write_text(json.dumps(fields))
        return path

    # -- lifecycle --

    def up(self) -> None:
        """Namespaces and bridge, the Ray head, the second Ray node; returns when both nodes are alive."""
        check_available()
        with _network_step():
            teardown(self.layout)  # whatever a crashed run with the same names left
        self.folder = Path(tempfile.mkdtemp(prefix=self.layout.folder_prefix))  # short: Ray's socket paths
        (self.folder / MARKER).touch()
        (self.folder / "home").mkdir()
        self.events = EventLog(self.events_file or self.folder / "events.jsonl")
        with _network_step():
            build_network(self.layout)
        if self.security == "tls":
            self.credentials = write_dev_security(self.folder / "security", device="cluster-device",
                                                  hosts=[self.layout.head_ip, self.layout.node_ip])
        self._run_in(self.layout.head_ns, _bin("ray"), "start", "--head", "--node-ip-address", self.layout.head_ip,
                     "--port", str(self.layout.ray_port), "--temp-dir", str(self.folder / "ray-head"),
                     "--include-dashboard", "false", "--num-cpus", str(self.cpus_per_node), "--disable-usage-stats",
                     log="ray-head.log")
        self.events.emit(NodeStarted(time.time(), "head", self.layout.head_ip))
        self._start_second_node()

    def _start_second_node(self) -> None:
        self.second_node_starts += 1
        self._run_in(self.layout.node_ns, _bin("ray"), "start", "--address", self.ray_address,
                     "--node-ip-address", self.layout.node_ip,
                     "--temp-dir", str(self.folder / f"ray-node-{self.second_node_starts}"),
                     "--num-cpus", str(self.cpus_per_node), "--disable-usage-stats",
                     log=f"ray-node-{self.second_node_starts}.log")
        self.wait_nodes(2)
        self.events.emit(NodeStarted(time.time(), "second", self.layout.node_ip))

    @property
    def ray_address(self) -> str:
        return f"{self.layout.head_ip}:{self.layout.ray_port}"

    def alive_nodes(self) -> int:
        status = self._run_in(self.layout.head_ns, _bin("ray"), "status", "--address", self.ray_address,
                              log="ray-status.log")
        active = status.split("Active:", 1)[-1].split("Pending:", 1)[0] if "Active:" in status else ""
        return len(re.findall(r"node_[0-9a-f]+", active))

    def wait_nodes(self, count: int, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        seen = 0
        while time.monotonic() < deadline:
            with contextlib.suppress(ClusterError):
                seen = self.alive_nodes()
                if seen >= count:
                    return
            time.sleep(0.5)
        raise ClusterError(f"{seen} of {count} Ray nodes alive after {timeout_s:g} s")

    def serve(self, port: int | None = None, timeout_s: float = 120.0) -> list[str]:
        """`agilenn cloud serve` in the head namespace, as the Ray driver, on every node's address; worker
        i listens on port + i (default: the layout's)."""
        self.services_started += 1
        # plaintext beyond loopback has to be asked for
        security = self.credentials.serve_fields() if self.credentials is not None else {"insecure": True}
        config = self._write_config(f"serve-{self.services_started}.json", security)

        def observe(arrived_at: float, line: str) -> None:
            if event := service_log_event(arrived_at, line):
                self.events.emit(event)

        process, stdout, stderr = self._start_in(
            self.layout.head_ns, _bin("agilenn"), "cloud", "serve", "--bundle", str(self.bundle), "--ray-address",
            self.ray_address, "--host", "0.0.0.0", "--port", str(port or self.layout.worker_port),
            "--workers", str(self.workers), "--config", str(config), log=f"serve-{self.services_started}",
            observe_stderr=observe)
        self.serve_process = process
        try:
            line = stdout.next_line(timeout_s)
        except queue.Empty:
            line = None
        if not line:
            raise ClusterError(f"`agilenn cloud serve` printed no endpoints: {stderr.tail(30)}")
        self.endpoints = line.split()
        self.events.emit(ServiceStarted(time.time(), tuple(self.endpoints)))
        return self.endpoints

    def start_device(self, cloud: list[str], config: dict[str, Any] | None = None,
                     credentials: dict[str, str] | None = None, wait_ready_s: float = 30.0) -> DeviceProcess:
        """`agilenn device run` in the device namespace, starting from these worker addresses only;
        `credentials` (DeviceConfig fields) default to the cluster's."""
        if credentials is None:
            credentials = self.credentials.device_fields() if self.credentials is not None else {}
        name = f"device-{len(self.devices)}"
        config_path = self._write_config(f"{name}.json", {**credentials, **(config or {})})

        def observe(_arrived_at: float, line: str) -> None:
            if event := device_log_event(name, line):
                self.events.emit(event)

        process, stdout, stderr = self._start_in(
            self.layout.device_ns, _bin("agilenn"), "device", "run", "--bundle", str(self.bundle),
            "--cloud", ",".join(cloud), "--source", "-", "--sink", "-", "--config", str(config_path),
            "--wait-ready-s", str(wait_ready_s), log=name, stdin=True, observe_stderr=observe)
        self.events.emit(DeviceStarted(time.time(), name, tuple(cloud)))
        device = DeviceProcess(name, process, stdout, stderr, self.events)
        self.devices.append(device)
        return device

    def kill_second_node(self, failure: str = "kill") -> NodeFailed:
        """SIGKILL every process of the second node (its raylet and its workers) at once. `kill`: the
        node's kernel lives on and resets the connections of the dead processes, as when processes
        crash; `power_off`: its link goes down first, so no reset reaches anyone, as when a machine
        loses power."""
        if failure not in FAILURES:
            raise ValueError(f"failure {failure!r}: one of {FAILURES}")
        at = time.time()
        with _network_step():
            if failure == "power_off":
                netns.set_link(self.layout.node_ns, self.layout.interface, up=False)
            killed = netns.kill_namespace(self.layout.node_ns)
        return self.events.emit(NodeFailed(at, self.layout.node_ip, failure, killed))

    def stop_service(self, timeout_s: float = 30.0) -> None:
        """SIGTERM to `agilenn cloud serve`: it drains and ends its workers."""
        if self.serve_process is not None and self.serve_process.poll() is None:
            self.serve_process.send_signal(signal.SIGTERM)
            try:
                self.serve_process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                pass  # teardown's namespace kill ends it
            self.events.emit(ServiceStopped(time.time()))
        self.serve_process = None

    def rejoin_second_node(self) -> None:
        """A fresh Ray node in the second node's namespace (after kill_second_node), its link up again."""
        with _network_step():
            netns.set_link(self.layout.node_ns, self.layout.interface, up=True)
        self._start_second_node()

    def down(self) -> None:
        """Stop the devices and the service (which drains and ends its workers), then remove everything."""
        for device in self.devices:
            device.close()
        self.devices = []
        self.stop_service()
        with _network_step():
            teardown(self.layout)
        self.folder = None
