"""`agilenn demo --firmware`: a microcontroller in the loop.

The bundle's front, generated as C with the offload app, boots on QEMU's mps2-an500 (a Cortex-M7). A feeder
sends it the test inputs on UART0 (in place of a camera); it runs the front, sends the payload on UART1 to
`agilenn device gateway`, which forwards it to local Ray workers and writes their logits back; the board
mixes them, or answers locally when its own deadline passes, and reports each answer on UART0. The answers
are checked against the offline evaluation of the integer front on the same inputs.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

from agilenn.outcomes import ReasonCode
from agilenn.serial_frames import LogitsEncoding, Reason, Source
from commands.demo import local_cloud

SOURCES = {Source.MIXED: "mixed", Source.LOCAL_FALLBACK: "local_fallback"}


def reason_text(result, deadline_ms: int) -> str | None:
    """The board's reason, in the words the Python device agent uses."""
    if result.reason == Reason.NONE:
        return None
    if result.reason == Reason.DEADLINE:
        return f"deadline: no answer within {deadline_ms:g} ms"
    if result.reason == Reason.CLOUD:
        return result.message or "unavailable"
    return "worker_error: an answer the board could not use"


def run_firmware_demo(bundle_dir: str | Path, images: np.ndarray, labels: np.ndarray, workers: int = 2,
                      deadline_ms: int = 50, kill_cloud_after: int | None = None,
                      encoding: LogitsEncoding = LogitsEncoding.F32, progress: bool = True,
                      ray_init_kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
    from tqdm import tqdm

    from agilenn.bundle import Bundle
    from cloud_worker.config import ServeConfig
    from device_agent.config import DeviceConfig
    from device_agent.gateway import Gateway, open_serial
    from firmware.board import EmulatedBoard
    from firmware.build import build_offload_app
    from firmware.codegen import generate
    from firmware.evaluation import integer_predictions
    from firmware.integer_front import lower_front
    from firmware.reference import run_reference

    t0 = time.perf_counter()
    bundle = Bundle(bundle_dir)
    input_bytes = int(np.prod(bundle.manifest.input.shape))
    scratch = Path(tempfile.mkdtemp(prefix="agilenn-demo-firmware-"))
    record = generate(bundle, scratch / "src", app="offload", deadline_ms=deadline_ms)
    elf = build_offload_app(scratch / "src", scratch).binary
    results, seconds = [], []
    with ExitStack() as stack:  # on the way out: the gateway, the board, then the cloud
        service = stack.enter_context(local_cloud(bundle_dir, ServeConfig(workers=workers, port=0), ray_init_kwargs))
        endpoints = service.start()
        board = stack.enter_context(EmulatedBoard(elf, input_bytes))
        codec = "q8-v1" if encoding == LogitsEncoding.Q8 else "raw-f32le"
        gateway = Gateway(board.open_radio(open_serial), DeviceConfig(cloud=endpoints, logits_codec=codec), encoding)
        stack.callback(gateway.close)
        gateway.wait_ready(bundle.bundle_hash, 30.0, workers=len(endpoints))
        stop = threading.Event()
        serving = threading.Thread(target=gateway.serve, args=(stop,), name="gateway", daemon=True)
        serving.start()
        startup_s = time.perf_counter() - t0
        loop_start = time.perf_counter()
        try:
            with tqdm(total=len(images), unit="input", disable=not progress, mininterval=0.25) as bar:
                for index, image in enumerate(images):
                    if index == kill_cloud_after:
                        service.stop()  # the workers go; local_cloud's own stop on the way out is a no-op
                    sent = time.perf_counter()
                    board.feeder.send_input(index, image)
                    result = board.feeder.read_result(timeout_s=10.0 + deadline_ms / 1000.0)
                    seconds.append(time.perf_counter() - sent)
                    if result is None or result.index != index:
                        raise RuntimeError(f"the board gave no answer for input {index}")
                    results.append(result)
                    bar.update()
        finally:
            stop.set()  # before the board goes: the gateway's line closes with it
            serving.join(5.0)
        loop_s = time.perf_counter() - loop_start
        feeder_bytes = (board.feeder.bytes_sent, board.feeder.bytes_received)

    front = lower_front(bundle)
    offline = run_reference(front, bundle, images)
    offline_local, offline_mixed = integer_predictions(bundle, front, offline)
    offline_mixed, offline_local = offline_mixed.argmax(1), offline_local.argmax(1)
    predicted = np.array([r.label for r in results])
    local_predicted = np.array([r.local_label for r in results])
    mixed = np.array([r.source == Source.MIXED for r in results])
    count = max(len(results), 1)
    stats = gateway.stats
    return {
        "bundle": str(bundle_dir),
        "bundle_hash": bundle.bundle_hash,
        "board": "qemu-system-arm -M mps2-an500 (Cortex-M7), -icount shift=0",
        "workers": workers,
        "deadline_ms": deadline_ms,
        "logits_encoding": encoding.name.lower(),
        "kill_cloud_after": kill_cloud_after,
        "total": len(images),
        "answered": len(results),
        "accuracy": float((predicted == labels).mean()),
        "accuracy_evaluate_integer": float((offline_mixed == labels).mean()),
        "accuracy_local_only": float((local_predicted == labels).mean()),
        "mixed_share": float(mixed.mean()),
        "sources": dict(Counter(SOURCES[r.source] for r in results)),
        "fallback_reasons": dict(Counter(str(ReasonCode.of(reason_text(r, deadline_ms)))
                                         for r in results if r.reason != Reason.NONE)),
        "mixed_mismatches_vs_evaluate": int((predicted[mixed] != offline_mixed[mixed]).sum()),
        "local_mismatches_vs_evaluate": int((local_predicted != offline_local).sum()),
        "payloads_equal_reference": int(sum(r.payload_bytes == len(p) for r, p in zip(results, offline.payloads))),
        "instructions_per_inference_mean": float(np.mean([r.instructions for r in results])),
        "macs": record["macs"],
        "uart_bytes_per_inference": {
            "feeder_to_board": feeder_bytes[0] / count, "board_to_feeder": feeder_bytes[1] / count,
            "board_to_gateway": stats.bytes_in / count, "gateway_to_board": stats.bytes_out / count},
        "board_wait_us_p50": float(np.median([r.waited_us for r in results])),
        "end_to_end_ms_p50": float(np.median(seconds) * 1e3),
        "end_to_end_ms_p99": float(np.percentile(seconds, 99) * 1e3),
        "gateway": {"payloads": stats.payloads, "answered": stats.answered, "refused": stats.refused,
                    "silent": stats.silent, "bad_frames": stats.bad_frames},
        "dropped_frames_on_board": list(results[-1].dropped) if results else [],
        "startup_s": startup_s,
        "run_s": loop_s,
    }


def format_table(report: dict[str, Any]) -> str:
    uart = report["uart_bytes_per_inference"]
    rows = [
        ("answered", f"{report['answered']:,} of {report['total']:,}"),
        ("accuracy", (f"{report['accuracy']:.2%} (offline evaluation of the integer front: "
                      f"{report['accuracy_evaluate_integer']:.2%})")),
        ("mixed", f"{report['mixed_share']:.1%}  ({', '.join(f'{v} {k}' for k, v in report['sources'].items())})"),
        ("same as offline evaluation", "yes" if report["mixed_mismatches_vs_evaluate"] == 0
         and report["local_mismatches_vs_evaluate"] == 0
         else f"{report['mixed_mismatches_vs_evaluate']} mixed, {report['local_mismatches_vs_evaluate']} local differ"),
        ("instructions per inference", (f"{report['instructions_per_inference_mean']:,.0f} "
                                        f"({report['macs'] / report['instructions_per_inference_mean']:.2f} MACs each)")),
        ("UART bytes per inference", (f"{uart['board_to_gateway']:.0f} to the gateway, {uart['gateway_to_board']:.0f} "
                                      f"back; {uart['feeder_to_board']:.0f} in from the feeder")),
        ("end to end per input", (f"{report['end_to_end_ms_p50']:.1f} ms p50, {report['end_to_end_ms_p99']:.1f} ms p99 "
                                  "(wall clock, emulated board)")),
        ("time", f"{report['startup_s']:.1f} s start-up, {report['run_s']:.1f} s streaming"),
    ]
    if report["fallback_reasons"]:
        rows.insert(3, ("local fallbacks", ", ".join(f"{v} {k}" for k, v in report["fallback_reasons"].items())))
    width = max(len(name) for name, _ in rows)
    head = (f"agilenn demo --firmware: {report['bundle']} on an emulated Cortex-M7, a gateway and "
            f"{report['workers']} Ray worker(s), {report['total']:,} test inputs")
    if report["kill_cloud_after"] is not None:
        head += f"; the workers stopped after {report['kill_cloud_after']}"
    return "\n".join([head, ""] + [f"  {name:<{width}}  {value}" for name, value in rows])
