"""The gateway of a microcontroller: PAYLOAD frames from a serial line to the workers, LOGITS frames back."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from agilenn.bundle import Bundle
from agilenn.outcomes import ReasonCode
from agilenn.serial_frames import (
    SYNC,
    FrameDecoder,
    FrameType,
    LogitsEncoding,
    bundle_digest,
    encode_frame,
    pack_payload,
    unpack_logits,
)
from device_agent.config import DeviceConfig
from device_agent.gateway import Gateway, open_serial, serial_url

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "tests" / "data" / "tiny-bundle"


class Line:
    """The board's end of a serial line over TCP; the gateway opens tcp:127.0.0.1:PORT."""

    def __init__(self) -> None:
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(1)
        self.spec = f"tcp:127.0.0.1:{self.server.getsockname()[1]}"
        self.connection: socket.socket | None = None
        self.decoder = FrameDecoder()

    def accept(self) -> None:
        self.connection, _ = self.server.accept()

    def send(self, data: bytes) -> None:
        self.connection.sendall(data)

    def frame(self, timeout_s: float = 5.0):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.connection.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                data = self.connection.recv(4096)
            except TimeoutError:
                break
            frames = self.decoder.feed(data)
            if frames:
                return frames[0]
        return None

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
        self.server.close()


def _payload(bundle: Bundle, seed: int = 0) -> tuple[bytes, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, size=(1, *bundle.manifest.input.shape), dtype=np.uint8)
    _, indices = bundle.session("device").run(None, {"image": bundle.prepare(image)})
    return bundle.codec.encode(indices[0]), indices[0]


@pytest.fixture()
def gateway_on_line():
    """(gateway, line, stop): a gateway serving a fresh line; `make(cloud)` builds it."""
    made = []

    def make(cloud: list[str], encoding=LogitsEncoding.F32, forward_timeout_s: float = 2.0):
        line = Line()
        threading.Thread(target=line.accept, daemon=True).start()
        gateway = Gateway(open_serial(line.spec), DeviceConfig(cloud=cloud, reconnect_initial_s=0.05,
                                                               reconnect_max_s=0.2, connect_timeout_s=1.0),
                          encoding, forward_timeout_s)
        stop = threading.Event()
        thread = threading.Thread(target=gateway.serve, args=(stop,), daemon=True)
        thread.start()
        deadline = time.monotonic() + 5
        while line.connection is None and time.monotonic() < deadline:
            time.sleep(0.01)
        made.append((gateway, line, stop, thread))
        return gateway, line

    yield make
    for gateway, line, stop, thread in made:
        stop.set()
        thread.join(5)
        gateway.close()
        line.close()


def test_serial_specs():
    assert serial_url("tcp:10.0.0.2:5555") == "socket://10.0.0.2:5555"
    assert serial_url("/dev/ttyUSB0") == "/dev/ttyUSB0"
    with pytest.raises(ValueError, match="expected tcp:HOST:PORT"):
        serial_url("tcp:nohost")


@pytest.mark.parametrize("encoding", [LogitsEncoding.F32, LogitsEncoding.Q8])
def test_gateway_forwards_a_payload_and_returns_the_remote_logits(worker_server, gateway_on_line, encoding):
    bundle = Bundle(BUNDLE)
    payload, indices = _payload(bundle)
    (expected,) = bundle.session("remote").run(None, {bundle.session("remote").get_inputs()[0].name: indices[None]})
    with worker_server(bundle) as server:
        gateway, line = gateway_on_line([server.address], encoding)
        assert gateway.wait_ready(bundle.bundle_hash, 10.0)
        line.send(encode_frame(FrameType.PAYLOAD, pack_payload(41, bundle_digest(bundle.bundle_hash), payload)))
        kind, body = line.frame()
    request, status, logits, message = unpack_logits(body)
    assert (kind, request, status, message) == (FrameType.LOGITS, 41, 0, "")
    tolerance = 1e-5 if encoding == LogitsEncoding.F32 else float(np.abs(expected).max()) / 127
    np.testing.assert_allclose(logits, expected[0], atol=tolerance)
    assert gateway.stats.answered == 1


