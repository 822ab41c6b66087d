"""Findings of the security review of the serving path, each with the input that used to cost too much."""

from __future__ import annotations

import json
import os
import queue
import shutil
import stat
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from agilenn.bundle import Bundle, BundleError
from agilenn.codec import PayloadError, ZlibCodec
from agilenn.v1 import inference_pb2
from agilenn.v1.tensors import TensorError, from_raw_tensor

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "data" / "tiny-bundle"


# -- 3. a malformed answer ---------------------------------------------------------------------------

def test_a_shape_that_overflows_int64_is_a_tensor_error_not_a_crash():
    tensor = inference_pb2.Tensor(data=b"", shape=[2 ** 31, 2 ** 31, 4], codec="raw-f32le")
    with pytest.raises(TensorError, match="needs 73786976294838206464 bytes, got 0"):
        from_raw_tensor(tensor)


def test_the_device_agent_answers_locally_for_logits_of_the_wrong_shape(worker_server, monkeypatch):
    from cloud_worker import server as server_module
    from device_agent import LOCAL_FALLBACK, DeviceAgent, DeviceConfig

    bundle = Bundle(TINY)
    real = server_module.logits_tensor
    monkeypatch.setattr(server_module, "logits_tensor", lambda row, codec="raw-f32le": real(row[:3], codec))
    with worker_server(bundle) as server, DeviceAgent(bundle, DeviceConfig(cloud=[server.address])) as agent:
        assert agent.wait_ready(10)
        result = agent.infer(np.zeros(bundle.manifest.input.shape, dtype=np.uint8))
    assert result.source == LOCAL_FALLBACK
    assert result.reason.startswith("worker_error: remote logits shaped (3,), expected")


# -- 4. zlib bombs -----------------------------------------------------------------------------------

def test_zlib_payloads_inflate_no_further_than_a_payload_holds():
    codec = ZlibCodec((8, 7, 7), 3)
    bomb = zlib.compress(b"\0" * (64 << 20), 9)
    with pytest.raises(PayloadError, match="inflates beyond the 98 bytes of 392 indices"):
        codec.decode(bomb)
    with pytest.raises(PayloadError, match="incomplete or truncated"):
        codec.decode(codec.encode(np.zeros((8, 7, 7), dtype=np.uint8))[:-3])


# -- 6. bundle file names ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["/etc/hostname", "../../../etc/hostname", "sub/remote.onnx", ".."])
def test_bundle_files_outside_the_folder_are_refused(tmp_path, name):
    folder = tmp_path / "bundle"
    shutil.copytree(TINY, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"]["remote"] = name
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="is not a plain file name inside the bundle"):
        Bundle(folder, verify=False)


def test_a_link_out_of_the_bundle_is_refused(tmp_path):
    folder = tmp_path / "bundle"
    shutil.copytree(TINY, folder)
    outside = tmp_path / "outside.onnx"
    shutil.copy(folder / "remote.onnx", outside)
    (folder / "remote.onnx").unlink()
    (folder / "remote.onnx").symlink_to(outside)
    with pytest.raises(BundleError, match="leads out of the bundle"):
        Bundle(folder, verify=False)


def test_a_device_front_that_does_not_have_its_declared_digest_is_refused(tmp_path):
    folder = tmp_path / "bundle"
    shutil.copytree(ROOT / "bundles" / "fashion-mnist", folder, ignore=shutil.ignore_patterns("*.safetensors"))
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"].pop("checkpoint", None)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with (folder / "device.int8.onnx").open("ab") as stream:
        stream.write(b"\0")
    with pytest.raises(BundleError, match="int8 device front device.int8.onnx does not have the SHA-256"):
        Bundle(folder)


# -- 7. a crafted .npy header ------------------------------------------------------------------------

def _bomb_npy() -> bytes:
    header = "{'descr': '<f8', 'fortran_order': False, 'shape': (1000000000000000,), }"
    header += " " * (118 - len(header)) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode()


def test_a_npy_bomb_is_a_clear_error_naming_the_file(tmp_path, capsys):
    from device_agent.cli import main

    (tmp_path / "bomb.npy").write_bytes(_bomb_npy())
    code = main(["run", "--bundle", str(TINY), "--source", str(tmp_path / "bomb.npy"), "--sink",
                 str(tmp_path / "out.jsonl"), "--log-format", "text"])
    assert code == 1
    assert "bomb.npy: the header declares (1000000000000000,) float64" in capsys.readouterr().err


def test_a_npy_bomb_on_stdin_is_refused_before_reading(tmp_path):
    import io

    from device_agent.sources import SourceError, _read_stream

    with pytest.raises(SourceError, match="more than 65536 samples"):
        list(_read_stream(io.BytesIO(_bomb_npy()), (1, 16, 16)))


# -- 8. token files ----------------------------------------------------------------------------------

