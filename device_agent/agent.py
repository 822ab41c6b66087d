"""The device agent as a library: `DeviceAgent(bundle, config).infer(image) -> Result`.

Per input: device.onnx gives local logits and remote indices; unless the confidence gate
keeps it local, the indices are range coded and sent on a long-lived stream to a worker,
and the agent waits up to `deadline_ms` for the remote logits. Every input gets exactly
one result: `mixed` (local and remote logits mixed with the bundle's weight),
`local_only_policy` (the gate kept it local) or `local_fallback` with the reason (no
worker reachable, deadline passed, stream broken, bundle mismatch, worker overloaded,
worker error).
"""

from __future__ import annotations

import itertools
import logging
import random
import re
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import grpc
import numpy as np

from agilenn.bundle import Bundle
from agilenn.config_files import ConfigFileError
from agilenn.v1 import inference_pb2
from agilenn.v1.tensors import TensorError, from_raw_tensor
from device_agent.config import DeviceConfig
from device_agent.link import Link, Slot

log = logging.getLogger(__name__)

MIXED = "mixed"
LOCAL_ONLY_POLICY = "local_only_policy"
LOCAL_FALLBACK = "local_fallback"
# A worker whose queue is full answers a request at once with this status, in the response.
_OVERLOADED_CODE = grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]


class BundleMismatchError(RuntimeError):
    """Every configured worker serves another bundle than the device's."""


@dataclass
class Result:
    index: int
    label: int
    label_name: str
    probabilities: list[float]
    source: str
    reason: str | None
    timings_ms: dict[str, float | None]
    local_label: int = -1  # what the device alone predicts
    payload_bytes: int | None = None
    worker_id: str | None = None
    id: str | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["probabilities"] = [round(p, 6) for p in self.probabilities]
        data["timings_ms"] = {k: (None if v is None else round(v, 4)) for k, v in self.timings_ms.items()}
        return data


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max())
    return shifted / shifted.sum()


