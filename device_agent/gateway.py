"""The gateway of a microcontroller: its radio, on a serial line.

PAYLOAD frames from the line become InferStream requests to the cloud workers, through the device agent's
link pool (TLS, tokens, endpoint discovery, reconnection, overload backoff); the answers go back as LOGITS
frames. The gateway never answers for the microcontroller: with no worker it says so in a LOGITS error
frame, and an answer that does not come is left unsaid, so that the board's own deadline decides. The
bundle is the one each PAYLOAD names (its SHA-256), so the gateway needs no bundle files; workers that
serve another bundle are refused, as the device agent refuses them.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import grpc

from agilenn.outcomes import ReasonCode
from agilenn.serial_frames import (
    FrameDecoder,
    FrameError,
    FrameType,
    LogitsEncoding,
    encode_frame,
    pack_logits,
    pack_logits_error,
    unpack_payload,
)
from agilenn.v1 import inference_pb2
from agilenn.v1.tensors import TensorError, from_raw_tensor
from device_agent.config import DeviceConfig
from device_agent.link import Slot, status_name
from device_agent.pool import LinkPool

log = logging.getLogger(__name__)

_UNAVAILABLE = grpc.StatusCode.UNAVAILABLE.value[0]
_OVERLOADED = grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
_INVALID = grpc.StatusCode.INVALID_ARGUMENT.value[0]
READ_TIMEOUT_S = 0.02
GAP_S = 0.05  # a frame unfinished this long after its last byte is dropped


def serial_url(spec: str) -> str:
    """`tcp:HOST:PORT` -> pyserial's socket:// URL; a device path or a pyserial URL as it is."""
    if spec.startswith("tcp:"):
        host, _, port = spec[4:].rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"--serial {spec!r}: expected tcp:HOST:PORT")
        return f"socket://{host}:{port}"
    return spec


@dataclass
class GatewayStats:
    payloads: int = 0
    answered: int = 0  # LOGITS frames with logits
    refused: int = 0  # LOGITS error frames
    silent: int = 0  # no answer within forward_timeout_s: left to the board's deadline
    bad_frames: int = 0  # frames of another type or a malformed body
    bytes_in: int = 0
    bytes_out: int = 0
    reasons: dict[str, int] = field(default_factory=dict)


