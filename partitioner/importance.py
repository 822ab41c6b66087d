"""Feature importance by Integrated Gradients, and the skewness and disorder losses built on it.

Importance is taken of the frozen evaluator's cross-entropy loss with respect to the
extractor's output, from a zero baseline, and made non-negative with abs (as the paper's
code does): I = |f * mean over the path of dLoss/df|. Per-channel importance sums I over space.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

EPS = 1e-9


def integrated_gradients(evaluator: nn.Module, features: torch.Tensor, labels: torch.Tensor,
                         steps: int = 1, create_graph: bool = False) -> torch.Tensor:
    """|IG| per feature element, shaped like `features`, with the trapezoid rule over `steps` intervals.

    steps=1 is the paper's one-interval trapezoid (gradients at the baseline and at the
    feature). With create_graph=True the result stays differentiable with respect to
    whatever produced `features` (second-order gradients, for the training losses).
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    alphas = torch.linspace(0.0, 1.0, steps + 1, device=features.device)
    weights = torch.full((steps + 1,), 1.0 / steps, device=features.device)
    weights[0] = weights[-1] = 0.5 / steps
    total = torch.zeros_like(features)
    for alpha, weight in zip(alphas, weights):
        if alpha == 0:  # the baseline's gradient does not depend on the features: no second-order graph
            point, graph = torch.zeros_like(features, requires_grad=True), False
        else:
            point, graph = alpha * features, create_graph
            if not point.requires_grad:
                point.requires_grad_(True)
        loss = F.cross_entropy(evaluator(point), labels, reduction="sum")
        (grad,) = torch.autograd.grad(loss, point, create_graph=graph)
        total = total + weight * grad
    return (features * total).abs()


def channel_importance(importance: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) element importance -> (N, C) channel importance."""
    return importance.sum(dim=(2, 3))


def local_share(per_channel: torch.Tensor, local_channels: int) -> torch.Tensor:
    """(N, C) channel importance -> share held by the first `local_channels` channels, shaped (N,)."""
    return per_channel[:, :local_channels].sum(dim=1) / (per_channel.sum(dim=1) + EPS)


def skewness(importance: torch.Tensor, local_channels: int) -> torch.Tensor:
    """Share of each sample's importance held by the first `local_channels` channels, shaped (N,)."""
    return local_share(channel_importance(importance), local_channels)


def skewness_loss(importance: torch.Tensor, local_channels: int, rho: float) -> torch.Tensor:
    """Mean hinge max(0, rho - skewness): zero once a sample's local share reaches rho."""
    return torch.relu(rho - skewness(importance, local_channels)).mean()


def disorder_loss(importance: torch.Tensor, local_channels: int) -> torch.Tensor:
    """Mean of max(0, most important remote channel - least important local channel) / total."""
    per_channel = channel_importance(importance)
    least_local = per_channel[:, :local_channels].min(dim=1).values
    most_remote = per_channel[:, local_channels:].max(dim=1).values
    return (torch.relu(most_remote - least_local) / (per_channel.sum(dim=1) + EPS)).mean()
