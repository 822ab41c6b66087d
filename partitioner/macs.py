"""Multiply-accumulate counts of Conv2d and Linear layers, measured by running the module once."""

from __future__ import annotations

import torch
from torch import nn


def count_macs(module: nn.Module, example: torch.Tensor) -> int:
    total = 0

    def conv_hook(layer: nn.Conv2d, _inputs, output: torch.Tensor) -> None:
        nonlocal total
        per_output = (layer.in_channels // layer.groups) * layer.kernel_size[0] * layer.kernel_size[1]
        total += per_output * output[0].numel()

    def linear_hook(layer: nn.Linear, _inputs, output: torch.Tensor) -> None:
        nonlocal total
        total += layer.in_features * layer.out_features

    handles = []
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            module(example[:1])
    finally:
        module.train(was_training)
        for h in handles:
            h.remove()
    return total
