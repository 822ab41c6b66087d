"""The learned quantizer keeps its levels apart and in order, and its rate term trades bits."""

import pytest

torch = pytest.importorskip("torch", reason="needs the train extra (torch)")

from partitioner.quantizer import FEATURE_RANGE, SoftToHardQuantizer, hard_entropy_bits, kmeans_centroids
from partitioner.train import distillation_loss


def _gaps(q: SoftToHardQuantizer) -> torch.Tensor:
    return q.centroids().detach().diff()


def test_levels_pulled_together_stay_ordered_and_apart():
    q = SoftToHardQuantizer(levels=4, init_centroids=[0.1, 1.0, 2.0, 4.0])
    optimiser = torch.optim.Adam(q.parameters(), lr=0.05)
    for _ in range(300):  # a loss that wants every level at 2.0: one free value per level would merge them
        loss = (q.centroids() - 2.0).square().sum()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    centroids = q.centroids().detach()
    assert (centroids > 0).all() and (centroids < FEATURE_RANGE).all()
    assert (_gaps(q) >= 0.25 * FEATURE_RANGE / 5 - 1e-5).all()
    assert (centroids - 2.0).abs().max() < 1.0  # it did move them as far as the floor allows


def test_training_on_two_clusters_keeps_four_distinct_levels():
    torch.manual_seed(0)
    data = torch.cat([torch.zeros(500), torch.full((500,), 3.0)]) + 0.05 * torch.randn(1000)
    q = SoftToHardQuantizer(levels=4, init_centroids=kmeans_centroids(data.clamp(0, 6), 4, seed=0).tolist())
    optimiser = torch.optim.SGD(q.parameters(), lr=0.1)
    for _ in range(200):
        quantized, _ = q(data.view(10, 1, 100))
        loss = (quantized - data.view(10, 1, 100)).square().mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert (_gaps(q) > 0.2).all()
    assert torch.equal(q.centroids().detach(), q.centroids().detach().sort().values)


@pytest.mark.parametrize("weight, direction", [(0.5, -1), (-0.5, 1)])
def test_the_rate_term_moves_the_entropy_the_way_its_sign_says(weight, direction):
    def train(rate_weight: float) -> float:
        torch.manual_seed(0)
        target = torch.rand(64, 2, 4, 4).square() * 4.0  # skewed: about 1.9 of 2 bits
        features = target.clone().requires_grad_(True)
        q = SoftToHardQuantizer(levels=4, init_centroids=[0.5, 1.5, 2.5, 3.5])
        optimiser = torch.optim.Adam([features], lr=0.05)
        for _ in range(100):
            loss = 0.05 * (features - target).square().mean() + rate_weight * q.rate_bits(features)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        return hard_entropy_bits(q.indices(features.detach()), 4)

    baseline = train(0.0)
    assert direction * (train(weight) - baseline) > 0.1


def test_rate_bits_is_about_the_entropy_of_each_channels_histogram():
    q = SoftToHardQuantizer(levels=2, init_centroids=[0.5, 5.5], softness=1e-3)
    one_level = torch.full((4, 1, 8, 8), 0.5)
    two_levels = torch.tensor([0.5, 5.5]).repeat(128).view(4, 1, 8, 8)
    assert float(q.rate_bits(one_level).detach()) == pytest.approx(0.0, abs=0.01)
    assert float(q.rate_bits(two_levels).detach()) == pytest.approx(1.0, abs=0.01)
    assert hard_entropy_bits(q.indices(two_levels), 2) == pytest.approx(1.0)


def test_distillation_is_zero_only_when_the_predictions_agree():
    teacher = torch.tensor([[2.0, 0.0, -1.0]])
    assert float(distillation_loss(teacher, teacher, 4.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(distillation_loss(torch.zeros(1, 3), teacher, 4.0)) > 0.01


def test_a_starved_level_is_filled_back_to_its_floor():
    torch.manual_seed(0)
    target = torch.cat([torch.zeros(900), torch.full((100,), 3.0)]) + 0.1 * torch.rand(1000)
    features = target.view(10, 1, 100).clone().requires_grad_(True)
    q = SoftToHardQuantizer(levels=3, init_centroids=[0.1, 1.5, 3.0])
    assert float(q.level_shortfall(features, 0.05).detach()) == pytest.approx(1.0)  # the middle level is empty
    optimiser = torch.optim.Adam([features, *q.parameters()], lr=0.02)
    for _ in range(200):
        loss = q.level_shortfall(features, 0.05) + 0.1 * (features - target.view(10, 1, 100)).square().mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    shares = torch.bincount(q.indices(features.detach()).flatten(), minlength=3).float() / 1000
    assert (shares >= 0.04).all(), shares
