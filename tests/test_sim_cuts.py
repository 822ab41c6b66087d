"""The cut chooser on a synthetic per-layer profile whose optimum is known by hand."""

import pytest
from sim_helpers import device, link

from simulation.cuts import Cut, NoEligibleCut, choose_cut
from simulation.model import Layer, Workload

# A 4-layer network; every layer has a long inner product, so it runs at the dense rate, 10 M MAC/s
# on the device (0.1 ms per 1000 MACs) and 1 G MAC/s in the cloud. Activation bytes shrink with depth.
LAYERS = [Layer(f"l{i}", "conv", macs=m, inner=64, weight_bytes=100, in_bytes=10, out_bytes=10)
          for i, m in enumerate([20_000, 40_000, 80_000, 10_000])]
BYTES = [800, 1200, 300, 100]  # at the input, after l0, after l1, after l2
CLOUD = device(dense_macs_per_s=1e9, fixed_ms=0.0)


def cuts() -> list[Cut]:
    out = []
    for i, nbytes in enumerate(BYTES):
        out.append(Cut(f"cut{i}", Workload(f"cut{i}", device_layers=tuple(LAYERS[:i]), input_bytes=10,
                                           payload_bytes=nbytes, response_bytes=0,
                                           cloud_layers=tuple(LAYERS[i:])), accuracy=0.9 - 0.01 * i))
    out.append(Cut("local", Workload("local", device_layers=tuple(LAYERS)), accuracy=0.95))
    return out


def fast_link():
    return link(uplink_bps=8e6, rtt_ms=0.0, mtu_bytes=100_000, packet_overhead_bytes=0)


def slow_link():
    return link(uplink_bps=8e3, rtt_ms=0.0, mtu_bytes=100_000, packet_overhead_bytes=0)


def test_fast_link_ships_the_input():
    # 8 Mbps: 1 byte = 1 us. device fixed 0.5 ms on every cut with layers (none for cut0), cloud <= 0.15 ms.
    # cut0: 0 + 0.8 + 0.15 = 0.95 ms; cut1: 0.5 + 2 + 1.2 = 3.7; cut2: 0.5 + 6 + 0.3 = 6.8; local: 15.5
    choice = choose_cut(cuts(), device(), fast_link(), CLOUD)
    assert choice.cut.name == "cut0"
    assert choice.latency.total_ms == pytest.approx(0.8 + 0.15)


def test_slow_link_pushes_the_cut_deeper():
    # 8 kbps: 1 byte = 1 ms. cut0: 800.15; cut1: 0.5 + 2 + 1200.13; cut2: 0.5 + 6 + 300.09;
    # cut3: 0.5 + 14 + 100.01 = 114.51 (the optimum); local: 0.5 + 15 = 15.5 -> local wins outright
    choice = choose_cut(cuts(), device(), slow_link(), CLOUD)
    assert choice.cut.name == "local"
    # without the all-local option, the deepest cut with the fewest bytes wins
    choice = choose_cut(cuts()[:-1], device(), slow_link(), CLOUD)
    assert choice.cut.name == "cut3"
    assert choice.latency.total_ms == pytest.approx(0.5 + 14.0 + 100.0 + 0.01)


def test_accuracy_floor_and_memory_limit_exclude_cuts():
    choice = choose_cut(cuts()[:-1], device(), slow_link(), CLOUD, min_accuracy=0.875)
    assert choice.cut.name == "cut2"  # cut3 (0.87) is excluded; of cut0..2, cut2 (306.6 ms) is fastest
    with pytest.raises(NoEligibleCut, match="accuracy >= 0.99"):
        choose_cut(cuts(), device(), slow_link(), CLOUD, min_accuracy=0.99)
    heavy = [Cut("huge", Workload("huge", device_layers=(Layer("x", "conv", 1, 64, weight_bytes=10**6),),
                                  payload_bytes=1, cloud_layers=()))] + cuts()[:1]
    assert choose_cut(heavy, device(), slow_link(), CLOUD).cut.name == "cut0"


def test_every_candidate_is_reported():
    choice = choose_cut(cuts(), device(), fast_link(), CLOUD)
    assert [c.name for c, _, _ in choice.table] == ["cut0", "cut1", "cut2", "cut3", "local"]
    assert all(ok for _, _, ok in choice.table)
