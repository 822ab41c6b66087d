"""Device and link profiles: YAML data files with their sources, validated on load.

Built-in profiles live beside this module (`profiles/devices/*.yaml`, `profiles/links/*.yaml`);
any profile can also be given as a path to a YAML file. Every profile names its `source`
(a paper's figure or table, a datasheet, or the command that measured it) and how it was
obtained (`calibration`: measured, derived or estimate), so a reader can judge each number.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agilenn.config_files import ConfigFileError, read_yaml_mapping, validate_mapping

PROFILE_DIR = Path(__file__).parent / "profiles"


class ProfileError(ConfigFileError):
    """A profile that is missing or malformed; the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Compute(_Strict):
    macs_per_s: float = Field(gt=0, description="effective int8 MAC rate of layers with a short inner product "
                                                "(depthwise, a first conv on few input channels)")
    dense_macs_per_s: float | None = Field(None, gt=0, description="rate of layers whose inner product is at least "
                                                                   "dense_inner_min long; default: macs_per_s")
    dense_inner_min: int = Field(16, ge=1, description="inner-product length from which a layer runs at the dense rate")
    fixed_ms: float = Field(0.0, ge=0, description="per-inference cost outside the layers (invoke, input copy)")
    encode_ns_per_symbol: float = Field(ge=0, description="lossless coding cost per coded symbol")
    request_overhead_ms: float = Field(0.0, ge=0, description="per offloaded request, when this machine serves the "
                                       "remote part: the service's software path (stream, decode, batching, "
                                       "answer) besides the model itself")

    def rate_for(self, inner: int) -> float:
        if self.dense_macs_per_s is not None and inner >= self.dense_inner_min:
            return self.dense_macs_per_s
        return self.macs_per_s


class Memory(_Strict):
    sram_bytes: int = Field(gt=0)
    flash_bytes: int = Field(gt=0)
    runtime_sram_bytes: int = Field(0, ge=0, description="interpreter, stack, network buffers")
    runtime_flash_bytes: int = Field(0, ge=0, description="inference runtime, kernels, network stack, application")


class Power(_Strict):
    compute_mw: float = Field(ge=0, description="while computing (MCU active)")
    transmit_mw: float = Field(ge=0, description="while sending (MCU + radio transmitting)")
    receive_mw: float = Field(ge=0, description="while waiting for and receiving the answer (radio listening)")


class DeviceProfile(_Strict):
    name: str
    description: str
    kind: Literal["microcontroller", "linux-board", "host"]
    calibration: Literal["measured", "derived", "estimate"]
    source: str = Field(min_length=10, description="where every number comes from")
    compute: Compute
    memory: Memory
    power: Power


class LinkProfile(_Strict):
    name: str
    description: str
    calibration: Literal["measured", "derived", "estimate"]
    source: str = Field(min_length=10)
    uplink_bps: float = Field(gt=0, description="device -> cloud rate")
    downlink_bps: float | None = Field(None, gt=0, description="cloud -> device rate; default: uplink_bps")
    rtt_ms: float = Field(ge=0, description="round-trip time of an empty packet")
    loss: float = Field(0.0, ge=0, lt=1, description="packet loss probability, each packet independently")
    retransmit_timeout_ms: float | None = Field(None, ge=0, description="wait before a lost packet is resent; "
                                                                        "default: 2 x rtt_ms")
    mtu_bytes: int = Field(1500, ge=64, description="largest packet, headers included")
    packet_overhead_bytes: int = Field(40, ge=0, description="headers per packet (IP + transport)")

    @model_validator(mode="after")
    def _check_mtu(self) -> LinkProfile:
        if self.packet_overhead_bytes >= self.mtu_bytes:
            raise ValueError(f"packet_overhead_bytes={self.packet_overhead_bytes} leaves no payload in "
                             f"mtu_bytes={self.mtu_bytes}")
        return self

    @property
    def down_bps(self) -> float:
        return self.downlink_bps if self.downlink_bps is not None else self.uplink_bps

    @property
    def rto_ms(self) -> float:
        return self.retransmit_timeout_ms if self.retransmit_timeout_ms is not None else 2.0 * self.rtt_ms

    def with_rate(self, uplink_bps: float) -> LinkProfile:
        """The same link at another rate (both directions scale together); for sweeps."""
        scale = uplink_bps / self.uplink_bps
        return self.model_copy(update={"name": f"{self.name}@{uplink_bps / 1e3:g}kbps", "uplink_bps": uplink_bps,
                                       "downlink_bps": None if self.downlink_bps is None else self.downlink_bps * scale})


_KINDS = {"device": ("devices", DeviceProfile), "link": ("links", LinkProfile)}


def available(kind: Literal["device", "link"]) -> list[str]:
    folder = PROFILE_DIR / _KINDS[kind][0]
    return sorted(p.stem for p in folder.glob("*.yaml"))


def _load(kind: Literal["device", "link"], name_or_path: str | Path):
    folder, model = _KINDS[kind]
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or candidate.exists():
        path = candidate
    else:
        path = PROFILE_DIR / folder / f"{name_or_path}.yaml"
        if not path.exists():
            raise ProfileError(f"unknown {kind} profile {str(name_or_path)!r}; built-in {kind} profiles: "
                               f"{', '.join(available(kind))} (or give a path to a YAML file)")
    try:
        return validate_mapping(model, read_yaml_mapping(path, f"{kind} profile"), path, "profile")
    except ConfigFileError as exc:
        raise ProfileError(str(exc)) from None


def load_device(name_or_path: str | Path) -> DeviceProfile:
    return _load("device", name_or_path)


def load_link(name_or_path: str | Path) -> LinkProfile:
    return _load("link", name_or_path)
