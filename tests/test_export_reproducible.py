"""The same trained model exports to the same bytes wherever the sources and the output folder lie:
no build path reaches a bundle, so its hash names the model, not the machine that exported it."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="exports a bundle: needs the train extra")

from agilenn.bundle import MANIFEST_NAME, Bundle

REPO = Path(__file__).resolve().parents[1]
EXPORTER_PACKAGES = ("agilenn", "partitioner")

# Runs in a fresh interpreter on a copy of the packages: re-export a bundle's trained split.
EXPORT_FROM_CHECKPOINT = """
import copy, sys
from pathlib import Path

import partitioner
from partitioner.analysis import load_checkpoint
from partitioner.checkpoint import load_bundle_checkpoint
from partitioner.export import export_bundle
from partitioner.testing import synthetic_dataset

checkpoint, out, sources = map(Path, sys.argv[1:])
if not Path(partitioner.__file__).resolve().is_relative_to(sources.resolve()):
    sys.exit(f"imported {partitioner.__file__}, not the copy in {sources}")
model, config = load_checkpoint(checkpoint)
reference_extractor = copy.deepcopy(model.extractor)
reference_extractor.load_state_dict(load_bundle_checkpoint(checkpoint)["reference_extractor"])
export_bundle(model, reference_extractor, config, synthetic_dataset(seed=config.seed), out)
"""


def test_another_checkout_exports_the_same_bytes_and_hash(trained_tiny_bundle, tmp_path):
    first = trained_tiny_bundle
    sources = tmp_path / "another" / "checkout"
    for package in EXPORTER_PACKAGES:
        shutil.copytree(REPO / package, sources / package, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path / "another-output" / "bundle"
    checkpoint = first.folder / first.manifest.files["checkpoint"]
    done = subprocess.run([sys.executable, "-c", EXPORT_FROM_CHECKPOINT, str(checkpoint), str(out), str(sources)],
                          cwd=sources, env={**os.environ, "PYTHONPATH": str(sources)}, capture_output=True,
                          text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-4000:]

    second = Bundle(out)
    assert second.bundle_hash == first.bundle_hash
    models = sorted(name for name in first.manifest.files.values() if name.endswith(".onnx"))
    assert models == sorted(name for name in second.manifest.files.values() if name.endswith(".onnx"))
    for name in models:
        assert (out / name).read_bytes() == (first.folder / name).read_bytes(), name
    for folder in (first.folder, out):
        for name in [*models, MANIFEST_NAME]:
            data = (folder / name).read_bytes()
            assert b"stack_trace" not in data, folder / name
            for tree in (REPO, sources):
                assert str(tree).encode() not in data, f"{folder / name} names {tree}"
