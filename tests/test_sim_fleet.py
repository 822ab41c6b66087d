"""`agilenn simulate fleet` against a real worker server on a background thread."""

import json

from cloud_worker.testing import ServerThread

from simulation.cli import main as simulate_main


def test_fleet_reports_percentiles_throughput_and_local_share(tiny_bundle, tmp_path, capsys):
    with ServerThread(tiny_bundle) as server:
        assert simulate_main(["fleet", "--devices", "4", "--rate", "20", "--seconds", "1.0", "--cloud",
                              server.address, "--bundle", str(tiny_bundle.folder), "--report", str(tmp_path),
                              "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["connected"] == 4 and result["inferences"] >= 40
    assert result["latency_ms"]["p50"] <= result["latency_ms"]["p99"]
    assert 0.0 <= result["share_local"] <= 0.2 and result["sources"].get("mixed", 0) > 0
    assert (tmp_path / "fleet_latency_cdf.png").stat().st_size > 5000


def test_fleet_without_a_service_answers_locally_and_says_why(tiny_bundle, capsys):
    assert simulate_main(["fleet", "--devices", "2", "--rate", "20", "--seconds", "0.3", "--cloud",
                          "127.0.0.1:9", "--bundle", str(tiny_bundle.folder), "--connect-timeout-s", "0.5",
                          "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["connected"] == 0 and result["share_local"] == 1.0 and result["local_reasons"]
