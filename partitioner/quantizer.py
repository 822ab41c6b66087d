"""Learned scalar quantizer, soft-to-hard (Agustsson et al. 2017) with a straight-through hard path.

The levels are ordered and bounded by construction: they are the running sums of L+1 gaps that
split the feature range [0, 6], and every gap between two levels keeps a floor. With one free
value per level (as centroids were first stored), nothing in the loss keeps levels apart: the
straight-through gradient moves each level towards the feature mass nearest it, levels that
catch the same mass travel together, and they merged (a "4-level" bundle used {0.06, 2.08,
2.08, 2.10}). With gaps, levels cannot cross or meet, and k-means initialisation
(`fit_centroids`) starts each one where it carries part of the data.
"""

from __future__ import annotations

import torch
from torch import nn

FEATURE_RANGE = 6.0  # ReLU6 features
MIN_GAP_SHARE = 0.25  # a gap between two levels is at least this share of an even spacing


def nearest_centroid(features: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Index of the nearest of `centroids` for every value of `features` (the hard quantizer)."""
    return (features.unsqueeze(-1) - centroids).square().argmin(dim=-1)


def _gap_floors(levels: int) -> torch.Tensor:
    """Least size of each of the L+1 gaps: none below the first level or above the last (zeros are
    common and the first level may sit at ~0), MIN_GAP_SHARE of an even spacing between levels."""
    floors = torch.full((levels + 1,), MIN_GAP_SHARE * FEATURE_RANGE / (levels + 1))
    floors[0] = floors[-1] = 0.0
    return floors


def gap_logits_for(centroids: torch.Tensor) -> torch.Tensor:
    """The parameters that give `centroids` (sorted first; levels closer than the floor are pushed
    apart, so any set maps to the nearest allowed one)."""
    levels = centroids.numel()
    floors = _gap_floors(levels)
    bounds = torch.cat([torch.zeros(1), centroids.detach().float().sort().values.clamp(0, FEATURE_RANGE),
                        torch.tensor([FEATURE_RANGE])])
    spare = (bounds.diff() - floors).clamp_min(1e-4)
    return torch.log(spare / spare.sum())


class SoftToHardQuantizer(nn.Module):
    def __init__(self, levels: int, softness: float = 1.0, init_centroids: list[float] | None = None) -> None:
        super().__init__()
        if levels < 2:
            raise ValueError(f"a quantizer needs at least 2 levels, got {levels}")
        if init_centroids is None:
            init = torch.linspace(0.05, 0.95, levels) ** 2  # denser near zero, where ReLU6 features gather
            init = init * FEATURE_RANGE
        else:
            init = torch.tensor(init_centroids, dtype=torch.float32)
        self.register_buffer("gap_floors", _gap_floors(levels), persistent=False)
        self.gap_logits = nn.Parameter(gap_logits_for(init))
        self.softness = softness

    @property
    def levels(self) -> int:
        return int(self.gap_logits.numel()) - 1

    def centroids(self) -> torch.Tensor:
        """Ordered levels in (0, 6), neighbours at least the floor apart."""
        spare = FEATURE_RANGE - self.gap_floors.sum()
        gaps = self.gap_floors + spare * torch.softmax(self.gap_logits, dim=0)
        return torch.cumsum(gaps, dim=0)[:-1]

    @torch.no_grad()
    def set_centroids(self, centroids: torch.Tensor) -> None:
        self.gap_logits.copy_(gap_logits_for(centroids))

    def indices(self, features: torch.Tensor) -> torch.Tensor:
        """Index of the nearest centroid of every feature value."""
        return nearest_centroid(features, self.centroids())

    def dequantize(self, indices: torch.Tensor) -> torch.Tensor:
        return self.centroids()[indices.long()]

    def soft_assignment(self, features: torch.Tensor, centroids: torch.Tensor | None = None) -> torch.Tensor:
        """Probability of each level for every value (last dimension), from squared distances."""
        centroids = self.centroids() if centroids is None else centroids
        return torch.softmax(-(features.unsqueeze(-1) - centroids).square() / self.softness, dim=-1)

    def rate_bits(self, features: torch.Tensor) -> torch.Tensor:
        """Differentiable bits per symbol of `features` (N, C, ...): each value's expected code length,
        its soft level probabilities weighted by -log2 of its channel's level frequencies in the batch
        (the per-channel adaptive tables the range codec builds). Its value is about the empirical
        entropy; its gradient moves every value towards the levels that cost fewer bits, harder the
        more bits its current level costs. Weighted into the loss, it trades bytes against accuracy.

        It moves the features, not the levels: a level moved away from the data would also shorten
        the estimate, and the rate term would empty the very levels it should fill sparingly."""
        centroids = self.centroids().detach()
        probabilities = self.soft_assignment(features, centroids).transpose(0, 1).reshape(
            features.shape[1], -1, self.levels)
        with torch.no_grad():
            hard = nearest_centroid(features, centroids).transpose(0, 1).reshape(features.shape[1], -1)
            counts = torch.zeros(features.shape[1], self.levels).scatter_add_(1, hard, torch.ones_like(hard,
                                                                                                      dtype=torch.float))
            code_bits = -torch.log2((counts + 0.5) / (counts.sum(dim=1, keepdim=True) + 0.5 * self.levels))
        return (probabilities * code_bits.unsqueeze(1)).sum(dim=-1).mean()

    def level_shortfall(self, features: torch.Tensor, min_share: float) -> torch.Tensor:
        """How far the levels' shares of `features` fall short of `min_share`, summed and in units of
        `min_share` (0 when every level carries at least that share). The share is the hard one
        (what the codec sees) with the soft assignment's gradient, which raises a starved level both
        ways: values near it move in, and the level moves towards the values."""
        probabilities = self.soft_assignment(features).reshape(-1, self.levels)
        with torch.no_grad():
            hard = torch.bincount(self.indices(features).flatten(), minlength=self.levels).float() / probabilities.shape[0]
        soft = probabilities.mean(dim=0)
        share = hard + (soft - soft.detach())
        return torch.relu(min_share - share).sum() / min_share

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(quantized features with soft gradients, hard indices)."""
        centroids = self.centroids()
        soft = (self.soft_assignment(features, centroids) * centroids).sum(dim=-1)
        indices = nearest_centroid(features, centroids)
        hard = centroids[indices]
        return soft + (hard - soft).detach(), indices


def hard_entropy_bits(indices: torch.Tensor, levels: int) -> float:
    """Empirical bits per symbol of hard indices (N, C, ...) under per-channel tables."""
    per_channel = indices.transpose(0, 1).reshape(indices.shape[1], -1)
    total = 0.0
    for row in per_channel:
        counts = torch.bincount(row.long(), minlength=levels).double()
        p = counts[counts > 0] / counts.sum()
        total += float(-(p * torch.log2(p)).sum())
    return total / max(per_channel.shape[0], 1)


def kmeans_centroids(values: torch.Tensor, levels: int, seed: int) -> torch.Tensor:
    """1-D k-means levels of `values`, sorted."""
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=levels, n_init=4, random_state=seed).fit(values.reshape(-1, 1).double().numpy())
    return torch.tensor(sorted(km.cluster_centers_.ravel()), dtype=torch.float32)

