"""One long-lived InferStream to one worker, kept up by a background thread.

The thread handshakes (GetServiceInfo: same bundle hash?), opens the stream, warms the worker
with one request it computes (so that the first inputs are not the slowest), reads answers and
hands each to the waiting request by request id, timing every answer for the link's estimate
(`device_agent.estimate`). When the stream breaks it fails every waiting request at once with the
reason, then reconnects with exponential backoff. Nothing here ever blocks the caller: `send`
returns False when the link is not ready, and the caller answers locally.
"""

from __future__ import annotations

import ipaddress
import logging
import queue
import random
import threading
from collections.abc import Callable
from typing import Any

import grpc

from agilenn.network import address_host, is_loopback_host
from agilenn.v1 import inference_pb2, inference_pb2_grpc
from agilenn.v1.tensors import BUNDLE_HASH_METADATA, LOGITS_CODEC_METADATA, RAW_F32LE
from device_agent.estimate import LinkEstimate

log = logging.getLogger(__name__)

_END = object()
AUTHORIZATION_METADATA = "authorization"
# refusals that the same credentials will meet again: the link retries them at reconnect_max_s
_ACCESS_REFUSED = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
# how a failed TLS handshake shows in a status's details
_TLS_FAILURE_MARKS = ("ssl", "handshake", "certificate")
_OVERLOADED_CODE = grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
# the warm-up request's id: above any a device numbers its inputs with (they count up from 1)
WARMUP_REQUEST_ID = 2**64 - 1


def status_name(code: int) -> str:
    """The gRPC status name of a code number (an answer's Status.code)."""
    for status in grpc.StatusCode:
        if status.value[0] == code:
            return status.name
    return str(code)


class Slot:
    """Where the answer to one request lands."""

    __slots__ = ("event", "failure", "response", "sent_at")

    def __init__(self, event: threading.Event | None = None) -> None:
        self.event = event or threading.Event()  # shared by the slots of a hedged input
        self.response: inference_pb2.InferResponse | None = None
        self.failure: str | None = None
        self.sent_at = 0.0


def _requests(outbox: queue.SimpleQueue):
    while True:
        item = outbox.get()
        if item is _END:
            return
        yield item


