"""The wire contract: stubs match the proto, messages have fixed bytes, tensors round-trip."""

import filecmp
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from agilenn.codec import BitPackCodec
from agilenn.v1 import inference_pb2
from agilenn.v1.tensors import RAW_F32LE, TensorError, from_raw_tensor, raw_tensor, unknown_field_numbers

ROOT = Path(__file__).resolve().parents[1]
GENERATED = ("inference_pb2.py", "inference_pb2.pyi", "inference_pb2_grpc.py")


def test_regenerating_the_stubs_changes_nothing(tmp_path):
    pytest.importorskip("grpc_tools")
    env = dict(os.environ, PYTHON=sys.executable)
    subprocess.run(["bash", str(ROOT / "scripts" / "gen_protos.sh"), str(tmp_path)], check=True, env=env)
    for name in GENERATED:
        fresh, committed = tmp_path / "agilenn" / "v1" / name, ROOT / "agilenn" / "v1" / name
        assert filecmp.cmp(fresh, committed, shallow=False), (
            f"agilenn/v1/{name} differs from what protos/agilenn/v1/inference.proto generates; "
            "run scripts/gen_protos.sh and commit the result")


def golden_request() -> inference_pb2.InferRequest:
    indices = (np.arange(2 * 2 * 2).reshape(2, 2, 2) % 4).astype(np.uint8)
    payload = BitPackCodec((2, 2, 2), 4).encode(indices)
    assert payload == bytes([0b00011011, 0b00011011])
    return inference_pb2.InferRequest(
        request_id=7, bundle_hash="sha256:ab",
        features=inference_pb2.Tensor(data=payload, shape=[2, 2, 2], codec="bitpack-v1"))


def test_request_golden_bytes():
    wire = golden_request().SerializeToString(deterministic=True)
    assert wire.hex() == ("0807" "1209" + b"sha256:ab".hex()
                          + "1a15" "0a02" "1b1b" "1203" "020202" "1a0a" + b"bitpack-v1".hex())
    assert inference_pb2.InferRequest.FromString(wire) == golden_request()


def test_response_golden_bytes():
    response = inference_pb2.InferResponse(
        request_id=7, logits=raw_tensor(np.array([1.0, -2.0], dtype=np.float32)),
        status=inference_pb2.Status(code=0), batch_size=3, worker_id="w0")
    wire = response.SerializeToString(deterministic=True)
    assert wire.hex() == ("0807" "1218" "0a08" "0000803f000000c0" "1201" "02" "1a09" + RAW_F32LE.encode().hex()
                          + "1a00" "2803" "3202" + b"w0".hex())


def test_raw_tensor_round_trip_and_errors():
    logits = np.array([[0.5, -1.25, 3.0]], dtype=np.float32)
    assert np.array_equal(from_raw_tensor(raw_tensor(logits)), logits)
    broken = inference_pb2.Tensor(data=b"\0" * 8, shape=[3], codec=RAW_F32LE)
    with pytest.raises(TensorError, match=r"raw-f32le tensor shaped \(3,\) needs 12 bytes, got 8"):
        from_raw_tensor(broken)
    with pytest.raises(TensorError, match="'range-v1' is not raw"):
        from_raw_tensor(inference_pb2.Tensor(codec="range-v1"))


def test_unknown_fields_are_found_in_the_request_and_its_tensor():
    request = golden_request()
    assert unknown_field_numbers(request) == []
    wire = request.SerializeToString() + bytes([(9 << 3) | 0, 1])  # field 9, varint 1
    assert unknown_field_numbers(inference_pb2.InferRequest.FromString(wire)) == [9]
    features = request.features.SerializeToString() + bytes([(5 << 3) | 0, 1])
    nested = inference_pb2.InferRequest(request_id=1)
    nested.features.ParseFromString(features)
    assert unknown_field_numbers(nested) == [5]
