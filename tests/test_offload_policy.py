"""The offload policy follows the live link: each link's round trips predict whether an answer comes
within the deadline; an input goes to the likeliest worker, or is answered locally at once when none is
likely (predicted_late); a new stream is warmed before it counts as ready; hedging sends to two."""

import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest

from cloud_worker.config import WorkerConfig
from device_agent import LOCAL_FALLBACK, MIXED, DeviceAgent, DeviceConfig
from device_agent.estimate import LinkEstimate
from device_agent.pool import LinkPool


@pytest.fixture
def images(tiny_bundle):
    return np.random.default_rng(7).integers(0, 256, (30, *tiny_bundle.manifest.input.shape)).astype(np.uint8)


def test_the_estimate_is_the_share_of_recent_round_trips_within_the_deadline():
    estimate = LinkEstimate(window=8, max_age_s=10.0)
    for request_id, rtt in enumerate([0.010, 0.020, 0.030, 0.200], start=1):
        estimate.sent(request_id, 100.0, 25)
        estimate.answered(request_id, 100.0 + rtt)
    assert estimate.on_time_probability(0.050, now=100.3) == 0.75
    assert estimate.on_time_probability(0.500, now=100.3) == 1.0
    stats = estimate.stats(0.050, now=100.3)
    assert stats.samples == 4 and stats.owed == 0
    assert stats.rtt_p50_ms == pytest.approx(25.0) and stats.rtt_p90_ms > 100
    # round trips older than max_age_s no longer count: too little evidence again
    assert estimate.on_time_probability(0.050, now=111.0) is None


def test_an_answer_owed_past_the_deadline_makes_the_next_one_late_until_it_comes():
    estimate = LinkEstimate()
    for request_id in (1, 2, 3):
        estimate.sent(request_id, 10.0, 20)
        estimate.answered(request_id, 10.001)
    estimate.sent(4, 10.1, 20)
    assert estimate.on_time_probability(0.050, now=10.12) == 1.0  # owed, but not yet late
    assert estimate.on_time_probability(0.050, now=10.2) == 0.0  # a new request would queue behind it
    estimate.answered(4, 10.3)
    assert estimate.on_time_probability(0.050, now=10.3) == 0.75  # the late answer is one late sample


def test_upload_rate_is_payload_bytes_over_the_span_they_were_sent_in():
    estimate = LinkEstimate()
    for request_id, at in enumerate([0.0, 0.5, 1.0], start=1):
        estimate.sent(request_id, at, 100)
    assert estimate.stats(0.05, now=1.0).upload_bytes_per_s == pytest.approx(200.0)


class FakeLink:
    def __init__(self, name: str, probability: float | None, evidence_age_s: float = 0.0) -> None:
        self.address = name
        self.ready = True
        self.reason = ""
        self.probability = probability
        self.evidence_age_s = evidence_age_s

    def check_silence(self, silence_s: float) -> bool:
        return False

    def on_time_probability(self, budget_s: float, now: float):
        return self.probability

    def newest_sample_age(self, now: float):
        return self.evidence_age_s


def pool_with(links, **config) -> LinkPool:
    pool = LinkPool("sha256:x", DeviceConfig(**config))
    pool._links = links
    return pool


def test_inputs_go_to_the_likeliest_link_and_equals_take_turns():
    fast, also_fast, slow = FakeLink("a", 1.0), FakeLink("b", 1.0), FakeLink("c", 0.9)
    pool = pool_with([fast, also_fast, slow])
    assert [pool.choose(0.05).link.address for _ in range(4)] == ["a", "b", "a", "b"]
    unknown = FakeLink("d", None)  # a new link is given inputs to learn from
    pool._links = [slow, unknown]
    assert pool.choose(0.05).link is unknown


def test_an_input_predicted_late_everywhere_is_answered_locally_and_hedging_sends_it_to_two():
    first, second = FakeLink("a", 0.4), FakeLink("b", 0.35)
    pool = pool_with([first, second])
    choice = pool.choose(0.05)
    assert choice.link is None and choice.reason.startswith("predicted_late")
    assert "p=0.40" in choice.reason and pool.counts.predicted_late == 1
    hedging = pool_with([first, second], hedge=True)
    choice = hedging.choose(0.05)  # together: 1 - 0.6 * 0.65 = 0.61 >= 0.5
    assert choice.link is first and choice.hedge is second and hedging.counts.hedged == 1
    hopeless = pool_with([FakeLink("a", 0.1), FakeLink("b", 0.1)], hedge=True)
    assert hopeless.choose(0.05).link is None


def test_a_link_predicted_late_gets_an_input_once_its_evidence_is_old():
    stale = FakeLink("a", 0.0, evidence_age_s=5.0)
    pool = pool_with([stale], estimate_refresh_s=0.5)
    assert pool.choose(0.05).link is stale and pool.counts.explored == 1
    assert pool.choose(0.05).link is None  # explored a moment ago: not again yet
    assert pool_with([stale], offload_min_on_time_probability=0.0).choose(0.05).link is stale


def requests_total(server) -> float:
    text = server.server.metrics.exposition().decode()
    pattern = r'^agilenn_requests_total\{[^}]*rpc="InferStream"[^}]*\} (\S+)$'
    return sum(float(v) for v in re.findall(pattern, text, re.MULTILINE))


