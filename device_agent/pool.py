"""The device's links to the cloud workers: one per worker, learnt from the workers' endpoint lists.
An input goes to the link most likely to answer within the deadline (in turn among equals), none when
that is unlikely (`predicted_late`), none to a worker that answered overloaded a moment ago, and none to
a worker silent for `silence_s`. The device agent and the gateway of a microcontroller share it.
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc

from agilenn.config_files import ConfigFileError
from agilenn.v1 import inference_pb2
from device_agent.config import DeviceConfig
from device_agent.link import Link

log = logging.getLogger(__name__)


class BundleMismatchError(RuntimeError):
    """Every configured worker serves another bundle than the device's."""


@dataclass(frozen=True)
class Choice:
    """Where one input goes: `link` (None: answer locally, for `reason`), the probability that its answer
    comes within the deadline (None: too little evidence yet), and a second link for a duplicate (hedge)."""
    link: Link | None
    on_time_probability: float | None = None
    hedge: Link | None = None
    reason: str = ""


@dataclass
class PolicyCounts:
    """How often the offload policy did something other than send one input to one worker."""
    predicted_late: int = 0  # answered locally at once: no link was likely to answer in time
    hedged: int = 0  # sent to two workers
    explored: int = 0  # sent although predicted late, to learn whether the worker recovered


