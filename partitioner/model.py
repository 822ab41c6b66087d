"""The AgileNN model: extractor, local and remote predictors, quantizer, mixing weight, evaluator."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from agilenn.bundle import mix_logits
from partitioner.config import PartitionConfig
from partitioner.quantizer import SoftToHardQuantizer
from partitioner.registry import build_network


@dataclass
class SplitOutput:
    features: torch.Tensor
    local_logits: torch.Tensor
    remote_logits: torch.Tensor
    mixed_logits: torch.Tensor
    indices: torch.Tensor


class Normalise(nn.Module):
    """Raw pixel levels (0..255) -> (x/255 - mean)/std, so exported models take sensor values."""

    def __init__(self, mean: float, std: float) -> None:
        super().__init__()
        self.scale = 1.0 / (255.0 * std)
        self.shift = mean / std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale - self.shift


def feature_shape(extractor: nn.Module, input_shape: tuple[int, int, int]) -> tuple[int, int, int]:
    was_training = extractor.training
    extractor.eval()
    with torch.no_grad():
        shape = extractor(torch.zeros(1, *input_shape)).shape[1:]
    extractor.train(was_training)
    return tuple(int(d) for d in shape)  # type: ignore[return-value]


class AgileNN(nn.Module):
    def __init__(self, config: PartitionConfig, input_shape: tuple[int, int, int], num_classes: int) -> None:
        super().__init__()
        nets = config.networks
        self.extractor = build_network(nets.extractor.name, in_channels=input_shape[0], **nets.extractor.args)
        channels, height, width = feature_shape(self.extractor, input_shape)
        k = config.local_channels
        if not 0 < k < channels:
            raise ValueError(f"local_channels={k} must lie in [1, {channels - 1}] for an extractor with {channels} channels")
        spatial = height * width
        self.local_channels = k
        self.feature_shape = (channels, height, width)
        self.evaluator = build_network(nets.reference.name, in_channels=channels, num_classes=num_classes,
                                       spatial=spatial, **nets.reference.args)
        self.local = build_network(nets.local.name, in_channels=k, num_classes=num_classes, spatial=spatial,
                                   **nets.local.args)
        self.remote = build_network(nets.remote.name, in_channels=channels - k, num_classes=num_classes,
                                    spatial=spatial, **nets.remote.args)
        q = config.quantizer
        self.quantizer = SoftToHardQuantizer(q.levels, q.softness, q.init_centroids)
        self.quantizer.gap_logits.requires_grad_(q.learn_centroids)
        self.mixing_logit = nn.Parameter(torch.zeros(()))
        self.mixing_temperature = config.joint_training.mixing_temperature

    def alpha(self) -> torch.Tensor:
        """Weight of the local logits in the mix."""
        return torch.sigmoid(self.mixing_logit / self.mixing_temperature)

    def split(self, features: torch.Tensor) -> SplitOutput:
        k = self.local_channels
        local_logits = self.local(features[:, :k])
        quantized, indices = self.quantizer(features[:, k:])
        remote_logits = self.remote(quantized)
        alpha = self.alpha()
        mixed = mix_logits(local_logits, remote_logits, alpha)
        return SplitOutput(features, local_logits, remote_logits, mixed, indices)

    def forward(self, x: torch.Tensor) -> SplitOutput:
        return self.split(self.extractor(x))

    def reference_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.evaluator(self.extractor(x))
