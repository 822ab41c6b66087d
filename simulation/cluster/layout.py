"""The cluster's machines: network namespaces on one bridge, their names and addresses."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from simulation import netns

# Left in every temporary folder a cluster makes, so that teardown removes only folders of ours.
MARKER = ".agilenn-local-cluster"


@dataclass(frozen=True)
class Layout:
    """Names and addresses; another prefix and subnet let two clusters run side by side."""

    prefix: str = "agc"
    subnet: str = "10.77.0"  # a /24 inside the cluster's own bridge only
    ray_port: int = 6379
    worker_port: int = 50051
    interface: str = "eth0"  # every host's one interface, its veth into the bridge

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

    @property
    def folder_prefix(self) -> str:
        return f"{self.prefix}-cluster-"


def build_network(layout: Layout) -> None:
    """The bridge in a namespace of its own, and one namespace per host with a veth into it."""
    netns.bridge_hosts(layout.switch_ns, layout.hosts, dev=layout.interface)


def teardown(layout: Layout) -> None:
    """Every process in the cluster's namespaces, the namespaces (and with them the veths and the
    bridge), and the cluster's temporary folders. Safe to run when nothing is there."""
    netns.remove_namespaces(layout.namespaces)
    for folder in Path(tempfile.gettempdir()).glob(f"{layout.folder_prefix}*"):
        if (folder / MARKER).exists():
            shutil.rmtree(folder, ignore_errors=True)