class DeviceAgent:
    """Runs the device half of a bundle and offloads the rest. Thread-compatible, not thread-safe:
    call `infer` from one thread (the sensor loop)."""

    def __init__(self, bundle: Bundle | str | Path, config: DeviceConfig | None = None) -> None:
        self.bundle = bundle if isinstance(bundle, Bundle) else Bundle(bundle)
        self.config = config or DeviceConfig()
        self._session = self.bundle.session(self.bundle.device_role(self.config.precision),
                                            threads=self.config.onnx_threads)
        self._outputs = ["local_logits", "remote_indices"]  # the int8 front also offers its features
        self._input_name = self._session.get_inputs()[0].name
        self._codec = self.bundle.codec
        self._codec_id = self._codec.codec_id
        self._remote_shape = list(self.bundle.remote_shape)
        self._labels = self.bundle.manifest.labels
        self._alpha = float(self.bundle.manifest.mixing.alpha_local)
        self._hash = self.bundle.bundle_hash
        self._credentials, self._token = read_credentials(self.config)
        self._ids = itertools.count(1)
        self._index = itertools.count(0)
        self._links: list[Link] = []
        self._links_lock = threading.Lock()
        self._workers: dict[str, Link] = {}
        self._turn = 0
        self._backoff_until: dict[Link, float] = {}  # links that answered overloaded: when to offload to them again
        self._closed = False
        self._local_label = -1
        self._workers_listed = 0  # how many endpoints the workers last listed
        self._refresh_stop = threading.Event()
        for address in self.config.cloud:
            self._add_link(address)
        if self.config.cloud:
            threading.Thread(target=self._refresh_endpoints, name="endpoint-refresh", daemon=True).start()

    # -- links --

    def _add_link(self, address: str) -> None:
        with self._links_lock:
            if self._closed or any(link.address == address for link in self._links):
                return
            link = Link(address, self._hash, connect_timeout_s=self.config.connect_timeout_s,
                        reconnect_initial_s=self.config.reconnect_initial_s,
                        reconnect_max_s=self.config.reconnect_max_s,
                        max_message_bytes=self.config.max_message_bytes, clock=time.perf_counter,
                        on_info=self._on_info, credentials=self._credentials, token=self._token,
                        tls_server_name=self.config.tls_server_name)
            self._links.append(link)
        link.start()

    def _on_info(self, link: Link, info: inference_pb2.ServiceInfo) -> bool:
        """A link's handshake succeeded: learn the other workers; keep one link per worker."""
        with self._links_lock:
            holder = self._workers.get(info.worker_id)
            if holder is not None and holder is not link and not holder.closed and holder.ready:
                duplicate = True
            else:
                self._workers[info.worker_id] = link
                duplicate = False
        self._workers_listed = len(info.endpoints)
        for endpoint in info.endpoints:
            self._add_link(endpoint)
        if duplicate:
            log.info("%s reaches worker %s, already linked through %s", link.address, info.worker_id, holder.address)
        return not duplicate

    def _refresh_endpoints(self) -> None:
        """While fewer workers are linked than the workers list, ask a linked one for the list again: a
        worker that Ray restarted on another node is back at another address, which no handshake on the
        surviving links would tell. Links to addresses no longer listed (and not configured) are dropped."""
        while not self._refresh_stop.wait(self.config.endpoint_refresh_s):
            links = self._links
            if self.connected >= self._workers_listed:
                continue
            for link in links:
                info = link.service_info(self.config.connect_timeout_s)
                if info is None:
                    continue
                listed = set(info.endpoints) | set(self.config.cloud)
                with self._links_lock:
                    gone = [old for old in self._links if old.address not in listed and not old.ready]
                    self._links = [old for old in self._links if old not in gone]  # a new list: _pick reads it unlocked
                    for old in gone:  # nothing may keep a dropped link alive
                        self._workers = {w: held for w, held in self._workers.items() if held is not old}
                        self._backoff_until.pop(old, None)
                for old in gone:
                    log.info("dropping %s: no worker lists it any more", old.address)
                    old.close()
                self._workers_listed = len(info.endpoints)
                for endpoint in info.endpoints:
                    self._add_link(endpoint)
                break

    def _pick(self) -> Link | None:
        links = self._links
        count = len(links)
        backoff = self._backoff_until
        for step in range(count):
            link = links[(self._turn + step) % count]
            if not link.ready:
                continue
            if backoff and link in backoff:
                if backoff[link] > time.perf_counter():
                    continue  # it answered overloaded a moment ago
                del backoff[link]
            self._turn = (self._turn + step + 1) % count
            return link
        return None

    def _back_off(self, link: Link, now: float) -> None:
        backoff_s = self.config.overload_backoff_ms / 1000.0
        if backoff_s > 0:
            self._backoff_until[link] = now + backoff_s * random.uniform(0.5, 1.5)

    def _unavailable_reason(self) -> str:
        if not self._links:
            return "no_cloud: no worker address configured"
        if self._backoff_until and any(link.ready and link in self._backoff_until for link in self._links):
            return (f"overloaded: every reachable worker answered overloaded within about the last "
                    f"{self.config.overload_backoff_ms:g} ms; answering locally until it has had time to catch up")
        reasons = sorted({link.reason for link in self._links if link.reason})
        return reasons[0] if len(reasons) == 1 else "; ".join(reasons) or "unavailable"

    @property
    def connected(self) -> int:
        """How many workers a stream is open to right now."""
        return sum(1 for link in self._links if link.ready)

    def wait_ready(self, timeout_s: float = 10.0, workers: int = 1) -> bool:
        """Wait until streams to `workers` workers are open. Raises BundleMismatchError when every
        worker reached serves another bundle."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.connected >= workers:
                return True
            if self._links and all(link.refused for link in self._links):
                raise BundleMismatchError(self._links[0].reason)
            time.sleep(0.01)
        return self.connected >= workers

    # -- inference --

    def infer(self, image: np.ndarray, sample_id: str | None = None) -> Result:
        """One sample, (C, H, W) or (H, W) for one channel, raw pixel levels 0..255."""
        index = next(self._index)
        start = time.perf_counter()
        x = np.asarray(image, dtype=np.float32)
        if x.ndim == 2:
            x = x[None]
        x = x[None]
        local_logits, indices = self._session.run(self._outputs, {self._input_name: x})
        after_model = time.perf_counter()
        local = local_logits[0]
        self._local_label = int(local.argmax())

        threshold = self.config.local_confidence_threshold
        if threshold is not None:
            local_probs = _softmax(local)
            if local_probs.max() >= threshold:
                return self._result(index, sample_id, local_probs, LOCAL_ONLY_POLICY, None, start, after_model,
                                    after_model, None, None, None)

        link = self._pick()
        if link is None:
            return self._result(index, sample_id, _softmax(local), LOCAL_FALLBACK, self._unavailable_reason(),
                                start, after_model, after_model, None, None, None)

        payload = self._codec.encode(indices[0])
        request_id = next(self._ids)
        request = inference_pb2.InferRequest(  # bundle_hash: named once in the stream's metadata
            request_id=request_id,
            features=inference_pb2.Tensor(data=payload, shape=self._remote_shape, codec=self._codec_id))
        slot = Slot()
        if not link.send(request, slot):
            return self._result(index, sample_id, _softmax(local), LOCAL_FALLBACK, link.reason or "unavailable",
                                start, after_model, time.perf_counter(), None, len(payload), None)
        sent = slot.sent_at
        if not slot.event.wait(self.config.deadline_ms / 1000.0):
            woke = time.perf_counter()
            link.forget(request_id)
            link.check_alive(sent)
            return self._result(index, sample_id, _softmax(local), LOCAL_FALLBACK,
                                f"deadline: no answer within {self.config.deadline_ms:g} ms",
                                start, after_model, sent, None, len(payload), None, woke)
        woke = time.perf_counter()
        response = slot.response
        if response is None:
            return self._result(index, sample_id, _softmax(local), LOCAL_FALLBACK, slot.failure or "stream_broken",
                                start, after_model, sent, None, len(payload), None, woke)
        rtt_ms = (woke - sent) * 1000.0
        if response.status.code == _OVERLOADED_CODE:
            self._back_off(link, woke)
            reason = f"overloaded: {response.status.message}"
            return self._result(index, sample_id, _softmax(local), LOCAL_FALLBACK, reason,
                                start, after_model, sent, rtt_ms, len(payload), response.worker_id, woke)
        if response.status.code != 0:
            reason = f"worker_error: {_code_name(response.status.code)}: {response.status.message}"
            return self._result(index, sample_id, _softmax(local), LOCAL_FALLBACK, reason,
                                start, after_model, sent, rtt_ms, len(payload), response.worker_id, woke)
        try:
            remote = from_raw_tensor(response.logits)
        except TensorError as exc:
            return self._result(index, sample_id, _softmax(local), LOCAL_FALLBACK, f"worker_error: {exc}",
                                start, after_model, sent, rtt_ms, len(payload), response.worker_id, woke)
        mixed = self._alpha * local + (1.0 - self._alpha) * remote
        return self._result(index, sample_id, _softmax(mixed), MIXED, None, start, after_model, sent, rtt_ms,
                            len(payload), response.worker_id, woke)

    def _result(self, index: int, sample_id: str | None, probabilities: np.ndarray, source: str,
                reason: str | None, start: float, after_model: float, sent: float, rtt_ms: float | None,
                payload_bytes: int | None, worker_id: str | None, woke: float | None = None) -> Result:
        local_label = self._local_label
        end = time.perf_counter()
        # device work beyond the ONNX Runtime call: encode and send, then (after the answer) mix and
        # build the result; the time spent waiting on the network is the cloud round trip
        overhead = (sent - after_model) + (end - (woke if woke is not None else sent))
        label = int(probabilities.argmax())
        return Result(
            index=index, label=label, label_name=self._labels[label], probabilities=probabilities.tolist(),
            source=source, reason=reason, local_label=local_label,
            timings_ms={"device_model": (after_model - start) * 1000.0, "device_overhead": overhead * 1000.0,
                        "cloud_rtt": rtt_ms, "total": (end - start) * 1000.0},
            payload_bytes=payload_bytes, worker_id=worker_id, id=sample_id)

    def run(self, samples: Iterable[tuple[str | None, np.ndarray]]) -> Iterator[Result]:
        """Results for (id, image) pairs, in order."""
        for sample_id, image in samples:
            yield self.infer(image, sample_id)

    def close(self) -> None:
        self._refresh_stop.set()
        with self._links_lock:
            self._closed = True
            links = list(self._links)
        for link in links:
            link.close()

    def __enter__(self) -> "DeviceAgent":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_METADATA_VALUE = re.compile(r"[\x21-\x7e]+")  # printable ASCII without spaces: what a header value may hold


def read_credentials(config: DeviceConfig) -> tuple[grpc.ChannelCredentials | None, str | None]:
    """The TLS credentials (None: plaintext) and the token (None: none) a DeviceConfig names, read once."""
    def read(path: str, what: str) -> bytes:
        try:
            return Path(path).read_bytes()
        except OSError as exc:
            raise FileNotFoundError(f"{what} {path}: {exc.strerror or exc}") from None

    credentials = None
    if config.ca_file is not None:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=read(config.ca_file, "CA file (ca_file, --ca)"),
            private_key=read(config.key_file, "client key (key_file, --key)") if config.key_file else None,
            certificate_chain=read(config.cert_file, "client certificate (cert_file, --cert)") if config.cert_file
            else None)
    token = None
    if config.token_file is not None:
        token = read(config.token_file, "token file (token_file, --token-file)").decode("utf-8", "replace").strip()
        if not token:
            raise ConfigFileError(f"token file {config.token_file} is empty; put in it the token that "
                                  "`agilenn tokens add` printed")
        if not _METADATA_VALUE.fullmatch(token):
            # else every call fails as INTERNAL "invalid metadata", and the link retries without saying why
            raise ConfigFileError(f"token file {config.token_file} holds more than one token: put in it only the "
                                  "one line `agilenn tokens add` printed (<id>.<secret>, no spaces or comments)")
    return credentials, token


def _code_name(code: int) -> str:
    for status in grpc.StatusCode:
        if status.value[0] == code:
            return status.name
    return str(code)
