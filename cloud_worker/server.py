"""One cloud worker: a grpc.aio server answering `agilenn.v1.Inference` with remote.onnx.

`create_server(bundle, config, address)` builds it without Ray, so tests and benchmarks
run it directly; `cloud_worker.service` hosts one inside each Ray worker actor.

A request's indices are decoded with the bundle's codec in the handler (so a bad payload
gets INVALID_ARGUMENT for that request alone), then queued for the micro-batcher, which
runs remote.onnx on whatever has queued up to `max_batch_size`, waiting at most
`max_batch_wait_ms` for more once a batch has its first request. When `max_queue_requests`
are already waiting, a new request is shed: answered at once with RESOURCE_EXHAUSTED, before
any work is spent on it, so that an overloaded worker keeps answering the requests it took
in time and the device answers the others locally without waiting for its deadline.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc
import numpy as np
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from agilenn.bundle import Bundle
from agilenn.codec import CODEC_IDS, PayloadError
from agilenn.v1 import inference_pb2, inference_pb2_grpc
from agilenn.v1.tensors import (
    BUNDLE_HASH_METADATA,
    LOGITS_CODEC_METADATA,
    LOGITS_CODECS,
    RAW_F32LE,
    logits_tensor,
    raw_tensor,
    unknown_field_numbers,
)
from cloud_worker.config import WorkerConfig
from cloud_worker.metrics import WorkerMetrics
from cloud_worker.security import TlsMaterial, TokenInterceptor, current_device
from cloud_worker.tokens import TokenTable

log = logging.getLogger(__name__)

SERVICE_NAME = inference_pb2.DESCRIPTOR.services_by_name["Inference"].full_name


class RequestError(Exception):
    """A request this worker refuses; `code` is the gRPC status it answers with."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class MicroBatcher:
    """Collects concurrent requests into remote.onnx calls. Runs in the server's event loop."""

    def __init__(self, session, config: WorkerConfig, metrics: WorkerMetrics) -> None:
        self._session = session
        self._input = session.get_inputs()[0].name
        self._max_batch = config.max_batch_size
        self._max_wait_s = config.max_batch_wait_ms / 1000.0
        self.max_queue = config.max_queue_requests
        self._metrics = metrics
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self.pending = 0  # requests submitted and not yet answered
        # size of the last batch the batcher task computed: above 1, requests are meeting each other,
        # so new ones keep going through the queue (where they batch) rather than `run_now`
        self.last_batch_size = 0

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="micro-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    @property
    def idle(self) -> bool:
        """True when nothing is queued, no batch wait is configured and requests have not been
        meeting each other lately: a lone request would make a batch of one at once, so `run_now`
        may compute it in the caller (no queue hop, no extra event-loop turn)."""
        return (self.pending == 0 and self.last_batch_size <= 1 and self._max_wait_s == 0
                and self._task is not None)

    @property
    def full(self) -> bool:
        """True when `max_queue_requests` are waiting: a new request would wait too long, so it is shed."""
        return self.pending >= self.max_queue

    def run_now(self, indices: np.ndarray) -> np.ndarray:
        """Compute one sample in the caller, as a batch of one; raises RequestError if the model fails."""
        started = time.perf_counter()
        try:
            logits = self._session.run(None, {self._input: indices[None]})[0]
        except Exception as exc:  # a model failure answers the request, it does not stop the worker
            log.exception("remote.onnx failed on a batch of 1")
            raise RequestError(grpc.StatusCode.INTERNAL, f"remote model failed: {exc}") from None
        self._metrics.compute.observe(time.perf_counter() - started)
        self._metrics.batch_size.observe(1)
        return logits[0]

    def submit(self, indices: np.ndarray, deliver: Callable[[np.ndarray | RequestError, int], None]) -> None:
        """Queue one sample's indices; `deliver(logits row or RequestError, batch size)` is called
        from the batcher once its batch is computed (directly: no future, no extra loop turn)."""
        self.pending += 1
        self._started_queue().put_nowait((indices, deliver))

    def submit_future(self, indices: np.ndarray) -> asyncio.Future:
        """Queue one sample's indices; the future resolves to (logits row, batch size)."""
        future = asyncio.get_running_loop().create_future()

        def deliver(outcome, size: int) -> None:
            if future.done():
                return
            if isinstance(outcome, RequestError):
                future.set_exception(outcome)
            else:
                future.set_result((outcome, size))

        self.submit(indices, deliver)
        return future

    def _started_queue(self) -> asyncio.Queue:
        if self._queue is None:
            raise RuntimeError("the micro-batcher is not started")
        return self._queue

    async def _collect(self) -> list:
        queue = self._started_queue()
        batch = [await queue.get()]
        while len(batch) < self._max_batch and not queue.empty():
            batch.append(queue.get_nowait())
        if self._max_wait_s > 0 and len(batch) < self._max_batch:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self._max_wait_s
            while len(batch) < self._max_batch:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(queue.get(), remaining))
                except TimeoutError:
                    break
        return batch

    async def _run(self) -> None:
        while True:
            batch = await self._collect()
            self.pending -= len(batch)
            self.last_batch_size = len(batch)
            started = time.perf_counter()
            try:
                inputs = batch[0][0][None] if len(batch) == 1 else np.stack([x for x, _ in batch])
                logits = self._session.run(None, {self._input: inputs})[0]
            except Exception as exc:  # a model failure answers the batch, it does not stop the worker
                log.exception("remote.onnx failed on a batch of %d", len(batch))
                failure = RequestError(grpc.StatusCode.INTERNAL, f"remote model failed: {exc}")
                for _, deliver in batch:
                    deliver(failure, len(batch))
                continue
            self._metrics.compute.observe(time.perf_counter() - started)
            self._metrics.batch_size.observe(len(batch))
            size = len(batch)
            for row, (_, deliver) in zip(logits, batch):
                try:
                    deliver(row, size)
                except Exception:
                    log.exception("delivering an answer failed")


