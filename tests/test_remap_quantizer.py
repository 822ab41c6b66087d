import pytest

torch = pytest.importorskip("torch", reason="needs the train extra (torch)")

from torch import nn

from partitioner.model import AgileNN
from partitioner.quantizer import FEATURE_RANGE, SoftToHardQuantizer
from partitioner.remap import permute_input_channels, permute_output_channels, remap_order, topk_frequency
from partitioner.testing import tiny_config


def test_remap_order_puts_the_most_frequent_top_k_channels_first():
    # Channel 2 is in every sample's top-1, channel 0 in one sample's top-1.
    per_channel = torch.tensor([[1.0, 0.0, 5.0], [6.0, 1.0, 2.0], [0.0, 1.0, 3.0]])
    assert topk_frequency(per_channel, 1).tolist() == [1, 0, 2]
    assert remap_order(per_channel, 1).tolist() == [2, 0, 1]


def test_remapping_is_a_pure_permutation_of_the_features():
    torch.manual_seed(0)
    model = AgileNN(tiny_config(), (1, 16, 16), 4).eval()
    for m in model.modules():  # non-trivial BN statistics, so a missed BN tensor would show
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 2)
            m.bias.data.uniform_(-1, 1)
    x = torch.randn(8, 1, 16, 16)
    with torch.no_grad():
        features_before = model.extractor(x)
        logits_before = model.reference_logits(x)
    order = torch.tensor([3, 5, 0, 1, 4, 2])
    permute_output_channels(model.extractor, order)
    permute_input_channels(model.evaluator, order)
    with torch.no_grad():
        assert torch.allclose(model.extractor(x), features_before[:, order], atol=1e-6)
        assert torch.allclose(model.reference_logits(x), logits_before, atol=1e-5)


def test_permuting_a_dense_head_moves_whole_channel_blocks():
    torch.manual_seed(0)
    head = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4, 2))
    x = torch.randn(5, 3, 2, 2)
    order = torch.tensor([2, 0, 1])
    before = head(x)
    permute_input_channels(head, order)
    assert torch.allclose(head(x[:, order]), before, atol=1e-6)


def test_quantizer_round_trip_and_straight_through_gradient():
    torch.manual_seed(0)
    q = SoftToHardQuantizer(levels=4)
    features = (torch.rand(2, 3, 4, 4) * FEATURE_RANGE).requires_grad_(True)
    quantized, indices = q(features)
    centroids = q.centroids()
    assert ((centroids > 0) & (centroids < FEATURE_RANGE)).all()
    assert indices.min() >= 0 and indices.max() < 4
    # The forward value is the hard centroid, and indices -> dequantize gives it back.
    assert torch.allclose(quantized, q.dequantize(indices), atol=1e-6)
    assert torch.equal(q.indices(features), indices)
    # Each value maps to its nearest centroid.
    nearest = (features.detach().unsqueeze(-1) - centroids.detach()).abs().argmin(-1)
    assert torch.equal(indices, nearest)
    quantized.sum().backward()
    assert features.grad is not None and features.grad.abs().sum() > 0
    assert q.gap_logits.grad is not None and q.gap_logits.grad.abs().sum() > 0
