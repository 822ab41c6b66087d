"""A real two-node Ray cluster on one machine, serving agilenn (needs root and `ip`).

    sudo .venv/bin/python scripts/local_cluster.py failover [--failure power_off] [--security plaintext]
    sudo .venv/bin/python scripts/local_cluster.py up      # stays up until Ctrl-C; prints its addresses
    sudo .venv/bin/python scripts/local_cluster.py down    # removes what a crashed run left

Network namespaces stand in for machines, each with a veth into a bridge:

    agc-head  10.77.0.1  Ray head, and `agilenn cloud serve --ray-address` (the Ray driver)
    agc-node  10.77.0.2  a second Ray node (`ray start --address`)
    agc-dev   10.77.0.3  the device (`agilenn device run`, inputs on stdin, results on stdout)

The bridge sits in a namespace of its own (agc-sw), so the host's interfaces, routes and firewall are
untouched and no packet can leave the bridge. Every process in a namespace is the cluster's own:
killing the second node is killing every process in agc-node (its raylet and its workers), and
teardown is the same for every namespace. Ray runs with token authentication, a fresh token per
cluster in RAY_AUTH_TOKEN, and HOME in the cluster's own temporary folder, so nothing is written
to the user's ~/.ray and no `ray stop` (which stops every Ray on the machine) is ever needed.

Serving is over mutual TLS with a per-device token (`agilenn certs dev` with both nodes' addresses,
`agilenn tokens add`) unless `--security plaintext`.

`failover` starts the cluster, serves a bundle on two workers (placed SPREAD: one per node, each
advertising its node's address), starts a device from one endpoint, checks that it streams to both
workers, kills the second node while the device streams, and prints a JSON report: every input
answered, the local answers and their reasons, where the killed worker came back, and the time from
the kill to the first mixed answer from the restarted worker. `--failure kill` (the default) kills
the node's processes, whose kernel then resets their connections; `power_off` takes the node's link
down first, so nothing tells the device. The cluster is removed in any case.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import io
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
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEFAULT_BUNDLE = REPO / "tests" / "data" / "tiny-bundle"
# Left in every temporary folder a cluster makes, so that `down` removes only folders of ours.
MARKER = ".agilenn-local-cluster"
SECURITIES = ("plaintext", "tls")
FAILURES = ("kill", "power_off")


class ClusterUnavailable(RuntimeError):
    """This machine cannot run the cluster (not root, no `ip`, no network namespaces); says why."""


class ClusterError(RuntimeError):
    """A step of the cluster failed; the message carries the step's own output."""


@dataclass(frozen=True)
class Layout:
    """Names and addresses; another prefix and subnet let two clusters run side by side."""

    prefix: str = "agc"
    subnet: str = "10.77.0"  # a /24 inside the cluster's own bridge only
    ray_port: int = 6379
    worker_port: int = 50051

    @property
    def switch_ns(self) -> str:
        return f"{self.prefix}-sw"

    @property
    def head_ns(self) -> str:
        return f"{self.prefix}-head"

    @property
    def node_ns(self) -> str:
        return f"{self.prefix}-node"

    @property
    def device_ns(self) -> str:
        return f"{self.prefix}-dev"

    @property
    def head_ip(self) -> str:
        return f"{self.subnet}.1"

    @property
    def node_ip(self) -> str:
        return f"{self.subnet}.2"

    @property
    def device_ip(self) -> str:
        return f"{self.subnet}.3"

    @property
    def hosts(self) -> tuple[tuple[str, str], ...]:
        """(namespace, address) of every host on the bridge."""
        return ((self.head_ns, self.head_ip), (self.node_ns, self.node_ip), (self.device_ns, self.device_ip))

    @property
    def namespaces(self) -> tuple[str, ...]:
        """In teardown order: the device, the second node, the head, then the bridge."""
        return (self.device_ns, self.node_ns, self.head_ns, self.switch_ns)


def check_available() -> None:
    if os.geteuid() != 0:
        raise ClusterUnavailable("network namespaces need root (run as root, or in CI, which runs as root)")
    if shutil.which("ip") is None:
        raise ClusterUnavailable("`ip` not found (Debian: apt-get install iproute2)")


