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
