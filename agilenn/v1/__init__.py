"""The agilenn.v1 wire contract: generated stubs plus small hand-written helpers.

`inference_pb2*.py(i)` are generated from protos/agilenn/v1/inference.proto by
scripts/gen_protos.sh; do not edit them by hand (tests/test_wire.py checks that
regenerating changes nothing). `tensors` holds the helpers both sides use to put arrays
into and out of `Tensor` messages.
"""
