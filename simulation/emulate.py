"""The link model checked against a real emulated link (needs root, `ip` and `tc`).

    sudo agilenn simulate emulate --bundle bundles/fashion-mnist --links wifi-6mbps,ble-270kbps

Two network namespaces joined by a veth pair: the cloud worker (and a delaying relay in front
of it) in one, the device agent in the other. The kernel shapes each direction's rate with
`tc tbf` at the link profile's rate (burst of one packet); the relay adds half the RTT in each
direction (the kernels here have no netem). The device agent sends test images one at a time,
with idle gaps, and times each inference end to end.

The model is then evaluated for the emulated link: the profile's rate and RTT, with the veth's
framing (1500-byte packets, Ethernet + IP + TCP headers) instead of the profile's own, the
device part at the time this machine measured for it, and the cloud on the host profile.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import logging
import os
import select
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

import numpy as np

from agilenn.measured import MeasuredSchemes
from simulation import netns
from simulation.calibrate import IDLE_GAP_S
from simulation.netns import VETH_MTU

log = logging.getLogger(__name__)

NS_CLOUD, NS_DEVICE = "agsim-cloud", "agsim-dev"
VETH_CLOUD, VETH_DEVICE = "agsim-c", "agsim-d"
ADDR_CLOUD, ADDR_DEVICE = "10.231.0.1", "10.231.0.2"
RELAY_PORT = 50052
VETH_HEADER_BYTES = 14 + 20 + 32  # Ethernet + IPv4 + TCP with timestamps, as tbf counts them


class EmulationUnavailable(RuntimeError):
    """This machine cannot run the emulation; the message says why."""


def check_available() -> None:
    try:
        netns.check_available(tools=("ip", "tc"))
    except netns.NamespacesUnavailable as exc:
        raise EmulationUnavailable(str(exc)) from None


@contextlib.contextmanager
def namespaces(uplink_bps: float, downlink_bps: float):
    """The cloud and the device namespace on one veth pair, each direction shaped at its rate."""
    try:
        teardown()
    except netns.NetworkCommandFailed as exc:  # what an earlier run left cannot be cleared
        raise EmulationUnavailable(str(exc)) from None
    try:
        try:
            netns.add_namespace(NS_CLOUD, first=True)
            netns.add_namespace(NS_DEVICE)
            netns.add_veth(NS_CLOUD, VETH_CLOUD, NS_DEVICE, VETH_DEVICE)
            for ns, dev, addr in ((NS_CLOUD, VETH_CLOUD, ADDR_CLOUD), (NS_DEVICE, VETH_DEVICE, ADDR_DEVICE)):
                netns.bring_up(ns, dev, addr)
                netns.disable_offloads(ns, dev)  # tbf then sees real packets
            netns.shape_rate(NS_DEVICE, VETH_DEVICE, uplink_bps)
            netns.shape_rate(NS_CLOUD, VETH_CLOUD, downlink_bps)
        except (netns.NamespacesUnavailable, netns.NetworkCommandFailed) as exc:
            raise EmulationUnavailable(str(exc)) from None
        yield
    finally:
        try:
            teardown()
        except netns.NetworkCommandFailed as exc:  # never hide what went wrong inside
            log.warning("emulation namespaces not removed: %s", exc)


def teardown() -> None:
    netns.remove_namespaces((NS_CLOUD, NS_DEVICE))


# ---- the delaying relay and the worker, run inside the cloud namespace -------------------------
# One thread per connection forwards both directions: select() waits for new bytes or the next
# chunk's due time with a microsecond timeout (asyncio's epoll waits round up to whole
# milliseconds), and no chunk is handed between threads. The relay runs in a process of its own,
# at real-time priority where allowed: sharing the worker's interpreter lock and the two cores with
# grpc's threads made its forwarding late by hundreds of microseconds per chunk.

class _Lane:
    """One direction: chunks due at a time, serialized at `pace_bps` (headers of the veth's packets
    included, what netem's rate does) after `delay_s`."""

    def __init__(self, sink: socket.socket, delay_s: float, pace_bps: float | None) -> None:
        self.sink, self.delay_s, self.pace_bps = sink, delay_s, pace_bps
        self.chunks: collections.deque[tuple[float, bytes]] = collections.deque()
        self.free_at = 0.0  # when the emulated transmitter finishes its previous chunk
        self.source_open = True

    def push(self, data: bytes, now: float) -> None:
        if self.pace_bps:
            packets = -(-len(data) // (VETH_MTU - 52))
            self.free_at = max(now, self.free_at) + 8.0 * (len(data) + packets * VETH_HEADER_BYTES) / self.pace_bps
            self.chunks.append((self.free_at + self.delay_s, data))
        else:
            self.chunks.append((now + self.delay_s, data))

    def send_due(self, now: float) -> None:
        # a blocking send: with one small message in flight per direction, as here, it never waits
        # long; bulk transfers would want non-blocking sinks so one direction cannot hold the other
        while self.chunks and self.chunks[0][0] <= now:
            self.sink.sendall(self.chunks.popleft()[1])


def _forward(client: socket.socket, upstream: socket.socket, delay_s: float, up_bps: float | None,
             down_bps: float | None) -> None:
    lanes = {client: _Lane(upstream, delay_s, up_bps), upstream: _Lane(client, delay_s, down_bps)}
    try:
        while any(lane.source_open or lane.chunks for lane in lanes.values()):
            due = min((lane.chunks[0][0] for lane in lanes.values() if lane.chunks), default=None)
            timeout = None if due is None else max(0.0, due - time.perf_counter())
            sources = [sock for sock, lane in lanes.items() if lane.source_open]
            readable = select.select(sources, [], [], timeout)[0] if sources else time.sleep(timeout or 0) or []
            now = time.perf_counter()
            for sock in readable:
                data = sock.recv(65536)
                if data:
                    lanes[sock].push(data, now)
                else:
                    lanes[sock].source_open = False
            for lane in lanes.values():
                lane.send_due(time.perf_counter())
                if not lane.source_open and not lane.chunks:
                    with contextlib.suppress(OSError):
                        lane.sink.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    finally:
        client.close()
        upstream.close()


def relay(listen: tuple[str, int], target: tuple[str, int], delay_ms: float, up_bps: float | None = None,
          down_bps: float | None = None) -> socket.socket:
    """A TCP relay on `listen` to `target` that delays (and optionally paces) both directions."""
    server = socket.create_server(listen)

    def handle(client: socket.socket) -> None:
        upstream = socket.create_connection(target)
        for sock in (client, upstream):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        _forward(client, upstream, delay_ms / 1000.0, up_bps, down_bps)

    def accept() -> None:
        while True:
            client, _ = server.accept()
            threading.Thread(target=handle, args=(client,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return server


async def _serve(bundle_path: str) -> None:
    """The worker on loopback; prints its port, then serves until terminated."""
    from agilenn.bundle import Bundle
    from cloud_worker.config import WorkerConfig
    from cloud_worker.server import create_server

    server, port = create_server(Bundle(bundle_path), WorkerConfig(), "127.0.0.1:0")
    await server.start()
    print(f"ready {port}", flush=True)
    await asyncio.Event().wait()


def _relay_forever(target_port: int, delay_ms: float, up_bps: float | None, down_bps: float | None) -> None:
    with contextlib.suppress(OSError, AttributeError):  # real-time priority: a link does not queue behind tasks
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
    relay((ADDR_CLOUD, RELAY_PORT), ("127.0.0.1", target_port), delay_ms, up_bps, down_bps)
    print("ready", flush=True)
    threading.Event().wait()


def _device(bundle_path: str, count: int, gap_ms: float) -> list[dict[str, Any]]:
    from agilenn.bundle import Bundle
    from agilenn.datasets import sample_images
    from device_agent import DeviceAgent, DeviceConfig

    bundle = Bundle(bundle_path)
    images = sample_images(bundle.manifest.config.get("dataset"), bundle.manifest.input.shape, count + 20)
    out = []
    with DeviceAgent(bundle, DeviceConfig(cloud=[f"{ADDR_CLOUD}:{RELAY_PORT}"], deadline_ms=5000)) as agent:
        if not agent.wait_ready(30.0):
            raise EmulationUnavailable("the device agent could not reach the worker through the emulated link")
        for i, image in enumerate(images):
            result = agent.infer(image)
            if i >= 20:  # warm-up: connection windows, first ONNX calls
                out.append({"source": result.source, "payload_bytes": result.payload_bytes, **result.timings_ms})
            time.sleep(gap_ms / 1000.0)  # an idle link before each input, as the model assumes
    return out


# ---- orchestration ------------------------------------------------------------------------------

def emulate_link(bundle_path: str, link, count: int = 60, gap_ms: float = IDLE_GAP_S * 1000, pace: bool = True
                 ) -> list[dict[str, Any]]:
    """Per-inference timings over the emulated link. `pace`: the relay also serializes bytes at the
    link rate, since a token bucket lets an isolated packet smaller than its burst through at once."""
    pacing = ["--pace-up-bps", str(link.uplink_bps), "--pace-down-bps", str(link.down_bps)] if pace else []
    module = [sys.executable, "-m", "simulation.emulate"]
    with namespaces(link.uplink_bps, link.down_bps), contextlib.ExitStack() as stack:
        worker = stack.enter_context(_in_cloud([*module, "serve", "--bundle", bundle_path]))
        port = _ready(worker, "the worker").split()[1]
        relay_process = stack.enter_context(_in_cloud([*module, "relay", "--target-port", port,
                                                       "--delay-ms", str(link.rtt_ms / 2.0), *pacing]))
        _ready(relay_process, "the relay")
        done = subprocess.run([*netns.in_namespace(NS_DEVICE, *module), "device", "--bundle", bundle_path,
                               "--count", str(count), "--gap-ms", str(gap_ms)],
                              check=False, capture_output=True, text=True, timeout=600)
        if done.returncode:
            raise EmulationUnavailable(f"the device run failed: {done.stderr.strip()[-2000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])


@contextlib.contextmanager
def _in_cloud(command: list[str]):
    # stderr to a file: a pipe nobody reads would stall a chatty child once full
    with tempfile.TemporaryFile(mode="w+") as errors:
        process = subprocess.Popen(netns.in_namespace(NS_CLOUD, *command), stdout=subprocess.PIPE,
                                   stderr=errors, text=True)
        process.errors = errors
        try:
            yield process
        finally:
            process.terminate()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()  # the relay runs at real-time priority: never leave it behind
                process.wait()


def _ready(process: subprocess.Popen, what: str, timeout_s: float = 60.0) -> str:
    """The child's "ready" line, or EmulationUnavailable with its errors (also when it hangs)."""
    ready = select.select([process.stdout], [], [], timeout_s)[0] if process.stdout else []
    line = process.stdout.readline() if ready else ""
    if not line.startswith("ready"):
        process.terminate()
        process.errors.seek(0)
        why = "did not start" if ready else f"was not ready within {timeout_s:g} s"
        raise EmulationUnavailable(f"{what} {why}: {process.errors.read()[-2000:]}")
    return line.strip()


def compare_link(measured: MeasuredSchemes, runs: list[dict[str, Any]], link, cloud) -> dict[str, Any]:
    """Modelled vs measured, for the AgileNN scheme over the emulated link."""
    from simulation import compare
    from simulation.model import latency

    emulated = link.model_copy(update={"mtu_bytes": VETH_MTU + 14, "packet_overhead_bytes": VETH_HEADER_BYTES,
                                       "loss": 0.0, "name": f"{link.name} (emulated framing)"})
    mixed = [r for r in runs if r["source"] == "mixed"]
    if not mixed:
        raise EmulationUnavailable(f"no inference over {link.name} was answered by the worker")
    payload = float(np.median([r["payload_bytes"] for r in mixed]))
    work = compare.workload(measured.scheme("agilenn"), measured.protocol, payload_bytes=payload)
    lat = latency(work, cloud, emulated, cloud)  # only its link and cloud parts are used
    device_side = float(np.median([r["device_model"] + r["device_overhead"] for r in mixed]))
    modelled_link = lat.network_ms + lat.cloud_ms + lat.return_ms
    measured_total = float(np.median([r["total"] for r in mixed]))
    measured_rtt = float(np.median([r["cloud_rtt"] for r in mixed]))
    modelled_total = device_side + modelled_link
    return {"link": link.name, "inferences": len(mixed), "answered_remotely": len(mixed) / len(runs),
            "payload_bytes_median": payload,
            "measured_total_ms": measured_total, "modelled_total_ms": modelled_total,
            "total_error": modelled_total / measured_total - 1.0,
            "measured_round_trip_ms": measured_rtt, "modelled_round_trip_ms": modelled_link,
            "round_trip_error": modelled_link / measured_rtt - 1.0,
            "measured_p90_total_ms": float(np.percentile([r["total"] for r in mixed], 90)),
            "device_side_ms_measured": device_side,
            "modelled_parts_ms": {"network": lat.network_ms, "cloud": lat.cloud_ms, "return": lat.return_ms}}


def run(bundle_path: str, measured: MeasuredSchemes, link_names: list[str], cloud_name: str = "host",
        count: int = 60) -> dict[str, Any]:
    """Each link twice: `paced` (kernel tbf + relay delay + relay serialization: the primary check)
    and `tbf-only` (kernel tbf + relay delay, as the kernel alone shapes it); plus a `zero` link
    (10 Gbit/s, no delay) that shows what the emulation path and the worker cost on this machine.
    End to end, the model's cloud part comes from the host profile (`total_error`) or from the zero
    link's round trip in the same run (`total_error_same_run_cloud`, which checks the link model
    alone: an idle virtual machine's round trip drifts by a millisecond within an hour)."""
    from simulation.profiles import load_device, load_link

    check_available()
    cloud = load_device(cloud_name)
    results = []
    for name in link_names:
        link = load_link(name)
        for mode, pace in (("paced", True), ("tbf-only", False)):
            row = compare_link(measured, emulate_link(bundle_path, link, count, pace=pace), link, cloud)
            results.append({"mode": mode, **row})
    zero_link = load_link(link_names[0]).model_copy(update={"name": "zero", "uplink_bps": 1e10, "downlink_bps": 1e10,
                                                            "rtt_ms": 0.0})
    zero = compare_link(measured, emulate_link(bundle_path, zero_link, count, pace=False), zero_link, cloud)
    for row in results:  # what the link adds, over the emulation path's own cost (the zero link)
        measured_link = row["measured_round_trip_ms"] - zero["measured_round_trip_ms"]
        modelled_link = row["modelled_round_trip_ms"] - zero["modelled_round_trip_ms"]
        # end to end again, with the worker's round trip as the zero link measured it in this run
        # rather than as the host profile has it: only the link is modelled then
        same_run = row["device_side_ms_measured"] + zero["measured_round_trip_ms"] + modelled_link
        row.update(measured_link_ms=measured_link, modelled_link_ms=modelled_link,
                   link_error=modelled_link / measured_link - 1.0,
                   modelled_total_same_run_cloud_ms=same_run,
                   total_error_same_run_cloud=same_run / row["measured_total_ms"] - 1.0)
    paced = [r for r in results if r["mode"] == "paced"]
    return {"bundle": bundle_path, "links": results, "zero_link": {"mode": "zero", **zero},
            "load_average": os.getloadavg(),
            "within_15_percent": all(abs(r["total_error"]) <= 0.15 for r in paced),
            "within_15_percent_same_run_cloud": all(abs(r["total_error_same_run_cloud"]) <= 0.15 for r in paced),
            "link_within_15_percent": all(abs(r["link_error"]) <= 0.15 for r in paced)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulation.emulate")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve")
    serve.add_argument("--bundle", required=True)
    relay_parser = sub.add_parser("relay")
    relay_parser.add_argument("--target-port", type=int, required=True)
    relay_parser.add_argument("--delay-ms", type=float, required=True)
    relay_parser.add_argument("--pace-up-bps", type=float, default=None)
    relay_parser.add_argument("--pace-down-bps", type=float, default=None)
    device = sub.add_parser("device")
    device.add_argument("--bundle", required=True)
    device.add_argument("--count", type=int, default=60)
    device.add_argument("--gap-ms", type=float, default=IDLE_GAP_S * 1000)
    args = parser.parse_args(argv)
    if args.command == "serve":
        asyncio.run(_serve(args.bundle))
    elif args.command == "relay":
        _relay_forever(args.target_port, args.delay_ms, args.pace_up_bps, args.pace_down_bps)
    else:
        print(json.dumps(_device(args.bundle, args.count, args.gap_ms)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
