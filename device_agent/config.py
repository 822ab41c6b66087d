"""Typed configuration of the device agent; every field name carries its unit."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agilenn.config_files import load_yaml_model
from agilenn.network import address_host, is_loopback_host


class DeviceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    cloud: list[str] = Field(
        default_factory=list,
        description="worker addresses host:port to start from; the workers' GetServiceInfo adds the others. "
                    "Empty: answer everything locally")
    deadline_ms: float = Field(50.0, gt=0.0, description="how long one input waits for its remote logits")
    overload_backoff_ms: float = Field(
        100.0, ge=0.0,
        description="after a worker answers overloaded, send it nothing for about this long (jittered by +-50%, so "
                    "that devices do not all return at once) and answer locally meanwhile, reason overloaded: "
                    "refusing a request still costs a worker a read and a write, so devices that kept sending "
                    "would take its time from the requests it serves; 0: keep sending")
    offload_min_on_time_probability: float = Field(
        0.5, ge=0.0, le=1.0,
        description="offload an input only when its answer is predicted to come within deadline_ms with at least "
                    "this probability (the share of the link's recent round trips within it, answers still owed "
                    "past it counted late); otherwise answer locally at once, reason predicted_late. 0: always "
                    "offload to a ready worker")
    silence_s: float = Field(
        1.0, gt=0.0,
        description="take a worker out of the rotation (and probe it in the background) once it has owed an "
                    "answer this long without a word (and at least deadline_ms); late answers alone never do")
    estimate_refresh_s: float = Field(
        0.5, gt=0.0,
        description="while a worker is predicted late, offload one input to it this often anyway, so that the "
                    "device sees it recover")
    hedge: bool = Field(
        False, description="when the likeliest worker is predicted late but it and the next one together are "
                           "not, send the input to both and take the first answer (counted as hedged)")
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
    onnx_threads: int = Field(1, ge=1, description="ONNX Runtime intra-op threads for the device front")
    precision: Literal["float32", "int8"] = Field(
        "float32", description="which device front of the bundle to run: device.onnx, or device.int8.onnx "
                               "(statically quantized, verified within half a point of float at export)")
    max_message_bytes: int = Field(64 * 1024, ge=1024, description="largest response accepted")
    logits_codec: Literal["raw-f32le", "q8-v1"] = Field(
        "raw-f32le", description="how the workers return the remote logits: float32, or q8-v1 (int8 with a scale: "
                                 "14 bytes instead of 40 for 10 classes) where the worker offers it")
    # Security: with ca_file every link is TLS, verified against that CA, and never falls back to plaintext.
    ca_file: str | None = Field(None, description="PEM CA that signed the workers' certificates: connect with TLS")
    cert_file: str | None = Field(None, description="PEM client certificate, for workers that require one (mutual TLS)")
    key_file: str | None = Field(None, description="PEM private key of cert_file")
    tls_server_name: str | None = Field(
        None, description="name to verify the workers' certificates against instead of each address's host "
                          "(when workers are reached at addresses their certificate does not name)")
    token_file: str | None = Field(
        None, description="file holding this device's token (agilenn tokens add), read once at start and sent as "
                          "`authorization: Bearer` metadata on every call")

    @model_validator(mode="after")
    def _check_security(self) -> DeviceConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("a client certificate needs both cert_file (--cert) and key_file (--key)")
        if self.cert_file is not None and self.ca_file is None:
            raise ValueError("a client certificate (cert_file, --cert) is for TLS: give ca_file (--ca) as well")
        if self.token_file is not None and self.ca_file is None:
            exposed = [address for address in self.cloud if not is_loopback_host(address_host(address))]
            if exposed:
                raise ValueError(f"refusing to send the token in clear to {', '.join(exposed)}: give ca_file (--ca) "
                                 "so that the workers are reached over TLS")
        return self


def load_device_config(path: str | Path) -> DeviceConfig:
    """A DeviceConfig from a YAML or JSON file (JSON is YAML); an empty file is the defaults."""
    return load_yaml_model(path, DeviceConfig, "device config", empty_ok=True)
