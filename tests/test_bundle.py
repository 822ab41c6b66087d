"""Loading a bundle: the content hash, errors that name the problem, input checks (no torch needed)."""

import json
import shutil

import numpy as np
import pytest

from agilenn.bundle import MANIFEST_NAME, Bundle, BundleError


def test_a_modified_bundle_is_refused_with_both_hashes(tiny_bundle, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(tiny_bundle.folder, copy)
    manifest = json.loads((copy / MANIFEST_NAME).read_text())
    manifest["mixing"]["alpha_local"] = 0.9
    (copy / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="modified after export"):
        Bundle(copy)


def test_bundle_errors_name_the_problem(tmp_path):
    with pytest.raises(BundleError, match="manifest.json not found"):
        Bundle(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text('{"schema_version": 99}')
    with pytest.raises(BundleError, match="schema_version 99"):
        Bundle(tmp_path)


def test_prepare_rejects_inputs_of_the_wrong_shape(tiny_bundle):
    with pytest.raises(BundleError, match=r"\(1, 8, 8\)"):
        tiny_bundle.prepare(np.zeros((2, 1, 8, 8), dtype=np.uint8))


def test_recorded_metrics_are_typed_and_an_unknown_figure_is_refused_by_name(tiny_bundle, tmp_path):
    metrics = tiny_bundle.recorded_metrics
    assert 0.0 <= metrics.accuracy <= 1.0 and metrics.verification["prediction_mismatches"] == 0
    copy = tmp_path / "bundle"
    shutil.copytree(tiny_bundle.folder, copy)
    manifest = json.loads((copy / MANIFEST_NAME).read_text())
    manifest["metrics"]["acuracy"] = 0.99  # the metrics are outside the hash: the schema must catch it
    (copy / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="acuracy"):
        Bundle(copy)


def test_evaluate_json_prints_the_metric_fields_under_their_keys(tiny_bundle, capsys, monkeypatch):
    from agilenn.bundle_metrics import BundleMetrics
    from commands.evaluate import main as evaluate_main
    from partitioner.testing import synthetic_dataset

    monkeypatch.setattr("agilenn.predict.load_dataset", lambda name: synthetic_dataset())
    assert evaluate_main([str(tiny_bundle.folder), "--json", "--dataset", "synthetic", "--no-skewness"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) == set(BundleMetrics.model_fields) | {"bundle", "dataset"}
    assert report["samples"] == len(synthetic_dataset().test)
