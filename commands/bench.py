"""`agilenn bench cloud`: the cloud data plane on loopback, against baselines measured in the same run.
(`agilenn bench device` times the device fronts: see commands/bench_device.py.)

One worker server (the very `create_server` stack the Ray actors host) runs in a child
process; this process is the client, on grpc.aio. Measured:

- echo_rtt_p50_ms: EchoStream, same server, no model, a message the size of a payload;
- remote_compute_p50_ms: remote.onnx alone on one sample (1 thread, in this process);
- infer_rtt_p50_ms / infer_rtt_p99_ms / throughput_1_stream_per_s: InferStream, one
  request in flight on one stream;
- throughput_16_streams_per_s / rtt_p99_16_streams_ms: 16 streams, one request in flight
  on each;
- overhead_ratio = infer_rtt_p50_ms / (echo_rtt_p50_ms + remote_compute_p50_ms);
- connect_p50_ms: a new channel's first call (GetServiceInfo), handshakes included.

With --secure the same measurements run again in the same invocation against a server with
mutual TLS and a device token (a development CA and token made for the run): `secure` holds
those figures, `secure_vs_plain` each secure figure over its plaintext one, and
`secure_cost_ms` what TLS and the token add to a round trip (p50, streamed and unary).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from agilenn.cli_flags import DEFAULT_BUNDLE


def _serve(bundle_dir: str, config_json: str, conn, security: dict | None = None) -> None:
    """Child process: one worker server until told to stop. `security`: ServeConfig's TLS and token
    file fields, to serve mutual TLS with tokens."""
    from agilenn.bundle import Bundle
    from cloud_worker.config import WorkerConfig
    from cloud_worker.server import create_server

    tls = tokens = None
    if security:
        from cloud_worker.security import TlsMaterial
        from cloud_worker.tokens import TokenTable, read_token_file

        tls = TlsMaterial.from_files(security["tls_cert_file"], security["tls_key_file"], security["client_ca_file"])
        tokens = TokenTable(read_token_file(security["tokens_file"]).tokens)

    async def run() -> None:
        server, port = create_server(Bundle(bundle_dir), WorkerConfig.model_validate_json(config_json),
                                     tls=tls, tokens=tokens)
        await server.start()
        conn.send(port)
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)
        await server.stop(1.0)

    asyncio.run(run())


def _samples(bundle, count: int) -> np.ndarray:
    """Remote indices of real test inputs when the bundle's dataset is at hand, else of random images."""
    from agilenn.datasets import sample_images

    images = sample_images(bundle.manifest.config.get("dataset"), bundle.manifest.input.shape, count)
    device = bundle.session("device")
    _, indices = device.run(None, {device.get_inputs()[0].name: bundle.prepare(images)})
    return indices


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def remote_compute_ms(bundle, indices: np.ndarray, repeats: int) -> list[float]:
    session = bundle.session("remote", threads=1)
    name = session.get_inputs()[0].name
    times = []
    for i in range(repeats):
        x = indices[i % len(indices)][None]
        start = time.perf_counter()
        session.run(None, {name: x})
        times.append((time.perf_counter() - start) * 1000.0)
    return times


async def _stream_rtts(make_call, messages: list, count: int, warmup: int) -> tuple[list[float], float]:
    """One stream, one message in flight: round trips in ms, and the elapsed seconds of the measured part."""
    call = make_call()
    for i in range(warmup):
        await call.write(messages[i % len(messages)])
        await call.read()
    rtts = []
    started = time.perf_counter()
    for i in range(count):
        sent = time.perf_counter()
        await call.write(messages[i % len(messages)])
        response = await call.read()
        rtts.append((time.perf_counter() - sent) * 1000.0)
        status = getattr(response, "status", None)
        if status is not None and status.code != 0:
            raise RuntimeError(f"the worker answered {status.code}: {status.message}")
    elapsed = time.perf_counter() - started
    await call.done_writing()
    return rtts, elapsed


