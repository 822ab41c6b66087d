"""Learned scalar quantizer, soft-to-hard (Agustsson et al. 2017) with a straight-through hard path."""

from __future__ import annotations

import torch
from torch import nn

FEATURE_RANGE = 6.0  # ReLU6 features; centroids = 6*sigmoid(w) stay in that range


def nearest_centroid(features: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Index of the nearest of `centroids` for every value of `features` (the hard quantizer)."""
    return (features.unsqueeze(-1) - centroids).square().argmin(dim=-1)


class SoftToHardQuantizer(nn.Module):
    def __init__(self, levels: int, softness: float = 1.0, init_centroids: list[float] | None = None) -> None:
        super().__init__()
        if init_centroids is None:
            init = torch.linspace(0.05, 0.95, levels) ** 2  # denser near zero, where ReLU6 features gather
            init = init * FEATURE_RANGE
        else:
            init = torch.tensor(init_centroids, dtype=torch.float32)
        self.logits = nn.Parameter(torch.logit(init / FEATURE_RANGE))
        self.softness = softness

    @property
    def levels(self) -> int:
        return int(self.logits.numel())

    def centroids(self) -> torch.Tensor:
        return FEATURE_RANGE * torch.sigmoid(self.logits)

    def indices(self, features: torch.Tensor) -> torch.Tensor:
        """Index of the nearest centroid of every feature value."""
        return nearest_centroid(features, self.centroids())

    def dequantize(self, indices: torch.Tensor) -> torch.Tensor:
        return self.centroids()[indices.long()]

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(quantized features with soft gradients, hard indices)."""
        centroids = self.centroids()
        distance = (features.unsqueeze(-1) - centroids).square()
        soft = (torch.softmax(-distance / self.softness, dim=-1) * centroids).sum(dim=-1)
        indices = distance.argmin(dim=-1)
        hard = centroids[indices]
        return soft + (hard - soft).detach(), indices
