"""A worker whose machine goes silent (power or network lost: no connection reset ever comes) costs one
deadline: the device then offloads to the worker predicted on time, and the silent link leaves the rotation
within silence_s; a worker that is only slow stays linked, its late answers predicted."""

import time

import numpy as np
from forwarding import TcpForwarder

from device_agent import LOCAL_FALLBACK, MIXED, DeviceAgent, DeviceConfig


def test_a_silent_worker_leaves_the_rotation_within_silence_s_and_every_input_is_answered(tiny_bundle,
                                                                                         worker_server):
    image = np.zeros(tiny_bundle.manifest.input.shape, dtype=np.uint8)
    with worker_server(tiny_bundle, worker_id="worker-0") as far, \
            worker_server(tiny_bundle, worker_id="worker-1") as near:
        proxy = TcpForwarder(far.port)
        try:
            for server in (far, near):
                server.server.servicer._endpoints = lambda: [proxy.address, near.address]
            config = DeviceConfig(cloud=[near.address], deadline_ms=300, connect_timeout_s=0.5, silence_s=0.5,
                                  reconnect_initial_s=0.05, reconnect_max_s=0.2)
            with DeviceAgent(tiny_bundle, config) as agent:
                assert agent.wait_ready(30, workers=2)
                assert {agent.infer(image).worker_id for _ in range(4)} == {"worker-0", "worker-1"}
                far_link = next(link for link in agent._links if link.address == proxy.address)
                proxy.silent.set()
                results = [agent.infer(image) for _ in range(40)]
                silenced_at = time.monotonic()
                out = wait_for(lambda: far_link.reason.startswith(("checking", "unavailable", "stream_broken")), 10)
                out_after_s = time.monotonic() - silenced_at
        finally:
            proxy.close()
    # one input waited out its deadline on the silent worker; the next went to the one predicted on time
    assert len(results) == 40
    fallbacks = [r for r in results if r.source == LOCAL_FALLBACK]
    assert len(fallbacks) == 1 and fallbacks[0].reason.startswith("deadline")
    assert {r.worker_id for r in results if r.source == MIXED} == {"worker-1"}
    # and, its silence lasting past silence_s, the link was taken out and probed (the 40 inputs took longer)
    assert out and out_after_s < 10 and far_link.silences >= 1


def wait_for(condition, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_a_slow_worker_stays_linked_and_its_late_answers_are_predicted(tiny_bundle, worker_server):
    image = np.zeros(tiny_bundle.manifest.input.shape, dtype=np.uint8)
    with worker_server(tiny_bundle) as server:
        # a deadline no answer can meet: every answer comes late, and keeps coming
        config = DeviceConfig(cloud=[server.address], deadline_ms=0.001, estimate_refresh_s=3600)
        with DeviceAgent(tiny_bundle, config) as agent:
            assert agent.wait_ready(30)
            (link,) = agent._links
            first = []
            while link.stats(1e-6).samples < 3 and len(first) < 100:  # until three answers have come, late
                first.append(agent.infer(image))
                time.sleep(0.01)
            # the late answers came: they say the worker answers in more than the deadline
            assert wait_for(lambda: link.stats(1e-6).owed == 0, 10)
            later = [agent.infer(image) for _ in range(5)]
            assert link.ready and link.connects == 1  # never probed, never reconnected
    # the first waits out its deadline; while the worker owes a late answer, inputs are predicted late
    assert first[0].reason.startswith("deadline")
    assert {r.reason_code for r in first} <= {"deadline", "predicted_late"}
    # predicted late from then on: answered locally at once, not after waiting out the deadline
    assert all(r.reason.startswith("predicted_late") and r.on_time_probability == 0.0 for r in later), \
        [(r.reason, r.on_time_probability) for r in later]
    assert all(r.timings_ms["cloud_rtt"] is None for r in later)


def test_a_late_answer_is_latency_evidence_and_only_silence_takes_a_link_out():
    """Under overload many answers miss their deadline while the worker keeps answering others: it is
    there, and probing it (or cancelling its stream) would only add to its load."""
    from device_agent.link import Link

    now = [10.0]
    link = Link("127.0.0.1:1", "sha256:x", connect_timeout_s=0.1, reconnect_initial_s=0.05, reconnect_max_s=0.1,
                max_message_bytes=1024, clock=lambda: now[0])
    link.ready = True
    link.estimate.sent(1, 9.0, 20)
    link.estimate.answered(1, 9.8)  # late for a 50 ms deadline, but an answer
    link.estimate.sent(2, 9.9, 20)
    now[0] = 10.5
    assert not link.check_silence(silence_s=1.0)  # request 2 has waited 0.6 s: slow, not silent
    # still in the rotation; but a request sent now would queue behind the overdue one: predicted late
    assert link.ready and link.on_time_probability(0.05, now[0]) == 0.0
    assert link.on_time_probability(1.0, now[0]) is None  # within a 1 s deadline: too little evidence yet
    now[0] = 11.0  # request 2 has now waited 1.1 s, and nothing was heard since it left
    assert link.check_silence(silence_s=1.0)
    assert not link.ready and link.reason.startswith("checking")
