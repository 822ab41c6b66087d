"""`agilenn simulate --workload NAME` picks the measured file; the summary's figures against the
local-only models and full offload, on a measured file small enough to check by hand."""

import json
from pathlib import Path

import pytest
from sim_helpers import device, link

import simulation.calibrate
import simulation.cli
from agilenn.measured import SCHEMA, MeasuredDataError, MeasuredSchemes, load_measured, write_measured
from simulation import compare, workloads
from simulation.cli import main as simulate_main

REPO = Path(__file__).resolve().parents[1]
# 100,000 MACs at the toy device's dense rate (1e7 MAC/s): 10 ms each
LAYER = {"name": "l", "op": "conv", "macs": 100_000, "inner": 64, "weight_bytes": 100, "in_bytes": 10, "out_bytes": 10}


def scheme(name, kind, accuracy, payload=0.0, layers=1, **fields):
    return {"name": name, "kind": kind, "accuracy": accuracy, "payload_bytes": payload, "encode_symbols": 0,
            "input_bytes": 10, "device_layers": [LAYER] * layers, "cloud_layers": [],
            **({"levels": 4, "offloaded_channels": 1, "codec": "range-v1"} if kind == "agilenn" else {}), **fields}


def measured(local_accuracies=(0.95, 0.91, 0.895), lossy=True) -> MeasuredSchemes:
    """AgileNN at 0.90 with 100 B and one layer (0.5 + 10 ms on the device, 0.1 ms on the link);
    three local models of 4, 2 and 1 layers (40.5, 20.5, 10.5 ms); two lossless full offloads and,
    with `lossy`, three JPEG ones."""
    slow, fast, weak = local_accuracies
    schemes = [scheme("agilenn", "agilenn", 0.90, 100.0),
               scheme("local-slow", "local-only", slow, layers=4),
               scheme("local-fast", "local-only", fast, layers=2),
               scheme("local-weak", "local-only", weak, layers=1),
               scheme("full-offload", "full-offload", 0.92, 1100.0, layers=0, codec="zlib-v1"),
               scheme("full-offload-png", "full-offload", 0.92, 900.0, layers=0, codec="png")]
    if lossy:
        schemes += [scheme(f"jpeg-q{q}", "full-offload", acc, payload, layers=0, codec="jpeg", lossy=True,
                           jpeg_quality=q)
                    for q, acc, payload in ((90, 0.915, 500.0), (50, 0.905, 300.0), (10, 0.85, 120.0))]
    return MeasuredSchemes.model_validate({
        "schema": SCHEMA, "dataset": "toy", "samples": 1, "raw_input_bytes": 10, "classes": 2,
        "protocol": {"request_overhead_bytes": 0, "response_bytes": 0, "raw_response_bytes": 0},
        "schemes": schemes, "cuts": [], "tradeoff": []})


def summary(data: MeasuredSchemes) -> dict:
    toy_link = link(uplink_bps=8e6, rtt_ms=0.0, mtu_bytes=100_000, packet_overhead_bytes=0)
    return compare.simulate(data, device(), toy_link, device(fixed_ms=0.0))


# --- which measured file ---------------------------------------------------------------------------------

def test_without_a_workload_the_fashion_mnist_file_is_read(monkeypatch):
    monkeypatch.chdir(REPO)
    assert workloads.measured_file() == Path("bundles/baselines/measured.json")
    assert workloads.measured_file("fashion-mnist") == workloads.measured_file() == compare.DEFAULT_MEASURED
    assert workloads.measured_file(measured="elsewhere.json") == Path("elsewhere.json")  # not checked here


@pytest.fixture
def loaded(monkeypatch):
    """The paths the CLI reads measured schemes from; each read gets the hand-made file."""
    paths = []
    monkeypatch.setattr(simulation.cli, "load_measured", lambda path: paths.append(str(path)) or measured())
    return paths


