"""`agilenn demo` keeps its promises in its exit code: every input answered, every answer the one offline
evaluation gives; a mismatch or an unanswered input exits 1 and says which."""

import pytest

from commands import demo


def report(**changes):
    base = {"total": 10, "answered": 10, "mixed_mismatches_vs_evaluate": 0, "local_mismatches_vs_evaluate": 0}
    return {**base, **changes}


@pytest.mark.parametrize("changes, code, said", [
    ({}, 0, None),
    ({"mixed_mismatches_vs_evaluate": 1}, 1, "1 offloaded predictions differ"),
    ({"local_mismatches_vs_evaluate": 2}, 1, "2 device predictions differ"),
    ({"answered": 9}, 1, "1 of 10 inputs unanswered"),
])
def test_the_exit_code_follows_the_comparison_with_offline_evaluation(monkeypatch, capsys, tiny_bundle, changes,
                                                                       code, said):
    monkeypatch.setattr(demo, "run_demo", lambda *args, **kwargs: report(**changes))
    monkeypatch.setattr(demo, "format_table", lambda r: "table")
    class Split:
        images = labels = None

    monkeypatch.setattr("agilenn.predict.evaluation_split", lambda bundle, dataset, limit: ("synthetic", Split))
    assert demo.main(["--bundle", str(tiny_bundle.folder), "--no-progress"]) == code
    err = capsys.readouterr().err
    assert (said in err) if said else err == ""
