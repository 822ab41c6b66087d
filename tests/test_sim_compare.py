"""Summary figures and the crossover search on a measured file small enough to check by hand."""

import pytest
from sim_helpers import device, link

from agilenn.measured import SCHEMA, MeasuredSchemes
from simulation import compare

LAYER = {"name": "l", "op": "conv", "macs": 100_000, "inner": 64, "weight_bytes": 100, "in_bytes": 10, "out_bytes": 10}


def measured() -> MeasuredSchemes:
    def scheme(name, kind, accuracy, payload, layers):
        return {"name": name, "kind": kind, "accuracy": accuracy, "payload_bytes": payload, "encode_symbols": 0,
                "input_bytes": 10, "device_layers": layers, "cloud_layers": [],
                **({"levels": 4, "offloaded_channels": 1, "codec": "range-v1"} if kind == "agilenn" else {})}

    return MeasuredSchemes.model_validate({
        "schema": SCHEMA, "dataset": "toy", "samples": 1, "raw_input_bytes": 10, "classes": 2,
        "protocol": {"request_overhead_bytes": 0, "response_bytes": 0, "raw_response_bytes": 0},
        "schemes": [scheme("agilenn", "agilenn", 0.90, 100.0, [LAYER]),  # 0.5 + 10 ms on device
                    scheme("local-a", "local-only", 0.89, 0.0, [LAYER] * 8),  # 0.5 + 80 ms
                    scheme("local-b", "local-only", 0.80, 0.0, [LAYER]),
                    scheme("full-offload", "full-offload", 0.92, 1100.0, [])],
        "cuts": [], "tradeoff": []})


def toy_link():
    return link(uplink_bps=8e6, rtt_ms=0.0, mtu_bytes=100_000, packet_overhead_bytes=0)


def test_summary_ratios_against_the_nearest_local_model_and_full_offload():
    cloud = device(fixed_ms=0.0)
    result = compare.simulate(measured(), device(), toy_link(), cloud)
    s = result["summary"]
    assert s["local_only_nearest"] == "local-a"  # 0.89 is nearest to AgileNN's 0.90
    # AgileNN: 10.5 ms + 100 B at 8 Mbps (0.1 ms); local-a: 80.5 ms
    assert s["speedup_vs_local_only"] == pytest.approx(80.5 / 10.6)
    assert s["device_macs_ratio_vs_local_only"] == pytest.approx(8.0)
    assert s["bytes_ratio_vs_full_offload"] == pytest.approx(11.0)
    assert "layer-split" in {r["name"] for r in result["schemes"]}  # reported, though no cut was measured


def test_crossover_is_where_the_extra_bytes_cost_the_device_time():
    # full offload sends 1000 B more and saves 10.5 ms of device time (incl. the 0.5 ms fixed cost):
    # equal at 1000 * 8 bits / 10.5 ms = 761.9 kbps; below it AgileNN is faster
    detail = compare.crossover(measured(), "full-offload", device(), toy_link(), device(fixed_ms=0.0))
    assert detail["kbps"] == pytest.approx(8000 / 10.5, rel=1e-3)
    assert detail["agilenn_faster"] == "below"


def test_crossover_reports_a_baseline_that_never_wins():
    data = measured()
    data.schemes[3].payload_bytes = 50.0  # fewer bytes and no device work: full offload always wins
    detail = compare.crossover(data, "full-offload", device(), toy_link(), device(fixed_ms=0.0))
    assert detail == {"kbps": None, "agilenn_faster": "at no rate", "range_kbps": list(compare.SWEEP_KBPS)}
