"""The offload app on an emulated board: QEMU's mps2-an500 with its two UARTs on TCP ports of this machine.

UART0 is the feeder's line (INPUT frames in, RESULT frames out: the test harness in place of a camera),
UART1 the radio line to the gateway (PAYLOAD out, LOGITS in). QEMU waits for a client on each line before
it boots, the feeder's first: connect the feeder, then start the gateway on `radio_url`.
"""

from __future__ import annotations

import socket
import struct
import subprocess
import time
from pathlib import Path
from typing import Self

import numpy as np

from agilenn.serial_frames import FrameDecoder, FrameType, Result, encode_frame
from firmware.build import ToolchainError, require_tool

GAP_S = 0.05  # an unfinished frame this long after its last byte is dropped


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _connect(port: int, timeout_s: float) -> socket.socket:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=1.0)
        except OSError:
            if time.monotonic() > deadline:
                raise ToolchainError(f"QEMU's serial line on 127.0.0.1:{port} did not open in {timeout_s:g} s") from None
            time.sleep(0.02)


class Feeder:
    """The host's end of UART0: sends INPUT frames, reads RESULT frames."""

    def __init__(self, connection: socket.socket, input_bytes: int) -> None:
        self.connection = connection
        self.input_bytes = input_bytes
        self.decoder = FrameDecoder()
        self.bytes_sent = 0
        self.bytes_received = 0

    def send_raw(self, data: bytes) -> None:
        self.connection.sendall(data)
        self.bytes_sent += len(data)

    def send_input(self, index: int, image: np.ndarray) -> None:
        data = np.ascontiguousarray(image, dtype=np.uint8).tobytes()
        if len(data) != self.input_bytes:
            raise ValueError(f"an input holds {self.input_bytes} bytes, got {len(data)}")
        self.send_raw(encode_frame(FrameType.INPUT, struct.pack("<I", index) + data))

    def read_result(self, timeout_s: float) -> Result | None:
        """The next RESULT frame, or None when none came within `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.connection.settimeout(min(left, GAP_S))
            try:
                data = self.connection.recv(65536)
            except TimeoutError:
                if self.decoder.pending:  # the line went quiet mid-frame
                    self.decoder.expire()
                continue
            if not data:
                raise ToolchainError("the emulated board closed its feeder line")
            self.bytes_received += len(data)
            for kind, body in self.decoder.feed(data):
                if kind == FrameType.RESULT:
                    return Result.unpack(body)


class EmulatedBoard:
    """`with EmulatedBoard(elf, input_bytes) as board:` QEMU running the offload app; `board.feeder` is the
    connected feeder line and `board.radio_url` the line a gateway opens (pyserial's socket:// URL)."""

    def __init__(self, elf: str | Path, input_bytes: int, boot_timeout_s: float = 20.0) -> None:
        self.elf = Path(elf).resolve()
        self.input_bytes = input_bytes
        self.boot_timeout_s = boot_timeout_s
        self.feeder_port, self.radio_port = _free_port(), _free_port()
        self.process: subprocess.Popen | None = None
        self.feeder: Feeder | None = None

    def open_radio(self, opener):
        """`opener(url)` (the gateway's serial opener) retried until QEMU opens the radio line."""
        deadline = time.monotonic() + self.boot_timeout_s
        while True:
            try:
                return opener(self.radio_url)
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def connect_radio(self) -> socket.socket:
        """The radio line as a plain socket (for a test that plays the gateway), once QEMU opens it."""
        return _connect(self.radio_port, self.boot_timeout_s)

    @property
    def radio_url(self) -> str:
        return f"socket://127.0.0.1:{self.radio_port}"

    def __enter__(self) -> Self:
        qemu = require_tool("qemu-system-arm")
        lines = [arg for port in (self.feeder_port, self.radio_port)
                 for arg in ("-serial", f"tcp:127.0.0.1:{port},server=on,wait=on,nodelay=on")]
        self.process = subprocess.Popen(
            [qemu, "-M", "mps2-an500", "-display", "none", "-monitor", "none", *lines,
             "-semihosting-config", "enable=on,target=native", "-icount", "shift=0,sleep=off",
             "-kernel", str(self.elf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.feeder = Feeder(_connect(self.feeder_port, self.boot_timeout_s), self.input_bytes)
        return self

    def __exit__(self, *exc) -> None:
        if self.feeder is not None:
            self.feeder.connection.close()
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