def test_noise_on_the_line_is_dropped_and_the_next_payload_served(worker_server, gateway_on_line):
    bundle = Bundle(BUNDLE)
    payload, _ = _payload(bundle, 1)
    digest = bundle_digest(bundle.bundle_hash)
    good = encode_frame(FrameType.PAYLOAD, pack_payload(7, digest, payload))
    bad_crc = bytearray(encode_frame(FrameType.PAYLOAD, pack_payload(5, digest, payload)))
    bad_crc[-1] ^= 0x55
    with worker_server(bundle) as server:
        gateway, line = gateway_on_line([server.address])
        assert gateway.wait_ready(bundle.bundle_hash, 10.0)
        line.send(np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8).tobytes())
        line.send(bytes(bad_crc))
        line.send(SYNC + bytes([FrameType.PAYLOAD]) + (60000).to_bytes(2, "little") + b"x" * 8)  # oversize
        line.send(encode_frame(FrameType.PAYLOAD, b"short"))  # a body that is not a payload
        line.send(encode_frame(FrameType.RESULT, b"not for the gateway"))
        line.send(good[:20])  # truncated: the line goes quiet
        time.sleep(0.2)
        line.send(good)
        _kind, body = line.frame()
    assert unpack_logits(body)[:2] == (7, 0)
    stats = gateway.decoder.stats
    assert stats.bad_crc >= 1 and stats.oversize >= 1 and stats.truncated >= 1
    assert gateway.stats.bad_frames == 2 and gateway.stats.answered == 1


def test_no_worker_is_said_at_once_in_an_error_frame(gateway_on_line):
    bundle = Bundle(BUNDLE)
    payload, _ = _payload(bundle)
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{probe.getsockname()[1]}"
    _gateway, line = gateway_on_line([dead])
    line.send(encode_frame(FrameType.PAYLOAD, pack_payload(3, bundle_digest(bundle.bundle_hash), payload)))
    kind, body = line.frame()
    request, status, logits, message = unpack_logits(body)
    assert (kind, request, logits) == (FrameType.LOGITS, 3, None)
    assert status == 14 and ReasonCode.of(message) in (ReasonCode.CONNECTING, ReasonCode.UNAVAILABLE)


def test_a_bundle_the_workers_do_not_serve_is_refused(worker_server, gateway_on_line):
    bundle = Bundle(BUNDLE)
    payload, _ = _payload(bundle)
    with worker_server(bundle) as server:
        _gateway, line = gateway_on_line([server.address])
        other = "sha256:" + "0" * 64
        line.send(encode_frame(FrameType.PAYLOAD, pack_payload(1, bundle_digest(other), payload)))
        line.frame()  # the first payload may find the link still connecting
        deadline = time.monotonic() + 5
        while True:
            line.send(encode_frame(FrameType.PAYLOAD, pack_payload(2, bundle_digest(other), payload)))
            _, body = line.frame()
            message = unpack_logits(body)[3]
            if message.startswith("bundle_mismatch") or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    assert message.startswith("bundle_mismatch") and other in message


def test_a_worker_killed_mid_stream_leaves_the_gateway_serving(worker_server, gateway_on_line):
    bundle = Bundle(BUNDLE)
    payload, _ = _payload(bundle)
    digest = bundle_digest(bundle.bundle_hash)
    server = worker_server(bundle)
    gateway, line = gateway_on_line([server.address], forward_timeout_s=1.0)
    assert gateway.wait_ready(bundle.bundle_hash, 10.0)
    line.send(encode_frame(FrameType.PAYLOAD, pack_payload(1, digest, payload)))
    assert unpack_logits(line.frame()[1])[1] == 0
    server.stop(grace_s=0)
    answers = []
    for request in range(2, 6):
        line.send(encode_frame(FrameType.PAYLOAD, pack_payload(request, digest, payload)))
        frame = line.frame(timeout_s=3.0)
        answers.append(None if frame is None else unpack_logits(frame[1]))
    # every later payload is refused with the reason, or left to the board's deadline: never answered
    assert all(answer is None or (answer[1] != 0 and answer[2] is None) for answer in answers)
    assert any(answer is not None for answer in answers)
    assert gateway.stats.answered == 1
