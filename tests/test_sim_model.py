"""The latency, energy and memory model on cases computed by hand."""

import math

import pytest
from sim_helpers import device, link

from simulation.model import Layer, Workload, compute_ms, energy_mj, latency, memory, packets, transfer_ms

LAYERS = (Layer("conv1", "conv", macs=9_000, inner=9, weight_bytes=300, in_bytes=100, out_bytes=400),
          Layer("pw", "conv", macs=20_000, inner=32, weight_bytes=700, in_bytes=400, out_bytes=200))


def test_compute_time_uses_the_rate_for_each_layers_inner_product():
    # 0.5 fixed + 9000 MACs at 1 M/s (9 ms) + 20000 MACs at 10 M/s (2 ms)
    assert compute_ms(LAYERS, device()) == pytest.approx(11.5)
    # without a dense rate every layer runs at macs_per_s: 0.5 + 29 ms
    assert compute_ms(LAYERS, device(dense_macs_per_s=None)) == pytest.approx(29.5)


def test_transfer_counts_packet_headers_and_serialization():
    # 250 bytes in packets of 100 payload bytes: 3 packets, 250 + 30 = 280 bytes = 2240 bits at 8 kbps
    assert packets(250, link()) == 3
    assert transfer_ms(250, 8000.0, link()) == pytest.approx(280.0)
    assert transfer_ms(0, 8000.0, link()) == 0.0


def test_loss_adds_expected_retransmissions():
    # loss 0.2: each packet is resent 0.25 times on average, each resend waits the RTO (40 ms,
    # twice the RTT by default) and serializes one packet again (280/3 ms)
    lossy = link(loss=0.2, rtt_ms=20.0)
    expected = 280.0 + 3 * 0.25 * (40.0 + 280.0 / 3)
    assert transfer_ms(250, 8000.0, lossy) == pytest.approx(expected)


def test_end_to_end_latency_by_parts():
    work = Workload("toy", device_layers=LAYERS, input_bytes=100, encode_symbols=2000, payload_bytes=240,
                    request_overhead_bytes=10, response_bytes=40,
                    cloud_layers=(Layer("head", "linear", macs=1_000_000, inner=1000),))
    cloud = device(dense_macs_per_s=1e9, fixed_ms=0.25)
    lat = latency(work, device(), link(), cloud)
    assert lat.device_ms == pytest.approx(11.5)
    assert lat.encode_ms == pytest.approx(2.0)  # 2000 symbols x 1 us
    assert lat.network_ms == pytest.approx(5.0 + 280.0)  # half RTT + (250 B + 3 x 10 B) at 8 kbps
    assert lat.cloud_ms == pytest.approx(0.25 + 1.0)  # fixed + 1 M MACs at 1 G/s
    assert lat.return_ms == pytest.approx(5.0 + 50.0)  # half RTT + (40 + 10) B at 8 kbps
    assert lat.total_ms == pytest.approx(11.5 + 2 + 285 + 1.25 + 55)
    # energy: 100 mW x 13.5 ms + 400 mW x 280 ms + 200 mW x (5 + 1.25 + 55) ms, in mJ
    assert energy_mj(lat, device()) == pytest.approx((100 * 13.5 + 400 * 280 + 200 * 61.25) / 1000)
    # a cloud whose service path costs 0.75 ms per request besides its model
    busy = device(dense_macs_per_s=1e9, fixed_ms=0.25, request_overhead_ms=0.75)
    assert latency(work, device(), link(), busy).cloud_ms == pytest.approx(0.75 + 0.25 + 1.0)


def test_a_local_scheme_spends_nothing_on_the_link():
    lat = latency(Workload("local", device_layers=LAYERS), device(), link())
    assert (lat.encode_ms, lat.network_ms, lat.cloud_ms, lat.return_ms) == (0, 0, 0, 0)
    assert energy_mj(lat, device()) == pytest.approx(100 * 11.5 / 1000)


def test_an_offloading_scheme_needs_a_cloud_profile():
    with pytest.raises(ValueError, match="needs a cloud profile"):
        latency(Workload("x", payload_bytes=10), device(), link())


def test_memory_is_peak_activation_plus_weights_plus_runtime():
    work = Workload("toy", device_layers=LAYERS, payload_bytes=90.4, request_overhead_bytes=10)
    mem = memory(work, device())
    assert mem.sram_bytes == 600 + 101 + 1_000  # pw in+out (400+200), payload buffer, runtime
    assert mem.flash_bytes == 1_000 + 20_000
    assert mem.fits and mem.why_not == []
    # full offload: no layers, the raw sample sits in SRAM while it is coded
    assert memory(Workload("raw", input_bytes=784, payload_bytes=470), device()).sram_bytes == 784 + 470 + 1000


def test_memory_says_why_a_scheme_does_not_fit():
    big = Layer("big", "conv", macs=1, inner=1, weight_bytes=40_000, in_bytes=6_000, out_bytes=6_000)
    mem = memory(Workload("big", device_layers=(big,)), device())
    assert not mem.fits
    assert any("SRAM" in why for why in mem.why_not) and any("flash" in why for why in mem.why_not)


def test_with_rate_scales_both_directions():
    asym = link(downlink_bps=16000.0)
    slower = asym.with_rate(4000.0)
    assert slower.uplink_bps == 4000.0 and slower.down_bps == 8000.0
    assert math.isclose(link().with_rate(4000.0).down_bps, 4000.0)
