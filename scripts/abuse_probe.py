"""Reruns the security review's reproductions against a worker on loopback and prints what they cost.

    python scripts/abuse_probe.py --json

- owed answers: 150 requests of ~60 KB (`shape=[127]*60000`) on one InferStream whose answers are never
  read; the worker's RSS growth (the worker runs in a child process, measured from /proc);
- token checks: 300 calls with a known token id and wrong secrets while three devices make their first
  (uncached) calls, each on its own connection; how many devices were served;
- health and call limits: Watch without a token, and more concurrent streams than max_concurrent_rpcs.

Loopback only, bounded counts; needs the cloud extra.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
import queue
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "tests" / "data" / "tiny-bundle"
MAX_CONCURRENT_RPCS = 32


def _serve(tokens_file: str, pipe) -> None:
    """The child: one worker with tokens on loopback; sends its address, then serves until killed."""
    from agilenn.bundle import Bundle
    from cloud_worker.config import WorkerConfig
    from cloud_worker.testing import ServerThread
    from cloud_worker.tokens import TokenTable, read_token_file

    table = TokenTable(read_token_file(tokens_file).tokens)
    server = ServerThread(Bundle(BUNDLE), WorkerConfig(max_concurrent_rpcs=MAX_CONCURRENT_RPCS), tokens=table)
    pipe.send(server.address)
    while True:
        time.sleep(3600)


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def _channel(address: str):
    import grpc

    return grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])  # its own connection


def probe_owed_answers(address: str, pid: int, token: str) -> dict:
    from agilenn.v1 import inference_pb2, inference_pb2_grpc

    request = inference_pb2.InferRequest(bundle_hash="sha256:" + "0" * 64, features=inference_pb2.Tensor(
        data=b"x", shape=[127] * 60000, codec="range-v1"))
    sent = queue.SimpleQueue()

    def requests():
        for request_id in range(1, 151):
            request.request_id = request_id
            sent.put(request_id)
            yield request

    channel = _channel(address)
    stub = inference_pb2_grpc.InferenceStub(channel)
    metadata = (("authorization", f"Bearer {token}"),)
    # The same traffic once with its answers read: the worker's allocator reaches what serving ~60 KB
    # requests needs anyway, so that the growth below is what answers owed cost, not warm-up.
    warm = list(stub.InferStream(requests(), metadata=metadata, timeout=60))
    while not sent.empty():
        sent.get()
    before = _rss_bytes(pid)
    call = stub.InferStream(requests(), metadata=metadata, timeout=60)
    time.sleep(5.0)  # the answers are never read
    after = _rss_bytes(pid)
    call.cancel()
    channel.close()
    return {"requests": 150, "request_bytes": request.ByteSize(), "answer_bytes": warm[0].ByteSize(),
            "requests_taken_by_the_client_stack": sent.qsize(), "worker_rss_growth_mib": (after - before) / 2 ** 20}


def probe_token_checks(address: str, issued: dict[str, str]) -> dict:
    import grpc

    from agilenn.v1 import inference_pb2, inference_pb2_grpc

    def call(channel, token: str) -> str:
        try:
            inference_pb2_grpc.InferenceStub(channel).GetServiceInfo(
                inference_pb2.ServiceInfoRequest(), timeout=60, metadata=(("authorization", f"Bearer {token}"),))
            return "OK"
        except grpc.RpcError as exc:
            return exc.code().name

    victim = issued["victim"].partition(".")[0]
    attacker = _channel(address)
    devices = {name: _channel(address) for name in ("cam-1", "cam-2", "cam-3")}
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(max_workers=32) as pool:
        flood = [pool.submit(call, attacker, f"{victim}.{'A' * 43}") for _ in range(300)]
        served = {name: pool.submit(call, channel, issued[name]) for name, channel in devices.items()}
        device_outcomes = {name: future.result() for name, future in served.items()}
        flood_outcomes = [future.result() for future in flood]
    for channel in (attacker, *devices.values()):
        channel.close()
    return {"bad_checks": 300, "bad_check_outcomes": {k: flood_outcomes.count(k) for k in set(flood_outcomes)},
            "devices": device_outcomes, "devices_served": sum(v == "OK" for v in device_outcomes.values()),
            "seconds": time.perf_counter() - started}


def probe_limits(address: str, token: str) -> dict:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from agilenn.v1 import inference_pb2, inference_pb2_grpc

    channel = _channel(address)
    try:
        next(iter(health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=5)))
        watch = "OK"
    except grpc.RpcError as exc:
        watch = exc.code().name
    metadata = (("authorization", f"Bearer {token}"),)
    stub = inference_pb2_grpc.InferenceStub(channel)
    held, calls, refused = [], [], 0
    for index in range(MAX_CONCURRENT_RPCS + 10):
        q = queue.SimpleQueue()
        held.append(q)
        call = stub.InferStream(iter(q.get, None), metadata=metadata, timeout=20)
        q.put(inference_pb2.InferRequest(request_id=1, bundle_hash="sha256:" + "0" * 64))
        try:
            next(call)
            calls.append(call)
        except grpc.RpcError as exc:
            refused += exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    for q in held:
        q.put(None)
    channel.close()
    return {"health_watch_without_token": watch, "streams_opened": len(calls) + refused,
            "max_concurrent_rpcs": MAX_CONCURRENT_RPCS, "streams_served": len(calls), "streams_refused": refused}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    from cloud_worker.tokens import TokenFile, issue_token, write_token_file

    tokens = TokenFile()
    issued = {name: issue_token(tokens, name)[0] for name in ("victim", "cam-1", "cam-2", "cam-3", "probe")}
    folder = Path(tempfile.mkdtemp(prefix="agilenn-abuse-"))
    write_token_file(folder / "tokens.yaml", tokens)
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    worker = context.Process(target=_serve, args=(str(folder / "tokens.yaml"), child), daemon=True)
    worker.start()
    try:
        address = parent.recv()
        report = {
            "owed_answers": probe_owed_answers(address, worker.pid, issued["probe"]),
            "token_checks": probe_token_checks(address, issued),
            "limits": probe_limits(address, issued["probe"]),
        }
    finally:
        worker.kill()
        worker.join(10)
    report["passed"] = (report["owed_answers"]["worker_rss_growth_mib"] <= 5
                        and report["token_checks"]["devices_served"] == 3
                        and report["limits"]["health_watch_without_token"] == "UNAUTHENTICATED"
                        and report["limits"]["streams_refused"] > 0)
    print(json.dumps(report) if args.json else json.dumps(report, indent=1))
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
