#!/usr/bin/env python
"""One worker under twice its capacity: what it answers, how fast, and what the devices answer locally.

    .venv/bin/python scripts/bench_overload.py [--json] [--seconds 20] [--bundle bundles/fashion-mnist]

1. Starts `agilenn cloud serve --workers 1` (its own local Ray) with Prometheus metrics on.
2. Capacity: a saturating fleet (`--capacity-devices` devices, each sending as fast as answers come, a
   long deadline, fewer devices than the worker queues so that nothing is shed) against that one worker;
   capacity is the rate of inputs the cloud answered.
3. Overload: `--devices` devices offering `--overload` (default 2) times that capacity, more devices than
   the worker's queue holds, with the fleet's default deadline. Reported: inputs answered by the cloud
   and their p50/p99 latency, inputs unanswered (deadline passed, stream broken), and the share
   answered locally as `overloaded` (refused by the worker, or held back by the device after such an
   answer); the worker's own count of refusals comes from its metrics.

Device agents are real (`agilenn simulate fleet`, `simulation/fleet.py`) and cost more CPU per inference
than the worker does, so the fleet runs in several processes (`--fleet-processes`); hundreds of devices in
one process starve the load generator itself (their threads share one interpreter lock), hence few devices
and a small queue bound by default. `--worker-cpu-quota` (root) holds the worker to a CPU quota, so that a
fleet on a small machine can offer more than the worker serves. On a machine with 3 or
more CPUs the worker is pinned to one CPU and the fleet to the others; the worker's CPU use is reported,
and `worker_saturated` says whether the capacity run kept its CPU busy. When it did not (too few CPUs for
the fleet, or other load), the capacity found is the load generator's, not the worker's, and the
overload run does not overload the worker: the output says so.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from simulation.serve_process import ROOT, CloudServeProcess

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def pin(pid: int, cpus: set[int]) -> None:
    """Pin every thread of a process (threads it starts later inherit it)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            os.sched_setaffinity(int(task.name), cpus)
        except (ProcessLookupError, PermissionError):
            pass


CPU_CGROUP_V1 = Path("/sys/fs/cgroup/cpu")
CGROUP_V2 = Path("/sys/fs/cgroup")
CFS_PERIOD_US = 100_000


def limit_cpu(pid: int, cores: float) -> Path:
    """Put a process (all its threads) into a fresh cgroup allowed `cores` CPUs (CFS quota); needs root.

    On a machine with too few CPUs for a fleet to outrun a worker, a quota makes the worker the
    bottleneck: what is measured is how the system behaves past the worker's capacity, not that
    capacity itself."""
    quota = max(1000, int(cores * CFS_PERIOD_US))
    if (CPU_CGROUP_V1 / "cpu.cfs_quota_us").exists():
        group = CPU_CGROUP_V1 / f"agilenn-bench-{pid}"
        group.mkdir(exist_ok=True)
        (group / "cpu.cfs_period_us").write_text(str(CFS_PERIOD_US))
        (group / "cpu.cfs_quota_us").write_text(str(quota))
    elif (CGROUP_V2 / "cgroup.controllers").exists():
        group = CGROUP_V2 / f"agilenn-bench-{pid}"
        group.mkdir(exist_ok=True)
        (group / "cpu.max").write_text(f"{quota} {CFS_PERIOD_US}")
    else:
        raise RuntimeError("no cgroup CPU controller found: --worker-cpu-quota needs cgroup v1 cpu or cgroup v2")
    (group / "cgroup.procs").write_text(str(pid))
    return group


def release_cgroup(group: Path, pid: int) -> None:
    """Move the process back to the root group (if alive) and remove the bench's group."""
    try:
        (group.parent / "cgroup.procs").write_text(str(pid))
    except OSError:
        pass  # already gone
    try:
        group.rmdir()
    except OSError:
        pass


def _fleet_part(cpus: list[int] | None, kwargs: dict) -> dict:
    """One fleet process: pinned to `cpus`, runs its share of the devices, returns its result and CPU time."""
    if cpus:
        os.sched_setaffinity(0, set(cpus))
    from simulation.fleet import run_fleet

    cpu_started, started = time.process_time(), time.monotonic()
    result = run_fleet(**kwargs, keep_latencies=True)
    result["cpu_cores"] = (time.process_time() - cpu_started) / (time.monotonic() - started)
    result["ended_at"] = time.time()  # the fleet's inputs stopped about `seconds` before this
    return result


