import numpy as np
import pytest

from agilenn.predict import level_shares, levels_used, symbol_entropy_bits


def test_levels_used_counts_levels_with_at_least_one_percent_of_the_symbols():
    indices = np.array([0] * 900 + [1] * 95 + [2] * 5 + [3] * 0).reshape(10, 1, 10, 10)
    assert level_shares(indices, 4).tolist() == [0.9, 0.095, 0.005, 0.0]
    assert levels_used(indices, 4) == 2
    assert levels_used(indices, 4, min_share=0.005) == 3


def test_entropy_is_in_bits_per_symbol():
    assert symbol_entropy_bits(np.array([0, 1, 2, 3]), 4) == pytest.approx(2.0)
    assert symbol_entropy_bits(np.array([1, 1, 1, 1]), 4) == pytest.approx(0.0)
    assert symbol_entropy_bits(np.array([0, 0, 1, 1]), 4) == pytest.approx(1.0)


def test_evaluation_reports_the_quantizer_levels_in_use(tiny_bundle):
    from agilenn.predict import evaluate_bundle
    from partitioner.testing import synthetic_dataset

    report = evaluate_bundle(tiny_bundle, synthetic_dataset(test=64, seed=3).test)
    declared = tiny_bundle.manifest.quantizer.levels
    assert report.quantizer_levels == declared
    assert 1 <= report.quantizer_levels_used <= declared
    assert report.quantizer_centroids == tiny_bundle.manifest.quantizer.centroids
    assert 0.0 <= report.entropy_bits_per_symbol <= np.log2(declared)
