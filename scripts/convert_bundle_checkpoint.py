"""Convert a bundle's torch checkpoint (`partitioner.pt`, exported before the safetensors format) to
`partitioner.safetensors`, the format bundles now carry (see partitioner.checkpoint).

    python scripts/convert_bundle_checkpoint.py BUNDLE [BUNDLE ...]

Only for bundles this project exported itself: the old file is read with torch's `weights_only=True`
loader, which refuses anything but tensors and plain data. The new file must give back exactly the
same tensors; then the old file is deleted and the manifest names the new one. The checkpoint is not
part of the bundle hash, so the hash must stay the same, and this checks that it does.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch

from agilenn.bundle import Bundle, write_manifest
from partitioner.checkpoint import load_bundle_checkpoint, load_run_checkpoint, save_bundle_checkpoint
from partitioner.config import PartitionConfig
from partitioner.model import AgileNN


def convert(folder: Path) -> str:
    bundle = Bundle(folder)
    manifest = bundle.manifest
    old_name = manifest.files.get("checkpoint")
    if old_name is None or not old_name.endswith(".pt"):
        return f"{folder}: nothing to convert (checkpoint: {old_name})"
    state = load_run_checkpoint(folder / old_name)
    config = PartitionConfig.model_validate(state["config"])
    model = AgileNN(config, tuple(state["input_shape"]), state["num_classes"])
    model.load_state_dict(state["model"])
    reference_extractor = copy.deepcopy(model.extractor)
    reference_extractor.load_state_dict(state["reference_extractor"])
    new_name = save_bundle_checkpoint(folder, model, reference_extractor, config, tuple(state["input_shape"]),
                                      state["num_classes"])
    saved = load_bundle_checkpoint(folder / new_name)
    for part in ("model", "reference_extractor"):
        if saved[part].keys() != state[part].keys() or not all(
                torch.equal(saved[part][k], state[part][k]) for k in state[part]):
            (folder / new_name).unlink()
            raise RuntimeError(f"{folder}: the converted {part} differs from {old_name}; nothing changed")
    stamped = write_manifest(folder, manifest.model_copy(update={"files": {**manifest.files, "checkpoint": new_name}}))
    if stamped.bundle_hash != manifest.bundle_hash:
        raise RuntimeError(f"{folder}: bundle hash changed from {manifest.bundle_hash} to {stamped.bundle_hash}")
    (folder / old_name).unlink()
    Bundle(folder)
    return f"{folder}: {old_name} -> {new_name}, bundle hash unchanged ({stamped.bundle_hash})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundles", nargs="+", type=Path)
    for folder in parser.parse_args(argv).bundles:
        print(convert(folder))
    return 0


if __name__ == "__main__":
    sys.exit(main())
