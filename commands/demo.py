"""`agilenn demo`: the whole system on one machine, through real gRPC.

Starts a local Ray with the cloud workers for a bundle, runs the device agent over a
dataset's test split (one sample at a time, as a sensor loop would), checks the mixed
predictions against the same bundle evaluated offline (what `agilenn evaluate` computes),
prints a short table (or one JSON object with --json) and stops everything. With --secure
the same run goes over mutual TLS with a device token, from a development CA and token file
made for it in a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from agilenn.cli_flags import DEFAULT_BUNDLE


def offline_predictions(bundle, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mixed and local-only predictions computed in batches without the network, as `agilenn evaluate` does."""
    from agilenn.predict import predict

    out = predict(bundle, images)
    return out.mixed_logits.argmax(1), out.local_logits.argmax(1)


def _percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


@contextmanager
def local_cloud(bundle_dir: str | Path, config, ray_init_kwargs: dict[str, Any] | None = None):
    """A CloudService for `bundle_dir` (not started) on the running Ray, or on a local Ray started here;
    on exit the service is stopped (stopping it earlier is allowed) and a Ray started here shut down."""
    import ray

    from cloud_worker.service import CloudService, start_local_ray

    started_ray = not ray.is_initialized()
    if started_ray:
        start_local_ray(include_dashboard=False, log_to_driver=False, logging_level="ERROR", **(ray_init_kwargs or {}))
    service = CloudService(bundle_dir, config)
    try:
        yield service
    finally:
        service.stop()
        if started_ray:
            ray.shutdown()


def run_demo(bundle_dir: str | Path, images: np.ndarray, labels: np.ndarray, workers: int = 2,
             deadline_ms: float = 100.0, confidence_threshold: float | None = None, progress: bool = True,
             ray_init_kwargs: dict[str, Any] | None = None, secure: bool = False) -> dict[str, Any]:
    """Serve `bundle_dir` on local Ray workers, stream `images` through a DeviceAgent, return the report.
    `secure`: over mutual TLS with a device token, from a development CA and token file made for the run."""
    from tqdm import tqdm

    from agilenn.bundle import Bundle
    from cloud_worker.config import ServeConfig
    from device_agent import MIXED, DeviceAgent, DeviceConfig

    t0 = time.perf_counter()
    bundle = Bundle(bundle_dir)
    serve_security, device_security, secrets_folder = {}, {}, None
    if secure:
        from cloud_worker.dev_credentials import write_dev_security

        secrets_folder = Path(tempfile.mkdtemp(prefix="agilenn-demo-secure-"))
        security = write_dev_security(secrets_folder, device="demo-device")
        serve_security, device_security = security.serve_fields(), security.device_fields()
    with ExitStack() as stack:  # on the way out: the agent, then the cloud, then the secrets
        if secrets_folder is not None:
            stack.callback(shutil.rmtree, secrets_folder, ignore_errors=True)
        service = stack.enter_context(
            local_cloud(bundle_dir, ServeConfig(workers=workers, port=0, **serve_security), ray_init_kwargs))
        endpoints = service.start()
        config = DeviceConfig(cloud=endpoints, deadline_ms=deadline_ms, local_confidence_threshold=confidence_threshold,
                              **device_security)
        agent = stack.enter_context(DeviceAgent(bundle, config))
        if not agent.wait_ready(30.0, workers=len(endpoints)):
            print(f"warning: streams open to {agent.connected} of {len(endpoints)} workers", file=sys.stderr)
        startup_s = time.perf_counter() - t0

        results = []
        offloaded = 0
        loop_start = time.perf_counter()
        with tqdm(total=len(images), unit="input", disable=not progress, mininterval=0.25) as bar:
            for image in images:
                result = agent.infer(image)
                results.append(result)
                offloaded += result.source == MIXED
                bar.update()
                bar.set_postfix(offloaded=f"{offloaded / len(results):.1%}", refresh=False)
        loop_s = time.perf_counter() - loop_start

    predicted = np.array([r.label for r in results])
    local_predicted = np.array([r.local_label for r in results])
    mixed_mask = np.array([r.source == MIXED for r in results])
    offline_mixed, offline_local = offline_predictions(bundle, images)
    sources = Counter(r.source for r in results)
    reasons = Counter(r.reason_code for r in results if r.reason_code)
    rtts = [r.timings_ms["cloud_rtt"] for r in results if r.timings_ms["cloud_rtt"] is not None]
    payloads = [r.payload_bytes for r in results if r.payload_bytes is not None]
    report = {
        "bundle": str(bundle_dir),
        "bundle_hash": bundle.bundle_hash,
        "workers": workers,
        "secure": secure,  # mutual TLS and a device token
        "total": len(images),
        "answered": len(results),
        "accuracy": float((predicted == labels).mean()) if len(results) else None,
        "accuracy_local_only": float((local_predicted == labels).mean()) if len(results) else None,
        "payload_bytes_median": float(np.median(payloads)) if payloads else None,
        "device_model_p50_ms": _percentile([r.timings_ms["device_model"] for r in results], 50),
        "device_overhead_p50_ms": _percentile([r.timings_ms["device_overhead"] for r in results], 50),
        "cloud_rtt_p50_ms": _percentile(rtts, 50),
        "cloud_rtt_p99_ms": _percentile(rtts, 99),
        "throughput_per_s": len(results) / loop_s if loop_s > 0 else None,
        "offloaded_share": float(mixed_mask.mean()) if len(results) else None,
        "sources": dict(sources),
        "fallback_reasons": dict(reasons),
        # the offloaded answers against the offline evaluation of the same samples
        "mixed_mismatches_vs_evaluate": int((predicted[mixed_mask] != offline_mixed[mixed_mask]).sum()),
        "local_mismatches_vs_evaluate": int((local_predicted != offline_local).sum()),
        "accuracy_evaluate": float((offline_mixed == labels).mean()) if len(results) else None,
        "startup_s": startup_s,
        "run_s": loop_s,
        "elapsed_s": time.perf_counter() - t0,
    }
    return report


