"""Remove the exporter's source stack traces from ONNX files exported before the bundle writer did so.

    python scripts/strip_build_paths.py [FOLDER ...]     (default: bundles/)

Every bundle (a folder with manifest.json) and every other folder of ONNX files (the local-only
baselines) under the given folders is stripped in place. Each model is run on the same random
inputs before and after and must give bit-identical outputs: stripping removes node metadata only.
A stripped bundle's ONNX bytes change, so its manifest is re-stamped with the new bundle hash (and
the copy of it in the recorded metrics); a bundle that does not verify before is refused rather
than re-stamped, so the script cannot launder a modified bundle. Prints old -> new hashes, which
files quoting the old hash (reports, measured data) then need.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from agilenn.bundle import MANIFEST_NAME, Bundle, write_manifest
from agilenn.onnx_sessions import create_session
from partitioner.bundle_writer import strip_build_paths

CHECK_BATCH = 4


def _random_inputs(session, uint8_levels: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    feeds = {}
    for spec in session.get_inputs():
        shape = [CHECK_BATCH if not isinstance(d, int) else d for d in spec.shape]
        if spec.type == "tensor(uint8)":
            feeds[spec.name] = rng.integers(0, uint8_levels, shape).astype(np.uint8)
        elif spec.type == "tensor(float)":
            feeds[spec.name] = rng.uniform(0, 255, shape).astype(np.float32)
        else:
            raise ValueError(f"no check inputs for {spec.name} of type {spec.type}")
    return feeds


def strip_checked(path: Path, uint8_levels: int = 2) -> bool:
    """Strip `path` in place; True when it held build paths. Restores the file if outputs change."""
    original = path.read_bytes()
    before_session = create_session(path)
    feeds = _random_inputs(before_session, uint8_levels, np.random.default_rng(0))
    before = before_session.run(None, feeds)
    if not strip_build_paths(path):
        return False
    after = create_session(path).run(None, feeds)
    if not all(a.dtype == b.dtype and np.array_equal(a, b) for a, b in zip(before, after)):
        path.write_bytes(original)
        raise RuntimeError(f"{path}: outputs changed when stripping; file restored")
    return True


def strip_bundle(folder: Path) -> tuple[str, str] | None:
    """Strip a bundle's ONNX files and re-stamp its manifest; (old hash, new hash), or None if unchanged."""
    bundle = Bundle(folder)  # verifies the hash as it stands
    manifest = bundle.manifest
    changed = [strip_checked(folder / name, manifest.quantizer.levels)
               for name in manifest.files.values() if name.endswith(".onnx")]
    if not any(changed):
        return None
    stamped = write_manifest(folder, manifest)
    if "bundle_hash" in manifest.metrics:
        metrics = {**manifest.metrics, "bundle_hash": stamped.bundle_hash}
        stamped = write_manifest(folder, stamped.model_copy(update={"metrics": metrics}))
    Bundle(folder)
    return manifest.bundle_hash, stamped.bundle_hash


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="*", type=Path, default=[Path("bundles")])
    args = parser.parse_args(argv)
    for root in args.folders:
        for manifest in sorted(root.rglob(MANIFEST_NAME)):
            hashes = strip_bundle(manifest.parent)
            print(f"{manifest.parent}: " + (f"{hashes[0]} -> {hashes[1]}" if hashes else "no build paths"))
        bundles = {m.parent for m in root.rglob(MANIFEST_NAME)}
        for model in sorted(root.rglob("*.onnx")):
            if model.parent not in bundles:
                print(f"{model}: " + ("stripped" if strip_checked(model) else "no build paths"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
