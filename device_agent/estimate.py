"""What a device knows about one link's latency, from the answers it gets.

The round trips of the last `window` answers (no older than `max_age_s`) are kept as they are: the
probability that a new input is answered within a deadline is the share of them within it (a mean
would let one slow answer of many hide in it). While the worker owes an answer already past that
deadline, a new request would queue behind it on the worker, so the probability is 0 until that answer
comes; a worker that never answers it again is judged by its silence (`silent_for`): a late answer is
evidence about latency only, and how long nothing at all has been heard says whether it is there.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass

import numpy as np

# fewer observations than this say nothing yet: the link is given inputs to learn from
MIN_EVIDENCE = 3


@dataclass(frozen=True)
class LinkStats:
    """A snapshot of one link's estimate, in milliseconds and bytes."""
    samples: int
    owed: int
    rtt_p50_ms: float | None
    rtt_p90_ms: float | None
    on_time_probability: float | None  # within the deadline asked about; None: too little evidence
    upload_bytes_per_s: float | None  # payload bytes sent over the span they were sent in
    newest_sample_age_s: float | None


class LinkEstimate:
    """Not thread-safe: the link calls it under its own lock."""

    def __init__(self, window: int = 32, max_age_s: float = 10.0, max_owed: int = 4096) -> None:
        self._window = window
        self._max_age_s = max_age_s
        self._max_owed = max_owed
        self._rtts: deque[tuple[float, float]] = deque(maxlen=window)  # (answered at, round trip s)
        self._sends: deque[tuple[float, int]] = deque(maxlen=window)  # (sent at, payload bytes)
        self._owed: OrderedDict[int, float] = OrderedDict()  # request id -> sent at, oldest first
        self.last_heard_at = float("-inf")

    def sent(self, request_id: int, at: float, payload_bytes: int) -> None:
        self._owed[request_id] = at
        if len(self._owed) > self._max_owed:
            self._owed.popitem(last=False)  # a worker that never answers these is judged by its silence
        self._sends.append((at, payload_bytes))

    def heard(self, at: float) -> None:
        """Anything from the worker on this link (an answer, a probe's reply)."""
        self.last_heard_at = max(self.last_heard_at, at)

    def answered(self, request_id: int, at: float) -> float | None:
        """The answer to `request_id` came at `at`: its round trip in seconds (None: not one this link sent)."""
        self.heard(at)
        sent_at = self._owed.pop(request_id, None)
        if sent_at is None:
            return None
        rtt = at - sent_at
        self._rtts.append((at, rtt))
        return rtt

    def stream_ended(self) -> None:
        """Nothing owed survives its stream; what was measured stays."""
        self._owed.clear()

    def silent_for(self, now: float) -> float:
        """How long the worker has owed an answer without a word: since the oldest request sent after
        anything was last heard. 0 when it owes nothing, or has spoken since each request left."""
        for sent_at in self._owed.values():
            if sent_at > self.last_heard_at:
                return max(0.0, now - sent_at)
        return 0.0

    def _recent(self, now: float) -> list[float]:
        return [rtt for at, rtt in self._rtts if now - at <= self._max_age_s]

    def owes_overdue(self, budget_s: float, now: float) -> bool:
        """An answer is owed past `budget_s` (and not so long that the worker must have lost it)."""
        return any(budget_s < now - sent_at <= self._max_age_s for sent_at in self._owed.values())

    def on_time_probability(self, budget_s: float, now: float) -> float | None:
        if self.owes_overdue(budget_s, now):
            return 0.0
        rtts = self._recent(now)
        if len(rtts) < MIN_EVIDENCE:
            return None
        return sum(1 for rtt in rtts if rtt <= budget_s) / len(rtts)

    def newest_sample_age(self, now: float) -> float | None:
        return now - self._rtts[-1][0] if self._rtts else None

    def stats(self, budget_s: float, now: float) -> LinkStats:
        rtts = self._recent(now)
        p50, p90 = (np.percentile(rtts, [50, 90]) * 1000.0).tolist() if rtts else (None, None)
        rate = None
        if len(self._sends) >= 2 and self._sends[-1][0] > self._sends[0][0]:
            rate = sum(size for _, size in list(self._sends)[1:]) / (self._sends[-1][0] - self._sends[0][0])
        return LinkStats(samples=len(rtts), owed=len(self._owed), rtt_p50_ms=p50, rtt_p90_ms=p90,
                         on_time_probability=self.on_time_probability(budget_s, now), upload_bytes_per_s=rate,
                         newest_sample_age_s=self.newest_sample_age(now))
