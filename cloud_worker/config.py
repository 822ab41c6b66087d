"""Typed configuration of the cloud service; every field name carries its unit."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from agilenn.config_files import ConfigFileError
from agilenn.network import is_loopback_host


class WorkerConfig(BaseModel):
    """One worker: its gRPC server, its micro-batcher, its metrics."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_batch_size: int = Field(32, ge=1, description="most requests computed in one remote.onnx call")
    max_batch_wait_ms: float = Field(
        0.0, ge=0.0,
        description="how long a batch waits for more requests once its first has arrived; 0 batches "
                    "whatever is queued at that moment (requests that arrive while a batch computes queue up)",
    )
    # The default, four full batches at the default max_batch_size, keeps the queueing delay of a request that
    # is taken to a few batch computations, well inside a device's deadline: an overloaded worker that queued
    # without bound would answer every request late, while one that sheds answers most in time and lets the
    # device answer the rest locally at once instead of after its deadline.
    max_queue_requests: int = Field(
        128, ge=1,
        description="most requests waiting for the micro-batcher; beyond it a request is answered at once with "
                    "RESOURCE_EXHAUSTED (overloaded), counted as shed, and the device answers it locally",
    )
    max_message_bytes: int = Field(64 * 1024, ge=1024, description="larger requests get RESOURCE_EXHAUSTED; "
                                                                  "also the largest answer the worker sends")
    max_owed_answers: int = Field(
        256, ge=1, description="answers one InferStream may owe (computed, not yet taken by the client) before the "
                               "worker stops reading it: a client that does not read its answers is held by flow "
                               "control instead of growing the worker's memory")
    max_concurrent_rpcs: int = Field(
        1024, ge=1, description="calls (streams included) served at once; beyond, RESOURCE_EXHAUSTED")
    max_concurrent_streams: int = Field(100, ge=1, description="HTTP/2 streams one connection may open at once")
    keepalive_time_s: float = Field(60.0, gt=0, description="ping an idle connection this often")
    keepalive_timeout_s: float = Field(20.0, gt=0, description="close a connection whose ping goes unanswered this long")
    max_connection_idle_s: float = Field(900.0, gt=0, description="close a connection without calls this long")
    onnx_threads: int = Field(1, ge=1, description="ONNX Runtime intra-op threads per worker")
    drain_timeout_s: float = Field(10.0, ge=0.0, description="graceful shutdown waits this long for in-flight requests")
    metrics_port: int | None = Field(
        None, ge=0, le=65535,
        description="serve Prometheus metrics on this port, worker i of a service on port + i (0: any free "
                    "port); None: no metrics server",
    )
    reflection: bool = Field(
        False, description="serve gRPC reflection (service discovery for grpcurl and the like); off unless asked for")


class ServeConfig(BaseModel):
    """`agilenn cloud serve`: how many workers, where, and how each one behaves."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    workers: int = Field(2, ge=1, description="worker actors")
    host: str = Field("127.0.0.1", description="address the workers bind; 0.0.0.0 to serve other machines")
    port: int = Field(
        50051, ge=0, le=65535,
        description="worker i listens on port + i; 0 picks free ports once, kept across worker restarts",
    )
    ray_address: str | None = Field(None, description="join this Ray cluster; None starts a local Ray in-process")
    cpus_per_worker: float = Field(1.0, ge=0.0, description="Ray CPU resources each worker actor holds")
    endpoint_refresh_s: float = Field(2.0, gt=0.0, description="how often the service re-reads worker endpoints")
    worker: WorkerConfig = Field(default_factory=WorkerConfig)
    # Security (see check_serving_security): the driver reads these files and hands their contents to the
    # workers through Ray, so the paths need to exist only where `agilenn cloud serve` runs.
    tls_cert_file: str | None = Field(None, description="PEM certificate chain the workers present (TLS)")
    tls_key_file: str | None = Field(None, description="PEM private key of tls_cert_file")
    client_ca_file: str | None = Field(
        None, description="PEM CA: clients must present a certificate it signed (mutual TLS); needs TLS")
    tokens_file: str | None = Field(
        None, description="token file (`agilenn tokens add`): every call but health checks needs a valid token, "
                          "sent as `authorization: Bearer <token>`; reloaded when it changes or on SIGHUP")
    tokens_poll_s: float = Field(1.0, gt=0.0, description="how often the driver checks tokens_file for changes")
    insecure: bool = Field(False, description="allow plaintext on a host other than loopback")


class HealthCheckConfig(BaseModel):
    """`agilenn cloud health`: which worker to ask, how to reach it, and about what."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    address: str = Field("127.0.0.1:50051", description="the worker, host:port")
    ca_file: str | None = Field(None, description="PEM CA of the worker's certificate: check over TLS")
    cert_file: str | None = Field(None, description="PEM client certificate, for a worker that requires one")
    key_file: str | None = Field(None, description="PEM private key of cert_file")
    tls_server_name: str | None = Field(
        None, description="the name the worker's certificate carries, when not the host")
    service: str = Field("", description="the service to ask about; empty: the whole server")
    timeout_s: float = Field(2.0, description="how long to wait for the answer")


class InsecureServingError(ConfigFileError):
    """A serving configuration that would expose the workers without the protection it needs."""


def check_serving_security(config: ServeConfig) -> list[str]:
    """Raise InsecureServingError for a configuration that must not run; return warnings for one that may.

    - TLS needs both a certificate and its key; a client CA needs TLS.
    - Off loopback, plaintext needs `insecure`: features would cross the network readable and alterable,
      and anyone who reaches the port could use the workers.
    - Tokens need TLS off loopback, even with `insecure`: a bearer token sent in clear can be replayed by
      whoever sees it. On loopback (development) they may go without.
    """
    tls = config.tls_cert_file is not None or config.tls_key_file is not None
    if tls and (config.tls_cert_file is None or config.tls_key_file is None):
        raise InsecureServingError("TLS needs both --tls-cert and --tls-key (agilenn certs dev writes a set)")
    if config.client_ca_file is not None and not tls:
        raise InsecureServingError("--client-ca (mutual TLS) needs --tls-cert and --tls-key as well")
    if tls and config.insecure:
        raise InsecureServingError("--insecure serves plaintext, --tls-cert serves TLS: give one of the two")
    if is_loopback_host(config.host):
        return []
    where = config.host or "all interfaces"
    if config.tokens_file is not None and not tls:
        raise InsecureServingError(
            f"refusing to accept tokens on {where} without TLS: a bearer token sent in clear can be replayed by "
            "anyone who sees it; give --tls-cert and --tls-key (agilenn certs dev --out certs/ --host NAME "
            "writes a development set)")
    if not tls and not config.insecure:
        raise InsecureServingError(
            f"refusing to serve on {where} without TLS: the devices' features and the answers would cross the "
            "network in clear and anyone who reaches the port could use the workers; give --tls-cert and "
            "--tls-key (agilenn certs dev --out certs/ --host NAME writes a development set), or --insecure "
            "on a network you trust")
    if not tls:
        return [(f"serving plaintext on {where} (--insecure): anyone who reaches these ports can use the workers "
                 "and read the traffic")]
    if config.client_ca_file is None and config.tokens_file is None:
        return [(f"serving on {where} with TLS but neither --client-ca nor --tokens: anyone who reaches these "
                 "ports can use the workers")]
    return []
