"""`agilenn simulate` subcommands called in-process, with the slow parts stubbed."""

import simulation.calibrate
import simulation.cli
from simulation.cli import main as simulate_main


def test_calibrate_records_the_arguments_main_was_given(monkeypatch, capsys):
    monkeypatch.setattr("sys.argv", ["pytest", "-q", "tests/test_sim_cli.py"])
    monkeypatch.setattr(simulation.cli, "load_measured", lambda path: {"path": path})
    monkeypatch.setattr(simulation.calibrate, "calibrate", lambda measured, repeats: {"repeats": repeats})
    monkeypatch.setattr(simulation.calibrate, "profile_yaml", lambda result, command: command)
    assert simulate_main(["calibrate", "--measured", "m.json", "--repeats", "5", "--json"]) == 0
    assert capsys.readouterr().out.strip() == '{"repeats": 5}'
    assert simulate_main(["calibrate", "--measured", "m.json", "--repeats", "5"]) == 0
    assert capsys.readouterr().out.strip() == "agilenn simulate calibrate --measured m.json --repeats 5"
