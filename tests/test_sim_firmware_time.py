"""`agilenn simulate --device-time firmware`: AgileNN's device part from the committed Cortex-M7 measurements."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agilenn.measured import load_measured
from firmware.report import load_costs
from simulation import compare
from simulation.cli import main
from simulation.firmware_time import FirmwareTimeError, measured_device
from simulation.profiles import load_device, load_link
from simulation.workloads import WORKLOADS

ROOT = Path(__file__).resolve().parents[1]
COSTS = ROOT / WORKLOADS["cluttered-fashion-mnist"].firmware


def test_committed_costs_describe_the_committed_bundle_bit_exactly():
    costs = load_costs(COSTS)
    bundle = json.loads((ROOT / "bundles/cluttered-fashion-mnist/manifest.json").read_text())
    assert costs.bundle_hash == bundle["bundle_hash"]
    assert costs.payloads_identical == costs.local_logits_identical == costs.samples >= 200
    assert costs.compute_instructions + costs.encode_instructions == pytest.approx(costs.instructions_per_inference_mean)


def test_device_time_is_instructions_times_cpi_over_the_clock():
    costs = load_costs(COSTS)
    device = load_device("stm32f746-216mhz")
    slow, fast = measured_device(COSTS, device, 2.0), measured_device(COSTS, device, 1.0)
    assert slow.compute_ms == pytest.approx(2 * fast.compute_ms)
    assert fast.compute_ms == pytest.approx(costs.compute_instructions / 216e6 * 1e3)
    assert fast.encode_ms == pytest.approx(costs.encode_instructions / 216e6 * 1e3)
    assert slow.flash_bytes == costs.flash_bytes and slow.sram_bytes == costs.sram_bytes


def test_firmware_time_replaces_only_agilenns_device_part():
    measured = load_measured(ROOT / WORKLOADS["cluttered-fashion-mnist"].measured)
    device, link, cloud = load_device("stm32f746-216mhz"), load_link("wifi-6mbps"), load_device("host")
    firmware = measured_device(COSTS, device, 2.0)
    modelled = {r.name: r for r in compare.evaluate(measured, device, link, cloud)}
    measured_run = {r.name: r for r in compare.evaluate(measured, device, link, cloud, firmware=firmware)}
    assert measured_run["agilenn"].latency.device_ms == pytest.approx(firmware.compute_ms)
    assert measured_run["agilenn"].latency.encode_ms == pytest.approx(firmware.encode_ms)
    assert measured_run["agilenn"].latency.network_ms == pytest.approx(modelled["agilenn"].latency.network_ms)
    assert measured_run["agilenn"].flash_bytes == firmware.flash_bytes
    assert "device time from firmware" in measured_run["agilenn"].note
    for name, result in modelled.items():
        if name != "agilenn":
            assert measured_run[name].latency.total_ms == pytest.approx(result.latency.total_ms)


def test_firmware_time_refuses_another_device():
    with pytest.raises(FirmwareTimeError, match="'esp32-s3' is another device"):
        measured_device(COSTS, load_device("esp32-s3"))


def test_cli_reports_firmware_device_time(capsys):
    assert main(["--workload", "cluttered-fashion-mnist", "--device-time", "firmware", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["device_time"] == "firmware"
    agile = next(s for s in result["schemes"] if s["name"] == "agilenn")
    assert "device time from firmware" in agile["note"]
    assert result["summary"]["speedup_vs_local_only"] > 1