def test_a_link_counts_as_ready_once_the_worker_has_computed_a_warm_up_request(tiny_bundle, images,
                                                                                worker_server):
    with worker_server(tiny_bundle, WorkerConfig(max_batch_size=64, max_batch_wait_ms=300)) as slow:
        started = time.monotonic()
        with DeviceAgent(tiny_bundle, DeviceConfig(cloud=[slow.address], connect_timeout_s=10)) as agent:
            assert agent.wait_ready(30)
            waited_s = time.monotonic() - started
            assert requests_total(slow) == 1  # the warm-up, computed (held 300 ms for a batch)
            (link,) = agent._links
            assert link.stats(0.05).samples == 0  # its round trip is not the link's latency
    assert waited_s >= 0.3


def test_a_slow_worker_loses_its_inputs_to_the_one_predicted_on_time(tiny_bundle, images, worker_server):
    with worker_server(tiny_bundle, worker_id="fast") as fast, \
            worker_server(tiny_bundle, WorkerConfig(max_batch_size=64, max_batch_wait_ms=3000),
                          worker_id="slow") as slow:
        # the slow worker holds every request 3 s: its first answer comes after the run
        config = DeviceConfig(cloud=[fast.address, slow.address], deadline_ms=500, connect_timeout_s=10)
        with DeviceAgent(tiny_bundle, config) as agent:
            assert agent.wait_ready(30, workers=2)
            results = [agent.infer(image) for image in images[:30]]
    late = [r for r in results if r.source == LOCAL_FALLBACK]
    assert len(late) <= 2 and all(r.reason.startswith("deadline") for r in late)
    assert {r.worker_id for r in results[-20:]} == {"fast"} and all(r.source == MIXED for r in results[-20:])


def test_a_hedged_input_takes_the_first_answer(tiny_bundle, images, worker_server):
    with worker_server(tiny_bundle, worker_id="w0") as one, worker_server(tiny_bundle, worker_id="w1") as two:
        config = DeviceConfig(cloud=[one.address, two.address], deadline_ms=5000, hedge=True,
                              offload_min_on_time_probability=0.6)
        with DeviceAgent(tiny_bundle, config) as agent:
            assert agent.wait_ready(30, workers=2)
            for link in agent._links:  # each predicted on time with 0.5: together 0.75
                link.on_time_probability = lambda budget_s, now: 0.5
            results = [agent.infer(image) for image in images[:6]]
            counts = agent.policy_counts
            deadline = time.monotonic() + 10  # the slower copy of each pair is still being answered
            while requests_total(one) + requests_total(two) < 2 + 2 * 6 and time.monotonic() < deadline:
                time.sleep(0.01)
            served = requests_total(one) + requests_total(two)
    assert all(r.source == MIXED and r.hedged and r.on_time_probability == 0.5 for r in results)
    assert counts.hedged == 6
    assert served == 2 + 2 * 6  # two warm-ups, then each input twice


@pytest.mark.skipif(os.geteuid() != 0, reason="lowering a niceness needs root")
def test_a_worker_process_started_niced_serves_at_normal_priority():
    code = ("import os; os.nice(15); from cloud_worker.service import serve_at_normal_priority; "
            "print(serve_at_normal_priority())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "0"


def test_with_no_worker_every_input_is_answered_locally_and_no_prediction_is_made(tiny_bundle, images):
    with DeviceAgent(tiny_bundle, DeviceConfig()) as agent:
        results = [agent.infer(image) for image in images[:3]]
    assert all(r.source == LOCAL_FALLBACK and r.reason.startswith("no_cloud") for r in results)
    assert np.all([r.on_time_probability is None for r in results])


def test_a_stream_ended_before_the_warm_up_answer_is_a_closed_session_not_a_dead_link():
    import queue

    from agilenn.v1 import inference_pb2
    from device_agent.link import Link

    class Ended:  # a draining worker ends the stream without answering
        def __iter__(self):
            return self

        def __next__(self):
            raise StopIteration

        def cancel(self):
            pass

    link = Link("127.0.0.1:1", "sha256:x", connect_timeout_s=5, reconnect_initial_s=0.05, reconnect_max_s=0.1,
                max_message_bytes=1024, clock=time.perf_counter,
                warmup=lambda request_id: inference_pb2.InferRequest(request_id=request_id))
    outbox = queue.SimpleQueue()
    assert link._warm(Ended(), outbox) is False
    assert outbox.get_nowait().request_id == 2**64 - 1


def test_a_hedged_input_waits_past_a_refusal_for_the_other_answer():
    import threading

    from agilenn.v1 import inference_pb2
    from device_agent.link import Slot

    class Forgetful:
        def __init__(self):
            self.forgotten = []

        def forget(self, request_id):
            self.forgotten.append(request_id)

    refusing, answering = Forgetful(), Forgetful()
    event = threading.Event()
    refused, served = Slot(event), Slot(event)
    refused.response = inference_pb2.InferResponse(request_id=7)
    refused.response.status.code = 8  # RESOURCE_EXHAUSTED: the worker is overloaded
    event.set()

    def answer_later():
        time.sleep(0.05)
        served.response = inference_pb2.InferResponse(request_id=7)
        event.set()

    threading.Thread(target=answer_later).start()
    link, slot = DeviceAgent._first_answer({refusing: refused, answering: served}, 7, 5.0, event)
    assert link is answering and slot is served and refusing.forgotten == [7]
