"""Network namespaces as stand-in machines (needs root and iproute2).

The link emulation (`simulation.emulate`: two namespaces on one veth pair, shaped by `tc tbf`) and
the local cluster (`simulation.cluster`: one namespace per host, each with a veth into a bridge in a
namespace of its own) build their networks from these steps. Both ends of every veth are created
inside their namespaces, so no interface, route or firewall rule of the host is ever touched.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence

VETH_MTU = 1500


class NamespacesUnavailable(RuntimeError):
    """This machine cannot make network namespaces (not root, a tool missing, no kernel support); says why."""


class NetworkCommandFailed(RuntimeError):
    """An `ip` or `tc` command failed; the message carries its error output."""


def check_available(tools: Sequence[str] = ("ip",)) -> None:
    if os.geteuid() != 0:
        raise NamespacesUnavailable("network namespaces need root (run as root, or in CI, which runs as root)")
    for tool in tools:
        if shutil.which(tool) is None:
            raise NamespacesUnavailable(f"`{tool}` not found (Debian: apt-get install iproute2)")


def run(*args: str) -> str:
    done = subprocess.run(args, check=False, capture_output=True, text=True)
    if done.returncode:
        raise NetworkCommandFailed(f"`{' '.join(args)}` failed: {done.stderr.strip()}")
    return done.stdout


def in_namespace(ns: str, *command: str) -> list[str]:
    """`command` as run inside the namespace."""
    return ["ip", "netns", "exec", ns, *command]


def add_namespace(ns: str, first: bool = False) -> None:
    """A new namespace. The `first` one a set-up creates answers whether namespaces can be made here at
    all (NamespacesUnavailable); a later failure is a real error (NetworkCommandFailed)."""
    try:
        run("ip", "netns", "add", ns)
    except NetworkCommandFailed as exc:
        if first:
            raise NamespacesUnavailable(f"cannot create network namespaces here: {exc}") from None
        raise


def add_veth(ns: str, name: str, peer_ns: str, peer_name: str) -> None:
    """A veth pair with one end in each namespace."""
    run("ip", "link", "add", name, "netns", ns, "type", "veth", "peer", "name", peer_name, "netns", peer_ns)


def bring_up(ns: str, dev: str, address: str | None = None, prefix_len: int = 24) -> None:
    """The interface up (with `address`, when given) and the namespace's loopback up."""
    if address is not None:
        run("ip", "-n", ns, "addr", "add", f"{address}/{prefix_len}", "dev", dev)
    run("ip", "-n", ns, "link", "set", dev, "up")
    run("ip", "-n", ns, "link", "set", "lo", "up")


def set_link(ns: str, dev: str, up: bool) -> None:
    run("ip", "-n", ns, "link", "set", dev, "up" if up else "down")


def add_bridge(ns: str, bridge: str) -> None:
    run("ip", "-n", ns, "link", "add", bridge, "type", "bridge")
    run("ip", "-n", ns, "link", "set", bridge, "up")


def join_bridge(ns: str, port: str, bridge: str) -> None:
    run("ip", "-n", ns, "link", "set", port, "master", bridge)
    run("ip", "-n", ns, "link", "set", port, "up")


def bridge_hosts(switch_ns: str, hosts: Iterable[tuple[str, str]], dev: str = "eth0", bridge: str = "br0") -> None:
    """A bridge in `switch_ns` and, per (namespace, address) in `hosts`, that namespace with a veth
    `dev` into the bridge; the addresses share one /24."""
    add_namespace(switch_ns, first=True)
    add_bridge(switch_ns, bridge)
    for index, (ns, address) in enumerate(hosts):
        port = f"port{index}"
        add_namespace(ns)
        add_veth(ns, dev, switch_ns, port)
        join_bridge(switch_ns, port, bridge)
        bring_up(ns, dev, address)


def disable_offloads(ns: str, dev: str) -> None:
    """No segmentation offloads, so that a qdisc sees the packets the wire would carry (best effort:
    without ethtool the offloads stay)."""
    subprocess.run(in_namespace(ns, "ethtool", "-K", dev, "tso", "off", "gso", "off", "gro", "off"),
                   check=False, capture_output=True)


def shape_rate(ns: str, dev: str, rate_bps: float, mtu: int = VETH_MTU) -> None:
    """`tc tbf` on the interface's egress at `rate_bps`. Burst: one full packet, the least tbf
    accepts at this MTU; limit: a few packets of queue."""
    run(*in_namespace(ns, "tc", "qdisc", "replace", "dev", dev, "root", "tbf", "rate", f"{int(rate_bps)}bit",
                      "burst", str(mtu + 14), "limit", str(64 * 1024)))


def existing_namespaces() -> set[str]:
    done = subprocess.run(["ip", "netns", "list"], check=False, capture_output=True, text=True)
    return {line.split()[0] for line in done.stdout.splitlines() if line.strip()}


def namespace_pids(ns: str) -> list[int]:
    done = subprocess.run(["ip", "netns", "pids", ns], check=False, capture_output=True, text=True)
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
            raise NetworkCommandFailed(f"processes {pids} in {ns} survived SIGKILL for {timeout_s:g} s")
        time.sleep(0.05)
    return len(killed)


def remove_namespaces(names: Sequence[str]) -> None:
    """Every process in the namespaces, then the namespaces (and with them their veths and bridges),
    in the order given. Safe to run when none of them is there."""
    present = existing_namespaces()
    for ns in names:
        if ns in present:
            kill_namespace(ns)
    for ns in names:
        if ns in present:
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)
