"""A worker whose machine goes silent (power or network lost: no connection reset ever comes) is noticed at
the first missed deadline, and the device offloads to the other workers instead of waiting out a deadline
on every other input; a worker that is only slow stays linked."""

import socket
import threading
import time

import numpy as np

from device_agent import LOCAL_FALLBACK, MIXED, DeviceAgent, DeviceConfig


class SilenceableProxy:
    """TCP forwarding to a worker that, once silenced, swallows every byte both ways and keeps every
    connection open, as a peer that vanished from the network looks to TCP."""

    def __init__(self, target_port: int) -> None:
        self.silent = threading.Event()
        self._target = ("127.0.0.1", target_port)
        self._server = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self._server.getsockname()[1]}"
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self._target)
            self._sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                if not self.silent.is_set():
                    sink.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        self._server.close()
        for sock in self._sockets:
            sock.close()


def test_a_silent_worker_is_dropped_from_the_rotation_at_its_first_missed_deadline(tiny_bundle, worker_server):
    image = np.zeros(tiny_bundle.manifest.input.shape, dtype=np.uint8)
    with worker_server(tiny_bundle, worker_id="worker-0") as far, \
            worker_server(tiny_bundle, worker_id="worker-1") as near:
        proxy = SilenceableProxy(far.port)
        try:
            for server in (far, near):
                server.server.servicer._endpoints = lambda: [proxy.address, near.address]
            config = DeviceConfig(cloud=[near.address], deadline_ms=300, connect_timeout_s=0.5,
                                  reconnect_initial_s=0.05, reconnect_max_s=0.2)
            with DeviceAgent(tiny_bundle, config) as agent:
                assert agent.wait_ready(30, workers=2)
                assert {agent.infer(image).worker_id for _ in range(4)} == {"worker-0", "worker-1"}
                proxy.silent.set()
                results = [agent.infer(image) for _ in range(40)]
        finally:
            proxy.close()
    # one input waited out its deadline on the silent worker; after that only the other one was used
    fallbacks = [r for r in results if r.source == LOCAL_FALLBACK]
    assert len(fallbacks) == 1 and fallbacks[0].reason.startswith("deadline")
    assert {r.worker_id for r in results if r.source == MIXED} == {"worker-1"}


def test_a_slow_worker_that_answers_the_check_stays_linked(tiny_bundle, worker_server):
    image = np.zeros(tiny_bundle.manifest.input.shape, dtype=np.uint8)
    with worker_server(tiny_bundle) as server:
        # a deadline no answer can meet: every input misses it, and every check finds the worker there
        config = DeviceConfig(cloud=[server.address], deadline_ms=0.001, connect_timeout_s=5)
        with DeviceAgent(tiny_bundle, config) as agent:
            assert agent.wait_ready(30)
            (link,) = agent._links
            assert agent.infer(image).reason.startswith("deadline")
            deadline = time.monotonic() + 10
            while not link.ready and time.monotonic() < deadline:
                time.sleep(0.01)
            assert link.ready and link.connects == 1  # back in the rotation on the same stream


def test_a_worker_that_answered_since_the_late_request_left_is_not_probed():
    """Under overload many answers miss their deadline while the worker keeps answering others: it is
    there, and probing it (or cancelling its stream) would only add to its load."""
    from device_agent.link import Link

    link = Link("127.0.0.1:1", "sha256:x", connect_timeout_s=0.1, reconnect_initial_s=0.05, reconnect_max_s=0.1,
                max_message_bytes=1024, clock=time.perf_counter)
    link.ready = True
    link.last_heard_at = 10.0
    link.check_alive(sent_at=9.5)  # something came back after this request left
    assert link.ready and not link.reason.startswith("checking")
    link.check_alive(sent_at=10.5)  # nothing since it left: ask the worker
    assert not link.ready and link.reason.startswith("checking")
