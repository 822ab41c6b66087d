"""The confidence gate in the simulation: measured per input, it sets the share answered on the device,
the expected accuracy and latency, and the threshold `simulate recommend --max-latency-ms` picks."""

import json

import numpy as np
import pytest

from agilenn.measured import load_measured
from agilenn.predict import confidence_gate_curve
from commands.cli import main as agilenn
from simulation import compare
from simulation.gate import expected, recommend_threshold


def test_the_curve_counts_inputs_at_or_above_the_threshold_as_answered_locally():
    local = np.log(np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]]))
    mixed = np.array([[0.0, 1.0], [0.0, 1.0], [0.0, 1.0]])
    labels = np.array([0, 1, 1])  # local: right, wrong, right; mixed: wrong, right, right
    curve = {p["threshold"]: p for p in confidence_gate_curve(local, mixed, labels, np.array([0.0, 0.7, 0.85, 1.0]))}
    assert curve[0.0] == {"threshold": 0.0, "local_share": 1.0, "accuracy": pytest.approx(2 / 3)}
    # 0.7: the first (0.9) and the third (0.8) stay local and are right; the second is mixed, and right
    assert curve[0.7]["local_share"] == pytest.approx(2 / 3) and curve[0.7]["accuracy"] == 1.0
    assert curve[0.85]["local_share"] == pytest.approx(1 / 3) and curve[0.85]["accuracy"] == 1.0
    assert curve[1.0]["local_share"] == 0.0 and curve[1.0]["accuracy"] == pytest.approx(2 / 3)


@pytest.fixture(scope="module")
def cluttered():
    from simulation.profiles import load_device, load_link
    from simulation.workloads import get

    measured = load_measured(get("cluttered-fashion-mnist").measured)
    result = compare.simulate(measured, load_device("stm32f746-216mhz"), load_link("ble-270kbps"),
                              load_device("host"))
    agilenn = next(row for row in result["schemes"] if row["kind"] == "agilenn")
    return measured.scheme("agilenn"), agilenn


def test_a_higher_threshold_offloads_more_is_slower_and_more_accurate(cluttered):
    scheme, row = cluttered
    loose, strict = expected(scheme, row, 0.3, None), expected(scheme, row, 0.8, None)
    assert loose["locally_answered_share"] > strict["locally_answered_share"] > 0
    assert loose["expected_latency_ms"] < strict["expected_latency_ms"] < row["latency_ms"]["total_ms"]
    assert loose["expected_accuracy"] < strict["expected_accuracy"] <= scheme.accuracy + 1e-9


def test_offloads_that_cannot_meet_the_deadline_cost_the_deadline_and_give_local_accuracy(cluttered):
    scheme, row = cluttered
    lat = row["latency_ms"]
    round_trip = lat["total_ms"] - lat["device_ms"] - lat["encode_ms"]
    late = expected(scheme, row, None, deadline_ms=round_trip / 2)
    assert late["answers_in_time"] is False and late["expected_accuracy"] == scheme.accuracy_local_only
    assert late["expected_latency_ms"] == pytest.approx(lat["device_ms"] + lat["encode_ms"] + round_trip / 2)
    assert expected(scheme, row, None, deadline_ms=round_trip * 2)["expected_accuracy"] == scheme.accuracy


def test_the_recommended_threshold_is_the_most_accurate_within_the_budget(cluttered):
    scheme, row = cluttered
    budget = 0.5 * (row["latency_ms"]["device_ms"] + row["latency_ms"]["total_ms"])
    choice = recommend_threshold(scheme, row, budget, None)["recommended"]
    assert choice["expected_latency_ms"] <= budget
    others = [expected(scheme, row, p.threshold, None) for p in scheme.confidence_gate]
    assert choice["expected_accuracy"] == max(o["expected_accuracy"] for o in others
                                              if o["expected_latency_ms"] <= budget)
    assert recommend_threshold(scheme, row, row["latency_ms"]["device_ms"] / 2, None)["recommended"] is None


def test_simulate_reports_the_policy_per_scheme_and_recommend_picks_a_threshold(capsys):
    args = ["simulate", "--workload", "cluttered-fashion-mnist", "--device", "stm32f746-216mhz",
            "--link", "ble-270kbps"]
    assert agilenn(args + ["--confidence-threshold", "0.5", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    policies = {row["kind"]: row["policy"] for row in result["schemes"] if "policy" in row}
    assert 0 < policies["agilenn"]["locally_answered_share"] < 1
    assert policies["local-only"]["locally_answered_share"] == 1.0
    assert policies["full-offload"]["locally_answered_share"] == 0.0
    assert agilenn(["simulate", "recommend", *args[1:], "--max-latency-ms", "30", "--json"]) == 0
    choice = json.loads(capsys.readouterr().out)
    assert choice["recommended"]["expected_latency_ms"] <= 30
    assert 0 < choice["recommended"]["confidence_threshold"] < 1
