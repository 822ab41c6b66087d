"""The committed Fashion-MNIST bundle: it loads, reproduces the numbers recorded at export, and
meets the targets the partitioner promises (measured on the 10,000 test images)."""

from pathlib import Path

import pytest

from agilenn.bundle import Bundle
from agilenn.datasets import load_dataset
from agilenn.predict import evaluate_bundle

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "fashion-mnist"


@pytest.fixture(scope="module")
def bundle():
    return Bundle(BUNDLE)  # verifies the content hash


@pytest.fixture(scope="module")
def measured(bundle):
    return evaluate_bundle(bundle, load_dataset("fashion-mnist").test)


def test_evaluation_reproduces_the_export_metrics(bundle, measured):
    recorded = bundle.manifest.metrics
    assert measured.samples == recorded.samples == 10000
    for key in ("accuracy", "accuracy_local_only", "accuracy_reference", "payload_bytes_median",
                "payload_bytes_mean", "accuracy_int8", "accuracy_local_only_int8", "quantizer_levels_used"):
        assert getattr(measured, key) == pytest.approx(getattr(recorded, key), abs=1e-9), key


def test_accuracy_targets(measured):
    assert measured.accuracy_reference >= 0.925
    assert measured.accuracy_local_only >= 0.88
    assert measured.accuracy >= 0.915
    assert measured.accuracy >= measured.accuracy_reference - 0.012


def test_compression_target(measured):
    assert measured.payload_bytes_median <= 31
    assert measured.compression_rate >= 25
    assert measured.payload_bytes_median < measured.payload_bytes_bitpack


def test_recorded_skewness_targets(bundle):
    recorded = bundle.manifest.metrics
    assert recorded.skewness_trapezoid >= 0.80
    assert recorded.skewness_ig32 >= 0.75


def test_the_quantizer_uses_every_level_it_declares(measured):
    assert measured.quantizer_levels_used == measured.quantizer_levels


def test_the_int8_front_keeps_the_accuracy(bundle, measured):
    assert set(bundle.manifest.device_fronts) == {"float32", "int8"}
    assert measured.accuracy_int8 >= measured.accuracy - 0.005
    assert measured.accuracy_local_only_int8 >= measured.accuracy_local_only - 0.005


@pytest.mark.slow
def test_skewness_targets_remeasured(bundle):
    from partitioner.analysis import measure_skewness

    result = measure_skewness(BUNDLE / bundle.manifest.files["checkpoint"], load_dataset("fashion-mnist").test)
    assert result["skewness_trapezoid"] >= 0.80
    assert result["skewness_ig32"] >= 0.70
