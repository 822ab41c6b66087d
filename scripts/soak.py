#!/usr/bin/env python
"""Soak: a fleet at a fixed rate against TLS workers with device tokens, for minutes; memory must not grow.

    .venv/bin/python scripts/soak.py [--minutes 10] [--devices 20] [--rate 20] [--json]

Starts `agilenn cloud serve` with a dev CA, server certificate and a token file made for the run
(`cloud_worker.dev_credentials.write_dev_security`), then runs `--devices` device agents in this process
(each its own TLS stream with the token, one input every 1/`--rate` s) for `--minutes`. The loop keeps
counts and a latency array allocated before the run, nothing per input, so that the process's memory
is the agents' own (a fleet that records every result grows by its records). The resident
memory (RSS) of every worker process and of this process (the device agents) is sampled every few
seconds; growth is measured from the end of the warm-up (`--warmup-s`) to the end of the run, each
point the median of the samples in a 30 s window, so that allocator noise does not count as growth.
Reported: inputs, answered by the cloud, unanswered, local answers by reason, latency of the answered,
and per process the RSS at warm-up, at the end and its growth.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from cloud_worker.dev_credentials import write_dev_security
from simulation.serve_process import ROOT, CloudServeProcess

PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
WINDOW_S = 30.0


def rss_bytes(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_BYTES


class MemorySampler:
    def __init__(self, pids: dict[str, int], every_s: float) -> None:
        self.pids, self.every_s = pids, every_s
        self.samples: list[tuple[float, dict[str, int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            self.samples.append((time.monotonic(), {name: rss_bytes(pid) for name, pid in self.pids.items()}))
            if self._stop.wait(self.every_s):
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def growth(self, warm_at: float, end_at: float) -> dict[str, dict[str, float]]:
        def around(t0: float, t1: float, name: str) -> float:
            values = [rss[name] for t, rss in self.samples if t0 <= t <= t1]
            return float(np.median(values))

        out = {}
        for name in self.pids:
            warm = around(warm_at, warm_at + WINDOW_S, name)
            end = around(end_at - WINDOW_S, end_at, name)
            out[name] = {"rss_mib_after_warmup": warm / 2 ** 20, "rss_mib_at_end": end / 2 ** 20,
                         "growth": end / warm - 1.0}
        return out


class DeviceLoops:
    """`devices` device agents, each sending one input every 1/rate_hz s on its own thread for `seconds`;
    per device a latency array sized for the whole run up front, and counts of sources and reasons."""

    def __init__(self, bundle_path: str, cloud: str, devices: int, rate_hz: float, seconds: float,
                 security: dict[str, str], deadline_ms: float) -> None:
        from agilenn.bundle import Bundle
        from agilenn.datasets import sample_images
        from device_agent import DeviceAgent, DeviceConfig

        bundle = Bundle(bundle_path)
        self.images = sample_images(bundle.manifest.config.get("dataset"), bundle.manifest.input.shape, 512)
        config = DeviceConfig(cloud=[cloud], deadline_ms=deadline_ms, **security)
        self.agents = [DeviceAgent(bundle, config) for _ in range(devices)]
        self.rate_hz, self.seconds = rate_hz, seconds
        slots = int(rate_hz * seconds) + 2
        self.latencies = [np.full(slots, np.nan) for _ in self.agents]
        self.counts = [{"inputs": 0, "mixed": 0, "unanswered": 0} for _ in self.agents]
        self.reasons: list[dict[str, int]] = [{} for _ in self.agents]

    def run(self) -> float:
        """Wait for every stream, run; returns when the clock started (monotonic)."""
        connected = sum(agent.wait_ready(60.0) for agent in self.agents)
        if connected < len(self.agents):
            raise RuntimeError(f"only {connected} of {len(self.agents)} devices connected")
        started = time.monotonic()
        stop_at = time.perf_counter() + self.seconds
        threads = [threading.Thread(target=self._loop, args=(i, stop_at), daemon=True) for i in range(len(self.agents))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return started

    def _loop(self, i: int, stop_at: float) -> None:
        agent, latencies, counts, reasons = self.agents[i], self.latencies[i], self.counts[i], self.reasons[i]
        period = 1.0 / self.rate_hz
        due = time.perf_counter() + period * i / len(self.agents)
        n = 0
        while due < stop_at and time.perf_counter() < stop_at and n < len(latencies):
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            result = agent.infer(self.images[(i + n) % len(self.images)])
            counts["inputs"] += 1
            if result.source == "mixed":
                counts["mixed"] += 1
                latencies[n] = result.timings_ms["total"]
            elif result.reason:
                name = str(result.reason_code)
                reasons[name] = reasons.get(name, 0) + 1
                if result.timings_ms.get("cloud_rtt") is None and name != "overloaded":
                    counts["unanswered"] += 1
            n += 1
            due += period

    def close(self) -> None:
        for agent in self.agents:
            agent.close()

    def summary(self, wall_s: float) -> dict:
        answered = np.concatenate([x[~np.isnan(x)] for x in self.latencies])
        reasons: dict[str, int] = {}
        for per_device in self.reasons:
            for name, count in per_device.items():
                reasons[name] = reasons.get(name, 0) + count
        total = {key: sum(c[key] for c in self.counts) for key in ("inputs", "mixed", "unanswered")}
        return {"inferences": total["inputs"], "answered_by_cloud": total["mixed"], "unanswered": total["unanswered"],
                "local_reasons": reasons, "answered_per_s": total["mixed"] / wall_s,
                "latency_answered_ms": {f"p{q}": float(np.percentile(answered, q)) if len(answered) else None
                                        for q in (50, 90, 99)}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", default=str(ROOT / "bundles" / "fashion-mnist"))
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--warmup-s", type=float, default=60.0, help="not counted in the memory growth")
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument("--rate", type=float, default=20.0, help="inputs per second per device")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--deadline-ms", type=float, default=200.0)
    parser.add_argument("--sample-every-s", type=float, default=2.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    seconds = args.minutes * 60.0
    if seconds < args.warmup_s + 2 * WINDOW_S:
        parser.error(f"--minutes must leave {2 * WINDOW_S:g} s after the {args.warmup_s:g} s warm-up")

    with tempfile.TemporaryDirectory(prefix="agilenn-soak-") as scratch:
        security = write_dev_security(scratch, device="soak")
        certs = security.certificates
        # server-side TLS and device tokens; no client certificates
        service = CloudServeProcess(args.bundle, workers=args.workers, serve_args=[
            "--tls-cert", str(certs.server_pem), "--tls-key", str(certs.server_key),
            "--tokens", str(security.tokens_file)])
        try:
            loops = DeviceLoops(args.bundle, service.endpoint, args.devices, args.rate, seconds,
                                {"ca_file": str(certs.ca_pem), "token_file": str(security.token_file)},
                                args.deadline_ms)
            try:
                pids = {**service.pids, "device-agents": os.getpid()}
                sampler = MemorySampler(pids, args.sample_every_s)
                started = loops.run()
                ended = time.monotonic()
                sampler.stop()
            finally:
                loops.close()
        finally:
            service.stop()
    fleet = loops.summary(ended - started)
    warm_at = started + args.warmup_s
    memory = sampler.growth(warm_at, ended)
    report = {"command": "scripts/soak.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "minutes": args.minutes, "devices": args.devices, "rate_hz_per_device": args.rate,
              "workers": args.workers, "tls": True, "token": True, "load_average_at_end": os.getloadavg(),
              "wall_s": ended - started, "fleet": fleet,
              "memory": memory,
              "max_growth": max(m["growth"] for m in memory.values())}
    print(json.dumps(report) if args.json else json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
