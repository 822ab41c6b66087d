#!/usr/bin/env bash
# Regenerate the Python stubs of the wire contract into agilenn/v1/ (or into $1).
# The stubs are committed; tests/test_wire.py checks that regenerating changes nothing.
# Needs grpcio-tools (pip install 'agilenn[dev]').
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$root}"
python="${PYTHON:-python}"
mkdir -p "$out/agilenn/v1"
"$python" -m grpc_tools.protoc \
    --proto_path="$root/protos" \
    --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" \
    agilenn/v1/inference.proto