ECHO_MAX_CHARS = 80  # an error message quotes at most this much of what a client sent


def _quote(value) -> str:
    """`value` as an error message may show it: a short prefix, never the client's whole input."""
    text = repr(value)
    return text if len(text) <= ECHO_MAX_CHARS else text[:ECHO_MAX_CHARS] + f"... ({len(text)} characters)"


def _call_logits_codec(context) -> str:
    """The logits codec a call's metadata asks for (raw-f32le when none)."""
    for key, value in context.invocation_metadata() or ():
        if key == LOGITS_CODEC_METADATA:
            return value
    return RAW_F32LE


def _call_hash(context) -> str:
    """The bundle hash a call's metadata names for all of its requests ("" when none)."""
    for key, value in context.invocation_metadata() or ():
        if key == BUNDLE_HASH_METADATA:
            return value
    return ""


class _ReaderState:
    __slots__ = ("waiting",)

    def __init__(self) -> None:
        self.waiting = False  # awaiting the next request: cancelling it loses nothing


class InferenceServicer(inference_pb2_grpc.InferenceServicer):
    def __init__(self, bundle: Bundle, config: WorkerConfig, worker_id: str, metrics: WorkerMetrics,
                 endpoints: Callable[[], list[str]]) -> None:
        self.bundle = bundle
        self.config = config
        self.worker_id = worker_id
        self.metrics = metrics
        self._endpoints = endpoints
        self._codec = bundle.codec
        self._remote_shape = tuple(bundle.remote_shape)
        self._bundle_hash = bundle.bundle_hash
        self._status_ok = inference_pb2.Status(code=0)
        self.batcher = MicroBatcher(bundle.session("remote", threads=config.onnx_threads), config, metrics)
        self._readers: dict[asyncio.Task, _ReaderState] = {}
        self._inline = 0  # stream requests computed in their reader whose answers are being written
        self.draining = False
        self._ok: dict[tuple[str, str], object] = {}  # (rpc, device) -> its OK counter, looked up once

    # -- request handling shared by the unary and streaming calls --

    def _shed_when_full(self) -> None:
        """Refuse a request the micro-batcher has no room for, before spending any work on it."""
        if self.batcher.full:
            self.metrics.shed.inc()
            raise RequestError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"worker {self.worker_id} is overloaded: {self.batcher.pending} requests already queued "
                f"(max_queue_requests {self.batcher.max_queue}); answer locally or retry later")

    def _decode(self, request: inference_pb2.InferRequest, call_hash: str = "") -> np.ndarray:
        """`call_hash`: the bundle the call's metadata names, for requests that name none."""
        unknown = unknown_field_numbers(request)
        if unknown:
            raise RequestError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"request carries field numbers {sorted(unknown)} that agilenn.v1.InferRequest does not define; "
                "the device speaks a different version of the wire contract")
        claimed = request.bundle_hash or call_hash
        if claimed != self._bundle_hash:
            if not claimed:
                raise RequestError(grpc.StatusCode.FAILED_PRECONDITION,
                                   f"request names no bundle_hash (nor does the call's {BUNDLE_HASH_METADATA} "
                                   f"metadata); this worker serves {self.bundle.bundle_hash}")
            named_by = "the request" if request.bundle_hash else f"the call's {BUNDLE_HASH_METADATA} metadata"
            raise RequestError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"bundle mismatch: {named_by} names {_quote(claimed)} "
                f"but this worker serves {self.bundle.bundle_hash}")
        features = request.features
        codec = features.codec
        if codec != self._codec.codec_id:
            known = ", ".join(CODEC_IDS)
            what = "is known but" if codec in CODEC_IDS else f"is not a known codec ({known}) and"
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"features codec {_quote(codec)} {what} this bundle's payloads use "
                               f"{self._codec.codec_id!r}")
        shape = tuple(features.shape)
        if shape != self._remote_shape:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"features shaped {_quote(shape)}, but this bundle's remote indices are shaped "
                               f"{self._remote_shape}")
        try:
            return self._codec.decode(features.data)
        except PayloadError as exc:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"features payload: {exc}") from None

    def _ok_counter(self, rpc: str, device: str):
        counter = self._ok.get((rpc, device))
        if counter is None:
            counter = self._ok[(rpc, device)] = self.metrics.requests(rpc=rpc, code="OK", device=device)
        return counter

    def _response(self, request_id: int, started: float, outcome: np.ndarray | RequestError,
                  size: int, device: str = "", codec: str = RAW_F32LE) -> inference_pb2.InferResponse:
        if isinstance(outcome, RequestError):
            return self._error(request_id, started, outcome, "InferStream", device)
        response = inference_pb2.InferResponse(request_id=request_id, status=self._status_ok, batch_size=size,
                                               worker_id=self.worker_id)
        response.logits.CopyFrom(logits_tensor(outcome, codec))
        elapsed = time.perf_counter() - started
        response.server_ms = elapsed * 1000.0
        self.metrics.latency.observe(elapsed)
        self._ok_counter("InferStream", device).inc()
        return response

    def _error(self, request_id: int, started: float, exc: RequestError, rpc: str,
               device: str = "") -> inference_pb2.InferResponse:
        self.metrics.requests(rpc=rpc, code=exc.code.name, device=device).inc()
        self.metrics.errors.labels(code=exc.code.name).inc()
        return inference_pb2.InferResponse(
            request_id=request_id, status=inference_pb2.Status(code=exc.code.value[0], message=exc.message),
            server_ms=(time.perf_counter() - started) * 1000.0, worker_id=self.worker_id)

    # -- RPCs --

    async def Infer(self, request, context):
        started = time.perf_counter()
        try:
            if self.draining:
                raise RequestError(grpc.StatusCode.UNAVAILABLE, f"worker {self.worker_id} is shutting down")
            self._shed_when_full()
            indices = self._decode(request, _call_hash(context))
            row, size = await self.batcher.submit_future(indices)
        except RequestError as exc:
            self._error(request.request_id, started, exc, "Infer", current_device.get())
            await context.abort(exc.code, exc.message)
        elapsed = time.perf_counter() - started
        self.metrics.latency.observe(elapsed)
        self._ok_counter("Infer", current_device.get()).inc()
        return inference_pb2.InferResponse(
            request_id=request.request_id, logits=raw_tensor(row), status=inference_pb2.Status(code=0),
            server_ms=elapsed * 1000.0, batch_size=size, worker_id=self.worker_id)

    async def InferStream(self, request_iterator, context):
        """A reader task reads requests. On an idle worker (nothing queued for the batcher, no other
        request being answered in a reader, nothing owed on this stream) it computes the request as
        a batch of one and writes the answer itself: one event-loop turn per request, as for echo.
        Otherwise the request goes to the micro-batcher, and this coroutine writes the answers it
        delivers (and error answers)."""
        batched: asyncio.Queue = asyncio.Queue()
        done_reading = object()
        owed = 0  # requests handed to the batcher whose answers are not yet written
        writing = False  # this coroutine is writing an answer
        failure: list[BaseException] = []
        state = _ReaderState()
        batcher = self.batcher
        max_owed = self.config.max_owed_answers
        space = asyncio.Event()  # set when an answer owed is written: the reader may go on
        call_hash = _call_hash(context)
        codec = _call_logits_codec(context)
        if codec not in LOGITS_CODECS:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"{LOGITS_CODEC_METADATA} {codec[:40]!r} is not a logits codec; "
                                f"known: {', '.join(LOGITS_CODECS)}")
        device = current_device.get()  # the token's device; the batcher delivers outside this call's context

        async def read() -> None:
            nonlocal owed
            try:
                state.waiting = True
                async for request in request_iterator:
                    state.waiting = False
                    while owed >= max_owed:  # the client is not taking its answers: stop reading it
                        space.clear()  # (not "waiting": a request is in hand, a drain must not cancel it)
                        await space.wait()
                    started = time.perf_counter()
                    request_id = request.request_id
                    try:
                        self._shed_when_full()
                        indices = self._decode(request, call_hash)
                    except RequestError as exc:
                        owed += 1
                        batched.put_nowait(self._error(request_id, started, exc, "InferStream", device))
                    else:
                        if not owed and not writing and batcher.idle and not self._inline:
                            # nothing else is owed or being written on this stream, so the reader
                            # may write: the two never write at once
                            self._inline += 1
                            try:
                                try:
                                    response = self._response(request_id, started, batcher.run_now(indices), 1,
                                                              device, codec)
                                except RequestError as exc:
                                    response = self._error(request_id, started, exc, "InferStream", device)
                                await context.write(response)
                            finally:
                                self._inline -= 1
                        else:
                            owed += 1
                            def deliver(outcome: np.ndarray | RequestError, size: int, rid: int = request_id,
                                        t: float = started) -> None:
                                batched.put_nowait(self._response(rid, t, outcome, size, device, codec))

                            batcher.submit(indices, deliver)
                    if self.draining:
                        break
                    state.waiting = True
            except asyncio.CancelledError:
                pass  # draining: stop reading, keep answering
            except Exception as exc:  # noqa: BLE001 - the client's side of the stream broke: kept, re-raised after
                failure.append(exc)
            finally:
                state.waiting = False
                batched.put_nowait(done_reading)

        reader = asyncio.get_running_loop().create_task(read())
        self._readers[reader] = state
        self.metrics.streams.inc()
        reading = True
        try:
            while reading or owed:
                item = await batched.get()
                if item is done_reading:
                    reading = False
                    continue
                owed -= 1
                space.set()
                writing = True
                try:
                    await context.write(item)
                finally:
                    writing = False
            if failure:
                raise failure[0]
        finally:
            self.metrics.streams.dec()
            self._readers.pop(reader, None)
            reader.cancel()

    async def GetServiceInfo(self, request, context):
        manifest = self.bundle.manifest
        spec = manifest.input
        return inference_pb2.ServiceInfo(
            bundle_hash=self.bundle.bundle_hash, bundle_name=manifest.name,
            input=inference_pb2.InputSpec(shape=spec.shape, dtype=spec.dtype, mean=spec.mean, std=spec.std),
            codec=self._codec.codec_id, remote_shape=self._remote_shape, num_classes=len(manifest.labels),
            endpoints=self._endpoints(), worker_id=self.worker_id, max_message_bytes=self.config.max_message_bytes,
            accepts_call_bundle_hash=True, logits_codecs=list(LOGITS_CODECS))

    async def EchoStream(self, request_iterator, context):
        async for message in request_iterator:
            yield message

    async def drain(self) -> None:
        """Stop reading new requests on open streams; the answers already owed are still sent."""
        self.draining = True
        for reader, state in list(self._readers.items()):
            if state.waiting:  # a reader busy with a request stops after answering it
                reader.cancel()


