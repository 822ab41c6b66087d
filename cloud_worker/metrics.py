"""Prometheus metrics of one worker, in a registry of its own (several workers may share a process in tests)."""

from __future__ import annotations

from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, start_http_server

_LATENCY_BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
# Devices are labelled by the name their token was issued to (unauthenticated calls carry none); past
# this many names the rest share one label.
DEVICE_LABELS_MAX = 1000
OTHER_DEVICES = "other"


class WorkerMetrics:
    def __init__(self, worker_id: str) -> None:
        self.registry = CollectorRegistry()
        labels = {"worker": worker_id}
        self._requests = Counter(
            "agilenn_requests", "Inference requests answered, by RPC, status code and device (its token's name)",
            ["rpc", "code", "device"], registry=self.registry)
        self._device_labels: set[str] = set()
        self.auth_refusals = Counter(
            "agilenn_auth_refusals",
            "Calls refused for their token, by reason (missing, malformed, unknown, revoked; locked: an id that failed "
            "too many checks; busy: too many checks waiting)",
            ["reason"], registry=self.registry)
        self.errors = Counter(
            "agilenn_errors", "Requests answered with an error status, by code",
            ["code"], registry=self.registry)
        self.shed = Counter(
            "agilenn_shed_requests", "Requests answered at once with RESOURCE_EXHAUSTED because the queue was full",
            registry=self.registry)
        self.batch_size = Histogram(
            "agilenn_batch_size", "Samples per remote.onnx call", buckets=_BATCH_BUCKETS,
            registry=self.registry)
        self.latency = Histogram(
            "agilenn_request_latency_seconds", "Time a request spends inside the worker (decode, queue, compute)",
            buckets=_LATENCY_BUCKETS_S, registry=self.registry)
        self.compute = Histogram(
            "agilenn_batch_compute_seconds", "remote.onnx time per micro-batch",
            buckets=_LATENCY_BUCKETS_S, registry=self.registry)
        self.streams = Gauge("agilenn_open_streams", "InferStream calls open now", registry=self.registry)
        self.info = Gauge("agilenn_worker_info", "Constant 1, labelled with the worker id",
                          list(labels), registry=self.registry)
        self.info.labels(**labels).set(1)
        self._http: WSGIServer | None = None

    def requests(self, rpc: str, code: str, device: str = ""):
        """The request counter of one RPC, status code and device ("" when tokens are off)."""
        return self._requests.labels(rpc=rpc, code=code, device=self.device_label(device))

    def device_label(self, device: str) -> str:
        """`device` as a label value: the first DEVICE_LABELS_MAX devices get their own, later ones share
        "other", so that the number of series stays bounded however many tokens are issued."""
        if not device or device in self._device_labels:
            return device
        if len(self._device_labels) < DEVICE_LABELS_MAX:
            self._device_labels.add(device)
            return device
        return OTHER_DEVICES

    def serve(self, port: int, host: str = "0.0.0.0") -> int:
        """Start the exposition HTTP server; returns the bound port."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        self._http = server
        return int(server.server_port)

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
