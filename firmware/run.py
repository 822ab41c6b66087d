"""Running a built front over inputs: natively on the host, or on an emulated Cortex-M7 under QEMU.

The harness reads raw images back to back and writes one record per input (`agilenn_harness.c`); this
module feeds it and parses the records.
"""

from __future__ import annotations

import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from firmware.build import Build, ToolchainError, require_tool

QEMU_MACHINE = "mps2-an500"  # an FPGA image of ARM's MPS2 board with a Cortex-M7
# Deterministic: one instruction per virtual nanosecond (sleep=off: the clock never follows the host's), so
# runs and instruction counts repeat exactly.
QEMU_ARGS = ["-M", QEMU_MACHINE, "-nographic", "-monitor", "none", "-serial", "none", "-semihosting-config",
             "enable=on,target=native", "-icount", "shift=0,sleep=off"]
INPUT_FILE, OUTPUT_FILE = "inputs.bin", "records.bin"


@dataclass(frozen=True)
class RunResult:
    records: list[Record]
    stack_peak_bytes: int  # 0 where the platform does not paint its stack


@dataclass(frozen=True)
class Record:
    """What the firmware produced for one input."""

    payload: bytes
    local_logits: np.ndarray  # uint8 (classes,)
    layer_instructions: tuple[int, ...]  # empty where the platform does not count

    @property
    def instructions(self) -> int:
        return sum(self.layer_instructions)


def parse_records(data: bytes, count: int, classes: int, layers: int, counted: bool) -> RunResult:
    records, offset = [], 0
    for index in range(count):
        if offset + 4 + classes > len(data):
            raise ToolchainError(f"the firmware wrote {len(records)} records for {count} inputs "
                                 f"(output ends at byte {len(data)})")
        (length,) = struct.unpack_from("<I", data, offset)
        offset += 4
        logits = np.frombuffer(data, np.uint8, classes, offset).copy()
        offset += classes
        payload = data[offset:offset + length]
        offset += length
        instructions: tuple[int, ...] = ()
        if counted:
            instructions = struct.unpack_from(f"<{layers}I", data, offset)
            offset += 4 * layers
        if length == 0:
            raise ToolchainError(f"input {index}: the firmware reports a payload that did not fit its buffer")
        records.append(Record(payload, logits, instructions))
    if offset + 4 > len(data):
        raise ToolchainError("the firmware's output ends before its stack figure")
    (stack_peak,) = struct.unpack_from("<I", data, offset)
    return RunResult(records, stack_peak)


def _flatten(images: np.ndarray, input_bytes: int) -> bytes:
    images = np.ascontiguousarray(images, dtype=np.uint8)
    if images.ndim < 2 or images[0].size != input_bytes:
        raise ValueError(f"inputs must be uint8 images of {input_bytes} bytes each, got shape {images.shape}")
    return images.tobytes()


def run_host(build: Build, images: np.ndarray, classes: int, layers: int, input_bytes: int) -> RunResult:
    result = subprocess.run([str(build.binary)], input=_flatten(images, input_bytes), capture_output=True, check=False)
    if result.returncode not in (0, 1):
        raise ToolchainError(f"{build.binary} exited with {result.returncode}: {result.stderr.decode()[-500:]}")
    return parse_records(result.stdout, len(images), classes, layers, counted=False)


def run_cortex_m7(build: Build, images: np.ndarray, classes: int, layers: int, input_bytes: int,
                  timeout_s: float = 600.0) -> RunResult:
    """Boot the ELF on QEMU's mps2-an500; the harness reads the inputs and writes its records through
    semihosting files in a scratch folder (QEMU runs there)."""
    qemu = require_tool("qemu-system-arm")
    with tempfile.TemporaryDirectory(prefix="agilenn-qemu-") as scratch:
        folder = Path(scratch)
        (folder / INPUT_FILE).write_bytes(_flatten(images, input_bytes))
        try:
            result = subprocess.run([qemu, *QEMU_ARGS, "-kernel", str(build.binary.resolve())], cwd=folder,
                                    capture_output=True, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired:
            raise ToolchainError(f"the emulated Cortex-M7 did not finish {len(images)} inputs in {timeout_s:.0f} s") from None
        if result.returncode not in (0, 1):
            raise ToolchainError(f"the emulated Cortex-M7 exited with {result.returncode}: "
                                 f"{(result.stdout + result.stderr).decode(errors='replace')[-800:]}")
        output = folder / OUTPUT_FILE
        data = output.read_bytes() if output.exists() else b""
    return parse_records(data, len(images), classes, layers, counted=True)


def run_build(build: Build, images: np.ndarray, classes: int, layers: int) -> RunResult:
    input_bytes = int(np.prod(images.shape[1:]))
    if build.target == "host":
        return run_host(build, images, classes, layers, input_bytes)
    return run_cortex_m7(build, images, classes, layers, input_bytes)