async def _client(port: int, bundle, indices: np.ndarray, requests: int, streams: int,
                  security: dict | None = None) -> dict[str, Any]:
    """`security`: DeviceConfig's TLS and token file fields, to call as a device with a certificate and token."""
    import grpc

    from agilenn.v1 import inference_pb2, inference_pb2_grpc
    from agilenn.v1.tensors import BUNDLE_HASH_METADATA

    payloads = [bundle.codec.encode(sample) for sample in indices]
    shape = list(bundle.remote_shape)
    address = f"127.0.0.1:{port}"
    token: tuple = ()
    if security:
        credentials = grpc.ssl_channel_credentials(*(Path(security[field]).read_bytes()
                                                     for field in ("ca_file", "key_file", "cert_file")))
        token = (("authorization", "Bearer " + Path(security["token_file"]).read_text().strip()),)

        def open_channel():
            return grpc.aio.secure_channel(address, credentials)
    else:
        def open_channel():
            return grpc.aio.insecure_channel(address)
    # streams name the bundle once, as the device agent does
    named = ((BUNDLE_HASH_METADATA, bundle.bundle_hash),) + token
    infer = [inference_pb2.InferRequest(request_id=i + 1,
                                        features=inference_pb2.Tensor(data=p, shape=shape, codec=bundle.codec.codec_id))
             for i, p in enumerate(payloads)]
    echo = [inference_pb2.EchoMessage(request_id=i + 1, data=p) for i, p in enumerate(payloads)]
    warmup = max(requests // 10, 50)
    async with open_channel() as channel:
        stub = inference_pb2_grpc.InferenceStub(channel)
        await stub.GetServiceInfo(inference_pb2.ServiceInfoRequest(), timeout=30, metadata=token)
        echo_rtts, _ = await _stream_rtts(partial(stub.EchoStream, metadata=token), echo, requests, warmup)
        infer_rtts, infer_s = await _stream_rtts(partial(stub.InferStream, metadata=named), infer, requests, warmup)
        unary = []
        for i in range(min(requests, 500)):
            sent = time.perf_counter()
            await stub.Infer(infer[i % len(infer)], metadata=named)
            unary.append((time.perf_counter() - sent) * 1000.0)

    connects = []  # a device (re)connecting: a new channel and its handshake call
    for _ in range(20):
        sent = time.perf_counter()
        async with open_channel() as channel:
            await inference_pb2_grpc.InferenceStub(channel).GetServiceInfo(
                inference_pb2.ServiceInfoRequest(), timeout=30, metadata=token)
            connects.append((time.perf_counter() - sent) * 1000.0)

    # one channel per stream, as separate devices would have
    channels = [open_channel() for _ in range(streams)]
    try:
        stubs = [inference_pb2_grpc.InferenceStub(c) for c in channels]
        per_stream = max(requests // 4, 100)
        await asyncio.gather(*(_stream_rtts(partial(s.InferStream, metadata=named), infer, warmup, 0) for s in stubs))
        started = time.perf_counter()
        outcomes = await asyncio.gather(*(_stream_rtts(partial(s.InferStream, metadata=named), infer, per_stream, 0)
                                          for s in stubs))
        many_s = time.perf_counter() - started
    finally:
        for c in channels:
            await c.close()
    many_rtts = [r for rtts, _ in outcomes for r in rtts]
    return {
        "echo_rtt_p50_ms": _pct(echo_rtts, 50),
        "infer_rtt_p50_ms": _pct(infer_rtts, 50),
        "infer_rtt_p99_ms": _pct(infer_rtts, 99),
        "infer_unary_rtt_p50_ms": _pct(unary, 50),
        "throughput_1_stream_per_s": requests / infer_s,
        f"throughput_{streams}_streams_per_s": len(many_rtts) / many_s,
        f"rtt_p50_{streams}_streams_ms": _pct(many_rtts, 50),
        f"rtt_p99_{streams}_streams_ms": _pct(many_rtts, 99),
        "connect_p50_ms": _pct(connects, 50),
        "payload_bytes_median": float(np.median([len(p) for p in payloads])),
    }


def _measure(bundle_dir: str | Path, config, bundle, indices: np.ndarray, requests: int, streams: int,
             security=None) -> dict[str, Any]:
    """Start one worker server in a child process, measure it from this one, stop it.
    `security`: a cloud_worker.dev_credentials.DevSecurity to serve and call with."""
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    serve_security = security.serve_fields() if security is not None else None
    process = context.Process(target=_serve, args=(str(bundle_dir), config.model_dump_json(), child, serve_security),
                              daemon=True)
    process.start()
    try:
        if not parent.poll(120):
            raise RuntimeError("the bench server did not start within 120 s")
        port = parent.recv()
        return asyncio.run(_client(port, bundle, indices, requests, streams,
                                   security.device_fields() if security is not None else None))
    finally:
        parent.send("stop")
        process.join(15)
        if process.is_alive():
            process.kill()


def bench_cloud(bundle_dir: str | Path, requests: int = 2000, streams: int = 16,
                max_batch_size: int | None = None, max_batch_wait_ms: float | None = None,
                secure: bool = False) -> dict[str, Any]:
    from agilenn.bundle import Bundle
    from cloud_worker.config import WorkerConfig

    bundle = Bundle(bundle_dir)
    overrides = {k: v for k, v in (("max_batch_size", max_batch_size), ("max_batch_wait_ms", max_batch_wait_ms))
                 if v is not None}
    config = WorkerConfig(**overrides)
    indices = _samples(bundle, 256)
    compute = remote_compute_ms(bundle, indices, max(requests, 500))

    client = _measure(bundle_dir, config, bundle, indices, requests, streams)
    secured = None
    if secure:
        from cloud_worker.dev_credentials import write_dev_security

        with tempfile.TemporaryDirectory(prefix="agilenn-bench-secure-") as folder:
            secured = _measure(bundle_dir, config, bundle, indices, requests, streams,
                               write_dev_security(folder, device="bench"))
    report = {
        "bundle": str(bundle_dir),
        "bundle_hash": bundle.bundle_hash,
        "cpus": os.cpu_count(),
        "requests": requests,
        "streams": streams,
        "max_batch_size": config.max_batch_size,
        "max_batch_wait_ms": config.max_batch_wait_ms,
        "remote_compute_p50_ms": _pct(compute, 50),
        **client,
    }
    report["overhead_ratio"] = report["infer_rtt_p50_ms"] / (report["echo_rtt_p50_ms"] + report["remote_compute_p50_ms"])
    report[f"throughput_ratio_{streams}_vs_1"] = (
        report[f"throughput_{streams}_streams_per_s"] / report["throughput_1_stream_per_s"])
    if secured is not None:
        report["secure"] = {"mutual_tls": True, "token": True, **secured}
        report["secure_vs_plain"] = {key: secured[key] / client[key] for key in client
                                     if key != "payload_bytes_median" and client[key]}
        report["secure_cost_ms"] = {
            "infer_stream_p50": secured["infer_rtt_p50_ms"] - client["infer_rtt_p50_ms"],
            "infer_unary_p50": secured["infer_unary_rtt_p50_ms"] - client["infer_unary_rtt_p50_ms"],
            "connect_p50": secured["connect_p50_ms"] - client["connect_p50_ms"],
        }
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="agilenn bench", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    cloud = commands.add_parser("cloud", help="round trips and throughput of one worker on loopback")
    cloud.add_argument("--bundle", default=DEFAULT_BUNDLE, help=f"bundle folder (default {DEFAULT_BUNDLE})")
    cloud.add_argument("--requests", type=int, default=2000, help="measured requests on one stream")
    cloud.add_argument("--streams", type=int, default=16, help="concurrent streams for the throughput run")
    cloud.add_argument("--max-batch-size", type=int, default=None)
    cloud.add_argument("--max-batch-wait-ms", type=float, default=None)
    cloud.add_argument("--secure", action="store_true",
                       help="measure again over mutual TLS with a device token, in the same run, and report the ratios")
    cloud.add_argument("--json", action="store_true", help="print one JSON object")
    device = commands.add_parser("device", help="time per sample of the bundle's float32 and int8 device fronts")
    device.add_argument("--bundle", default=DEFAULT_BUNDLE, help=f"bundle folder (default {DEFAULT_BUNDLE})")
    device.add_argument("--samples", type=int, default=2000, help="measured samples per front")
    device.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    if args.command == "device":
        from commands.bench_device import bench_device

        report = bench_device(args.bundle, args.samples)
    else:
        report = bench_cloud(args.bundle, args.requests, args.streams, args.max_batch_size, args.max_batch_wait_ms,
                             secure=args.secure)
    if args.json:
        print(json.dumps(report))
    else:
        width = max(len(k) for k in report)
        for key, value in report.items():
            print(f"{key:<{width}}  {value:.4f}" if isinstance(value, float) else f"{key:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