def format_table(report: dict[str, Any]) -> str:
    def ms(value):
        return "-" if value is None else f"{value:.3f} ms"

    rows = [
        ("answered", f"{report['answered']:,} of {report['total']:,}"),
        ("accuracy, mixed", f"{report['accuracy']:.2%}"),
        ("accuracy, device alone", f"{report['accuracy_local_only']:.2%}"),
        ("offloaded", f"{report['offloaded_share']:.1%}  ({', '.join(f'{v} {k}' for k, v in report['sources'].items())})"),
        ("payload per sample", "-" if report["payload_bytes_median"] is None else f"{report['payload_bytes_median']:.0f} bytes (median)"),
        ("device compute per sample", f"{ms(report['device_model_p50_ms'])} model + {ms(report['device_overhead_p50_ms'])} agent (p50)"),
        ("cloud round trip", f"{ms(report['cloud_rtt_p50_ms'])} p50, {ms(report['cloud_rtt_p99_ms'])} p99"),
        ("throughput", f"{report['throughput_per_s']:,.0f} inputs/s, one sample at a time"),
        ("same as offline evaluate", "yes" if report["mixed_mismatches_vs_evaluate"] == 0
         else f"{report['mixed_mismatches_vs_evaluate']} offloaded predictions differ"),
        ("time", f"{report['startup_s']:.1f} s start-up, {report['run_s']:.1f} s streaming"),
    ]
    if report["fallback_reasons"]:
        rows.insert(4, ("local fallbacks", ", ".join(f"{v} {k}" for k, v in report["fallback_reasons"].items())))
    width = max(len(name) for name, _ in rows)
    head = f"agilenn demo: {report['bundle']} on {report['workers']} Ray worker(s), {report['total']:,} test inputs"
    if report.get("secure"):
        head += ", over mutual TLS with a device token"
    return "\n".join([head, ""] + [f"  {name:<{width}}  {value}" for name, value in rows])


def failures(report: dict[str, Any]) -> list[str]:
    """What the demo promises and did not keep: every input answered, and every answer the one offline
    evaluation gives for the same input (mixed where it was offloaded, the device's own everywhere)."""
    found = []
    if report["answered"] != report["total"]:
        found.append(f"{report['total'] - report['answered']} of {report['total']} inputs unanswered")
    if report["mixed_mismatches_vs_evaluate"]:
        found.append(f"{report['mixed_mismatches_vs_evaluate']} offloaded predictions differ from offline evaluation")
    if report["local_mismatches_vs_evaluate"]:
        found.append(f"{report['local_mismatches_vs_evaluate']} device predictions differ from offline evaluation")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="agilenn demo", description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default=DEFAULT_BUNDLE, help=f"bundle folder (default {DEFAULT_BUNDLE})")
    parser.add_argument("--dataset", default=None, help="dataset name (default: the one the bundle was trained on)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N test inputs")
    parser.add_argument("--workers", type=int, default=2, help="cloud workers (Ray actors)")
    parser.add_argument("--deadline-ms", type=float, default=100.0, help="per-input wait for the remote answer")
    parser.add_argument("--confidence-threshold", type=float, default=None,
                        help="answer locally when the device's top probability reaches this")
    parser.add_argument("--secure", action="store_true",
                        help="serve and stream over mutual TLS with a device token (a dev CA and token made for the run)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--no-progress", action="store_true")
    firmware = parser.add_argument_group("a microcontroller in the loop")
    firmware.add_argument("--firmware", action="store_true",
                          help="the device is the bundle's C front on an emulated Cortex-M7 with a gateway on its UART")
    firmware.add_argument("--kill-cloud-after", type=int, default=None, metavar="K",
                          help="with --firmware: stop the workers after K inputs (the board answers locally)")
    firmware.add_argument("--logits", choices=("f32", "q8"), default="f32",
                          help="with --firmware: how the gateway returns the remote logits")
    args = parser.parse_args(argv)

    from agilenn.bundle import Bundle
    from agilenn.predict import evaluation_split

    dataset_name, split = evaluation_split(Bundle(args.bundle), args.dataset, args.limit)
    if args.firmware:
        from agilenn.serial_frames import LogitsEncoding
        from commands import demo_firmware

        deadline = 50 if args.deadline_ms == parser.get_default("deadline_ms") else int(args.deadline_ms)
        report = demo_firmware.run_firmware_demo(
            args.bundle, split.images, split.labels, workers=args.workers, deadline_ms=deadline,
            kill_cloud_after=args.kill_cloud_after, progress=not args.no_progress,
            encoding=LogitsEncoding.Q8 if args.logits == "q8" else LogitsEncoding.F32)
        report["dataset"] = dataset_name
        print(json.dumps(report) if args.json else demo_firmware.format_table(report))
        return _exit_code(report)
    report = run_demo(args.bundle, split.images, split.labels, workers=args.workers, deadline_ms=args.deadline_ms,
                      confidence_threshold=args.confidence_threshold, progress=not args.no_progress,
                      secure=args.secure)
    report["dataset"] = dataset_name
    print(json.dumps(report) if args.json else format_table(report))
    return _exit_code(report)


def _exit_code(report: dict[str, Any]) -> int:
    """0 when the run kept every promise, else 1 with each broken one on standard error."""
    broken = failures(report)
    for line in broken:
        print(f"agilenn demo: {line}", file=sys.stderr)
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
