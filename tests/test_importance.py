import math

import pytest

torch = pytest.importorskip("torch", reason="needs the train extra (torch)")

from torch import nn

from partitioner.importance import disorder_loss, integrated_gradients, skewness, skewness_loss


class LinearEvaluator(nn.Module):
    """logits = [w.x, 0]: with label 0 the loss is softplus(-z), z = w.x, so IG has a closed form."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = weight

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        z = (features.flatten(1) * self.weight.flatten()).sum(1)
        return torch.stack([z, torch.zeros_like(z)], dim=1)


def _closed_form(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    # loss(a) = softplus(-a z); IG_i = x_i w_i / z * (loss(1) - loss(0)), as the gradient is parallel to w.
    z = float((x * w).sum())
    delta = math.log1p(math.exp(-z)) - math.log(2.0)
    return (x * w / z * delta).abs()


def test_many_step_ig_matches_the_closed_form_on_a_linear_model():
    torch.manual_seed(0)
    x = torch.rand(1, 2, 2, 2)
    w = torch.randn(1, 2, 2, 2)
    ig = integrated_gradients(LinearEvaluator(w), x, torch.tensor([0]), steps=512)
    assert torch.allclose(ig, _closed_form(x, w), rtol=1e-4, atol=1e-7)


def test_one_step_ig_is_the_trapezoid_of_the_endpoint_gradients():
    torch.manual_seed(1)
    x = torch.rand(1, 2, 2, 2)
    w = torch.randn(1, 2, 2, 2)
    z = float((x * w).sum())
    sigmoid = lambda v: 1 / (1 + math.exp(-v))
    # d softplus(-a z)/dx_i at a = 1 is -sigmoid(-z) w_i; at the zero baseline it is -0.5 w_i.
    expected = (x * 0.5 * (-sigmoid(-z) * w - 0.5 * w)).abs()
    ig = integrated_gradients(LinearEvaluator(w), x, torch.tensor([0]), steps=1)
    assert torch.allclose(ig, expected, atol=1e-7)


def test_ig_with_create_graph_is_differentiable_in_the_features():
    w = torch.randn(1, 2, 2, 2)
    x = torch.rand(1, 2, 2, 2, requires_grad=True)
    ig = integrated_gradients(LinearEvaluator(w), x, torch.tensor([0]), steps=1, create_graph=True)
    (grad,) = torch.autograd.grad(ig.sum(), x)
    assert grad.abs().sum() > 0


def test_ig_rejects_zero_steps():
    with pytest.raises(ValueError, match="steps"):
        integrated_gradients(LinearEvaluator(torch.ones(1, 1, 1, 1)), torch.ones(1, 1, 1, 1), torch.tensor([0]), steps=0)


# Two samples, three channels of 1x2: per-channel sums are [3, 1, 0] and [1, 1, 2].
IMPORTANCE = torch.tensor([
    [[[1.0, 2.0]], [[0.5, 0.5]], [[0.0, 0.0]]],
    [[[0.5, 0.5]], [[1.0, 0.0]], [[1.0, 1.0]]],
])


def test_skewness_is_the_local_share_of_importance():
    assert torch.allclose(skewness(IMPORTANCE, 1), torch.tensor([3 / 4, 1 / 4]))
    assert torch.allclose(skewness(IMPORTANCE, 2), torch.tensor([4 / 4, 2 / 4]))


def test_skewness_loss_is_the_mean_hinge_below_rho():
    # rho 0.8 with k=1: sample one misses by 0.05, sample two by 0.55.
    assert skewness_loss(IMPORTANCE, 1, 0.8).item() == pytest.approx((0.05 + 0.55) / 2)
    assert skewness_loss(IMPORTANCE, 2, 0.4).item() == pytest.approx(0.0)


def test_disorder_loss_penalises_remote_channels_above_the_weakest_local_one():
    # k=2: sample one: remote max 0 < local min 1 -> 0; sample two: (2 - 1) / 4.
    assert disorder_loss(IMPORTANCE, 2).item() == pytest.approx((0 + 0.25) / 2)
    # k=1: sample one: (1 - 3) < 0 -> 0; sample two: (2 - 1) / 4.
    assert disorder_loss(IMPORTANCE, 1).item() == pytest.approx(0.125)
