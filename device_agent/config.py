"""Typed configuration of the device agent; every field name carries its unit."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from agilenn.config_files import load_yaml_model


class DeviceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    cloud: list[str] = Field(
        default_factory=list,
        description="worker addresses host:port to start from; the workers' GetServiceInfo adds the others. "
                    "Empty: answer everything locally")
    deadline_ms: float = Field(50.0, gt=0.0, description="how long one input waits for its remote logits")
    local_confidence_threshold: float | None = Field(
        None, ge=0.0, le=1.0,
        description="answer locally without offloading when the local top probability reaches this; None: always offload")
    connect_timeout_s: float = Field(2.0, gt=0.0, description="handshake (GetServiceInfo) timeout per attempt")
    reconnect_initial_s: float = Field(0.05, gt=0.0, description="first reconnection delay; doubles per failure")
    reconnect_max_s: float = Field(2.0, gt=0.0, description="longest reconnection delay")
    endpoint_refresh_s: float = Field(
        2.0, gt=0.0,
        description="while fewer workers are linked than the workers list, ask a linked worker this often for "
                    "the current endpoints (a worker restarted on another node has a new address)")
    onnx_threads: int = Field(1, ge=1, description="ONNX Runtime intra-op threads for device.onnx")
    max_message_bytes: int = Field(64 * 1024, ge=1024, description="largest response accepted")


def load_device_config(path: str | Path) -> DeviceConfig:
    """A DeviceConfig from a YAML or JSON file (JSON is YAML); an empty file is the defaults."""
    return load_yaml_model(path, DeviceConfig, "device config", empty_ok=True)
