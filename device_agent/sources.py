"""Where the device agent's inputs come from, as (id, image) pairs.

- a `.npy` file: one sample (C, H, W) or (H, W), or a batch (N, C, H, W) or (N, H, W);
- a directory: every `.npy` file in it, in name order, each as above;
- an IDX file (`.idx`, `.idx.gz`, `*-ubyte`, `*-ubyte.gz`), as Fashion-MNIST ships;
- `-`: standard input carrying .npy arrays back to back (each as above), read as they
  arrive, so a sensor process can pipe samples in: `sensor | agilenn device run --source -`.

Images are raw pixel levels 0..255 (uint8, or floats on that scale).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np


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
    return name.endswith((".idx", ".idx.gz", "-ubyte", "-ubyte.gz"))


class _Unseekable:
    """Hides the file behind a stream so numpy reads it with read() alone (pipes cannot seek)."""

    def __init__(self, stream: BinaryIO) -> None:
        self.read = stream.read


def _read_stream(stream: BinaryIO, shape: tuple[int, int, int]) -> Iterator[tuple[str, np.ndarray]]:
    reader = _Unseekable(stream)
    count = 0
    while True:
        try:
            array = np.lib.format.read_array(reader, allow_pickle=False)
        except ValueError as exc:
            text = str(exc)
            if "magic string" in text and "got 0" in text:
                return  # a clean end between arrays
            raise SourceError(f"stdin: array {count} is not a complete .npy array: {exc}") from None
        yield from _samples(array, shape, f"stdin:{count}")
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
            yield from _samples(np.load(file, allow_pickle=False), shape, file.name)
        return
    if _is_idx(path):
        from agilenn.datasets import read_idx

        yield from _samples(read_idx(path), shape, path.name)
        return
    if path.suffix == ".npy":
        yield from _samples(np.load(path, allow_pickle=False), shape, path.name)
        return
    raise SourceError(f"source {source}: expected a .npy file, a directory of them, an IDX file or '-'")
