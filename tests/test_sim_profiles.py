"""Built-in profiles load and name their sources; broken profiles fail with the file and field."""

import pytest

from simulation.profiles import ProfileError, available, load_device, load_link

REQUIRED_DEVICES = {"stm32f746-216mhz", "stm32f746-64mhz", "host", "rpi-zero-2w", "esp32-s3"}
REQUIRED_LINKS = {"ble-270kbps", "wifi-2mbps", "wifi-6mbps", "lte"}


def test_every_builtin_profile_loads_and_states_its_source():
    assert REQUIRED_DEVICES <= set(available("device"))
    assert REQUIRED_LINKS <= set(available("link"))
    for name in available("device"):
        profile = load_device(name)
        assert profile.name == name and len(profile.source) > 40
    for name in available("link"):
        profile = load_link(name)
        assert profile.name == name and len(profile.source) > 40


def test_stm32_calibration_follows_the_papers_extractor():
    # 175,154 MACs of the paper's extractor in 14 ms
    assert load_device("stm32f746-216mhz").compute.macs_per_s == pytest.approx(175_154 / 0.014, rel=0.01)
    slow = load_device("stm32f746-64mhz").compute
    assert slow.macs_per_s == pytest.approx(12.5e6 * 64 / 216, rel=0.01)


def test_unknown_profile_lists_the_known_ones():
    with pytest.raises(ProfileError, match="unknown device profile 'pdp-11'.*stm32f746-216mhz"):
        load_device("pdp-11")


def test_invalid_profile_names_file_and_field(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\ndescription: x\ncalibration: measured\nsource: a source long enough\n"
                    "uplink_bps: -5\nrtt_ms: 2\n")
    with pytest.raises(ProfileError, match=r"bad\.yaml: invalid profile: uplink_bps: Input should be greater than 0"):
        load_link(path)


def test_missing_field_and_unknown_field_are_named(tmp_path):
    path = tmp_path / "dev.yaml"
    path.write_text("name: d\ndescription: x\nkind: microcontroller\ncalibration: estimate\n"
                    "source: a source long enough\ncompute: {macs_per_s: 1e6, encode_ns_per_symbol: 1, turbo: 3}\n"
                    "memory: {sram_bytes: 1, flash_bytes: 1}\n")
    with pytest.raises(ProfileError) as err:
        load_device(path)
    assert "compute.turbo: Extra inputs are not permitted" in str(err.value)
    assert "power: Field required" in str(err.value)


def test_link_with_headers_larger_than_its_packets_is_refused(tmp_path):
    path = tmp_path / "l.yaml"
    path.write_text("name: l\ndescription: x\ncalibration: estimate\nsource: a source long enough\n"
                    "uplink_bps: 1000\nrtt_ms: 1\nmtu_bytes: 100\npacket_overhead_bytes: 100\n")
    with pytest.raises(ProfileError, match="leaves no payload"):
        load_link(path)


def test_not_a_mapping(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ProfileError, match="is a YAML mapping"):
        load_link(path)


def test_the_simulator_imports_neither_torch_nor_the_runtime():
    import subprocess
    import sys

    code = ("import sys, simulation.cli, simulation.report, simulation.compare; "
            "print(sorted(m for m in ('torch', 'matplotlib', 'onnxruntime', 'grpc', 'ray') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
