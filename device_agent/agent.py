"""The device agent as a library: `DeviceAgent(bundle, config).infer(image) -> Result`.

Per input: device.onnx gives local logits and remote indices; unless the confidence gate
keeps it local, the indices are range coded and sent on a long-lived stream to a worker,
and the agent waits up to `deadline_ms` for the remote logits. Every input gets exactly
one result: `mixed` (local and remote logits mixed with the bundle's weight),
`local_only_policy` (the gate kept it local) or `local_fallback` with the reason (no
worker reachable, answer predicted late, deadline passed, stream broken, bundle mismatch,
worker overloaded, worker error). Which worker, if any, is the link pool's choice from each
link's recent round trips (`device_agent.pool`).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Self

import grpc
import numpy as np

from agilenn.bundle import Bundle, mix_logits
from agilenn.outcomes import ReasonCode, Source
from agilenn.v1 import inference_pb2
from agilenn.v1.tensors import TensorError, from_raw_tensor
from device_agent.config import DeviceConfig
from device_agent.link import Link, Slot, status_name
from device_agent.pool import BundleMismatchError, LinkPool, read_credentials  # noqa: F401 (the agent's API)

log = logging.getLogger(__name__)

MIXED = Source.MIXED
LOCAL_ONLY_POLICY = Source.LOCAL_ONLY_POLICY
LOCAL_FALLBACK = Source.LOCAL_FALLBACK
# A worker whose queue is full answers a request at once with this status, in the response.
_OVERLOADED_CODE = grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]


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
    on_time_probability: float | None = None  # the policy's prediction for this input (None: none made)
    hedged: bool = False  # sent to two workers, the first answer taken
    reason_code: str | None = None  # the reason's agilenn.outcomes.ReasonCode, for programs

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
        self._ids = itertools.count(1)
        self._index = itertools.count(0)
        self._local_label = -1
        self._pool = LinkPool(self._hash, self.config, warmup=self._warmup_request)

    def _warmup_request(self, request_id: int) -> inference_pb2.InferRequest:
        """What a new stream is warmed with: the payload of an input whose features are all at level 0."""
        payload = self._codec.encode(np.zeros(self._remote_shape, dtype=np.uint8))
        return inference_pb2.InferRequest(request_id=request_id, features=inference_pb2.Tensor(
            data=payload, shape=self._remote_shape, codec=self._codec_id))

    @property
    def policy_counts(self):
        """How often the offload policy answered locally for a predicted late answer, hedged or explored."""
        return self._pool.counts

    @property
    def silent_links_taken_out(self) -> int:
        """How often a link was taken out of the rotation for its silence (then probed)."""
        return self._pool.silent_links_taken_out

    def link_stats(self) -> list[dict]:
        """Each link's live estimate (round-trip p50/p90, answers owed, upload rate, on-time probability)."""
        return self._pool.link_stats()

    # -- links (the pool keeps them; these names serve the agent's callers and tests) --

    @property
    def _links(self) -> list[Link]:
        return self._pool.links

    def _unavailable_reason(self) -> str:
        return self._pool.unavailable_reason()

    @property
    def connected(self) -> int:
        """How many workers a stream is open to right now."""
        return self._pool.connected

    def wait_ready(self, timeout_s: float = 10.0, workers: int = 1) -> bool:
        """Wait until streams to `workers` workers are open. Raises BundleMismatchError when every
        worker reached serves another bundle."""
        return self._pool.wait_ready(timeout_s, workers)

    # -- inference --

    def infer(self, image: np.ndarray, sample_id: str | None = None) -> Result:
        """One sample, (C, H, W) or (H, W) for one channel, raw pixel levels 0..255."""
        index = next(self._index)
        self._choice = self._estimate = None
        start = time.perf_counter()
        local_logits, indices = self._session.run(self._outputs, {self._input_name: self.bundle.prepare(image)})
        after_model = time.perf_counter()
        local = local_logits[0]
        self._local_label = int(local.argmax())

        threshold = self.config.local_confidence_threshold
        if threshold is not None:
            local_probs = _softmax(local)
            if local_probs.max() >= threshold:
                return self._result(index, sample_id, local_probs, LOCAL_ONLY_POLICY, None, start, after_model,
                                    after_model, None, None, None)

        deadline_s = self.config.deadline_ms / 1000.0
        choice = self._pool.choose(deadline_s)
        self._choice = choice
        # the estimate the choice was made from, for the result's timings
        self._estimate = choice.link.stats(deadline_s) if choice.link is not None else None
        if choice.link is None:
            return self._result(index, sample_id, _softmax(local), LOCAL_FALLBACK, choice.reason,
                                start, after_model, after_model, None, None, None)

        payload = self._codec.encode(indices[0])
        request_id = next(self._ids)
        request = inference_pb2.InferRequest(  # bundle_hash: named once in the stream's metadata
            request_id=request_id,
            features=inference_pb2.Tensor(data=payload, shape=self._remote_shape, codec=self._codec_id))
        answered = threading.Event()
        slots: dict[Link, Slot] = {}
        for target in (choice.link, choice.hedge):
            if target is None:
                continue
            message = request
            if choice.hedge is not None:  # each link sets its own fields, and its own thread serializes them
                message = inference_pb2.InferRequest()
                message.CopyFrom(request)
            pending = Slot(answered)
            if target.send(message, pending):
                slots[target] = pending
        if not slots:
            return self._result(index, sample_id, _softmax(local), LOCAL_FALLBACK,
                                choice.link.reason or "unavailable", start, after_model, time.perf_counter(),
                                None, len(payload), None)
        sent = min(slot.sent_at for slot in slots.values())
        link, slot = self._first_answer(slots, request_id, deadline_s, answered)
        if link is None or slot is None:
            woke = time.perf_counter()
            return self._result(index, sample_id, _softmax(local), LOCAL_FALLBACK,
                                f"deadline: no answer within {self.config.deadline_ms:g} ms",
                                start, after_model, sent, None, len(payload), None, woke)
        woke = time.perf_counter()
        sent = slot.sent_at
        response = slot.response
        if response is None:
            return self._result(index, sample_id, _softmax(local), LOCAL_FALLBACK, slot.failure or "stream_broken",
                                start, after_model, sent, None, len(payload), None, woke)
        rtt_ms = (woke - sent) * 1000.0
        if response.status.code == _OVERLOADED_CODE:
            self._pool.back_off(link, woke)
            reason = f"overloaded: {response.status.message}"
            return self._result(index, sample_id, _softmax(local), LOCAL_FALLBACK, reason,
                                start, after_model, sent, rtt_ms, len(payload), response.worker_id, woke)
        if response.status.code != 0:
            reason = f"worker_error: {status_name(response.status.code)}: {response.status.message}"
            return self._result(index, sample_id, _softmax(local), LOCAL_FALLBACK, reason,
                                start, after_model, sent, rtt_ms, len(payload), response.worker_id, woke)
        try:
            remote = from_raw_tensor(response.logits)
            if remote.shape != local.shape:
                raise TensorError(f"remote logits shaped {remote.shape}, expected {local.shape}")
        except TensorError as exc:
            return self._result(index, sample_id, _softmax(local), LOCAL_FALLBACK, f"worker_error: {exc}",
                                start, after_model, sent, rtt_ms, len(payload), response.worker_id, woke)
        mixed = mix_logits(local, remote, self._alpha)
        return self._result(index, sample_id, _softmax(mixed), MIXED, None, start, after_model, sent, rtt_ms,
                            len(payload), response.worker_id, woke)

    @staticmethod
    def _first_answer(slots: dict[Link, Slot], request_id: int, deadline_s: float,
                      answered: threading.Event) -> tuple[Link | None, Slot | None]:
        """The first slot answered OK within the deadline; for a hedged input a failed stream or a refusal
        (overloaded, an error) waits for the other, and is taken when the other fails too. Every other
        slot is forgotten. (None, None) when the deadline passes first."""
        give_up = time.perf_counter() + deadline_s
        chosen: tuple[Link | None, Slot | None] = (None, None)
        while True:
            answered.clear()  # then look: an answer that lands after the look sets it again
            finished = [(link, slot) for link, slot in slots.items()
                        if slot.response is not None or slot.failure is not None]
            success = next(((link, slot) for link, slot in finished
                            if slot.response is not None and slot.response.status.code == 0), None)
            if success is not None or len(finished) == len(slots):
                # all finished and none OK: a refusal says more than a broken stream
                chosen = success or next(((link, slot) for link, slot in finished if slot.response is not None),
                                         finished[0])
                break
            remaining = give_up - time.perf_counter()
            if remaining <= 0 or not answered.wait(remaining):
                break
        for link in slots:
            if link is not chosen[0]:
                link.forget(request_id)
        return chosen

    def _result(self, index: int, sample_id: str | None, probabilities: np.ndarray, source: str,
                reason: str | None, start: float, after_model: float, sent: float, rtt_ms: float | None,
                payload_bytes: int | None, worker_id: str | None, woke: float | None = None) -> Result:
        local_label = self._local_label
        end = time.perf_counter()
        # device work beyond the ONNX Runtime call: encode and send, then (after the answer) mix and
        # build the result; the time spent waiting on the network is the cloud round trip
        overhead = (sent - after_model) + (end - (woke if woke is not None else sent))
        label = int(probabilities.argmax())
        timings = {"device_model": (after_model - start) * 1000.0, "device_overhead": overhead * 1000.0,
                   "cloud_rtt": rtt_ms, "total": (end - start) * 1000.0}
        choice, stats = self._choice, self._estimate
        if stats is not None:  # the chosen worker's recent round trips
            timings["cloud_rtt_p50_estimate"], timings["cloud_rtt_p90_estimate"] = stats.rtt_p50_ms, stats.rtt_p90_ms
        return Result(
            index=index, label=label, label_name=self._labels[label], probabilities=probabilities.tolist(),
            source=source, reason=reason, local_label=local_label, timings_ms=timings,
            payload_bytes=payload_bytes, worker_id=worker_id, id=sample_id,
            on_time_probability=None if choice is None else choice.on_time_probability,
            hedged=choice is not None and choice.hedge is not None, reason_code=ReasonCode.of(reason))

    def run(self, samples: Iterable[tuple[str | None, np.ndarray]]) -> Iterator[Result]:
        """Results for (id, image) pairs, in order."""
        for sample_id, image in samples:
            yield self.infer(image, sample_id)

    def close(self) -> None:
        self._pool.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

