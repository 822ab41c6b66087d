"""The latency, energy and memory model of one inference (numpy-free arithmetic, no torch).

End-to-end latency = device compute + encoding + network (uplink) + cloud + return (downlink):

- device compute: `fixed_ms` + each layer's MACs at the profile's rate for its inner-product length;
- encoding: coded symbols x `encode_ns_per_symbol`;
- network: half the RTT + serialization of request bytes and per-packet headers at the uplink
  rate + expected retransmissions (each lost packet costs the retransmission timeout and its own
  serialization again; packets are lost independently with probability `loss`);
- cloud: the cloud profile's per-request software overhead + the remote layers on it (the same
  compute model);
- return: half the RTT + serialization of the answer at the downlink rate (and its retransmissions).

Energy = compute power x (device + encoding) + transmit power x uplink time spent sending
+ receive power x the time the radio waits and listens (propagation, cloud, return).

Memory of the device part, int8: flash = weights (the stored weights of the int8 file a scheme
ships, where it ships one; else int8 weights and int32 biases from its layer table) + the runtime; SRAM = the largest
(layer input + layer output) + the sensor input when no layer reads it + the encoded payload
buffer + the runtime.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

from simulation.profiles import DeviceProfile, LinkProfile


@dataclass(frozen=True)
class Layer:
    name: str
    op: str
    macs: int
    inner: int
    weight_bytes: int = 0
    in_bytes: int = 0
    out_bytes: int = 0


@dataclass(frozen=True)
class MeasuredDevice:
    """A device part measured on firmware instead of modelled: its time (instructions x cycles per
    instruction / clock) and its flash and SRAM read from the ELF and a painted stack."""

    compute_ms: float
    encode_ms: float
    flash_bytes: int
    sram_bytes: int
    source: str  # what was measured, for the notes


@dataclass(frozen=True)
class Workload:
    """What one scheme costs per inference, independent of device and link."""

    name: str
    device_layers: tuple[Layer, ...] = ()
    input_bytes: int = 0  # the raw sensor sample the device holds
    encode_symbols: int = 0  # symbols the device's lossless coder processes
    payload_bytes: float = 0.0  # encoded bytes sent per inference; 0 = nothing is offloaded
    request_overhead_bytes: int = 0  # protocol framing around the payload
    response_bytes: int = 0  # the answer, framing included
    cloud_layers: tuple[Layer, ...] = ()
    device_weight_bytes: int | None = None  # measured from the int8 file shipped; None: the layers' estimate
    measured_device: MeasuredDevice | None = None  # the device part run as firmware: replaces the model

    @property
    def offloads(self) -> bool:
        return self.payload_bytes > 0

    @property
    def device_macs(self) -> int:
        return sum(layer.macs for layer in self.device_layers)


@dataclass(frozen=True)
class Latency:
    device_ms: float
    encode_ms: float
    network_ms: float
    cloud_ms: float
    return_ms: float
    transmit_ms: float = 0.0  # of network_ms, the time spent sending (for energy)

    @property
    def total_ms(self) -> float:
        return self.device_ms + self.encode_ms + self.network_ms + self.cloud_ms + self.return_ms

    def to_json(self) -> dict[str, float]:
        data = {k: v for k, v in asdict(self).items() if k != "transmit_ms"}
        data["total_ms"] = self.total_ms
        return data


@dataclass(frozen=True)
class Memory:
    sram_bytes: int
    flash_bytes: int
    fits: bool
    why_not: list[str] = field(default_factory=list)


def compute_ms(layers: Iterable[Layer], device: DeviceProfile) -> float:
    layers = list(layers)
    if not layers:
        return 0.0  # nothing runs: no runtime invocation either
    c = device.compute
    return c.fixed_ms + sum(1000.0 * layer.macs / c.rate_for(layer.inner) for layer in layers)


def encode_ms(symbols: int, device: DeviceProfile) -> float:
    return symbols * device.compute.encode_ns_per_symbol * 1e-6


def packets(nbytes: float, link: LinkProfile) -> int:
    return math.ceil(nbytes / (link.mtu_bytes - link.packet_overhead_bytes)) if nbytes > 0 else 0


def transfer_ms(nbytes: float, rate_bps: float, link: LinkProfile) -> float:
    """Serialization of `nbytes` (headers included) plus expected retransmissions; no propagation."""
    n = packets(nbytes, link)
    if n == 0:
        return 0.0
    wire = nbytes + n * link.packet_overhead_bytes
    serialize = 1000.0 * 8.0 * wire / rate_bps
    retries = link.loss / (1.0 - link.loss)  # expected resends of one packet
    return serialize + n * retries * (link.rto_ms + serialize / n)


def latency(work: Workload, device: DeviceProfile, link: LinkProfile, cloud: DeviceProfile | None = None) -> Latency:
    measured = work.measured_device
    device_ms = measured.compute_ms if measured else compute_ms(work.device_layers, device)
    if not work.offloads:
        return Latency(device_ms, 0.0, 0.0, 0.0, 0.0)
    if cloud is None:
        raise ValueError(f"{work.name} offloads, so its latency needs a cloud profile")
    up = transfer_ms(work.payload_bytes + work.request_overhead_bytes, link.uplink_bps, link)
    down = transfer_ms(work.response_bytes, link.down_bps, link)
    half_rtt = link.rtt_ms / 2.0
    encoding = measured.encode_ms if measured else encode_ms(work.encode_symbols, device)
    return Latency(device_ms=device_ms, encode_ms=encoding,
                   network_ms=half_rtt + up, cloud_ms=cloud.compute.request_overhead_ms + compute_ms(work.cloud_layers, cloud),
                   return_ms=half_rtt + down, transmit_ms=up)


def energy_mj(lat: Latency, device: DeviceProfile) -> float:
    p = device.power
    listening = (lat.network_ms - lat.transmit_ms) + lat.cloud_ms + lat.return_ms
    return (p.compute_mw * (lat.device_ms + lat.encode_ms) + p.transmit_mw * lat.transmit_ms
            + p.receive_mw * listening) / 1000.0


def memory(work: Workload, device: DeviceProfile) -> Memory:
    m = device.memory
    if work.measured_device is not None:
        # The firmware's own image and RAM (front, buffers, startup); a network stack would come on top.
        return _fits(work.measured_device.sram_bytes, work.measured_device.flash_bytes, device)
    weights = work.device_weight_bytes
    if weights is None:
        weights = sum(layer.weight_bytes for layer in work.device_layers)
    peak = max((layer.in_bytes + layer.out_bytes for layer in work.device_layers), default=0)
    if not work.device_layers:
        peak = work.input_bytes  # the sample waits in SRAM while it is coded
    buffer = math.ceil(work.payload_bytes + work.request_overhead_bytes) if work.offloads else 0
    return _fits(peak + buffer + m.runtime_sram_bytes, weights + m.runtime_flash_bytes, device)


def _fits(sram: int, flash: int, device: DeviceProfile) -> Memory:
    m = device.memory
    why = []
    if sram > m.sram_bytes:
        why.append(f"needs {sram / 1024:.0f} KB SRAM of {m.sram_bytes / 1024:.0f} KB")
    if flash > m.flash_bytes:
        why.append(f"needs {flash / 1024:.0f} KB flash of {m.flash_bytes / 1024:.0f} KB")
    return Memory(sram, flash, not why, why)
