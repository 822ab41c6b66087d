"""The headline figures are pinned: each is recomputed from the committed bundles and measured files,
compared with tests/expected/committed_figures.json within its stated tolerance, and found printed in
the README's results table and in docs/results.md. A figure that drifts in any of them fails here."""

import json
from pathlib import Path

import pytest

from agilenn.bundle import Bundle
from agilenn.measured import load_measured
from simulation.compare import simulate
from simulation.profiles import load_device, load_link
from simulation.workloads import get

ROOT = Path(__file__).resolve().parents[1]
EXPECTED = json.loads((ROOT / "tests" / "expected" / "committed_figures.json").read_text())
README = (ROOT / "README.md").read_text()
RESULTS = (ROOT / "docs" / "results.md").read_text()
DOCUMENTS = {"README.md": README, "docs/results.md": RESULTS}


@pytest.fixture(scope="module")
def cluttered():
    measured = load_measured(ROOT / get("cluttered-fashion-mnist").measured)
    device, cloud = load_device("stm32f746-216mhz"), load_device("host")
    return {link: simulate(measured, device, load_link(link), cloud)["summary"]
            for link in EXPECTED["cluttered_simulation_stm32f746_216mhz"]}


def test_the_cluttered_simulation_gives_the_pinned_ratios(cluttered):
    for link, figures in EXPECTED["cluttered_simulation_stm32f746_216mhz"].items():
        for key, value in figures.items():
            assert cluttered[link][key] == pytest.approx(value, rel=EXPECTED["relative_tolerance"]), (link, key)


def test_the_readme_prints_the_pinned_ratios(cluttered):
    for path, printed in EXPECTED["readme_bold_ratios"].items():
        link, key = path.split(".")
        assert f"{cluttered[link][key]:.1f}x" == printed, path
        for name, text in DOCUMENTS.items():
            assert f"**{printed}**" in text, f"{name} does not print {path} as **{printed}**"


def test_the_fashion_mnist_bundle_gives_the_pinned_figures_and_the_readme_prints_them():
    metrics = Bundle(ROOT / "bundles" / "fashion-mnist").manifest.metrics  # the content hash is checked
    for key, value in EXPECTED["fashion_mnist_bundle"].items():
        assert getattr(metrics, key) == pytest.approx(value, rel=EXPECTED["relative_tolerance"]), key
    pinned = EXPECTED["fashion_mnist_bundle"]
    for name, text in DOCUMENTS.items():
        assert f"| accuracy, mixed (device + cloud) | {pinned['accuracy']:.4f} |" in text, name
        assert f"| accuracy, mixed with the int8 device front | {pinned['accuracy_int8']:.4f} |" in text, name
        assert f"| accuracy, device alone (link gone): float / int8 | {pinned['accuracy_local_only']:.4f} /" in text, name
        assert f"| accuracy, unsplit reference | {pinned['accuracy_reference']:.4f} |" in text, name
        assert f"| payload per inference, median / mean / p99 (range coder) | {pinned['payload_bytes_median']:.0f} /" \
            in text, name
