"""The committed cluttered-fashion-mnist comparison (scripts/cluttered_experiment.sh): the AgileNN
bundle reproduces its recorded numbers on the 10,000 test canvases, and the simulation of the
measured schemes on stm32f746-216mhz keeps the paper's shape (the README's exact figures are pinned by
tests/test_committed_figures.py)."""

from pathlib import Path

import pytest

from agilenn.bundle import Bundle
from agilenn.measured import load_measured
from simulation.compare import simulate
from simulation.profiles import load_device, load_link
from simulation.workloads import get

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "bundles" / "cluttered-fashion-mnist"
MEASURED = ROOT / get("cluttered-fashion-mnist").measured


@pytest.fixture(scope="module")
def bundle():
    return Bundle(BUNDLE)  # verifies the content hash


@pytest.fixture(scope="module")
def summaries():
    measured = load_measured(MEASURED)
    device, cloud = load_device("stm32f746-216mhz"), load_device("host")
    return {link: simulate(measured, device, load_link(link), cloud) for link in ("wifi-6mbps", "ble-270kbps")}


def test_the_bundle_is_the_cluttered_split_in_the_papers_shape(bundle):
    manifest = bundle.manifest
    assert manifest.config["dataset"] == "cluttered-fashion-mnist"
    assert manifest.input.shape == (1, 96, 96)
    _channels, height, width = manifest.split.feature_shape
    assert height <= 96 // 3 and width <= 96 // 3  # reduced at least 3x per side before the radio
    assert manifest.device_macs <= 1_000_000
    assert set(manifest.device_fronts) == {"float32", "int8"}


def test_evaluation_reproduces_the_export_metrics(bundle):
    from agilenn.datasets import load_dataset
    from agilenn.predict import evaluate_bundle

    pytest.importorskip("PIL", reason="the cluttered canvases come from Pillow (the data extra)")
    measured = evaluate_bundle(bundle, load_dataset("cluttered-fashion-mnist").test)
    recorded = bundle.manifest.metrics
    assert measured.samples == recorded.samples == 10000
    for key in ("accuracy", "accuracy_local_only", "accuracy_reference", "payload_bytes_median", "accuracy_int8",
                "quantizer_levels_used"):
        assert getattr(measured, key) == pytest.approx(getattr(recorded, key), abs=1e-9), key


def test_recorded_accuracy_and_skewness_targets(bundle):
    recorded = bundle.manifest.metrics
    assert recorded.accuracy >= recorded.accuracy_reference - 0.025
    assert recorded.skewness_trapezoid >= 0.75
    assert recorded.skewness_ig32 >= 0.70
    assert recorded.quantizer_levels_used == recorded.quantizer_levels


def test_the_measured_schemes_are_the_committed_bundle_and_every_baseline(bundle, summaries):
    measured = load_measured(MEASURED)
    assert measured.dataset == "cluttered-fashion-mnist" and measured.samples == 10000
    assert measured.scheme("agilenn").bundle_hash == bundle.bundle_hash
    names = {s.name for s in measured.schemes}
    assert {"local-0.4m", "local-2m", "local-5m", "local-21m", "full-offload", "full-offload-png",
            "deepcod"} <= names
    assert any(s.lossy for s in measured.schemes)  # JPEG
    schemes = {s["name"]: s for s in summaries["wifi-6mbps"]["schemes"]}
    assert schemes["agilenn"]["fits_device"] and schemes["layer-split"]["fits_device"]


def test_wifi_figures(summaries):
    summary = summaries["wifi-6mbps"]["summary"]
    assert summary["speedup_vs_local_only"] >= 4
    assert summary["device_macs_ratio_vs_local_only"] >= 8
    assert summary["bytes_ratio_vs_full_offload"] >= 4


def test_ble_figures(summaries):
    assert summaries["ble-270kbps"]["summary"]["speedup_vs_local_only"] >= 2
