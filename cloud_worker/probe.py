"""`agilenn cloud health`: ask a worker's standard gRPC health service whether it serves, over TLS when
the worker speaks it. Kubernetes' own gRPC probe cannot speak TLS without an alpha feature gate, so
the deployment's readiness probe runs this command in the worker's container instead.

Health checks need no token (the workers leave them open for probes), so this needs none either.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def check_health(address: str, ca_file: str | None = None, cert_file: str | None = None,
                 key_file: str | None = None, server_name: str | None = None, service: str = "",
                 timeout_s: float = 2.0) -> tuple[bool, str]:
    """(serving?, what was seen) for the worker at `address`; `service` "" asks about the server as a whole."""
    options: list[tuple[str, Any]] = [("grpc.enable_retries", 0)]
    if ca_file is not None:
        key = Path(key_file).read_bytes() if key_file else None
        chain = Path(cert_file).read_bytes() if cert_file else None
        credentials = grpc.ssl_channel_credentials(Path(ca_file).read_bytes(), key, chain)
        if server_name:
            options.append(("grpc.ssl_target_name_override", server_name))
        channel = grpc.secure_channel(address, credentials, options=options)
    else:
        channel = grpc.insecure_channel(address, options=options)
    with channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
        except grpc.RpcError as exc:
            return False, f"{address}: {exc.code().name}: {exc.details()}"
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    return response.status == health_pb2.HealthCheckResponse.SERVING, f"{address}: {status}"
