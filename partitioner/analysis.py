"""Skewness of a bundle's split, measured two ways: the training's one-interval trapezoid, and
32-step Integrated Gradients computed independently by Captum (Gauss-Legendre)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from agilenn.datasets import Split
from partitioner.checkpoint import load_bundle_checkpoint
from partitioner.config import PartitionConfig
from partitioner.data import batches, to_tensors
from partitioner.importance import integrated_gradients, skewness
from partitioner.model import AgileNN


def load_checkpoint(path: str | Path) -> tuple[AgileNN, PartitionConfig]:
    """The trained split of a bundle's checkpoint (see partitioner.checkpoint)."""
    state = load_bundle_checkpoint(path)
    config = PartitionConfig.model_validate(state["config"])
    model = AgileNN(config, tuple(state["input_shape"]), state["num_classes"])
    model.load_state_dict(state["model"])
    return model.eval(), config


def measure_skewness(checkpoint: str | Path, split: Split, ig_steps: int = 32, batch_size: int = 250) -> dict[str, Any]:
    from captum.attr import IntegratedGradients

    model, config = load_checkpoint(checkpoint)
    images, labels = to_tensors(split, config.mean, config.std)
    k = config.local_channels

    def per_sample_loss(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(model.evaluator(features), target, reduction="none")

    ig = IntegratedGradients(per_sample_loss)
    trapezoid_sum = exact_sum = 0.0
    for x, y in batches(images, labels, batch_size):
        with torch.no_grad():
            features = model.extractor(x)
        trapezoid_sum += float(skewness(integrated_gradients(model.evaluator, features, y, 1), k).sum())
        attributions = ig.attribute(features, baselines=0.0, additional_forward_args=(y,), n_steps=ig_steps,
                                    internal_batch_size=batch_size * 8)
        exact_sum += float(skewness(attributions.detach().abs(), k).sum())
    n = len(labels)
    return {"skewness_trapezoid": trapezoid_sum / n, f"skewness_ig{ig_steps}": exact_sum / n}


def skewness_of_features(checkpoint: str | Path, features, labels, batch_size: int = 500) -> float:
    """Mean local share of importance (one-interval trapezoid, as in training) when the extractor's
    features are given, e.g. those the int8 device front computed."""
    model, config = load_checkpoint(checkpoint)
    features = torch.as_tensor(features, dtype=torch.float32)
    labels = torch.as_tensor(labels, dtype=torch.long)
    total = 0.0
    for x, y in batches(features, labels, batch_size):
        total += float(skewness(integrated_gradients(model.evaluator, x, y, 1), config.local_channels).sum())
    return total / len(labels)
