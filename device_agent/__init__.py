"""The device agent: runs device.onnx, offloads the remote indices to cloud workers over gRPC,
mixes the answers, and never leaves an input unanswered.

Library: `DeviceAgent(bundle, DeviceConfig(cloud=["host:port"])).infer(image) -> Result`.
Daemon: `agilenn device run` (device_agent.cli). Imports numpy, onnxruntime, grpcio and
protobuf only: never torch or ray.
"""

from device_agent.agent import (
    LOCAL_FALLBACK,
    LOCAL_ONLY_POLICY,
    MIXED,
    BundleMismatchError,
    DeviceAgent,
    Result,
)
from device_agent.config import DeviceConfig, load_device_config

__all__ = [
    "LOCAL_FALLBACK",
    "LOCAL_ONLY_POLICY",
    "MIXED",
    "BundleMismatchError",
    "DeviceAgent",
    "DeviceConfig",
    "Result",
    "load_device_config",
]
