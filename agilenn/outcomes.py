"""Where an answer came from and, when it is the device's own, why: the typed half of every result.

A result's `reason` is text for people (`deadline: no answer within 50 ms`); its `reason_code` is one
of `ReasonCode`, for programs. Every reason text the runtime writes starts with its code and a colon,
so `ReasonCode.of` is the one place a text is read back, where a result is made; consumers count and
compare codes.
"""

from __future__ import annotations

from enum import StrEnum


class Source(StrEnum):
    MIXED = "mixed"  # device and cloud logits mixed
    LOCAL_ONLY_POLICY = "local_only_policy"  # the confidence gate kept the input on the device
    LOCAL_FALLBACK = "local_fallback"  # offloading was wanted but the device answered alone (see the reason)


class ReasonCode(StrEnum):
    NO_CLOUD = "no_cloud"  # no worker address configured
    CONNECTING = "connecting"  # the first connection is under way
    WARMING = "warming"  # a new stream waits for its warm-up answer
    UNAVAILABLE = "unavailable"  # no worker could be reached
    STREAM_BROKEN = "stream_broken"  # the stream broke with answers owed
    STREAM_CLOSED = "stream_closed"  # the worker ended the stream (draining)
    CHECKING = "checking"  # the worker was silent too long and is being probed
    PREDICTED_LATE = "predicted_late"  # no worker was likely to answer within the deadline
    DEADLINE = "deadline"  # the answer did not come within the deadline
    OVERLOADED = "overloaded"  # the worker refused for load, or did a moment ago
    WORKER_ERROR = "worker_error"  # the worker answered with an error, or an answer the device cannot use
    BUNDLE_MISMATCH = "bundle_mismatch"  # the worker serves another bundle
    AUTH = "auth"  # the worker refused the device's token
    TLS = "tls"  # the TLS handshake failed
    CLOSED = "closed"  # the device is shutting down
    OTHER = "other"  # a text that names no code (a peer's own words)

    @classmethod
    def of(cls, text: str | None) -> ReasonCode | None:
        """The code a reason text starts with; None for no text."""
        if not text:
            return None
        head = text.split(":", 1)[0].strip()
        return cls(head) if head in cls._value2member_map_ else cls.OTHER
