"""What `agilenn device run --source` reads: what its help names, and a clear error for anything else."""

import gzip
import struct

import numpy as np
import pytest

from device_agent.sources import SourceError, iter_source


def idx_bytes(images: np.ndarray) -> bytes:
    return struct.pack(">BBBB", 0, 0, 0x08, images.ndim) + b"".join(
        struct.pack(">I", d) for d in images.shape) + images.tobytes()


@pytest.mark.parametrize("name", ["x.gz", "t10k-images-idx3-ubyte.gz", "x.idx.gz"])
def test_a_gzipped_idx_file_is_read_whatever_its_name_before_gz(tmp_path, name):
    images = np.arange(3 * 4 * 4, dtype=np.uint8).reshape(3, 4, 4)
    (tmp_path / name).write_bytes(gzip.compress(idx_bytes(images)))
    samples = list(iter_source(str(tmp_path / name), (1, 4, 4)))
    assert len(samples) == 3 and np.array_equal(samples[2][1].reshape(4, 4), images[2])


def test_a_gz_file_that_is_not_a_gzipped_idx_file_is_refused_with_its_name(tmp_path):
    (tmp_path / "notes.gz").write_bytes(b"plain text, not gzip")
    with pytest.raises(SourceError, match="notes.gz"):
        list(iter_source(str(tmp_path / "notes.gz"), (1, 4, 4)))
    (tmp_path / "other.gz").write_bytes(gzip.compress(b"\x01\x02\x03\x04 not idx"))
    with pytest.raises(SourceError, match="not an IDX file"):
        list(iter_source(str(tmp_path / "other.gz"), (1, 4, 4)))


def test_an_unknown_kind_of_file_is_refused_naming_what_is_read(tmp_path):
    (tmp_path / "x.png").write_bytes(b"\x89PNG")
    with pytest.raises(SourceError, match=r"\.npy file.*IDX file \(\.idx, \*-ubyte, or gzipped: \.gz\)"):
        list(iter_source(str(tmp_path / "x.png"), (1, 4, 4)))
