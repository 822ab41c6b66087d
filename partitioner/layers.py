"""Per-layer tables of a module: what a device-cost model needs (MACs, inner-product length,
int8 weight bytes, activation sizes), measured by running the module once on an example."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def layer_table(module: nn.Module, example: torch.Tensor) -> list[dict[str, Any]]:
    """One row per Conv2d/Linear in execution order, for one sample.

    `inner` is the length of the dot product behind each MAC (in_channels/groups * kh * kw,
    or in_features): short ones (depthwise, a first conv on one channel) run far below a
    microcontroller's peak rate. `weight_bytes` counts int8 weights plus an int32 bias per
    output channel (batch norm folds into both). `in_bytes`/`out_bytes` are int8 activations.
    """
    rows: list[dict[str, Any]] = []
    names = {m: n for n, m in module.named_modules()}

    def conv_hook(layer: nn.Conv2d, inputs, output: torch.Tensor) -> None:
        inner = (layer.in_channels // layer.groups) * layer.kernel_size[0] * layer.kernel_size[1]
        depthwise = layer.groups > 1 and layer.groups == layer.in_channels
        rows.append({"name": names[layer], "op": "depthwise" if depthwise else "conv",
                     "macs": int(inner * output[0].numel()), "inner": int(inner),
                     "weight_bytes": int(layer.weight.numel() + 4 * layer.out_channels),
                     "in_bytes": int(inputs[0][0].numel()), "out_bytes": int(output[0].numel())})

    def linear_hook(layer: nn.Linear, inputs, output: torch.Tensor) -> None:
        rows.append({"name": names[layer], "op": "linear", "macs": int(layer.in_features * layer.out_features),
                     "inner": int(layer.in_features),
                     "weight_bytes": int(layer.weight.numel() + 4 * layer.out_features),
                     "in_bytes": int(inputs[0][0].numel()), "out_bytes": int(output[0].numel())})

    handles = []
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    modes = {m: m.training for m in module.modules()}  # restored one by one: a parent's flag may differ
    module.eval()
    try:
        with torch.no_grad():
            module(example[:1])
    finally:
        for m, mode in modes.items():
            m.training = mode
        for h in handles:
            h.remove()
    return rows


def count_macs(module: nn.Module, example: torch.Tensor) -> int:
    """Multiply-accumulates of one sample through `module`'s Conv2d and Linear layers."""
    return sum(row["macs"] for row in layer_table(module, example))