@dataclass
class InferenceServer:
    """A worker's grpc.aio server, its servicer and its metrics. Start and stop it in one event loop."""

    grpc_server: grpc.aio.Server
    servicer: InferenceServicer
    health: health.aio.HealthServicer
    metrics: WorkerMetrics
    port: int
    metrics_port: int | None = None
    token_check: TokenInterceptor | None = None  # None: calls need no token

    def set_tokens(self, entries) -> None:
        """Swap in a reloaded token file's entries. Call from the server's event loop."""
        if self.token_check is None:
            raise RuntimeError("this worker was started without tokens; restart it with a token table")
        self.token_check.table.update(entries)
        self.token_check.awaiting_table = False

    async def start(self) -> None:
        self.servicer.batcher.start()
        await self.grpc_server.start()
        for name in ("", SERVICE_NAME):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def stop(self, grace_s: float | None = None) -> None:
        """Graceful shutdown: report NOT_SERVING, refuse new calls, answer in-flight requests, then close."""
        grace = self.servicer.config.drain_timeout_s if grace_s is None else grace_s
        await self.health.enter_graceful_shutdown()
        await self.servicer.drain()
        await self.grpc_server.stop(grace)
        await self.servicer.batcher.stop()
        self.metrics.close()

    async def wait_for_termination(self) -> None:
        await self.grpc_server.wait_for_termination()


