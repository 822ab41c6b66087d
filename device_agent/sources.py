"""Where the device agent's inputs come from, as (id, image) pairs.

- a `.npy` file: one sample (C, H, W) or (H, W), or a batch (N, C, H, W) or (N, H, W);
- a directory: every `.npy` file in it, in name order, each as above;
- an IDX file (`.idx`, `*-ubyte`, or either gzipped: any name ending `.gz`), as Fashion-MNIST ships;
- `-`: standard input carrying .npy arrays back to back (each as above), read as they
  arrive, so a sensor process can pipe samples in: `sensor | agilenn device run --source -`.

Images are raw pixel levels 0..255 (uint8, or floats on that scale).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

# A .npy array on stdin may hold at most this many samples: its header is checked before any data is read.
MAX_STREAM_SAMPLES = 65536


class SourceError(ValueError):
    """A source that does not exist or holds arrays of the wrong shape."""


def _samples(array: np.ndarray, shape: tuple[int, int, int], name: str) -> Iterator[tuple[str, np.ndarray]]:
    channels = shape[0]
    if array.shape == shape or (channels == 1 and array.shape == shape[1:]):
        yield name, array.reshape(shape)
        return
    if array.ndim >= 3 and (array.shape[1:] == shape or (channels == 1 and array.shape[1:] == shape[1:])):
        batch = array.reshape((array.shape[0], *shape))
        for i, image in enumerate(batch):
            yield f"{name}[{i}]", image
        return
    raise SourceError(f"{name}: array shaped {array.shape}; the bundle takes one sample {shape} or a batch (N, *{shape})")


def _is_idx(path: Path) -> bool:
    name = path.name
    return name.endswith((".idx", "-ubyte", ".gz"))  # gzip holds only IDX here


def _header(stream, name: str) -> tuple[tuple[int, ...], np.dtype, bool, int]:
    """(shape, dtype, fortran order, data bytes) of a .npy header, read without reading the data."""
    try:
        version = np.lib.format.read_magic(stream)
        header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                  else np.lib.format.read_array_header_2_0)(stream)
    except ValueError as exc:
        raise SourceError(f"{name}: not a .npy array: {exc}") from None
    shape, fortran, dtype = header
    if dtype.hasobject:
        raise SourceError(f"{name}: a .npy array of Python objects is refused (it would need unpickling)")
    return tuple(shape), dtype, fortran, math.prod(int(d) for d in shape) * dtype.itemsize


def load_npy(path: Path) -> np.ndarray:
    """A .npy file, after checking that its header declares no more data than the file holds."""
    with open(path, "rb") as stream:
        shape, dtype, _, declared = _header(stream, path.name)
        held = path.stat().st_size - stream.tell()
    if declared > held:
        raise SourceError(f"{path.name}: the header declares {shape} {dtype} ({declared:,} bytes) but the file "
                          f"holds {held:,} bytes of data")
    return np.load(path, allow_pickle=False)


class _Prefixed:
    """A stream with bytes already read put back in front (a pipe cannot seek)."""

    def __init__(self, prefix: bytes, stream: BinaryIO) -> None:
        self._prefix, self._stream = prefix, stream

    def read(self, size: int = -1) -> bytes:
        head, self._prefix = self._prefix[:size] if size >= 0 else self._prefix, b""
        rest = size - len(head) if size >= 0 else -1
        return head + (self._stream.read(rest) if rest != 0 else b"")


def _read_stream(stream: BinaryIO, shape: tuple[int, int, int]) -> Iterator[tuple[str, np.ndarray]]:
    limit = MAX_STREAM_SAMPLES * math.prod(shape) * 8  # float64 samples at most
    count = 0
    while True:
        name = f"stdin:{count}"
        first = stream.read(1)
        if not first:
            return  # a clean end between arrays
        array_shape, dtype, fortran, declared = _header(_Prefixed(first, stream), name)
        if declared > limit:
            raise SourceError(f"{name}: the header declares {array_shape} {dtype} ({declared:,} bytes), more than "
                              f"{MAX_STREAM_SAMPLES} samples of {shape}")
        data = stream.read(declared)
        if len(data) != declared:
            raise SourceError(f"{name}: is not a complete .npy array: {len(data)} of {declared} data bytes")
        array = np.frombuffer(data, dtype=dtype).reshape(array_shape, order="F" if fortran else "C")
        yield from _samples(array, shape, name)
        count += 1


def iter_source(source: str, shape: tuple[int, int, int]) -> Iterator[tuple[str, np.ndarray]]:
    """(id, image) pairs from a source spec; see the module docstring."""
    if source == "-":
        yield from _read_stream(sys.stdin.buffer, shape)
        return
    path = Path(source)
    if not path.exists():
        raise SourceError(f"source {source} does not exist")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix == ".npy")
        if not files:
            raise SourceError(f"source directory {source} holds no .npy files")
        for file in files:
            yield from _samples(load_npy(file), shape, file.name)
        return
    if _is_idx(path):
        from agilenn.datasets import read_idx

        try:
            images = read_idx(path)
        except (ValueError, OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
            raise SourceError(f"source {source}: {exc}") from None
        yield from _samples(images, shape, path.name)
        return
    if path.suffix == ".npy":
        yield from _samples(load_npy(path), shape, path.name)
        return
    raise SourceError(f"source {source}: expected a .npy file, a directory of them, an IDX file (.idx, *-ubyte, "
                      "or gzipped: .gz) or '-'")