@pytest.mark.parametrize("options", [[], ["--workload", "fashion-mnist"]])
def test_the_cli_reads_the_fashion_mnist_file_by_default_and_by_name(options, loaded, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    assert simulate_main([*options, "--json"]) == 0
    assert loaded == ["bundles/baselines/measured.json"]
    assert json.loads(capsys.readouterr().out)["summary"]["local_only_compared"] == "local-fast"


def test_measured_overrides_the_default_workload(loaded, capsys):
    assert simulate_main(["recommend", "--measured", "mine.json", "--min-accuracy", "0.5", "--json"]) == 0
    assert loaded == ["mine.json"]


def test_calibrate_takes_the_workload_too(loaded, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(simulation.calibrate, "calibrate", lambda data, repeats: {"schemes": len(data.schemes)})
    monkeypatch.setattr(simulation.calibrate, "profile_yaml", lambda result, command: command)
    assert simulate_main(["calibrate", "--workload", "fashion-mnist", "--repeats", "1", "--json"]) == 0
    assert loaded == ["bundles/baselines/measured.json"]
    assert json.loads(capsys.readouterr().out) == {"schemes": len(measured().schemes)}


SUBCOMMANDS = [[], ["run"], ["sweep", "--links", "wifi-6mbps"], ["recommend", "--min-accuracy", "0.5"],
               ["emulate"], ["calibrate"]]


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_an_unknown_workload_lists_the_known_ones(command, loaded, capsys):
    assert simulate_main([*command, "--workload", "mnist"]) == 2
    err = capsys.readouterr().err
    assert "unknown workload 'mnist'; known: fashion-mnist, cluttered-fashion-mnist" in err
    assert loaded == []


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_a_workload_not_yet_measured_names_its_file_and_how_to_make_it(command, loaded, tmp_path, monkeypatch,
                                                                      capsys):
    monkeypatch.chdir(tmp_path)  # no bundles/ here, whatever the repository holds by then
    assert simulate_main([*command, "--workload", "cluttered-fashion-mnist"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err  # one line
    assert ("no measured schemes for workload 'cluttered-fashion-mnist': "
            "bundles/cluttered-fashion-mnist-baselines/measured.json not found; "
            "measure them with scripts/cluttered_experiment.sh measure") in err
    assert loaded == []


def test_a_missing_default_file_names_the_workload(loaded, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert simulate_main(["--json"]) == 1
    assert "workload 'fashion-mnist': bundles/baselines/measured.json not found" in capsys.readouterr().err


def test_both_a_workload_and_a_measured_file_is_an_error(loaded, capsys):
    assert simulate_main(["--workload", "fashion-mnist", "--measured", "mine.json"]) == 2
    assert "either --workload or --measured, not both" in capsys.readouterr().err
    assert loaded == []
    with pytest.raises(workloads.WorkloadError):
        workloads.measured_file("fashion-mnist", "mine.json")


# --- the summary's figures -------------------------------------------------------------------------------

AGILENN_MS = 10.5 + 0.1  # device (0.5 fixed + 10) and 100 B at 8 Mbps


def test_the_fastest_local_model_at_agilenn_accuracy_is_compared():
    s = summary(measured())["summary"]
    # local-weak (0.895) is nearest in accuracy and fastest, but below AgileNN's 0.90; local-slow is more
    # accurate than local-fast but slower
    assert s["local_only_nearest"] == "local-weak"
    assert s["local_only_compared"] == "local-fast"
    assert s["local_only_reaches_agilenn_accuracy"] is True
    assert s["local_only_compared_fits_device"] is True
    assert s["speedup_vs_local_only"] == pytest.approx(20.5 / AGILENN_MS)
    assert s["device_macs_ratio_vs_local_only"] == pytest.approx(2.0)
    assert "fastest local-only scheme at AgileNN's accuracy" in s["speedup_vs_local_only_note"]


def test_without_a_local_model_at_agilenn_accuracy_the_most_accurate_one_is_compared():
    result = summary(measured(local_accuracies=(0.88, 0.86, 0.80)))
    s = result["summary"]
    assert s["local_only_compared"] == "local-slow"  # the most accurate, though the slowest
    assert s["local_only_reaches_agilenn_accuracy"] is False
    assert s["speedup_vs_local_only"] == pytest.approx(40.5 / AGILENN_MS)
    assert s["device_macs_ratio_vs_local_only"] == pytest.approx(4.0)
    energy = {r["name"]: r["energy_mj"] for r in result["schemes"]}
    assert s["energy_ratio_vs_local_only"] == pytest.approx(energy["local-slow"] / energy["agilenn"])
    assert "no local-only scheme reaches AgileNN's accuracy" in s["speedup_vs_local_only_note"]
    assert "local-slow" in s["speedup_vs_local_only_note"]


def test_bytes_against_the_smallest_lossless_and_the_smallest_good_enough_jpeg():
    result = summary(measured())
    s = result["summary"]
    assert s["full_offload_compared"] == "full-offload-png"  # 900 B against zlib's 1100; JPEG is not lossless
    assert s["bytes_ratio_vs_full_offload"] == pytest.approx(9.0)
    total = {r["name"]: r["latency_ms"]["total_ms"] for r in result["schemes"]}
    assert s["speedup_vs_full_offload"] == pytest.approx(total["full-offload-png"] / total["agilenn"])
    # q10 is smaller (120 B) but below AgileNN's accuracy; q50 (300 B, 0.905) is the smallest that reaches it
    assert s["jpeg_compared"] == "jpeg-q50"
    assert s["bytes_ratio_vs_jpeg"] == pytest.approx(3.0)
    assert "crossover_kbps" in s and "full-offload" in s["crossover_kbps"]
    rows = {r["name"]: r for r in result["schemes"]}
    assert rows["jpeg-q50"]["lossy"] is True and rows["full-offload-png"]["lossy"] is False
    assert "JPEG quality 50" in rows["jpeg-q50"]["note"]


def test_no_jpeg_at_agilenn_accuracy_or_none_at_all_is_null_with_a_note():
    data = measured()
    for s in data.schemes:
        if s.lossy:
            s.accuracy = 0.89
    figures = summary(data)["summary"]
    assert figures["bytes_ratio_vs_jpeg"] is None and figures["jpeg_compared"] is None
    assert "no lossy full-offload scheme reaches AgileNN's accuracy" in figures["bytes_ratio_vs_jpeg_note"]
    figures = summary(measured(lossy=False))["summary"]
    assert figures["bytes_ratio_vs_jpeg"] is None
    assert figures["bytes_ratio_vs_jpeg_note"] == "no lossy full-offload scheme was measured"
    assert figures["bytes_ratio_vs_full_offload"] == pytest.approx(9.0)


def test_lossy_fields_round_trip_and_a_jpeg_quality_must_be_lossy(tmp_path):
    data = measured()
    path = write_measured(tmp_path / "measured.json", data)
    assert load_measured(path) == data
    raw = json.loads(path.read_text())["schemes"]
    assert "lossy" not in raw[0] and raw[-1]["lossy"] is True and raw[-1]["jpeg_quality"] == 10
    bad = json.loads(path.read_text())
    bad["schemes"][-1]["lossy"] = False
    path.write_text(json.dumps(bad))
    with pytest.raises(MeasuredDataError, match=r"schemes\[8\]: a scheme with a jpeg_quality is lossy"):
        load_measured(path)
