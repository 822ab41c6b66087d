"""`agilenn simulate fleet`: N device agents at once against a running cloud service.

Each simulated device is a real `DeviceAgent` (its own stream to the workers) on its own
thread, sending test images open-loop at `rate_hz` (a late answer delays that device's next
input, as on a real sensor loop). Reported: p50/p90/p99 end-to-end latency as the agent times
it, throughput, the share answered locally (gate or fallback, with the reasons), and a
latency CDF plot when a report folder is given. Of the inputs offloaded, each is either
answered by the cloud (`mixed`; its latencies are reported apart), answered locally for an
overloaded worker (`overloaded`: refused at once, or not sent while the device backs off), or
unanswered: no answer from the cloud came (deadline passed, stream broken, no worker reachable). The devices share this machine's CPU, so the
device model runs at host speed, not at a microcontroller's.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from agilenn.outcomes import ReasonCode
from simulation.plotting import pyplot


def run_fleet(bundle_path: str | Path, cloud: str, devices: int = 10, rate_hz: float = 20.0, seconds: float = 10.0,
              deadline_ms: float = 200.0, confidence: float | None = None, report: Path | None = None,
              connect_timeout_s: float = 10.0, overload_backoff_ms: float | None = None,
              keep_latencies: bool = False, security: dict[str, str] | None = None) -> dict[str, Any]:
    """`keep_latencies`: also return every answered input's latency (`answered_latencies_ms`), so that runs in
    several processes can be pooled into one set of percentiles. `security`: the devices' TLS and token
    settings (DeviceConfig's ca_file, cert_file, key_file, token_file)."""
    from agilenn.bundle import Bundle
    from agilenn.datasets import sample_images
    from device_agent import DeviceAgent, DeviceConfig

    bundle = Bundle(bundle_path)
    images = sample_images(bundle.manifest.config.get("dataset"), bundle.manifest.input.shape, 512)
    backoff = {} if overload_backoff_ms is None else {"overload_backoff_ms": overload_backoff_ms}
    config = DeviceConfig(cloud=[cloud], deadline_ms=deadline_ms, local_confidence_threshold=confidence, **backoff,
                          **(security or {}))
    agents = [DeviceAgent(bundle, config) for _ in range(devices)]
    try:
        connected = sum(agent.wait_ready(connect_timeout_s) for agent in agents)
        records: list[list[tuple[float, str, str | None, float | None, float | None]]] = [[] for _ in agents]
        start_at = time.perf_counter() + 0.2
        stop_at = start_at + seconds

        def loop(i: int) -> None:
            agent, out = agents[i], records[i]
            period = 1.0 / rate_hz
            due = start_at + period * i / max(devices, 1)  # spread the devices' phases
            k = i
            # the run ends at stop_at even for a device that fell behind its schedule (an overloaded
            # cloud): inputs not yet due are not owed, or a slow run would last for all of them
            while due < stop_at and time.perf_counter() < stop_at:
                delay = due - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                result = agent.infer(images[k % len(images)])
                # what the policy predicted for this input: its on-time probability when it was sent (no
                # evidence yet: in time), 0 when it was kept on the device
                sent = result.timings_ms["cloud_rtt"] is not None or result.reason_code == ReasonCode.DEADLINE
                predicted = (1.0 if result.on_time_probability is None else result.on_time_probability) if sent else 0.0
                out.append((result.timings_ms["total"], result.source, result.reason_code,
                            result.timings_ms["cloud_rtt"], predicted))
                k += devices
                due += period

        threads = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(devices)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = max(time.perf_counter() - start_at, 1e-9)
    finally:
        for agent in agents:
            agent.close()
    flat = [r for rs in records for r in rs]
    latencies = np.array([r[0] for r in flat])
    sources = Counter(r[1] for r in flat)
    reasons = Counter(str(r[2]) for r in flat if r[2])
    answered = np.array([r[0] for r in flat if r[1] == "mixed"])
    # a fallback with no round trip got no answer from the cloud at all, unless the device held it back
    # because the worker had just answered overloaded
    unanswered = sum(1 for r in flat if r[1] == "local_fallback" and r[3] is None
                     and r[2] != ReasonCode.OVERLOADED)
    result = {"devices": devices, "connected": connected, "rate_hz_per_device": rate_hz, "seconds": seconds,
              "cloud": cloud, "bundle": str(bundle_path), "inferences": len(flat),
              "throughput_per_s": len(flat) / wall, "offered_per_s": devices * rate_hz,
              # no inferences, no latencies: null, not a made-up 0 ms
              "latency_ms": {f"p{q}": float(np.percentile(latencies, q)) if flat else None for q in (50, 90, 99)},
              "share_local": (len(flat) - sources.get("mixed", 0)) / max(len(flat), 1),
              # the mixed share the offload policy achieved, and the one its per-input predictions add up to
              "mixed_share": sources.get("mixed", 0) / max(len(flat), 1),
              "predicted_mixed_share": sum(r[4] for r in flat) / max(len(flat), 1),
              "sources": dict(sources), "local_reasons": dict(reasons),
              "answered_by_cloud": len(answered), "answered_per_s": len(answered) / wall,
              "overloaded": reasons.get("overloaded", 0), "unanswered": unanswered,
              "share_overloaded": reasons.get("overloaded", 0) / max(len(flat), 1),
              "latency_answered_ms": {f"p{q}": float(np.percentile(answered, q)) if len(answered) else None
                                      for q in (50, 90, 99)}}
    if keep_latencies:
        result["answered_latencies_ms"] = answered.tolist()
    if not flat:
        result["note"] = "no inferences in the run (no device input was due): no latency percentiles"
    if report is not None:
        result["report"] = str(_write(report, result, np.sort(latencies)))
    return result


def _write(folder: Path, result: dict[str, Any], latencies: np.ndarray) -> Path:
    plt = pyplot()
    folder.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4))
    if len(latencies):
        ax.plot(latencies, np.arange(1, len(latencies) + 1) / len(latencies))
        for q, style in (("p50", ":"), ("p99", "--")):
            ax.axvline(result["latency_ms"][q], color="grey", linestyle=style,
                       label=f"{q} {result['latency_ms'][q]:.2f} ms")
        ax.set_xscale("log")
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no inferences", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("end-to-end latency per inference (ms, as the device agent times it)")
    ax.set_ylabel("share of inferences")
    ax.set_title(f"{result['devices']} devices x {result['rate_hz_per_device']:g}/s against {result['cloud']}",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(folder / "fleet_latency_cdf.png", dpi=120)
    plt.close(fig)
    path = folder / "fleet.md"
    path.write_text("\n".join([
        "# agilenn simulate fleet", "", "![latency CDF](fleet_latency_cdf.png)", "", "```json",
        json.dumps(result, indent=1), "```", ""]))
    return path