def _sh(*args: str) -> str:
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode:
        raise ClusterError(f"`{' '.join(args)}` failed: {done.stderr.strip()}")
    return done.stdout


def _bin(name: str) -> str:
    """A console script of this interpreter's environment (the venv's `ray`, `agilenn`)."""
    path = Path(sys.executable).with_name(name)
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if found is None:
        raise ClusterUnavailable(f"`{name}` not found beside {sys.executable} or on PATH")
    return found


# ---- network ------------------------------------------------------------------------------------

def build_network(layout: Layout) -> None:
    """The bridge namespace and one namespace per host, each with a veth into the bridge."""
    try:
        _sh("ip", "netns", "add", layout.switch_ns)
    except ClusterError as exc:
        raise ClusterUnavailable(f"cannot create network namespaces here: {exc}") from None
    _sh("ip", "-n", layout.switch_ns, "link", "add", "br0", "type", "bridge")
    _sh("ip", "-n", layout.switch_ns, "link", "set", "br0", "up")
    for index, (ns, address) in enumerate(layout.hosts):
        port = f"port{index}"
        _sh("ip", "netns", "add", ns)
        # both ends are created inside their namespaces: no name ever appears in the host's namespace
        _sh("ip", "link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", port, "netns", layout.switch_ns)
        _sh("ip", "-n", layout.switch_ns, "link", "set", port, "master", "br0")
        _sh("ip", "-n", layout.switch_ns, "link", "set", port, "up")
        _sh("ip", "-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
        _sh("ip", "-n", ns, "link", "set", "eth0", "up")
        _sh("ip", "-n", ns, "link", "set", "lo", "up")


def namespace_pids(ns: str) -> list[int]:
    done = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
    return [int(pid) for pid in done.stdout.split()] if done.returncode == 0 else []


def kill_namespace(ns: str, timeout_s: float = 15.0) -> int:
    """SIGKILL every process in the namespace until none is left; returns how many were killed."""
    killed: set[int] = set()
    deadline = time.monotonic() + timeout_s
    while pids := namespace_pids(ns):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            killed.add(pid)
        if time.monotonic() > deadline:
            raise ClusterError(f"processes {pids} in {ns} survived SIGKILL for {timeout_s:g} s")
        time.sleep(0.05)
    return len(killed)


def existing_namespaces() -> set[str]:
    done = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    return {line.split()[0] for line in done.stdout.splitlines() if line.strip()}


def teardown(layout: Layout) -> None:
    """Every process in the cluster's namespaces, the namespaces (and with them the veths and the
    bridge), and the cluster's temporary folders. Safe to run when nothing is there."""
    present = existing_namespaces()
    for ns in layout.namespaces:
        if ns in present:
            kill_namespace(ns)
    for ns in layout.namespaces:
        if ns in present:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    for folder in Path(tempfile.gettempdir()).glob(f"{layout.prefix}-cluster-*"):
        if (folder / MARKER).exists():
            shutil.rmtree(folder, ignore_errors=True)


# ---- processes ----------------------------------------------------------------------------------

class Pump:
    """Reads a child's output lines on a thread: into a log file, a list stamped with the arrival
    time (wall clock, comparable across namespaces) and a queue for whoever waits on them."""

    def __init__(self, stream, log_path: Path) -> None:
        self.lines: list[tuple[float, str]] = []
        self.queue: queue.Queue[str | None] = queue.Queue()
        self._log = open(log_path, "a", buffering=1)
        self._thread = threading.Thread(target=self._run, args=(stream,), daemon=True)
        self._thread.start()

    def _run(self, stream) -> None:
        try:
            for raw in iter(stream.readline, b""):
                line = raw.decode(errors="replace").rstrip("\n")
                self.lines.append((time.time(), line))
                self._log.write(line + "\n")
                self.queue.put(line)
        except (OSError, ValueError):
            pass
        finally:
            self.queue.put(None)
            self._log.close()

    def next_line(self, timeout_s: float) -> str | None:
        """The next line, or None at the end of the stream; raises queue.Empty on a timeout."""
        return self.queue.get(timeout=timeout_s)


@dataclass
class Security:
    """What a TLS cluster hands to the service and the device (paths in the cluster's folder)."""

    kind: str = "plaintext"
    ca: Path | None = None
    server_cert: Path | None = None
    server_key: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    tokens: Path | None = None
    token_file: Path | None = None

    def serve_args(self) -> list[str]:
        if self.kind == "plaintext":
            return ["--insecure"]  # plaintext beyond loopback has to be asked for
        return ["--tls-cert", str(self.server_cert), "--tls-key", str(self.server_key), "--client-ca", str(self.ca),
                "--tokens", str(self.tokens)]

    def device_args(self) -> list[str]:
        if self.kind == "plaintext":
            return []
        return ["--ca", str(self.ca), "--cert", str(self.client_cert), "--key", str(self.client_key),
                "--token-file", str(self.token_file)]


class DeviceProcess:
    """`agilenn device run --source -` in the device namespace: one .npy array in, one JSON line out."""

    def __init__(self, process: subprocess.Popen, stdout: Pump, stderr: Pump) -> None:
        self.process, self.stdout, self.stderr = process, stdout, stderr

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
        result["answered_at"] = self.stdout.lines[-1][0]
        return result

    def logs(self) -> list[tuple[float, dict]]:
        """The device's structured log records, with their own timestamps."""
        records = []
        for _, line in self.stderr.lines:
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                records.append((float(record["ts"]), record))
        return records

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(line for _, line in self.stderr.lines[-lines:])

    def close(self, timeout_s: float = 10.0) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.process.stdin.close()  # the end of the source: the daemon answers what it has and exits
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@dataclass
class LocalCluster:
    bundle: Path = DEFAULT_BUNDLE
    security: str = "tls"
    layout: Layout = field(default_factory=Layout)
    workers: int = 2
    cpus_per_node: int = 2
    folder: Path | None = None
    endpoints: list[str] = field(default_factory=list)
    serve_process: subprocess.Popen | None = None
    serve_output: Pump | None = None
    devices: list[DeviceProcess] = field(default_factory=list)
    credentials: Security = field(default_factory=Security)
    second_node_starts: int = 0

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
        done = subprocess.run(["ip", "netns", "exec", ns, *command], env=self._env(), capture_output=True, text=True,
                              timeout=timeout_s, cwd=self.folder)
        (self.folder / log).write_text(done.stdout + done.stderr)
        if done.returncode:
            raise ClusterError(f"`{' '.join(command)}` in {ns} failed ({done.returncode}): "
                               f"{(done.stdout + done.stderr).strip()[-3000:]}")
        return done.stdout

    def _start_in(self, ns: str, *command: str, log: str, stdin: bool = False
                  ) -> tuple[subprocess.Popen, Pump, Pump]:
        process = subprocess.Popen(["ip", "netns", "exec", ns, *command], env=self._env(), cwd=self.folder,
                                   stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        return process, Pump(process.stdout, self.folder / f"{log}.out"), Pump(process.stderr, self.folder / f"{log}.err")

    # -- lifecycle --

    def up(self) -> None:
        """Namespaces and bridge, the Ray head, the second Ray node; returns when both nodes are alive."""
        check_available()
        teardown(self.layout)  # whatever a crashed run with the same names left
        self.folder = Path(tempfile.mkdtemp(prefix=f"{self.layout.prefix}-cluster-"))  # short: Ray's socket paths
        (self.folder / MARKER).touch()
        (self.folder / "home").mkdir()
        build_network(self.layout)
        if self.security == "tls":
            self._make_credentials()
        self._run_in(self.layout.head_ns, _bin("ray"), "start", "--head", "--node-ip-address", self.layout.head_ip,
                     "--port", str(self.layout.ray_port), "--temp-dir", str(self.folder / "ray-head"),
                     "--include-dashboard", "false", "--num-cpus", str(self.cpus_per_node), "--disable-usage-stats",
                     log="ray-head.log")
        self._start_second_node()

    def _start_second_node(self) -> None:
        self.second_node_starts += 1
        self._run_in(self.layout.node_ns, _bin("ray"), "start", "--address", self.ray_address,
                     "--node-ip-address", self.layout.node_ip,
                     "--temp-dir", str(self.folder / f"ray-node-{self.second_node_starts}"),
                     "--num-cpus", str(self.cpus_per_node), "--disable-usage-stats",
                     log=f"ray-node-{self.second_node_starts}.log")
        self.wait_nodes(2)

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

    def _make_credentials(self) -> None:
        """A development CA, a server certificate for both nodes' addresses, a client certificate, and a
        token for the device in a token file."""
        certs = self.folder / "certs"
        agilenn = _bin("agilenn")
        _sh(agilenn, "certs", "dev", "--out", str(certs), "--host", self.layout.head_ip, "--host", self.layout.node_ip)
        tokens = self.folder / "tokens.yaml"
        token = _sh(agilenn, "tokens", "add", "--file", str(tokens), "--device", "cluster-device").strip().split()[-1]
        token_file = self.folder / "device-token"
        token_file.write_text(token + "\n")
        token_file.chmod(0o600)
        self.credentials = Security("tls", certs / "ca.pem", certs / "server.pem", certs / "server.key",
                                    certs / "client.pem", certs / "client.key", tokens, token_file)

    def serve(self, port: int | None = None, timeout_s: float = 120.0) -> list[str]:
        """`agilenn cloud serve` in the head namespace, as the Ray driver, on every node's address; worker
        i listens on port + i (default: the layout's)."""
        process, stdout, stderr = self._start_in(
            self.layout.head_ns, _bin("agilenn"), "cloud", "serve", "--bundle", str(self.bundle), "--ray-address",
            self.ray_address, "--host", "0.0.0.0", "--port", str(port or self.layout.worker_port),
            "--workers", str(self.workers), *self.credentials.serve_args(), log="serve")
        self.serve_process, self.serve_output = process, stderr
        try:
            line = stdout.next_line(timeout_s)
        except queue.Empty:
            line = None
        if not line:
            raise ClusterError("`agilenn cloud serve` printed no endpoints: "
                               + "\n".join(text for _, text in stderr.lines[-30:]))
        self.endpoints = line.split()
        return self.endpoints

    def start_device(self, cloud: list[str], config: dict[str, Any] | None = None,
                     security_args: list[str] | None = None, wait_ready_s: float = 30.0) -> DeviceProcess:
        """`agilenn device run` in the device namespace, starting from these worker addresses only;
        with the cluster's credentials unless `security_args` says otherwise."""
        index = len(self.devices)
        config_path = self.folder / f"device-{index}.json"
        config_path.write_text(json.dumps(config or {}))
        process, stdout, stderr = self._start_in(
            self.layout.device_ns, _bin("agilenn"), "device", "run", "--bundle", str(self.bundle),
            "--cloud", ",".join(cloud), "--source", "-", "--sink", "-", "--config", str(config_path),
            "--wait-ready-s", str(wait_ready_s),
            *(self.credentials.device_args() if security_args is None else security_args),
            log=f"device-{index}", stdin=True)
        device = DeviceProcess(process, stdout, stderr)
        self.devices.append(device)
        return device

    def kill_second_node(self, failure: str = "kill") -> tuple[float, int]:
        """SIGKILL every process of the second node (its raylet and its workers) at once; returns the
        wall-clock time of the kill and how many processes died. `kill`: the node's kernel lives on
        and resets the connections of the dead processes, as when processes crash; `power_off`: its
        link goes down first, so no reset reaches anyone, as when a machine loses power."""
        if failure not in FAILURES:
            raise ValueError(f"failure {failure!r}: one of {FAILURES}")
        at = time.time()
        if failure == "power_off":
            _sh("ip", "-n", self.layout.node_ns, "link", "set", "eth0", "down")
        return at, kill_namespace(self.layout.node_ns)

    def stop_service(self, timeout_s: float = 30.0) -> None:
        """SIGTERM to `agilenn cloud serve`: it drains and ends its workers."""
        if self.serve_process is not None and self.serve_process.poll() is None:
            self.serve_process.send_signal(signal.SIGTERM)
            try:
                self.serve_process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                pass  # teardown's namespace kill ends it
        self.serve_process = None

    def rejoin_second_node(self) -> None:
        """A fresh Ray node in the second node's namespace (after kill_second_node), its link up again."""
        _sh("ip", "-n", self.layout.node_ns, "link", "set", "eth0", "up")
        self._start_second_node()

    def service_log(self) -> list[tuple[float, str]]:
        return list(self.serve_output.lines) if self.serve_output else []

    def down(self) -> None:
        """Stop the devices and the service (which drains and ends its workers), then remove everything."""
        for device in self.devices:
            device.close()
        self.devices = []
        self.stop_service()
        teardown(self.layout)
        self.folder = None

    def __enter__(self) -> "LocalCluster":
        return self

    def __exit__(self, *exc) -> None:
        self.down()


# ---- the failover scenario ----------------------------------------------------------------------

def worker_ip(endpoint: str) -> str:
    return endpoint.rsplit(":", 1)[0].strip("[]")


def stream_through_node_failure(cluster: LocalCluster, failure: str = "kill", gap_s: float = 0.02,
                                timeout_s: float = 120.0, inputs_after: int = 50) -> dict[str, Any]:
    """A device streams from one endpoint while the second node is killed; the report says what
    every input got and how long offloading to the killed worker took to come back."""
    import numpy as np

    layout = cluster.layout
    placed = {f"worker-{i}": endpoint for i, endpoint in enumerate(cluster.endpoints)}
    victims = sorted(worker for worker, endpoint in placed.items() if worker_ip(endpoint) == layout.node_ip)
    if not victims or len(victims) == len(placed):
        raise ClusterError(f"the workers are not spread over both nodes: {placed}")
    shape = _bundle_shape(cluster.bundle)
    rng = np.random.default_rng(0)
    device = cluster.start_device(cluster.endpoints[:1], {"deadline_ms": 1000, "reconnect_initial_s": 0.05,
                                                          "reconnect_max_s": 1.0})
    results: list[dict[str, Any]] = []

    def feed() -> dict[str, Any]:
        result = device.infer(rng.integers(0, 256, shape, dtype=np.uint8))
        results.append(result)
        return result

    # the device was told one endpoint: it learns the others from GetServiceInfo and streams to all
    deadline = time.monotonic() + timeout_s
    while {r["worker_id"] for r in results if r["source"] == "mixed"} != set(placed):
        if time.monotonic() > deadline:
            raise ClusterError(f"the device did not stream to every worker: {device.log_tail()}")
        feed()
        time.sleep(gap_s)
    before = len(results)

    killed_at, killed_processes = cluster.kill_second_node(failure)
    back_at = None
    while back_at is None and time.time() - killed_at < timeout_s:
        result = feed()
        if result["source"] == "mixed" and result["worker_id"] in victims:
            back_at = result["answered_at"]  # the killed process cannot answer: this is its successor
        time.sleep(gap_s)
    for _ in range(inputs_after if back_at is not None else 0):
        feed()
        time.sleep(gap_s)
    device.close()

    after = results[before:]
    fallbacks = [r for r in after if r["source"] == "local_fallback"]
    # offloading is whole again from the first mixed answer after the last local one (None: it never was)
    last_local = max((k for k, r in enumerate(after) if r["source"] != "mixed"), default=None)
    whole_again_at = (killed_at if last_local is None else
                      after[last_local + 1]["answered_at"] if last_local + 1 < len(after) else None)
    relinked = {}
    for ts, record in device.logs():
        match = re.match(r"streaming to worker (\S+) at (\S+)", record.get("msg", ""))
        if match and ts >= killed_at and match.group(1) in victims:
            relinked.setdefault(match.group(1), (ts, match.group(2)))
    service_log = [(ts, line) for ts, line in cluster.service_log() if ts >= killed_at]
    # the restarted actor's own log line, forwarded by Ray to the driver: its new process serves
    serving_again = {}
    for ts, line in service_log:
        match = re.search(r"worker (\S+) serving \S+ at (\S+)", line)
        if match and match.group(1) in victims:
            serving_again.setdefault(match.group(1), ts)
    restart_logged = next((ts for ts, line in service_log if "Ray restarted" in line), None)
    tail = results[-inputs_after:]
    reasons = collections.Counter(r["reason_code"] for r in fallbacks if r["reason_code"])
    return {
        "security": cluster.security,
        "failure": failure,
        "nodes": {"head": layout.head_ip, "second": layout.node_ip},
        "workers_before": placed,
        "killed_workers": victims,
        "killed_processes": killed_processes,
        "inputs": len(results),
        "answered_in_order": [r["index"] for r in results] == list(range(len(results))),
        "inputs_after_kill": len(after),
        "sources_after_kill": {source: sum(r["source"] == source for r in after)
                               for source in sorted({r["source"] for r in after})},
        "fallback_reasons": dict(sorted(reasons.items())),
        "fallback_reason_examples": sorted({r["reason"] for r in fallbacks if r["reason"]})[:5],
        "fallbacks_without_reason": sum(1 for r in fallbacks if not r["reason"]),
        "restarted_endpoints": {worker: endpoint for worker, (_, endpoint) in relinked.items()},
        "offloaded_share_last_inputs": sum(r["source"] == "mixed" for r in tail) / len(tail),
        "workers_answering_last_inputs": sorted({r["worker_id"] for r in tail if r["worker_id"]}),
        "seconds_from_kill": {
            "restarted_worker_serving": {worker: round(ts - killed_at, 3) for worker, ts in serving_again.items()},
            "service_saw_restart": None if restart_logged is None else round(restart_logged - killed_at, 3),
            "device_relinked": {worker: round(ts - killed_at, 3) for worker, (ts, _) in relinked.items()},
            # None: not within timeout_s
            "first_mixed_from_restarted_worker": None if back_at is None else round(back_at - killed_at, 3),
            "offloaded_share_back_at_100_percent": None if whole_again_at is None else round(
                whole_again_at - killed_at, 3),
        },
        "load_average": os.getloadavg(),
    }


def _bundle_shape(bundle: Path) -> tuple[int, ...]:
    manifest = json.loads((bundle / "manifest.json").read_text())
    return tuple(manifest["input"]["shape"])


# ---- command line -------------------------------------------------------------------------------

def _interrupt(*_) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="local_cluster.py", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("failover", "up"):
        command = sub.add_parser(name)
        command.add_argument("--bundle", default=str(DEFAULT_BUNDLE))
        command.add_argument("--security", choices=SECURITIES, default="tls",
                             help="tls (default): mutual TLS and a per-device token; plaintext: --insecure")
        command.add_argument("--failure", choices=FAILURES, default="kill",
                             help="how the second node dies (failover only)")
    sub.add_parser("down")
    args = parser.parse_args(argv)
    layout = Layout()
    try:
        check_available()
    except ClusterUnavailable as exc:
        print(f"local cluster unavailable: {exc}", file=sys.stderr)
        return 2
    if args.command == "down":
        teardown(layout)
        return 0
    signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM runs the clean-up below, as Ctrl-C does
    cluster = LocalCluster(bundle=Path(args.bundle), security=args.security, layout=layout)
    try:
        cluster.up()
        endpoints = cluster.serve()
        if args.command == "up":
            print(json.dumps({"ray_address": cluster.ray_address, "endpoints": endpoints,
                              "folder": str(cluster.folder), "device_namespace": layout.device_ns}), flush=True)
            signal.pause()
            return 0
        print(json.dumps(stream_through_node_failure(cluster, args.failure), indent=2))
        return 0
    except KeyboardInterrupt:
        return 130
    finally:
        cluster.down()


if __name__ == "__main__":
    sys.exit(main())