class CpuSampler:
    """A process's CPU time sampled every 0.2 s, so that its use over the fleets' common window is known."""

    def __init__(self, pid: int) -> None:
        self.pid, self.samples = pid, [(time.time(), cpu_seconds(pid))]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.samples.append((time.time(), cpu_seconds(self.pid)))

    def cores_between(self, start: float, end: float) -> float | None:
        self._stop.set()
        self._thread.join()
        times, cpu = np.array(self.samples).T
        if end - start < 0.5 or start < times[0] or end > times[-1]:
            return None
        return float((np.interp(end, times, cpu) - np.interp(start, times, cpu)) / (end - start))


def run_fleets(processes: int, cpus: list[int] | None, devices: int, worker: CloudServeProcess, **kwargs) -> dict:
    """`devices` device agents over `processes` processes against the worker; their results pooled."""
    shares = [devices // processes + (i < devices % processes) for i in range(processes)]
    shares = [share for share in shares if share]
    common = dict(kwargs, cloud=worker.endpoint)
    shed_before, sampler = worker.metric("agilenn_shed_requests_total"), CpuSampler(worker.pid)
    with ProcessPoolExecutor(len(shares), mp_context=get_context("spawn")) as pool:
        parts = list(pool.map(_fleet_part, [cpus] * len(shares),
                              [dict(common, devices=share) for share in shares]))
    # the window in which every fleet process was sending (each stops about `seconds` after it starts)
    window_end = min(part["ended_at"] for part in parts) - 0.3
    window_start = max(part["ended_at"] for part in parts) - kwargs["seconds"] + 0.3
    answered = np.array([x for part in parts for x in part["answered_latencies_ms"]])
    inferences = sum(part["inferences"] for part in parts)
    reasons: dict[str, int] = {}
    for part in parts:
        for reason, count in part["local_reasons"].items():
            reasons[reason] = reasons.get(reason, 0) + count
    overloaded = sum(part["overloaded"] for part in parts)
    return {
        "devices": devices, "fleet_processes": len(shares), "rate_hz_per_device": kwargs["rate_hz"],
        "offered_per_s": devices * kwargs["rate_hz"], "deadline_ms": kwargs["deadline_ms"],
        "connected": sum(part["connected"] for part in parts), "inferences": inferences,
        "answered_by_cloud": len(answered), "answered_per_s": sum(part["answered_per_s"] for part in parts),
        "unanswered": sum(part["unanswered"] for part in parts), "overloaded": overloaded,
        "share_overloaded": overloaded / max(inferences, 1),
        # the mixed share achieved, and the one the offload policy's per-input predictions add up to
        "mixed_share": sum(part["mixed_share"] * part["inferences"] for part in parts) / max(inferences, 1),
        "predicted_mixed_share": sum(part["predicted_mixed_share"] * part["inferences"] for part in parts)
        / max(inferences, 1),
        "shed_by_worker": worker.metric("agilenn_shed_requests_total") - shed_before,
        "latency_answered_ms": {f"p{q}": float(np.percentile(answered, q)) if len(answered) else None
                                for q in (50, 90, 99)},
        "local_reasons": reasons,
        # CPU the worker used while every fleet process was sending (its share of one CPU when pinned);
        # None when the processes hardly overlapped
        "worker_cpu_cores": sampler.cores_between(window_start, window_end),
        # each fleet process's CPU over its whole run, connecting included
        "fleet_cpu_cores_per_process": [round(part["cpu_cores"], 3) for part in parts],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", default=str(ROOT / "bundles" / "fashion-mnist"))
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each fleet run")
    parser.add_argument("--capacity-devices", type=int, default=12,
                        help="devices of the capacity run; fewer than --max-queue-requests, so that none is shed")
    parser.add_argument("--devices", type=int, default=64,
                        help="devices of the overload run; more than --max-queue-requests, so that the queue fills")
    parser.add_argument("--overload", type=float, default=2.0, help="offered load of the overload run / capacity")
    parser.add_argument("--deadline-ms", type=float, default=200.0, help="device deadline in the overload run")
    parser.add_argument("--max-queue-requests", type=int, default=16,
                        help="the worker's queue bound; below --devices, since each device has one input in flight")
    parser.add_argument("--overload-backoff-ms", type=float, default=None,
                        help="device backoff after an overloaded answer (default: the device's, 100; 0: none)")
    parser.add_argument("--fleet-processes", type=int, default=None,
                        help="processes the fleet runs in (default: one per CPU not given to the worker)")
    parser.add_argument("--pin", choices=("auto", "yes", "no"), default="auto",
                        help="pin the worker to CPU 0 and the fleet to the others (auto: with 3 or more CPUs)")
    parser.add_argument("--worker-cpu-quota", type=float, default=None, metavar="CORES",
                        help="hold the worker to this many CPUs by a cgroup CPU quota (root), so that a fleet on "
                             "a small machine can offer more than the worker serves")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    cpus = sorted(os.sched_getaffinity(0))
    pinned = args.pin == "yes" or (args.pin == "auto" and len(cpus) >= 3)
    fleet_cpus = cpus[1:] if pinned else None
    processes = args.fleet_processes or max(1, len(cpus) - 1)
    serve_args = ["--max-queue-requests", str(args.max_queue_requests)]
    fleet = {"bundle_path": args.bundle, "seconds": args.seconds, "connect_timeout_s": 60.0,
                 "overload_backoff_ms": args.overload_backoff_ms}

    load_before = os.getloadavg()
    worker = CloudServeProcess(args.bundle, serve_args=serve_args)
    group = None
    try:
        if pinned:
            pin(worker.pid, {cpus[0]})
        if args.worker_cpu_quota is not None:
            group = limit_cpu(worker.pid, args.worker_cpu_quota)
        # each device sends its next input as soon as its answer is in: the offered load is what comes back
        capacity_run = run_fleets(processes, fleet_cpus, args.capacity_devices, worker, rate_hz=1000.0,
                                  deadline_ms=5000.0, **fleet)
        capacity = capacity_run["answered_per_s"]
        worker_cores = capacity_run["worker_cpu_cores"]
        allotted = args.worker_cpu_quota if args.worker_cpu_quota is not None else 1.0 if pinned else None
        saturated = worker_cores is not None and worker_cores >= 0.9 * allotted if allotted else None
        rate = args.overload * capacity / args.devices
        overload_run = run_fleets(processes, fleet_cpus, args.devices, worker, rate_hz=rate,
                                  deadline_ms=args.deadline_ms, **fleet)
    finally:
        if group is not None:
            release_cgroup(group, worker.pid)
        worker.stop()

    report = {
        "machine": {"cpus": len(cpus), "load_average_before": [round(x, 2) for x in load_before],
                    "worker_pinned_to_cpu": cpus[0] if pinned else None,
                    "worker_cpu_quota_cores": args.worker_cpu_quota},
        "bundle": args.bundle, "serve_command": " ".join(["agilenn cloud serve", *worker.command[4:]]),
        "capacity_per_s": capacity, "worker_saturated": saturated,
        "capacity_run": capacity_run, "overload_run": overload_run,
    }
    notes = []
    if saturated is None:
        notes.append("worker neither pinned (fewer than 3 CPUs) nor under a CPU quota: whether the worker or the fleet limited the capacity "
                     "run is not known; see worker_cpu_cores")
    elif not saturated:
        notes.append("the worker's CPU was not saturated in the capacity run: capacity_per_s is the load "
                     "generator's limit, and the overload run did not overload the worker (give the fleet more CPUs)")
    report["notes"] = notes
    if args.json:
        print(json.dumps(report))
        return 0
    over = overload_run
    latency = over["latency_answered_ms"]
    cores = capacity_run["worker_cpu_cores"]
    print(f"capacity of one worker: {capacity:.0f} answered/s ({args.capacity_devices} devices, worker CPU "
          f"{'unknown' if cores is None else f'{cores:.2f} cores'}{', saturated' if saturated else ''})")
    print(f"overload run, {over['devices']} devices x {over['rate_hz_per_device']:.2f}/s = {over['offered_per_s']:.0f}/s "
          f"offered ({args.overload:g}x), deadline {over['deadline_ms']:g} ms, {args.seconds:g} s:")
    print(f"  inputs {over['inferences']}: answered by the cloud {over['answered_by_cloud']} "
          f"({over['answered_per_s']:.0f}/s), unanswered {over['unanswered']}, overloaded {over['overloaded']} "
          f"(share {over['share_overloaded']:.1%}; refused by the worker {over['shed_by_worker']:.0f})")
    if latency["p50"] is not None:
        print(f"  latency of the answered: p50 {latency['p50']:.2f} ms, p99 {latency['p99']:.2f} ms")
    print(f"  local answers by reason: {over['local_reasons']}")
    for note in notes:
        print(f"note: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
