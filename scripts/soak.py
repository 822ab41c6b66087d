#!/usr/bin/env python
"""Soak: a fleet at a fixed rate against TLS workers with device tokens, for minutes; memory must not grow.

    .venv/bin/python scripts/soak.py [--minutes 10] [--devices 20] [--rate 20] [--json]

Starts `agilenn cloud serve` with a dev CA, server certificate and a token file made for the run
(`agilenn certs dev`, `agilenn tokens add`), then runs `--devices` device agents in this process
(`simulation.fleet.run_fleet`, each its own TLS stream with the token) for `--minutes`. The resident
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
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from simulation.fleet import run_fleet
from simulation.serve_process import ROOT, CloudServeProcess

PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
WINDOW_S = 30.0


def rss_bytes(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_BYTES


def make_credentials(folder: Path) -> tuple[Path, Path, Path]:
    """A dev CA with server and client certificates, and a token file holding one device's token."""
    agilenn = [sys.executable, "-m", "commands.cli"]
    subprocess.run([*agilenn, "certs", "dev", "--out", str(folder / "certs")], check=True, cwd=ROOT,
                   stdout=subprocess.DEVNULL)
    token = subprocess.run([*agilenn, "tokens", "add", "--file", str(folder / "tokens.yaml"), "--device", "soak"],
                           check=True, cwd=ROOT, capture_output=True, text=True).stdout.strip()
    token_file = folder / "soak.token"
    token_file.write_text(token + "\n")
    return folder / "certs", folder / "tokens.yaml", token_file


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
        certs, tokens, token_file = make_credentials(Path(scratch))
        service = CloudServeProcess(args.bundle, workers=args.workers, serve_args=[
            "--tls-cert", str(certs / "server.pem"), "--tls-key", str(certs / "server.key"),
            "--tokens", str(tokens)])
        try:
            pids = {**service.pids, "device-agents": os.getpid()}
            sampler = MemorySampler(pids, args.sample_every_s)
            started = time.monotonic()
            fleet = run_fleet(args.bundle, service.endpoint, devices=args.devices, rate_hz=args.rate,
                              seconds=seconds, deadline_ms=args.deadline_ms, connect_timeout_s=60.0,
                              security={"ca_file": str(certs / "ca.pem"), "token_file": str(token_file)})
            ended = time.monotonic()
            sampler.stop()
        finally:
            service.stop()
    # run_fleet connects before its clock starts: the warm-up counts from the end of the run backwards
    warm_at = ended - seconds + args.warmup_s
    memory = sampler.growth(warm_at, ended)
    report = {"command": "scripts/soak.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "minutes": args.minutes, "devices": args.devices, "rate_hz_per_device": args.rate,
              "workers": args.workers, "tls": True, "token": True, "load_average_at_end": os.getloadavg(),
              "wall_s": ended - started,
              "fleet": {k: fleet[k] for k in ("inferences", "answered_by_cloud", "unanswered", "local_reasons",
                                              "latency_answered_ms", "answered_per_s") if k in fleet},
              "memory": memory,
              "max_growth": max(m["growth"] for m in memory.values())}
    print(json.dumps(report) if args.json else json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
