"""The offload app on the emulated Cortex-M7: its deadline, and noise at both of its lines; then the whole loop
through the gateway and Ray workers on the tiny test bundle (`agilenn demo --firmware`)."""

from __future__ import annotations

import shutil
import socket
import struct
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx", reason="the firmware generator reads ONNX files: needs the firmware extra")

from agilenn.bundle import Bundle
from agilenn.datasets import load_dataset
from agilenn.serial_frames import (
    SYNC,
    FrameDecoder,
    FrameType,
    LogitsEncoding,
    Reason,
    Source,
    encode_frame,
    pack_logits,
    pack_logits_error,
    unpack_payload,
)
from firmware.board import EmulatedBoard
from firmware.build import build_offload_app
from firmware.codegen import generate
from firmware.integer_front import lower_front
from firmware.reference import run_reference

pytestmark = [pytest.mark.firmware,
              pytest.mark.skipif(any(shutil.which(t) is None for t in ("arm-none-eabi-gcc", "qemu-system-arm")),
                                 reason="needs gcc-arm-none-eabi and qemu-system-arm (make firmware-tools)")]

ROOT = Path(__file__).resolve().parents[1]
DEADLINE_MS = 200  # the board's own deadline; wide, so that a loaded machine's answers still come in time


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    bundle = Bundle(ROOT / "bundles" / "fashion-mnist")
    folder = tmp_path_factory.mktemp("offload")
    generate(bundle, folder / "src", app="offload", deadline_ms=DEADLINE_MS)
    return bundle, build_offload_app(folder / "src", folder).binary


class Radio:
    """The test as the board's gateway: reads PAYLOAD frames, answers as it is told."""

    def __init__(self, connection: socket.socket) -> None:
        self.connection = connection
        self.decoder = FrameDecoder()

    def payload(self, timeout_s: float = 10.0):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.connection.settimeout(max(deadline - time.monotonic(), 0.01))
            for kind, body in self.decoder.feed(self.connection.recv(65536)):
                if kind == FrameType.PAYLOAD:
                    return unpack_payload(body)
        raise AssertionError("no PAYLOAD frame from the board")

    def send(self, data: bytes) -> None:
        self.connection.sendall(data)


def _run(app, images, answer, prelude: bytes = b""):
    """Feed `images` (with `prelude` bytes first on the feeder line); `answer(radio, request_id, index)` plays
    the gateway. Returns the RESULTs."""
    bundle, elf = app
    results = []
    with EmulatedBoard(elf, 784) as board:
        radio = Radio(board.connect_radio())
        if prelude:
            board.feeder.send_raw(prelude)
            time.sleep(1.0)  # the line goes quiet: the board drops an unfinished frame after 20 ms of its own time
        for index, image in enumerate(images):
            board.feeder.send_input(index, image)
            request_id, bundle_hash, _payload = radio.payload()
            assert bundle_hash == bundle.bundle_hash
            answer(radio, request_id, index)
            result = board.feeder.read_result(10.0)
            assert result is not None and result.index == index
            results.append(result)
        radio.connection.close()
    return results


def _images(count: int) -> np.ndarray:
    return load_dataset("fashion-mnist").test.images[:count]


def test_the_board_mixes_the_answer_and_marks_it(app):
    favoured = 3
    remote = np.full(10, -50.0, dtype=np.float32)
    remote[favoured] = 50.0
    results = _run(app, _images(2), lambda radio, rid, i: radio.send(encode_frame(FrameType.LOGITS, pack_logits(
        rid, remote, LogitsEncoding.F32 if i == 0 else LogitsEncoding.Q8))))
    bundle, _ = app
    reference = run_reference(lower_front(bundle), bundle, _images(2))
    for result, logits, payload in zip(results, reference.local_logits, reference.payloads):
        assert (result.source, result.reason, result.label) == (Source.MIXED, Reason.NONE, favoured)
        assert result.local_label == int(np.argmax(logits))
        assert result.payload_bytes == len(payload)
        assert result.instructions > 100_000


def test_without_an_answer_the_board_falls_back_by_its_own_deadline(app):
    (result,) = _run(app, _images(1), lambda radio, rid, i: None)
    assert (result.source, result.reason) == (Source.LOCAL_FALLBACK, Reason.DEADLINE)
    assert result.label == result.local_label
    assert result.waited_us >= (DEADLINE_MS - 1) * 1000  # the deadline counts whole milliseconds of SysTick


