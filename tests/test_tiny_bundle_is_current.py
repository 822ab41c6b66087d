"""The committed tiny bundle is exactly what its generator trains, as the gRPC stubs are what the proto
generates: training with pinned numerics and the export are bit-reproducible, so the comparison is exact."""

import subprocess
import sys
from pathlib import Path

import pytest

from agilenn.bundle import Bundle

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "tests" / "data" / "tiny-bundle"
REGENERATE = "python -m partitioner.testing --write tests/data/tiny-bundle"


def test_regenerating_the_tiny_bundle_changes_nothing(tmp_path):
    pytest.importorskip("torch", reason="training the tiny bundle needs the train extra")
    fresh = tmp_path / "tiny-bundle"
    # A process of its own: the numerics are pinned before torch loads (see partitioner.testing).
    subprocess.run([sys.executable, "-m", "partitioner.testing", "--write", str(fresh)], check=True, cwd=ROOT)
    committed, regenerated = Bundle(COMMITTED), Bundle(fresh)
    stale = (f"tests/data/tiny-bundle is not what partitioner/testing.py trains; "
             f"run `{REGENERATE}` and commit the result")
    assert regenerated.manifest.files == committed.manifest.files, stale
    for name in committed.manifest.files.values():
        assert (fresh / name).read_bytes() == (COMMITTED / name).read_bytes(), f"{name} differs: {stale}"
    # The hash covers all that decides a prediction; the manifest's config echo and measured metrics
    # (ONNX Runtime's, which vary with the CPU) may differ without harm.
    assert regenerated.bundle_hash == committed.bundle_hash, stale