class Gateway:
    """`Gateway(port, config).serve(stop)`: `port` is an open pyserial port (or anything with read/write)."""

    def __init__(self, port, config: DeviceConfig, encoding: LogitsEncoding = LogitsEncoding.F32,
                 forward_timeout_s: float = 2.0) -> None:
        self.port = port
        self.config = config
        self.encoding = encoding
        self.forward_timeout_s = forward_timeout_s
        self.decoder = FrameDecoder()
        self.stats = GatewayStats()
        self._pool: LinkPool | None = None
        self._pool_hash: str | None = None
        self._ids = itertools.count(1)
        self._write_lock = threading.Lock()
        self._waiters = ThreadPoolExecutor(max_workers=8, thread_name_prefix="gateway-answer")

    def serve(self, stop: threading.Event) -> None:
        """Forward frames until `stop` is set; a line that fails ends the loop with the error (OSError)."""
        last_byte = time.monotonic()
        while not stop.is_set():
            try:
                data = self._read()
            except OSError:
                if stop.is_set():
                    return  # the line closed as the run ended
                raise
            now = time.monotonic()
            if not data:
                if self.decoder.pending and now - last_byte > GAP_S:
                    self.decoder.expire()
                continue
            last_byte = now
            self.stats.bytes_in += len(data)
            for kind, body in self.decoder.feed(data):
                if kind == FrameType.PAYLOAD:
                    self._forward(body)
                else:
                    self.stats.bad_frames += 1

    def _read(self) -> bytes:
        """What the line holds: the first byte waits up to the port's timeout, the rest come at once."""
        data = self.port.read(1)
        waiting = getattr(self.port, "in_waiting", 0) if data else 0
        return data + self.port.read(waiting) if waiting else data

    def close(self) -> None:
        self._waiters.shutdown(wait=False, cancel_futures=True)
        if self._pool is not None:
            self._pool.close()

    def wait_ready(self, bundle_hash: str, timeout_s: float, workers: int = 1) -> bool:
        """Open the links for `bundle_hash` ahead of the first payload and wait for `workers` streams."""
        return self._pool_for(bundle_hash).wait_ready(timeout_s, workers)

    # -- one payload --

    def _pool_for(self, bundle_hash: str) -> LinkPool:
        pool = self._pool
        if pool is None or self._pool_hash != bundle_hash:
            if pool is not None:
                log.warning("the device now names bundle %s (was %s): reconnecting", bundle_hash, self._pool_hash)
                pool.close()
            # one answer per payload: the gateway never hedges
            pool = self._pool = LinkPool(bundle_hash, self.config.model_copy(update={"hedge": False}))
            self._pool_hash = bundle_hash
        return pool

    def _forward(self, body: bytes) -> None:
        try:
            request_id, bundle_hash, payload = unpack_payload(body)
        except FrameError as exc:
            self.stats.bad_frames += 1
            log.warning("dropping a PAYLOAD frame: %s", exc)
            return
        self.stats.payloads += 1
        pool = self._pool_for(bundle_hash)
        # an answer predicted to come after forward_timeout_s is refused at once (the board's own, shorter,
        # deadline is the board's to keep)
        choice = pool.choose(self.forward_timeout_s)
        link, info = choice.link, pool.last_info
        if link is None or info is None:
            self._refuse(request_id, _UNAVAILABLE, choice.reason if link is None else "unavailable")
            return
        request = inference_pb2.InferRequest(request_id=next(self._ids), features=inference_pb2.Tensor(
            data=payload, shape=list(info.remote_shape), codec=info.codec))
        slot = Slot()
        if not link.send(request, slot):
            self._refuse(request_id, _UNAVAILABLE, link.reason or "unavailable")
            return
        self._waiters.submit(self._answer, request_id, request.request_id, link, slot, pool,
                             int(info.num_classes))

    def _answer(self, device_request: int, request_id: int, link, slot: Slot, pool: LinkPool, classes: int) -> None:
        if not slot.event.wait(self.forward_timeout_s):
            link.forget(request_id)
            self.stats.silent += 1  # the board's deadline has answered by now
            return
        response = slot.response
        if response is None:
            self._refuse(device_request, _UNAVAILABLE, slot.failure or "stream_broken")
            return
        if response.status.code == _OVERLOADED:
            pool.back_off(link, time.perf_counter())
            self._refuse(device_request, _OVERLOADED, f"overloaded: {response.status.message}")
            return
        if response.status.code != 0:
            self._refuse(device_request, response.status.code,
                         f"worker_error: {status_name(response.status.code)}: {response.status.message}")
            return
        try:
            logits = from_raw_tensor(response.logits)
        except TensorError as exc:
            self._refuse(device_request, _INVALID, f"worker_error: {exc}")
            return
        if logits.shape != (classes,):
            self._refuse(device_request, _INVALID, f"worker_error: logits shaped {logits.shape}, expected ({classes},)")
            return
        self.stats.answered += 1
        self._write(FrameType.LOGITS, pack_logits(device_request, logits, self.encoding))

    def _refuse(self, device_request: int, code: int, reason: str) -> None:
        self.stats.refused += 1
        kind = str(ReasonCode.of(reason))
        self.stats.reasons[kind] = self.stats.reasons.get(kind, 0) + 1
        self._write(FrameType.LOGITS, pack_logits_error(device_request, code, reason))

    def _write(self, kind: FrameType, body: bytes) -> None:
        frame = encode_frame(kind, body)
        with self._write_lock:
            self.port.write(frame)
            self.stats.bytes_out += len(frame)



def open_serial(spec: str, baud: int = 115200):
    """The serial line `spec` names (`tcp:HOST:PORT`, a device path, or a pyserial URL), opened."""
    import serial

    return serial.serial_for_url(serial_url(spec), baudrate=baud, timeout=READ_TIMEOUT_S)
