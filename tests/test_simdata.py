"""`python -m partitioner.simdata --export-cut`: the layer split to export is named, never guessed."""

import pytest

pytest.importorskip("torch")

from partitioner.simdata import main as simdata_main


def test_export_cut_needs_export_splits(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        simdata_main(["--agilenn", str(tmp_path), "--baselines", str(tmp_path), "--out", str(tmp_path / "m.json"),
                      "--export-cut", "extractor.3"])
    assert exit_.value.code == 2
    assert "it needs --export-splits" in capsys.readouterr().err


def test_help_says_where_the_cut_comes_from(capsys):
    with pytest.raises(SystemExit):
        simdata_main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--export-cut NAME" in text and "agilenn simulate --device D --link L" in text
    assert "without --export-cut no layer split is exported" in text


def test_an_unknown_cut_is_refused_before_anything_is_measured(trained_tiny_bundle, tmp_path, capsys):
    tiny_bundle = trained_tiny_bundle  # cuts its reference network out of the torch weights
    from partitioner.simdata import split_cut_names
    from partitioner.splits import load_reference

    ref = load_reference(tiny_bundle.folder / tiny_bundle.manifest.files["checkpoint"])
    names = split_cut_names(ref)
    assert names and "input" not in names and "logits" not in names
    for wrong in ("no-such-cut", "input", "logits"):
        with pytest.raises(SystemExit) as exit_:
            simdata_main(["--agilenn", str(tiny_bundle.folder), "--baselines", str(tmp_path),
                          "--out", str(tmp_path / "m.json"), "--export-splits", "--export-cut", wrong])
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert f"--export-cut {wrong!r} is not an interior cut" in err and ", ".join(names) in err
    assert not (tmp_path / "m.json").exists()


def test_refreshing_refuses_the_options_it_would_ignore(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        simdata_main(["--agilenn", str(tmp_path), "--out", str(tmp_path / "m.json"), "--refresh-agilenn",
                      "--baselines", str(tmp_path), "--limit", "5"])
    assert exit_.value.code == 2
    assert "--baselines, --limit would be ignored" in capsys.readouterr().err
