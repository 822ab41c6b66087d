#!/usr/bin/env python
"""Offloading on a machine whose cores are busy: the mixed share and the accuracy the device keeps.

    .venv/bin/python scripts/bench_busy_cloud.py [--json] [--inputs 2000] [--bundle bundles/cluttered-fashion-mnist]

The commands a user would type: `agilenn cloud serve --bundle B --workers 1` on this machine, then
`agilenn device run --bundle B --cloud 127.0.0.1:PORT --source x.npy` over the first `--inputs` test
canvases, three times: on an idle machine, with both cores kept busy by `--hogs` processes spinning in
Python, and busy with `--deadline-ms 500`. Each run reports its answers by source and reason, the
accuracy against the labels, whether the first 10 inputs were mixed, and the cloud round trip
(p50/p90 and the share under the default deadline).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
AGILENN = [str(Path(sys.executable).parent / "agilenn")]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_port(port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"no worker listening on 127.0.0.1:{port} after {timeout_s:g} s")


def _summary(results: list[dict], labels: np.ndarray, deadline_ms: float) -> dict:
    sources = Counter(r["source"] for r in results)
    reasons = Counter(r["reason_code"] for r in results if r["source"] != "mixed")
    rtts = np.array([r["timings_ms"]["cloud_rtt"] for r in results if r["timings_ms"].get("cloud_rtt") is not None])
    predicted = [r["label"] for r in results]
    return {
        "inputs": len(results), "mixed": sources.get("mixed", 0),
        "local_fallback": sources.get("local_fallback", 0), "fallback_reasons": dict(reasons),
        "mixed_share": sources.get("mixed", 0) / len(results),
        "accuracy": float(np.mean(np.array(predicted) == labels[:len(predicted)])),
        "first_10_mixed": sum(r["source"] == "mixed" for r in results[:10]),
        "cloud_rtt_p50_ms": float(np.percentile(rtts, 50)) if len(rtts) else None,
        "cloud_rtt_p90_ms": float(np.percentile(rtts, 90)) if len(rtts) else None,
        "rtt_share_under_default_deadline": float(np.mean(rtts <= deadline_ms)) if len(rtts) else None,
    }


def _device_run(bundle: str, port: int, source: Path, sink: Path, extra: list[str]) -> list[dict]:
    subprocess.run(AGILENN + ["device", "run", "--bundle", bundle, "--cloud", f"127.0.0.1:{port}",
                              "--source", str(source), "--sink", str(sink), "--log-level", "warning", *extra],
                   cwd=ROOT, check=True, start_new_session=True)
    return [json.loads(line) for line in sink.read_text().splitlines()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default="bundles/cluttered-fashion-mnist")
    parser.add_argument("--dataset", default="cluttered-fashion-mnist")
    parser.add_argument("--inputs", type=int, default=2000)
    parser.add_argument("--hogs", type=int, default=os.cpu_count() or 2, help="busy processes (default: one per core)")
    parser.add_argument("--hog-niceness", type=int, default=0,
                        help="niceness of the busy processes; below 0 (root) they outrank the worker, as more "
                             "important work on the cloud's machine would")
    parser.add_argument("--device-args", default="", help="more `agilenn device run` flags for every run")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT))
    from agilenn.datasets import load_dataset
    from device_agent.config import DeviceConfig

    test = load_dataset(args.dataset).test
    images, labels = test.images[:args.inputs], np.asarray(test.labels[:args.inputs])
    default_deadline = DeviceConfig().deadline_ms
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "x.npy"
        np.save(source, images)
        port = _free_port()
        env = dict(os.environ, RAY_AUTH_MODE=os.environ.get("RAY_AUTH_MODE", "disabled"))
        cloud = subprocess.Popen(AGILENN + ["cloud", "serve", "--bundle", args.bundle, "--workers", "1",
                                            "--port", str(port)], cwd=ROOT, env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait_for_port(port, 120)
            for name, busy, extra in (("idle machine", False, []), ("cores busy", True, []),
                                      ("cores busy, --deadline-ms 500", True, ["--deadline-ms", "500"])):
                # in the cloud's session, the device in its own: the kernel's autogroups share the CPU
                # between sessions first, so the load falls on the cloud, as it would on a cloud machine
                hogs = [subprocess.Popen(["nice", "-n", str(args.hog_niceness), sys.executable, "-c", "while True: pass"])
                        for _ in range(args.hogs if busy else 0)]
                try:
                    results = _device_run(args.bundle, port, source, Path(tmp) / "out.jsonl",
                                          extra + args.device_args.split())
                finally:
                    for hog in hogs:
                        hog.kill()
                        hog.wait()
                runs[name] = _summary(results, labels, default_deadline)
        finally:
            cloud.terminate()
            cloud.wait(60)
    report = {"bundle": args.bundle, "inputs": args.inputs, "hogs": args.hogs, "hog_niceness": args.hog_niceness,
              "device_args": args.device_args, "default_deadline_ms": default_deadline, "runs": runs}
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    print(f"{args.inputs} {args.dataset} test inputs, one worker on this machine, default deadline "
          f"{default_deadline:g} ms, busy = {args.hogs} spinning processes at niceness {args.hog_niceness}"
          f"{', device flags ' + args.device_args if args.device_args else ''}\n")
    print("| run | mixed | local_fallback (reasons) | accuracy | first 10 mixed | rtt p50 / p90 ms | rtt under deadline |")
    print("|---|---|---|---|---|---|---|")
    for name, r in runs.items():
        reasons = ", ".join(f"{n} {k}" for k, n in sorted(r["fallback_reasons"].items()))
        rtt = (f"{r['cloud_rtt_p50_ms']:.1f} / {r['cloud_rtt_p90_ms']:.1f}" if r["cloud_rtt_p50_ms"] is not None
               else "-")
        under = f"{r['rtt_share_under_default_deadline']:.0%}" if r["rtt_share_under_default_deadline"] is not None else "-"
        print(f"| {name} | {r['mixed']:,} | {r['local_fallback']:,} ({reasons or '-'}) | {r['accuracy']:.1%} | "
              f"{r['first_10_mixed']} | {rtt} | {under} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
