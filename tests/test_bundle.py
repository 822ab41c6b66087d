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


@pytest.mark.parametrize("change, message", [
    ({"shape": [4, 4, 5]}, r"codes indices shaped \(4, 4, 5\) at 4 levels, but the split sends \(4, 4, 4\) at 4"),
    ({"shape": [3, 4, 4]}, "the manifest's codec entry is invalid: tables shaped"),
    ({"id": "range-v2"}, "the manifest's codec entry is invalid: codec 'range-v2' with tables shaped"),
])
def test_a_codec_that_does_not_fit_the_split_is_refused_by_name(tiny_bundle, tmp_path, change, message):
    copy = tmp_path / "bundle"
    shutil.copytree(tiny_bundle.folder, copy)
    manifest = json.loads((copy / MANIFEST_NAME).read_text())
    manifest["codec"].update(change)
    (copy / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=message):
        Bundle(copy, verify=False)  # the hash would refuse it first; a bundle with the error exported in it would not


def test_prepare_rejects_inputs_of_the_wrong_shape(tiny_bundle):
    with pytest.raises(BundleError, match=r"\(1, 8, 8\)"):
        tiny_bundle.prepare(np.zeros((2, 1, 8, 8), dtype=np.uint8))


def test_recorded_metrics_are_typed_and_a_wrong_figure_is_refused_by_name(tiny_bundle, tmp_path):
    metrics = tiny_bundle.recorded_metrics
    assert 0.0 <= metrics.accuracy <= 1.0 and metrics.verification["prediction_mismatches"] == 0
    copy = tmp_path / "bundle"
    shutil.copytree(tiny_bundle.folder, copy)
    manifest = json.loads((copy / MANIFEST_NAME).read_text())
    manifest["metrics"]["skewness_ig64"] = 0.9  # a figure this version does not know: kept, not refused
    (copy / MANIFEST_NAME).write_text(json.dumps(manifest))
    assert Bundle(copy).recorded_metrics.model_extra == {"skewness_ig64": 0.9}
    manifest["metrics"]["accuracy"] = "high"  # the metrics are outside the hash: only the schema catches it
    (copy / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="metrics.accuracy"):
        Bundle(copy)


def test_a_manifest_keeps_only_the_figures_that_apply(tiny_bundle, tmp_path):
    from agilenn.bundle import manifest_json

    written = json.loads(manifest_json(tiny_bundle.manifest))["metrics"]
    recorded = json.loads((tiny_bundle.folder / MANIFEST_NAME).read_text())["metrics"]
    assert written == recorded  # loading and writing again changes nothing
    assert "accuracy_int8" not in written  # no int8 front: its figures are left out, not null


def test_evaluate_json_prints_the_metric_fields_under_their_keys(tiny_bundle, capsys, monkeypatch):
    from agilenn.bundle_metrics import BundleMetrics
    from commands.evaluate import main as evaluate_main
    from partitioner.testing import synthetic_dataset

    monkeypatch.setattr("agilenn.predict.load_dataset", lambda name: synthetic_dataset())
    assert evaluate_main([str(tiny_bundle.folder), "--json", "--dataset", "synthetic", "--no-skewness"]) == 0
    report = json.loads(capsys.readouterr().out)
    int8_figures = {"accuracy_int8", "accuracy_local_only_int8", "int8_remote_indices_equal_share",
                    "payload_bytes_median_int8"}  # the tiny bundle has no int8 front
    assert set(report) == set(BundleMetrics.model_fields) - int8_figures | {"bundle", "dataset"}
    assert report["accuracy_reference"] is not None and report["skewness_trapezoid"] is None
    assert report["samples"] == len(synthetic_dataset().test)
