"""`agilenn simulate fleet` against a real worker server on a background thread."""

import json

import pytest

pytest.importorskip("matplotlib", reason="the fleet's report plots: needs the sim extra")

from simulation.cli import main as simulate_main


def test_fleet_reports_percentiles_throughput_and_local_share(tiny_bundle, tmp_path, capsys, worker_server):
    with worker_server(tiny_bundle) as server:
        assert simulate_main(["fleet", "--devices", "4", "--rate", "20", "--seconds", "1.0", "--cloud",
                              server.address, "--bundle", str(tiny_bundle.folder), "--report", str(tmp_path),
                              "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["connected"] == 4 and result["inferences"] >= 40
    assert result["latency_ms"]["p50"] <= result["latency_ms"]["p99"]
    assert 0.0 <= result["share_local"] <= 0.2 and result["sources"].get("mixed", 0) > 0
    assert result["answered_by_cloud"] == result["sources"]["mixed"] and result["answered_per_s"] > 0
    assert result["overloaded"] == 0 and result["share_overloaded"] == 0.0
    assert result["latency_answered_ms"]["p50"] <= result["latency_answered_ms"]["p99"]
    assert (tmp_path / "fleet_latency_cdf.png").stat().st_size > 5000
    # an idle worker: the policy predicted every sent input in time, and they were
    assert result["mixed_share"] == 1.0 - result["share_local"]
    assert abs(result["predicted_mixed_share"] - result["mixed_share"]) <= 0.2


def test_fleet_without_a_service_answers_locally_and_says_why(tiny_bundle, capsys):
    assert simulate_main(["fleet", "--devices", "2", "--rate", "20", "--seconds", "0.3", "--cloud",
                          "127.0.0.1:9", "--bundle", str(tiny_bundle.folder), "--connect-timeout-s", "0.5",
                          "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["connected"] == 0 and result["share_local"] == 1.0 and result["local_reasons"]
    # no worker reachable: every input went unanswered by the cloud, and none was answered by it
    assert result["unanswered"] == result["inferences"] > 0 and result["answered_by_cloud"] == 0
    assert result["latency_answered_ms"] == {"p50": None, "p90": None, "p99": None}
    assert result["mixed_share"] == 0.0 and result["predicted_mixed_share"] == 0.0  # nothing was sent


def test_a_fleet_run_without_inferences_reports_no_percentiles(tiny_bundle, tmp_path):
    from simulation.fleet import run_fleet

    result = run_fleet(tiny_bundle.folder, "127.0.0.1:9", devices=1, seconds=0.0, connect_timeout_s=0.1,
                       report=tmp_path)
    assert result["inferences"] == 0
    assert result["latency_ms"] == {"p50": None, "p90": None, "p99": None}
    assert "no inferences" in result["note"]
    assert json.loads(json.dumps(result))["latency_ms"]["p50"] is None
    assert "no inferences" in (tmp_path / "fleet.md").read_text()


def test_the_fleet_and_the_report_share_the_public_pyplot_helper():
    import simulation.fleet
    import simulation.report
    from simulation import plotting

    assert simulation.fleet.pyplot is simulation.report.pyplot is plotting.pyplot


def test_a_device_behind_its_schedule_stops_at_the_end_of_the_run(tiny_bundle):
    from simulation.fleet import run_fleet

    # one device asked for a million inputs a second for 0.3 s cannot keep up; the run must still end
    # at its end time instead of working through all 300,000 scheduled inputs
    result = run_fleet(tiny_bundle.folder, "127.0.0.1:1", devices=1, rate_hz=1e6, seconds=0.3,
                       connect_timeout_s=0.1)
    assert 0 < result["inferences"] < 300_000
