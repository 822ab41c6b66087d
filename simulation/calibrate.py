"""Measure this machine's compute profile: time the exported models and fit the rates.

    agilenn simulate calibrate [--measured bundles/baselines/measured.json] [--write FILE]

Every model the measured-schemes file describes (AgileNN's device, remote and reference models,
the local-only baselines, the DeepCOD-like halves) is run with ONNX Runtime on one thread at
batch 1; the median time of each is fitted by least squares to
`fixed_ms + light MACs / macs_per_s + dense MACs / dense_macs_per_s`, light and dense split by
the profile's inner-product threshold. The coder's cost per symbol is timed on AgileNN's payloads.
Run it on an idle machine: a busy CPU inflates every number.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from agilenn.codec import RangeCodec
from agilenn.measured import LayerRow, MeasuredSchemes

DENSE_INNER_MIN = 16
WORKER_STOP_TIMEOUT_S = 5.0


class CalibrationError(RuntimeError):
    """A measurement that produced nothing to report."""


def _time_session(path: Path, feed: np.ndarray, repeats: int) -> float:
    from agilenn.onnx_sessions import create_session

    session = create_session(path, threads=1)
    name = session.get_inputs()[0].name
    for _ in range(20):
        session.run(None, {name: feed})
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, {name: feed})
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000.0)


def _split_macs(layers: list[LayerRow]) -> tuple[int, int]:
    light = sum(r.macs for r in layers if r.inner < DENSE_INNER_MIN)
    return light, sum(r.macs for r in layers) - light


def models(measured: MeasuredSchemes) -> list[tuple[str, Path, np.ndarray, list[LayerRow]]]:
    """(label, onnx file, one input, layer table) for every model the measured file can locate.

    Each input has the shape its own folder states (a bundle's manifest, a local-only baseline's
    baseline.json): the schemes need not share one input size."""
    rng = np.random.default_rng(0)

    def image(shape: list[int]) -> np.ndarray:
        return rng.integers(0, 256, (1, *shape)).astype(np.float32)

    out = []
    for s in measured.schemes:
        folder = Path(s.bundle or "")
        if s.kind == "local-only" and (folder / "model.onnx").exists():
            # written by partitioner.baselines.export_local_only
            shape = json.loads((folder / "baseline.json").read_text())["input_shape"]
            out.append((s.name, folder / "model.onnx", image(shape), s.device_layers))
        elif s.kind in ("agilenn", "deepcod") and (folder / "device.onnx").exists():
            manifest = json.loads((folder / "manifest.json").read_text())
            feed = image(manifest["input"]["shape"])
            remote_shape = [manifest["split"]["remote_channels"], *manifest["split"]["feature_shape"][1:]]
            indices = rng.integers(0, manifest["quantizer"]["levels"], (1, *remote_shape)).astype(np.uint8)
            out.append((f"{s.name}/device", folder / "device.onnx", feed, s.device_layers))
            out.append((f"{s.name}/remote", folder / "remote.onnx", indices, s.cloud_layers))
            if s.kind == "agilenn" and (folder / "reference.onnx").exists():
                ref = next((c for c in measured.cuts if c.name == "logits"), None)
                if ref is not None:
                    out.append(("reference", folder / "reference.onnx", feed, ref.device_layers))
    return out


def calibrate(measured: MeasuredSchemes, repeats: int = 300) -> dict[str, Any]:
    rows, times, labels = [], [], []
    for label, path, feed, layers in models(measured):
        light, dense = _split_macs(layers)
        rows.append([1.0, light / 1e3, dense / 1e3])  # ms = fixed + light/1e3 * (1e6/rate) ... in ms per kMAC
        times.append(_time_session(path, feed, repeats))
        labels.append({"model": label, "light_macs": light, "dense_macs": dense, "median_ms": times[-1]})
    if len(rows) < 3:
        raise ValueError(f"calibration needs at least 3 models with layer tables, found {len(rows)}")
    coef, *_ = np.linalg.lstsq(np.array(rows), np.array(times), rcond=None)
    fixed, ms_per_kmac_light, ms_per_kmac_dense = (float(c) for c in coef)
    fit = {"fixed_ms": max(fixed, 0.0),
           "macs_per_s": 1e6 / ms_per_kmac_light if ms_per_kmac_light > 0 else None,
           "dense_macs_per_s": 1e6 / ms_per_kmac_dense if ms_per_kmac_dense > 0 else None}
    predicted = np.array(rows) @ coef
    for row, p in zip(labels, predicted):
        row["fitted_ms"] = float(p)
    remote_ms = next((m["median_ms"] for m in labels if m["model"] == "agilenn/remote"), 0.0)
    service = _service_overhead(measured, remote_ms)
    return {"fit": fit, "models": labels, "encode_ns_per_symbol": _encode_cost(measured), "service": service,
            "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                        "cpus": os.cpu_count(), "load_average": os.getloadavg()}}


# Inputs one at a time with the CPUs idle in between, the case the latency model describes (and
# the emulation's pace): back to back, caches and CPU frequency stay warm and the round trip is
# ~0.4 ms shorter on this machine than after a 50 ms pause.
IDLE_GAP_S = 0.050


def _service_overhead(measured: MeasuredSchemes, remote_ms: float, count: int = 200) -> dict[str, Any] | None:
    """The runtime's round trip on loopback (device agent -> worker in another process -> back) less
    the remote model's own time: what serving costs per request besides the model."""
    import subprocess
    import sys

    folder = Path(measured.scheme("agilenn").bundle or "")
    try:
        from agilenn.bundle import Bundle
        from device_agent import DeviceAgent, DeviceConfig
    except ImportError:
        return None
    if not (folder / "manifest.json").exists():
        return None
    worker = subprocess.Popen([sys.executable, "-m", "simulation.emulate", "serve", "--bundle", str(folder)],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = worker.stdout.readline().split() if worker.stdout else []
        if len(line) != 2 or line[0] != "ready":
            return None
        bundle = Bundle(folder, verify=False)
        images = np.random.default_rng(0).integers(0, 256, (count + 20, *bundle.manifest.input.shape))
        rtts = []
        with DeviceAgent(bundle, DeviceConfig(cloud=[f"127.0.0.1:{line[1]}"], deadline_ms=5000)) as agent:
            if not agent.wait_ready(20.0):
                return None
            for i, image in enumerate(images.astype(np.uint8)):
                result = agent.infer(image)
                if i >= 20 and result.timings_ms["cloud_rtt"] is not None:
                    rtts.append(result.timings_ms["cloud_rtt"])
                time.sleep(IDLE_GAP_S)
    finally:
        worker.terminate()
        try:
            worker.wait(WORKER_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:  # a worker stuck in start-up or shutdown must not outlive us
            worker.kill()
            worker.wait()
    if not rtts:
        raise CalibrationError(f"no round trip to measure: none of {count} requests to the worker serving {folder} "
                               "was answered remotely (deadline passed or the stream failed each time)")
    rtt = float(np.median(rtts))
    return {"loopback_round_trip_ms_p50": rtt, "remote_model_ms": remote_ms,
            "request_overhead_ms": max(rtt - remote_ms, 0.0), "requests": len(rtts)}


def _encode_cost(measured: MeasuredSchemes, samples: int = 200) -> float | None:
    from agilenn.bundle import Bundle

    folder = Path(measured.scheme("agilenn").bundle or "")
    if not (folder / "manifest.json").exists():
        return None
    bundle = Bundle(folder, verify=False)
    rng = np.random.default_rng(0)
    shape = bundle.remote_shape
    if isinstance(bundle.codec, RangeCodec):  # drawn from the fitted tables, as real payloads are
        indices = bundle.codec.draw(rng, samples)
    else:
        indices = rng.integers(0, bundle.codec.levels, (samples, *shape)).astype(np.uint8)
    start = time.perf_counter()
    for sample in indices:
        bundle.codec.encode(sample)
    return float((time.perf_counter() - start) / samples / np.prod(shape) * 1e9)


def _scheduling() -> str:
    """`chrt -f N ` when this process runs at real-time priority (it makes the timings steadier)."""
    try:
        if os.sched_getscheduler(0) == os.SCHED_FIFO:
            return f"chrt -f {os.sched_getparam(0).sched_priority} "
    except (AttributeError, OSError):
        pass
    return ""


def profile_yaml(result: dict[str, Any], command: str) -> str:
    fit, machine = result["fit"], result["machine"]
    lines = [f"  {m['model']}: {m['median_ms']:.4f} ms measured, {m['fitted_ms']:.4f} ms fitted "
             f"({m['light_macs']} light + {m['dense_macs']} dense MACs)" for m in result["models"]]
    mem_total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    disk = os.statvfs("/")
    return "\n".join([
        "name: host",
        f"description: this machine ({machine['processor']}, {machine['cpus']} CPUs), ONNX Runtime on one thread",
        "kind: host",
        "calibration: measured",
        "source: >-",
        (f"  Measured on this machine by `{_scheduling()}{command}` on {time.strftime('%Y-%m-%d')}"
         f" (load average {machine['load_average'][0]:.2f} while measuring; a busy CPU inflates the times)."),
        "  Median time per model at batch 1, least-squares fit of fixed + light/rate + dense/rate:",
        *lines,
        *([(f"  request_overhead_ms: the runtime's loopback round trip (device agent -> worker process -> back), "
            f"p50 {result['service']['loopback_round_trip_ms_p50']:.3f} ms over {result['service']['requests']} requests "
            f"{IDLE_GAP_S * 1000:.0f} ms apart, "
            f"less the remote model's {result['service']['remote_model_ms']:.3f} ms.")] if result.get("service") else
          ["  request_overhead_ms: not measured (needs the device and cloud extras)."]),
        "  encode_ns_per_symbol: constriction's range coder called from Python on AgileNN payloads (mostly call",
        "  overhead). Memory: physical RAM and root file system size. Power: estimate of a desktop CPU core",
        "  (no power meter here); the host usually serves as the cloud, where power is not modelled.",
        "compute:",
        f"  macs_per_s: {fit['macs_per_s']:.4g}",
        f"  dense_macs_per_s: {fit['dense_macs_per_s']:.4g}",
        f"  dense_inner_min: {DENSE_INNER_MIN}",
        f"  fixed_ms: {fit['fixed_ms']:.4f}",
        f"  encode_ns_per_symbol: {result['encode_ns_per_symbol'] or 0.0:.1f}",
        f"  request_overhead_ms: {(result.get('service') or {}).get('request_overhead_ms', 0.0):.4f}",
        "memory:",
        f"  sram_bytes: {mem_total}",
        f"  flash_bytes: {disk.f_blocks * disk.f_frsize}",
        "  runtime_sram_bytes: 0",
        "  runtime_flash_bytes: 0",
        "power:",
        "  compute_mw: 15000.0",
        "  transmit_mw: 2000.0",
        "  receive_mw: 2000.0",
        ""])