class LinkPool:
    """Links to every worker serving `bundle_hash`, from the addresses in `config.cloud` and the endpoints
    the workers list; thread-safe for one caller picking links."""

    def __init__(self, bundle_hash: str, config: DeviceConfig,
                 warmup: Callable[[int], inference_pb2.InferRequest] | None = None) -> None:
        """`warmup`: builds the request each new stream is warmed with (device_agent.link.Link); None: none."""
        self.config = config
        self._warmup = warmup
        self.counts = PolicyCounts()
        # a worker is not silent before its answer is even due
        self._silence_s = max(config.silence_s, config.deadline_ms / 1000.0)
        self._explored_at: dict[Link, float] = {}
        self._hash = bundle_hash
        self._credentials, self._token = read_credentials(config)
        self._links: list[Link] = []
        self._links_lock = threading.Lock()
        self._workers: dict[str, Link] = {}
        self._turn = 0
        self._backoff_until: dict[Link, float] = {}  # links that answered overloaded: when to offload to them again
        self._closed = False
        self._workers_listed = 0  # how many endpoints the workers last listed
        self.last_info: inference_pb2.ServiceInfo | None = None  # the latest handshake's service info
        self._refresh_stop = threading.Event()
        for address in self.config.cloud:
            self._add_link(address)
        if self.config.cloud:
            threading.Thread(target=self._refresh_endpoints, name="endpoint-refresh", daemon=True).start()
            threading.Thread(target=self._watch_silence, name="silence-watch", daemon=True).start()

    @property
    def links(self) -> list[Link]:
        return self._links


    def _tls_name(self, via: Link | None) -> str | None:
        """The name a link's worker certificate is verified against. Workers advertise the addresses they
        listen on (a container's or a pod's IP), which their certificate does not name; the certificate
        names the service the device was configured with. So a link to an advertised endpoint verifies
        against the name of the link that listed it (the configured address's host, when that is a name
        and not an IP); `tls_server_name` overrides both."""
        if self.config.tls_server_name or via is None:
            return self.config.tls_server_name
        return via.verify_name

    def _add_link(self, address: str, via: Link | None = None) -> None:
        with self._links_lock:
            if self._closed or any(link.address == address for link in self._links):
                return
            link = Link(address, self._hash, connect_timeout_s=self.config.connect_timeout_s,
                        reconnect_initial_s=self.config.reconnect_initial_s,
                        reconnect_max_s=self.config.reconnect_max_s,
                        max_message_bytes=self.config.max_message_bytes, clock=time.perf_counter,
                        on_info=self._on_info, credentials=self._credentials, token=self._token,
                        tls_server_name=self._tls_name(via), logits_codec=self.config.logits_codec,
                        warmup=self._warmup)
            self._links.append(link)
        link.start()

    def _on_info(self, link: Link, info: inference_pb2.ServiceInfo) -> bool:
        """A link's handshake succeeded: learn the other workers; keep one link per worker."""
        self.last_info = info
        with self._links_lock:
            holder = self._workers.get(info.worker_id)
            if holder is not None and holder is not link and not holder.closed and holder.ready:
                duplicate = True
            else:
                self._workers[info.worker_id] = link
                duplicate = False
        self._workers_listed = len(info.endpoints)
        for endpoint in info.endpoints:
            self._add_link(endpoint, via=link)
        if duplicate and holder is not None:
            log.info("%s reaches worker %s, already linked through %s", link.address, info.worker_id, holder.address)
        return not duplicate

    def _watch_silence(self) -> None:
        """Silent links leave the rotation within silence_s even while no input is being offloaded."""
        while not self._refresh_stop.wait(self._silence_s / 4):
            for link in self._links:
                link.check_silence(self._silence_s)

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
                    self._links = [old for old in self._links if old not in gone]  # a new list: pick reads it unlocked
                    for old in gone:  # nothing may keep a dropped link alive
                        self._workers = {w: held for w, held in self._workers.items() if held is not old}
                        self._backoff_until.pop(old, None)
                        self._explored_at.pop(old, None)
                for old in gone:
                    log.info("dropping %s: no worker lists it any more", old.address)
                    old.close()
                self._workers_listed = len(info.endpoints)
                for endpoint in info.endpoints:
                    self._add_link(endpoint, via=link)
                break

    def choose(self, budget_s: float) -> Choice:
        """The link for one input whose answer is wanted within `budget_s` seconds."""
        now = time.perf_counter()
        links = self._links
        count = len(links)
        backoff = self._backoff_until
        scored: list[tuple[Link, float | None, int]] = []
        for step in range(count):
            link = links[(self._turn + step) % count]
            if not link.ready:
                continue
            if link.check_silence(self._silence_s):
                continue
            if backoff and link in backoff:
                if backoff[link] > now:
                    continue  # it answered overloaded a moment ago
                del backoff[link]
            scored.append((link, link.on_time_probability(budget_s, now), step))
        if not scored:
            return Choice(None, reason=self.unavailable_reason())

        def likely(item: tuple[Link, float | None, int]) -> float:
            return 1.0 if item[1] is None else item[1]  # unknown: give it inputs to learn from

        best = max(scored, key=likely)  # the first of equals in rotation order: equals take turns
        self._turn = (self._turn + best[2] + 1) % count
        link, probability = best[0], best[1]
        wanted = self.config.offload_min_on_time_probability
        if probability is None or probability >= wanted:
            return Choice(link, probability)
        if self.config.hedge and len(scored) > 1:
            second = max((item for item in scored if item is not best), key=likely)
            if 1.0 - (1.0 - probability) * (1.0 - likely(second)) >= wanted:
                self.counts.hedged += 1
                return Choice(link, probability, hedge=second[0])
        newest = link.newest_sample_age(now)
        evidence_age = min(now - self._explored_at.get(link, float("-inf")),
                           float("inf") if newest is None else newest)
        if evidence_age >= self.config.estimate_refresh_s:
            # evidence ages: one input now and then shows whether a worker predicted late has recovered
            self._explored_at[link] = now
            self.counts.explored += 1
            return Choice(link, probability)
        self.counts.predicted_late += 1
        return Choice(None, probability, reason=(
            f"predicted_late: the workers' recent round trips put an answer within {budget_s * 1000:g} ms at "
            f"p={probability:.2f}, below offload_min_on_time_probability {wanted:g}"))

    def pick(self) -> Link | None:
        """The link for one input with the configured deadline (see `choose`)."""
        return self.choose(self.config.deadline_ms / 1000.0).link

    @property
    def silent_links_taken_out(self) -> int:
        """How often a link was taken out of the rotation for its silence."""
        return sum(link.silences for link in self._links)

    def link_stats(self) -> list[dict]:
        """Each link's estimate against the configured deadline, for the device's metrics."""
        budget_s = self.config.deadline_ms / 1000.0
        return [{"address": link.address, "worker_id": link.worker_id, "ready": link.ready,
                 **vars(link.stats(budget_s))} for link in self._links]

    def back_off(self, link: Link, now: float) -> None:
        backoff_s = self.config.overload_backoff_ms / 1000.0
        if backoff_s > 0:
            self._backoff_until[link] = now + backoff_s * random.uniform(0.5, 1.5)

    def unavailable_reason(self) -> str:
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

    def close(self) -> None:
        self._refresh_stop.set()
        with self._links_lock:
            self._closed = True
            links = list(self._links)
        for link in links:
            link.close()


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