def test_the_clouds_error_is_the_boards_reason(app):
    (result,) = _run(app, _images(1), lambda radio, rid, i: radio.send(encode_frame(
        FrameType.LOGITS, pack_logits_error(rid, 8, "overloaded: the worker's queue is full"))))
    assert (result.source, result.reason, result.status) == (Source.LOCAL_FALLBACK, Reason.CLOUD, 8)
    assert result.message == "overloaded: the worker's queue is full"


def test_an_answer_the_board_cannot_use_is_refused(app):
    (result,) = _run(app, _images(1), lambda radio, rid, i: radio.send(encode_frame(
        FrameType.LOGITS, pack_logits(rid, np.zeros(7, dtype=np.float32)))))
    assert (result.source, result.reason) == (Source.LOCAL_FALLBACK, Reason.BAD_ANSWER)


def test_noise_on_the_radio_line_is_dropped_and_the_answer_still_served(app):
    remote = np.zeros(10, dtype=np.float32)
    remote[6] = 80.0

    def noisy(radio, rid, index):
        bad_crc = bytearray(encode_frame(FrameType.LOGITS, pack_logits(rid, remote)))
        bad_crc[-2] ^= 0xFF
        radio.send(np.random.default_rng(index).integers(0, 256, 300, dtype=np.uint8).tobytes())
        radio.send(bytes(bad_crc))
        radio.send(SYNC + bytes([FrameType.LOGITS]) + struct.pack("<H", 60000) + b"z" * 10)  # oversize
        radio.send(encode_frame(FrameType.LOGITS, pack_logits(rid + 1000, -remote)))  # another request's answer
        radio.send(encode_frame(FrameType.LOGITS, pack_logits(rid, remote)))

    (result,) = _run(app, _images(1), noisy)
    assert (result.source, result.label) == (Source.MIXED, 6)
    radio_bad_crc, radio_oversize = result.dropped[3], result.dropped[4]
    assert radio_bad_crc >= 1 and radio_oversize >= 1


def test_noise_on_the_feeder_line_is_dropped_and_the_next_input_served(app):
    good = encode_frame(FrameType.INPUT, struct.pack("<I", 99) + _images(1)[0].tobytes())
    bad_crc = bytearray(good)
    bad_crc[100] ^= 0x01
    prelude = (np.random.default_rng(5).integers(0, 256, 400, dtype=np.uint8).tobytes() + bytes(bad_crc)
               + SYNC + bytes([FrameType.INPUT]) + struct.pack("<H", 65000) + b"q" * 4
               + good[:300])  # truncated: the feeder stops mid-frame
    remote = np.zeros(10, dtype=np.float32)
    results = _run(app, _images(1), lambda radio, rid, i: radio.send(
        encode_frame(FrameType.LOGITS, pack_logits(rid, remote))), prelude=prelude)
    assert results[0].source == Source.MIXED
    feeder_bad_crc, feeder_oversize, feeder_truncated = results[0].dropped[:3]
    assert feeder_bad_crc >= 1 and feeder_oversize >= 1 and feeder_truncated >= 1


@pytest.fixture(scope="module")
def tiny_int8_bundle(tmp_path_factory):
    pytest.importorskip("torch", reason="trains a bundle: needs the train extra")
    from partitioner.testing import make_tiny_bundle

    return make_tiny_bundle(tmp_path_factory.mktemp("loop-tiny") / "bundle",
                            export={"verify_samples": 64, "int8": True, "int8_max_accuracy_drop": 0.05})


@pytest.mark.parametrize("kill_cloud_after", [None, 6])
def test_the_whole_loop_through_the_gateway_and_ray_workers(local_ray, tiny_int8_bundle, kill_cloud_after):
    from commands.demo_firmware import run_firmware_demo
    from partitioner.testing import synthetic_dataset

    test = synthetic_dataset().test
    images, labels = test.images[:16], test.labels[:16]
    report = run_firmware_demo(tiny_int8_bundle.folder, images, labels, workers=1, deadline_ms=1000,
                               kill_cloud_after=kill_cloud_after, progress=False)
    assert report["answered"] == report["total"] == 16
    assert report["mixed_mismatches_vs_evaluate"] == 0 and report["local_mismatches_vs_evaluate"] == 0
    assert report["payloads_equal_reference"] == 16
    if kill_cloud_after is None:
        assert report["sources"] == {"mixed": 16}
        assert report["accuracy"] == report["accuracy_evaluate_integer"]
    else:
        assert report["sources"] == {"mixed": kill_cloud_after, "local_fallback": 16 - kill_cloud_after}
        assert sum(report["fallback_reasons"].values()) == 16 - kill_cloud_after