def test_tokens_add_out_writes_the_token_for_its_owner_only(tmp_path):
    from commands.tokens import main

    out = tmp_path / "cam-17.token"
    out.write_text("old")
    os.chmod(out, 0o644)
    assert main(["add", "--file", str(tmp_path / "tokens.yaml"), "--device", "cam-17", "--out", str(out)]) == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    token = out.read_text().strip()
    assert "." in token and token != "old"


def test_secrets_are_ignored_by_git_and_kept_out_of_images():
    gitignore = (ROOT / ".gitignore").read_text().splitlines()
    dockerignore = (ROOT / ".dockerignore").read_text().splitlines()
    for pattern in ("*.key", "*.pem", "*.token"):
        assert pattern in gitignore
        assert f"**/{pattern}" in dockerignore


# -- 1. answers a client never reads -----------------------------------------------------------------

def test_an_error_answer_quotes_no_more_than_a_short_prefix_of_the_request(worker_server):
    import grpc

    from agilenn.v1 import inference_pb2_grpc

    bundle = Bundle(TINY)
    request = inference_pb2.InferRequest(request_id=1, bundle_hash=bundle.bundle_hash, features=inference_pb2.Tensor(
        data=b"x", shape=[127] * 6000, codec=bundle.codec.codec_id))
    with worker_server(bundle) as server, grpc.insecure_channel(server.address) as channel:
        (answer,) = list(inference_pb2_grpc.InferenceStub(channel).InferStream(iter([request]), timeout=10))
    assert answer.status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert len(answer.status.message) < 300 and "characters)" in answer.status.message
    assert answer.ByteSize() < 400


def test_a_stream_stops_being_read_when_it_owes_too_many_answers():
    """A client that takes no answers: the worker reads at most max_owed_answers (+ the one in hand) of its
    requests, and flow control holds the rest with the client."""
    import asyncio

    pytest.importorskip("grpc_health", reason="builds a worker's servicer: needs the cloud extra")
    from cloud_worker.config import WorkerConfig
    from cloud_worker.metrics import WorkerMetrics
    from cloud_worker.server import InferenceServicer

    bundle = Bundle(TINY)
    read = []

    async def requests():
        for request_id in range(1, 200):
            read.append(request_id)
            yield inference_pb2.InferRequest(request_id=request_id, bundle_hash="sha256:" + "0" * 64)

    class NeverTaken:  # a client whose answers are never taken: writing one waits forever
        def invocation_metadata(self):
            return ()

        async def write(self, _answer):
            await asyncio.Event().wait()

        async def abort(self, code, message):
            raise AssertionError(f"aborted: {code} {message}")

    async def run() -> None:
        # the servicer alone: no gRPC server to outlive this event loop
        servicer = InferenceServicer(bundle, WorkerConfig(max_owed_answers=4), "worker-x", WorkerMetrics("worker-x"),
                                     list)
        stream = asyncio.ensure_future(servicer.InferStream(requests(), NeverTaken()))
        await asyncio.sleep(0.5)
        stream.cancel()

    asyncio.run(run())
    assert len(read) <= 4 + 2  # four owed, one being written, one in hand


# -- 5. health watches and connection limits ---------------------------------------------------------

def test_only_health_check_is_open_without_a_token(worker_server):
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from cloud_worker.tokens import TokenTable

    bundle = Bundle(TINY)
    tokens = TokenTable()
    with worker_server(bundle, tokens=tokens) as server, grpc.insecure_channel(server.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as caught:
            next(iter(health.Watch(health_pb2.HealthCheckRequest(), timeout=5)))
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_calls_beyond_the_concurrent_limit_are_refused(worker_server):
    import grpc

    from agilenn.v1 import inference_pb2_grpc
    from cloud_worker.config import WorkerConfig

    bundle = Bundle(TINY)
    with worker_server(bundle, WorkerConfig(max_concurrent_rpcs=2)) as server, \
            grpc.insecure_channel(server.address) as channel:
        stub = inference_pb2_grpc.InferenceStub(channel)
        held = [queue.SimpleQueue() for _ in range(4)]

        def source(q):
            while True:
                item = q.get()
                if item is None:
                    return
                yield item

        calls = []
        for q in held[:2]:  # two streams, each answered once: both are open on the worker
            calls.append(stub.InferStream(source(q), timeout=10))
            q.put(inference_pb2.InferRequest(request_id=1, bundle_hash="sha256:" + "0" * 64))
            assert next(calls[-1]).status.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
        codes = []
        for q in held[2:]:
            with pytest.raises(grpc.RpcError) as caught:
                next(stub.InferStream(source(q), timeout=10))
            codes.append(caught.value.code())
        for q in held:
            q.put(None)
    assert codes == [grpc.StatusCode.RESOURCE_EXHAUSTED] * 2