class Link:
    def __init__(self, address: str, bundle_hash: str, *, connect_timeout_s: float, reconnect_initial_s: float,
                 reconnect_max_s: float, max_message_bytes: int, clock: Callable[[], float],
                 on_info: Callable[[Link, inference_pb2.ServiceInfo], bool] | None = None,
                 credentials: grpc.ChannelCredentials | None = None, token: str | None = None,
                 tls_server_name: str | None = None, logits_codec: str = RAW_F32LE,
                 warmup: Callable[[int], inference_pb2.InferRequest] | None = None) -> None:
        """`credentials`: connect with TLS (never plaintext); `token`: sent as bearer metadata on every call;
        `tls_server_name`: verify the worker's certificate against this name instead of the address's host;
        `warmup`: builds a request (given its id) that each new stream sends, and waits for the answer to,
        before the link is ready."""
        self.address = address
        self._logits_codec = logits_codec  # asked of workers that offer it; others answer raw-f32le
        self._credentials = credentials
        self._tls_server_name = tls_server_name
        self._auth_metadata = ((AUTHORIZATION_METADATA, f"Bearer {token}"),) if token else ()
        # a token goes in clear only to this machine; the device config refuses other plaintext addresses,
        # and this covers the ones workers list later
        self._token_in_clear_refused = bool(token) and credentials is None and not is_loopback_host(
            address_host(address))
        self.refused_access = False  # the last attempt was refused for its token or TLS: retry slowly
        self._logged_reason: str | None = None
        self.bundle_hash = bundle_hash
        self.connect_timeout_s = connect_timeout_s
        self.reconnect_initial_s = reconnect_initial_s
        self.reconnect_max_s = reconnect_max_s
        self.max_message_bytes = max_message_bytes
        self._clock = clock
        self._on_info = on_info
        self._warmup = warmup
        self.estimate = LinkEstimate()  # read and written under self._lock
        self.ready = False
        self.reason = "connecting"  # why the link is not ready, for local_fallback results
        self.worker_id: str | None = None
        self.refused = False  # the worker serves another bundle
        self.connects = 0
        self._pending: dict[int, Slot] = {}
        self._lock = threading.Lock()
        self._outbox: queue.SimpleQueue | None = None
        self._closed = threading.Event()
        self._channel: grpc.Channel | None = None
        self._call: Any = None  # the stream's grpc call object, cancelled to end it
        self._checking = False  # a silence probe is under way
        self.silences = 0  # times the link was taken out of the rotation for its silence
        self._thread = threading.Thread(target=self._run, name=f"link-{address}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            self.ready = False
            self.reason = "closed"
            if self._outbox is not None:
                self._outbox.put(_END)
        channel = self._channel
        if channel is not None:
            channel.close()
        self._thread.join(timeout=5.0)

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def send(self, request: inference_pb2.InferRequest, slot: Slot) -> bool:
        """Queue a request on the stream; False when the link is not ready (nothing was sent)."""
        with self._lock:
            if not self.ready:
                return False
            outbox = self._outbox
            if outbox is None:
                return False
            self._pending[request.request_id] = slot
            slot.sent_at = self._clock()
            self.estimate.sent(request.request_id, slot.sent_at, len(request.features.data))
            outbox.put(request)
        return True

    @property
    def verify_name(self) -> str | None:
        """The name this link verifies its worker's certificate against, when it is a name: the override,
        else the address's host unless that is an IP address (None: gRPC checks the address itself)."""
        if self._tls_server_name:
            return self._tls_server_name
        host = address_host(self.address)
        try:
            ipaddress.ip_address(host)
        except ValueError:
            return host
        return None

    @property
    def last_heard_at(self) -> float:
        """When the worker last said anything on this link (clock)."""
        return self.estimate.last_heard_at

    def stats(self, budget_s: float):
        """The link's estimate now (device_agent.estimate.LinkStats), `budget_s` the deadline asked about."""
        with self._lock:
            return self.estimate.stats(budget_s, self._clock())

    def on_time_probability(self, budget_s: float, now: float) -> float | None:
        with self._lock:
            return self.estimate.on_time_probability(budget_s, now)

    def newest_sample_age(self, now: float) -> float | None:
        with self._lock:
            return self.estimate.newest_sample_age(now)

    def service_info(self, timeout_s: float) -> inference_pb2.ServiceInfo | None:
        """GetServiceInfo again on this link's open channel; None when the link is down or the call fails."""
        return self._ask_service_info(timeout_s) if self.ready else None

    def check_silence(self, silence_s: float) -> bool:
        """Liveness is judged by silence, not by late answers: a worker still answering is there, only
        slow (overloaded, a long queue), and keeps its place; probing it would add load, and cancelling its
        stream would throw away the answers under way. When it has owed an answer for `silence_s` without
        a word, take the link out of the rotation and, in the background, ask the worker for its service
        info: one that answers within connect_timeout_s gets inputs again; for one that does not, the
        stream is ended and the link reconnects. A machine that lost power or its network sends no
        connection reset, so without this the stream would look open for as long as TCP keeps retrying
        (many minutes). True when the link was taken out now."""
        with self._lock:
            if self._checking or not self.ready or self.estimate.silent_for(self._clock()) < silence_s:
                return False
            self._checking = True
            self.silences += 1
            self.ready = False
            self.reason = (f"checking: the worker has said nothing for {silence_s:g} s while answers are owed; "
                           "asking whether it is still there")
            call = self._call
        threading.Thread(target=self._check_alive, args=(call,), name=f"check-{self.address}", daemon=True).start()
        return True

    def _check_alive(self, call: Any) -> None:
        try:
            alive = self._ask_service_info(self.connect_timeout_s) is not None
            with self._lock:
                if alive:
                    self.estimate.heard(self._clock())
                if call is None or call is not self._call or self._outbox is None or self._closed.is_set():
                    return  # that stream ended meanwhile; the next one starts ready by itself
                if alive:
                    self.ready = True
                    self.reason = ""
                    return
            log.warning("link to %s: the worker went silent and did not answer a probe within %g s; reconnecting",
                        self.address, self.connect_timeout_s)
            call.cancel()
        finally:
            self._checking = False

    def _ask_service_info(self, timeout_s: float) -> inference_pb2.ServiceInfo | None:
        channel = self._channel
        if channel is None:
            return None
        try:
            return inference_pb2_grpc.InferenceStub(channel).GetServiceInfo(inference_pb2.ServiceInfoRequest(),
                                                                            timeout=timeout_s,
                                                                            metadata=self._auth_metadata)
        except (grpc.RpcError, ValueError):  # ValueError: the channel closed meanwhile
            return None

    def forget(self, request_id: int) -> None:
        """Nobody waits for this answer any more; when it comes it still times the link."""
        with self._lock:
            self._pending.pop(request_id, None)

    # -- background thread --

    def _fail_pending(self, reason: str) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
            self.estimate.stream_ended()
        for slot in pending.values():
            slot.failure = reason
            slot.event.set()

    def _run(self) -> None:
        delay = self.reconnect_initial_s
        while not self._closed.is_set():
            if self._session():
                delay = self.reconnect_initial_s  # it was up: start backing off afresh
            if self.refused_access:
                delay = self.reconnect_max_s  # the same token or certificate would be refused again at once
            if self._closed.wait(delay * random.uniform(0.8, 1.2)):
                break
            delay = min(delay * 2.0, self.reconnect_max_s)

    def _session(self) -> bool:
        """One connection: handshake, stream until it ends. True when the stream was up."""
        if self._token_in_clear_refused:
            self.refused_access = True
            self.reason = (f"auth: refusing to send the token in clear to {self.address}; configure ca_file (--ca) "
                           "to reach it over TLS")
            self._log_failure(logging.ERROR, "")
            return False
        options: list[tuple[str, Any]] = [("grpc.max_receive_message_length", self.max_message_bytes),
                   ("grpc.enable_retries", 0)]
        if self._credentials is not None:
            if self._tls_server_name:
                options.append(("grpc.ssl_target_name_override", self._tls_server_name))
            channel = grpc.secure_channel(self.address, self._credentials, options=options)
        else:
            channel = grpc.insecure_channel(self.address, options=options)
        self._channel = channel
        stub = inference_pb2_grpc.InferenceStub(channel)
        was_up = False
        try:
            info = stub.GetServiceInfo(inference_pb2.ServiceInfoRequest(), timeout=self.connect_timeout_s,
                                       wait_for_ready=False, metadata=self._auth_metadata)
            self.refused_access = False
            if info.bundle_hash != self.bundle_hash:
                self.refused = True
                self.reason = (f"bundle_mismatch: this device runs {self.bundle_hash} but the worker at "
                               f"{self.address} serves {info.bundle_hash}; refusing to mix their predictions")
                log.error("%s", self.reason)
                return False
            self.refused = False
            self.worker_id = info.worker_id
            if self._on_info is not None and not self._on_info(self, info):
                return False
            outbox: queue.SimpleQueue = queue.SimpleQueue()
            # the bundle is named once, in the stream's metadata; requests leave bundle_hash empty
            metadata = ((BUNDLE_HASH_METADATA, self.bundle_hash),) + self._auth_metadata
            if self._logits_codec != RAW_F32LE and self._logits_codec in info.logits_codecs:
                metadata += ((LOGITS_CODEC_METADATA, self._logits_codec),)
            responses = self._call = stub.InferStream(_requests(outbox), metadata=metadata)
            if self._warmup is not None and not self._warm(responses, outbox):
                self.reason = "stream_closed: the worker ended the stream before answering the warm-up request"
                return False
            with self._lock:
                if self._closed.is_set():
                    return False
                self._outbox = outbox
                self.ready = True
                self.reason = ""
            self.connects += 1
            was_up = True
            self._logged_reason = None
            log.info("streaming to worker %s at %s", info.worker_id, self.address,
                     extra={"fields": {"event": "linked", "worker_id": info.worker_id, "endpoint": self.address}})
            for response in responses:
                self._deliver(response)
            self.reason = "stream_closed: the worker ended the stream"
        except grpc.RpcError as exc:
            if self._closed.is_set():
                self.reason = "closed"
                return was_up
            code = exc.code() if hasattr(exc, "code") else None
            name = code.name if code is not None else "UNKNOWN"
            details = (exc.details() if hasattr(exc, "details") else None) or str(exc)
            if code in _ACCESS_REFUSED:
                # the worker's message says what to do (ask for a token, a revoked one): keep it in the reason
                self.refused_access = True
                self.reason = f"auth: {name}: {details}"
                self._log_failure(logging.ERROR, "")
            elif (self._credentials is not None and not was_up
                  and any(mark in details.lower() for mark in _TLS_FAILURE_MARKS)):
                self.refused_access = True
                self.reason = f"tls: the TLS handshake with {self.address} failed"
                self._log_failure(logging.ERROR, details)
            else:
                self.refused_access = False
                self.reason = f"{'stream_broken' if was_up else 'unavailable'}: {name}"
                if was_up or self.connects == 0:
                    self._log_failure(logging.WARNING, details)
        finally:
            with self._lock:
                self.ready = False
                if self._outbox is not None:
                    self._outbox.put(_END)
                    self._outbox = None
            self._fail_pending(self.reason or "closed")
            channel.close()
            self._channel = None
            self._call = None
        return was_up

    def _warm(self, responses, outbox: queue.SimpleQueue) -> bool:
        """One request computed by the worker before the link counts as ready: a cold worker's first answer
        (first model run, first call through its event loop) is the slowest of a run, and would otherwise
        fall on the first input. Its round trip does not enter the estimate. A worker that does not answer
        within connect_timeout_s has its stream cancelled (the session then fails as unavailable). False
        when the worker ended the stream first (it is draining)."""
        self.reason = "warming: waiting for the worker's answer to a first request"
        if self._warmup is None:
            return True
        outbox.put(self._warmup(WARMUP_REQUEST_ID))
        answered = threading.Event()

        def give_up() -> None:
            if not answered.is_set():
                responses.cancel()

        timer = threading.Timer(self.connect_timeout_s, give_up)
        timer.start()
        try:
            answer = next(responses, None)
        finally:
            answered.set()  # a timer already running finds it set and leaves the stream alone
            timer.cancel()
        if answer is None:
            return False
        with self._lock:
            self.estimate.heard(self._clock())
        if answer.request_id != WARMUP_REQUEST_ID or answer.status.code not in (0, _OVERLOADED_CODE):
            log.warning("link to %s: the warm-up request was answered %s: %s", self.address,
                        status_name(answer.status.code), answer.status.message)
        return True

    def _log_failure(self, level: int, details: str) -> None:
        """Log why the link is down once per change of reason, not once per attempt."""
        if self.reason == self._logged_reason:
            return
        self._logged_reason = self.reason
        log.log(level, "link to %s: %s%s", self.address, self.reason, f" ({details})" if details else "")

    def _deliver(self, response: inference_pb2.InferResponse) -> None:
        with self._lock:
            self.estimate.answered(response.request_id, self._clock())
            slot = self._pending.pop(response.request_id, None)
        if slot is None:
            return  # its deadline passed and it was answered locally
        slot.response = response
        slot.event.set()
        if response.status.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]:
            # the worker changed bundles under us: stop offloading until a new handshake agrees
            with self._lock:
                self.ready = False
            call = self._call
            if call is not None:
                call.cancel()  # ends this session; the next handshake names both hashes
