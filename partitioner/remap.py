"""Channel remapping (the paper's Algorithm 1): before joint training, permute the extractor's
output channels so that those most often among a sample's top-k by importance come first.

The permutation changes no function: the extractor's last conv and BN are permuted on their
output axis and the evaluator's first conv on its input axis.
"""

from __future__ import annotations

import torch
from torch import nn


def topk_frequency(channel_importance: torch.Tensor, k: int) -> torch.Tensor:
    """How often each channel is among a sample's k most important; (N, C) -> (C,)."""
    top = channel_importance.topk(k, dim=1).indices
    return torch.bincount(top.reshape(-1), minlength=channel_importance.shape[1])


def remap_order(channel_importance: torch.Tensor, k: int) -> torch.Tensor:
    """Channels by descending top-k frequency, ties broken by total importance."""
    frequency = topk_frequency(channel_importance, k).double()
    total = channel_importance.sum(dim=0).double()
    score = frequency * (total.max() + 1) + total  # frequency first, importance as tie-break
    return torch.argsort(score, descending=True, stable=True)


def _last(module: nn.Module, kind: type[nn.Module]) -> nn.Module:
    found = [m for m in module.modules() if isinstance(m, kind)]
    if not found:
        raise TypeError(f"{type(module).__name__} has no {kind.__name__}; give it a permute_output_channels(order) method")
    return found[-1]


def _first_input_layer(module: nn.Module) -> nn.Module:
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            return m
    raise TypeError(f"{type(module).__name__} has no Conv2d or Linear; give it a permute_input_channels(order) method")


@torch.no_grad()
def permute_output_channels(extractor: nn.Module, order: torch.Tensor) -> None:
    if hasattr(extractor, "permute_output_channels"):
        extractor.permute_output_channels(order)
        return
    conv = _last(extractor, nn.Conv2d)
    if conv.groups != 1:
        raise TypeError("the extractor's last conv is grouped; give it a permute_output_channels(order) method")
    conv.weight.copy_(conv.weight[order])
    if conv.bias is not None:
        conv.bias.copy_(conv.bias[order])
    norms = [m for m in extractor.modules() if isinstance(m, nn.BatchNorm2d)]
    if norms and norms[-1].num_features == conv.out_channels:
        bn = norms[-1]
        for tensor in (bn.weight, bn.bias, bn.running_mean, bn.running_var):
            tensor.copy_(tensor[order])


@torch.no_grad()
def permute_input_channels(head: nn.Module, order: torch.Tensor) -> None:
    if hasattr(head, "permute_input_channels"):
        head.permute_input_channels(order)
        return
    layer = _first_input_layer(head)
    if isinstance(layer, nn.Conv2d):
        if layer.groups != 1:
            raise TypeError("the head's first conv is grouped; give it a permute_input_channels(order) method")
        layer.weight.copy_(layer.weight[:, order])
    else:
        # A dense layer on flattened (C, H, W) features: permute whole channel blocks.
        spatial = layer.in_features // order.numel()
        blocks = layer.weight.view(layer.out_features, order.numel(), spatial)
        layer.weight.copy_(blocks[:, order].reshape_as(layer.weight))
