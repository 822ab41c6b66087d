"""The one way agilenn opens an ONNX model: ONNX Runtime on the CPU, with a set thread count.

Every side (device, cloud, export checks, evaluation, calibration) goes through
`create_session`, so thread settings and log levels are the same everywhere.
onnxruntime is imported only when a session is made: the core stays importable without it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def create_session(path: str | Path, threads: int = 1) -> Any:
    """An `onnxruntime.InferenceSession` of `path` with `threads` intra-op threads and one inter-op thread."""
    import onnxruntime as ort

    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