def create_server(bundle: Bundle, config: WorkerConfig | None = None, address: str = "127.0.0.1:0",
                  worker_id: str = "worker-0", endpoints: Callable[[], list[str]] | None = None,
                  *, tls: TlsMaterial | None = None, tokens: TokenTable | None = None,
                  ) -> tuple[InferenceServer, int]:
    """Build a worker's server bound to `address` (port 0: any free port); call `await server.start()`.

    `tls`: serve TLS with this identity (mutual TLS when it names a client CA), else plaintext.
    `tokens`: every call but health checks needs a bearer token from this table."""
    config = config or WorkerConfig()
    metrics = WorkerMetrics(worker_id)
    options = [
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.max_send_message_length", config.max_message_bytes),
        ("grpc.so_reuseport", 0),  # a port already taken is an error, not a silent share
        ("grpc.max_concurrent_streams", config.max_concurrent_streams),
        ("grpc.keepalive_time_ms", int(config.keepalive_time_s * 1000)),
        ("grpc.keepalive_timeout_ms", int(config.keepalive_timeout_s * 1000)),
        ("grpc.max_connection_idle_ms", int(config.max_connection_idle_s * 1000)),
    ]
    token_check = TokenInterceptor(tokens, metrics, worker_id) if tokens is not None else None
    server = grpc.aio.server(options=options, interceptors=[token_check] if token_check is not None else None,
                             maximum_concurrent_rpcs=config.max_concurrent_rpcs)
    port_holder: dict[str, int] = {}

    def own_endpoints() -> list[str]:
        host = address.rsplit(":", 1)[0]
        return [f"{host}:{port_holder['port']}"]

    servicer = InferenceServicer(bundle, config, worker_id, metrics, endpoints or own_endpoints)
    inference_pb2_grpc.add_InferenceServicer_to_server(servicer, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if config.reflection:  # off by default: it tells anyone who asks what this server answers
        reflection.enable_server_reflection(
            (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            server)
    port = (server.add_secure_port(address, tls.server_credentials()) if tls is not None
            else server.add_insecure_port(address))
    if port == 0:
        raise OSError(f"could not bind {address}")
    port_holder["port"] = port
    metrics_port = None
    if config.metrics_port is not None:
        metrics_port = metrics.serve(config.metrics_port, host=address.rsplit(":", 1)[0].strip("[]") or "0.0.0.0")
    return InferenceServer(server, servicer, health_servicer, metrics, port, metrics_port, token_check), port
