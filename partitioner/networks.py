"""Built-in networks: a tiny separable extractor, a small local head, a convolutional remote head."""

from __future__ import annotations

from torch import nn

from partitioner.registry import register_network


def _conv_bn(in_channels: int, out_channels: int, kernel: int, stride: int = 1, groups: int = 1,
             activation: type[nn.Module] = nn.ReLU6) -> list[nn.Module]:
    return [
        nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_channels),
        activation(),
    ]


@register_network("separable-extractor")
class SeparableExtractor(nn.Sequential):
    """conv3x3/2 -> depthwise 3x3/2 -> pointwise, each with BN and ReLU6 (the paper's shape).

    ReLU6 keeps features in [0, 6], the range of the quantizer's centroids.
    """

    def __init__(self, in_channels: int, out_channels: int = 12, width: int = 24) -> None:
        super().__init__(
            *_conv_bn(in_channels, width, 3, stride=2),
            *_conv_bn(width, width, 3, stride=2, groups=width),
            *_conv_bn(width, out_channels, 1),
        )


@register_network("patch-extractor")
class PatchExtractor(nn.Sequential):
    """Depthwise kxk with stride k over non-overlapping patches (`multiplier` maps per input channel)
    -> pointwise, each with BN and ReLU6: a separable extractor that reduces each side k times.

    On one grey channel the separable form of the paper's extractor degenerates (a depthwise 3x3 on
    one channel is one filter); a multiplier keeps it wide. With k >= 4 every MAC sits in an inner
    product of at least 16, which a microcontroller's int8 kernels run at their dense rate, where a
    3x3 on one channel runs ~10x slower (simulation/profiles: dense_inner_min).
    """

    def __init__(self, in_channels: int, out_channels: int = 16, patch: int = 4, multiplier: int = 24) -> None:
        hidden = in_channels * multiplier
        super().__init__(
            nn.Conv2d(in_channels, hidden, patch, patch, 0, groups=in_channels, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(),
            *_conv_bn(hidden, out_channels, 1),
        )


@register_network("mlp-head")
class MlpHead(nn.Sequential):
    """Flatten -> dense -> BN -> ReLU -> dense: keeps where a feature fires, at a few thousand MACs."""

    def __init__(self, in_channels: int, num_classes: int, spatial: int, hidden: int = 64, dropout: float = 0.0) -> None:
        super().__init__(
            nn.Flatten(),
            nn.Linear(in_channels * spatial, hidden, bias=False),
            nn.BatchNorm1d(hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )


@register_network("gap-head")
class GapHead(nn.Sequential):
    """The paper's local predictor: global average pool -> dense -> BN."""

    def __init__(self, in_channels: int, num_classes: int, spatial: int = 0) -> None:
        super().__init__(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(in_channels, num_classes), nn.BatchNorm1d(num_classes))


@register_network("conv-head")
class ConvHead(nn.Sequential):
    """Stacked 3x3 convs (stride per layer) -> flatten or average pool -> dropout -> dense."""

    def __init__(self, in_channels: int, num_classes: int, spatial: int, widths: tuple[int, ...] = (64, 128, 128),
                 strides: tuple[int, ...] | None = None, pool: str = "flatten", dropout: float = 0.2) -> None:
        strides = tuple(strides) if strides is not None else (1,) * len(widths)
        if len(strides) != len(widths):
            raise ValueError(f"conv-head: {len(widths)} widths but {len(strides)} strides")
        if pool not in ("flatten", "average"):
            raise ValueError(f"conv-head: pool must be 'flatten' or 'average', got {pool!r}")
        layers: list[nn.Module] = []
        channels, side = in_channels, round(spatial ** 0.5)
        for width, stride in zip(widths, strides):
            layers += _conv_bn(channels, width, 3, stride=stride, activation=nn.ReLU)
            channels, side = width, (side + stride - 1) // stride
        if pool == "average":
            layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
            flat = channels
        else:
            layers += [nn.Flatten()]
            flat = channels * side * side
        layers += [nn.Dropout(dropout), nn.Linear(flat, num_classes)]
        super().__init__(*layers)


class InvertedResidual(nn.Module):
    """MobileNetV2's block: pointwise expand -> depthwise 3x3 (stride) -> linear pointwise project,
    with a skip when shape allows."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_channels * expansion
        layers = _conv_bn(in_channels, hidden, 1) if expansion != 1 else []
        layers += _conv_bn(hidden, hidden, 3, stride=stride, groups=hidden)
        layers += [nn.Conv2d(hidden, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)]
        self.block = nn.Sequential(*layers)
        self.skip = stride == 1 and in_channels == out_channels

    def forward(self, x):
        return x + self.block(x) if self.skip else self.block(x)


@register_network("inverted-residual-net")
class InvertedResidualNet(nn.Sequential):
    """A whole MCU-style classifier (MobileNetV2 / MCUNet family): strided 3x3 stem, inverted-residual
    stages, 1x1 to `head` channels, global average pool, dense.

    `stages` lists [expansion, channels, repeats, stride] as MobileNetV2's table does; the family's
    members differ only in these numbers (configs/cluttered-baselines/).
    """

    def __init__(self, in_channels: int, num_classes: int, spatial: int = 0, stem: int = 16, stem_stride: int = 2,
                 stages: tuple[tuple[int, int, int, int], ...] = ((1, 8, 1, 1), (4, 16, 2, 2), (4, 24, 2, 2)),
                 head: int = 128, dropout: float = 0.1) -> None:
        layers: list[nn.Module] = [*_conv_bn(in_channels, stem, 3, stride=stem_stride)]
        channels = stem
        for expansion, out_channels, repeats, stride in stages:
            for i in range(repeats):
                layers.append(InvertedResidual(channels, out_channels, stride if i == 0 else 1, expansion))
                channels = out_channels
        layers += [*_conv_bn(channels, head, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout),
                   nn.Linear(head, num_classes)]
        super().__init__(*layers)
