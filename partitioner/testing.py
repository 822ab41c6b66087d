"""Tiny, quick data and bundles for tests of every package (trains in seconds on a CPU).

`python -m partitioner.testing --write tests/data/tiny-bundle` regenerates the tiny bundle that the
tests without torch load; tests/test_tiny_bundle_is_current.py checks that it is current.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from agilenn.bundle import Bundle, write_manifest
from agilenn.datasets import Dataset
from partitioner.config import PartitionConfig

TINY_SIDE = 16
TINY_CLASSES = 4


def synthetic_dataset(train: int = 256, test: int = 64, side: int = TINY_SIDE, classes: int = TINY_CLASSES,
                      seed: int = 0) -> Dataset:
    """Noisy images whose class is the quadrant holding a bright square: learnable in one epoch."""
    rng = np.random.default_rng(seed)

    def make(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, classes, n)
        images = rng.integers(0, 60, (n, side, side)).astype(np.float64)
        half = side // 2
        for i, label in enumerate(labels):
            row, col = divmod(int(label) % 4, 2)
            images[i, row * half + 2: row * half + half - 2, col * half + 2: col * half + half - 2] += 180
        return np.clip(images, 0, 255).astype(np.uint8), labels

    train_x, train_y = make(train)
    test_x, test_y = make(test)
    return Dataset.from_arrays(train_x, train_y, test_x, test_y, name="synthetic")


def tiny_config(**overrides) -> PartitionConfig:
    data = {
        "name": "tiny",
        "seed": 0,
        "dataset": "synthetic",
        "mean": 0.2,
        "std": 0.3,
        "local_channels": 2,
        "networks": {
            "extractor": {"name": "separable-extractor", "args": {"out_channels": 6, "width": 8}},
            "local": {"name": "mlp-head", "args": {"hidden": 16}},
            "remote": {"name": "conv-head", "args": {"widths": [16], "pool": "average"}},
            "reference": {"name": "conv-head", "args": {"widths": [16], "pool": "average"}},
        },
        "quantizer": {"levels": 4},
        "augment": {"max_shift_px": 1, "horizontal_flip": False},
        "reference_training": {"epochs": 3, "batch_size": 32, "lr": 0.05},
        "remap": {"samples": 128},
        "joint_training": {"epochs": 2, "batch_size": 32, "lr": 0.05, "rho": 0.8, "local_loss_weight": 0.3,
                           "remote_loss_weight": 0.3},
        "export": {"verify_samples": 64, "int8": False},  # the int8 front is exported by the tests that need it
        "threads": 1,
    }
    data.update(overrides)
    return PartitionConfig.model_validate(data)


def make_tiny_bundle(folder: str | Path, seed: int = 0, **overrides: Any) -> Bundle:
    """Train the tiny config (with `overrides`) on synthetic data and export it to `folder` (a few seconds)."""
    from partitioner.export import export_bundle
    from partitioner.train import Trainer

    folder = Path(folder)
    config = tiny_config(seed=seed, **overrides)
    dataset = synthetic_dataset(seed=seed)
    result = Trainer(config, folder.parent / f".{folder.name}-run", dataset=dataset, progress=False).run()
    return export_bundle(result.model, result.reference_extractor, config, dataset, folder, overwrite=True)


# Read by torch's kernels when torch loads, so set before that. On one machine one-thread training
# is bit-exact anyway; across machines the vectorised kernels that ATen and MKL pick by instruction
# set (AVX2, AVX-512, AMX) round differently and change the weights' last bits. These pins take
# ATen's generic kernels and MKL's reproducible mode; oneDNN is switched off in write_test_bundle.
PORTABLE_NUMERICS = {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE", "OMP_NUM_THREADS": "1"}
# The torch weights are left out: only offline analysis reads them, and the ONNX files decide
# every prediction (the bundle hash does not cover them either).
LEFT_OUT_ROLES = ("checkpoint",)


def write_test_bundle(folder: str | Path) -> Bundle:
    """The tiny bundle as committed for tests: trained with portable numerics, without the torch weights.

    Run it in a fresh process with PORTABLE_NUMERICS set (`python -m partitioner.testing --write`)."""
    import torch

    from partitioner.bundle_writer import BundleWriter

    if torch.backends.cpu.get_cpu_capability() != "DEFAULT":
        raise RuntimeError("torch loaded before the portable numerics were pinned; "
                           "run python -m partitioner.testing --write FOLDER")
    # oneDNN picks its convolution kernels by instruction set and cache sizes; ATen's own path does not.
    torch.backends.mkldnn.enabled = False
    folder = Path(folder)
    with tempfile.TemporaryDirectory() as scratch:
        trained = make_tiny_bundle(Path(scratch) / "bundle")
        files = {role: name for role, name in trained.manifest.files.items() if role not in LEFT_OUT_ROLES}
        with BundleWriter(folder) as writer:
            for name in files.values():
                shutil.copyfile(trained.folder / name, writer.folder / name)
            write_manifest(writer.folder, trained.manifest.model_copy(update={"files": files}))
    return Bundle(folder)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m partitioner.testing", description=__doc__.splitlines()[0])
    parser.add_argument("--write", metavar="FOLDER", required=True,
                        help="train the tiny bundle and write it to FOLDER (replaced)")
    args = parser.parse_args(argv)
    if "torch" in sys.modules:
        raise SystemExit("torch is already loaded: the portable numerics cannot be pinned in this process")
    os.environ.update(PORTABLE_NUMERICS)
    bundle = write_test_bundle(args.write)
    print(bundle.bundle_hash)
    return 0


if __name__ == "__main__":
    sys.exit(main())
