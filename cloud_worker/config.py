"""Typed configuration of the cloud service; every field name carries its unit."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class WorkerConfig(BaseModel):
    """One worker: its gRPC server, its micro-batcher, its metrics."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_batch_size: int = Field(32, ge=1, description="most requests computed in one remote.onnx call")
    max_batch_wait_ms: float = Field(
        0.0, ge=0.0,
        description="how long a batch waits for more requests once its first has arrived; 0 batches "
                    "whatever is queued at that moment (requests that arrive while a batch computes queue up)",
    )
    max_queue_requests: int = Field(
        128, ge=1,
        description="most requests waiting for the micro-batcher; beyond it a request is answered at once with "
                    "RESOURCE_EXHAUSTED (overloaded) and counted as shed. The default, four full batches at the "
                    "default max_batch_size, keeps the queueing delay of a request that is taken to a few batch "
                    "computations, well inside a device's deadline: an overloaded worker that queued without bound "
                    "would answer every request late, while one that sheds answers most in time and lets the device "
                    "answer the rest locally at once instead of after its deadline",
    )
    max_message_bytes: int = Field(64 * 1024, ge=1024, description="larger requests get RESOURCE_EXHAUSTED")
    onnx_threads: int = Field(1, ge=1, description="ONNX Runtime intra-op threads per worker")
    drain_timeout_s: float = Field(10.0, ge=0.0, description="graceful shutdown waits this long for in-flight requests")
    metrics_port: int | None = Field(
        None, ge=0, le=65535,
        description="serve Prometheus metrics on this port (0: any free port); None: no metrics server",
    )


class ServeConfig(BaseModel):
    """`agilenn cloud serve`: how many workers, where, and how each one behaves."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    workers: int = Field(2, ge=1)
    host: str = Field("127.0.0.1", description="address the workers bind; 0.0.0.0 to serve other machines")
    port: int = Field(
        50051, ge=0, le=65535,
        description="worker i listens on port + i; 0 picks free ports once, kept across worker restarts",
    )
    ray_address: str | None = Field(None, description="join this Ray cluster; None starts a local Ray in-process")
    cpus_per_worker: float = Field(1.0, ge=0.0, description="Ray CPU resources each worker actor holds")
    endpoint_refresh_s: float = Field(2.0, gt=0.0, description="how often the service re-reads worker endpoints")
    worker: WorkerConfig = Field(default_factory=WorkerConfig)
