"""Tiny, quick data and bundles for tests of every package (trains in seconds on a CPU)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from agilenn.bundle import Bundle
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
        "export": {"verify_samples": 64},
        "threads": 1,
    }
    data.update(overrides)
    return PartitionConfig.model_validate(data)


def make_tiny_bundle(folder: str | Path, seed: int = 0) -> Bundle:
    """Train the tiny config on synthetic data and export it to `folder` (a few seconds)."""
    from partitioner.export import export_bundle
    from partitioner.train import Trainer

    folder = Path(folder)
    config = tiny_config(seed=seed)
    dataset = synthetic_dataset(seed=seed)
    result = Trainer(config, folder.parent / f".{folder.name}-run", dataset=dataset, progress=False).run()
    return export_bundle(result.model, result.reference_extractor, config, dataset, folder, overwrite=True)
