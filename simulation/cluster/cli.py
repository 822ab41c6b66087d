"""A real two-node Ray cluster on this machine, in network namespaces (root): `python -m simulation.cluster`.

    failover [--failure power_off] [--security plaintext] [--events FILE]
        start the cluster, serve a bundle on two workers (placed SPREAD: one per node, each
        advertising its node's address), start a device from one endpoint, check that it streams to
        both workers, kill the second node while the device streams, and print a JSON report: every
        input answered, the local answers and their reasons, where the killed worker came back, and
        the time from the kill to the first mixed answer from the restarted worker. `--failure kill`
        (the default) kills the node's processes, whose kernel then resets their connections;
        `power_off` takes the node's link down first, so nothing tells the device.
    up      stays up until Ctrl-C; prints its addresses
    down    removes what a crashed run left

The cluster is removed in any case. `--events FILE` keeps the run's events, one JSON object a line.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from simulation.cluster.errors import ClusterUnavailable
from simulation.cluster.failover import stream_through_node_failure
from simulation.cluster.harness import (
    DEFAULT_BUNDLE,
    FAILURES,
    SECURITIES,
    LocalCluster,
    check_available,
)
from simulation.cluster.layout import Layout, teardown


def _interrupt(*_) -> None:
    raise KeyboardInterrupt


def build_parser(prog: str = "python -m simulation.cluster") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("failover", "up"):
        command = sub.add_parser(name)
        command.add_argument("--bundle", default=str(DEFAULT_BUNDLE))
        command.add_argument("--security", choices=SECURITIES, default="tls",
                             help="tls (default): mutual TLS and a per-device token; plaintext: --insecure")
        command.add_argument("--failure", choices=FAILURES, default="kill",
                             help="how the second node dies (failover only)")
        command.add_argument("--events", metavar="FILE", default=None,
                             help="append the run's events to FILE, one JSON object a line")
    sub.add_parser("down")
    return parser


def main(argv: list[str] | None = None, prog: str = "python -m simulation.cluster") -> int:
    args = build_parser(prog).parse_args(argv)
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
    cluster = LocalCluster(bundle=Path(args.bundle), security=args.security, layout=layout,
                           events_file=Path(args.events) if args.events else None)
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
