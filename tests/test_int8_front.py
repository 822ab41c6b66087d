"""The int8 device front: exported beside the float one, verified against it, listed with its hash,
run by the device agent on request and measured by evaluation."""

import hashlib
import json

import numpy as np
import pytest

from agilenn.bundle import BundleError
from agilenn.predict import evaluate_bundle, int8_features
from device_agent import LOCAL_FALLBACK, DeviceAgent, DeviceConfig
from device_agent.cli import main as device_main

pytest.importorskip("torch", reason="exports bundles: needs the train extra")


def test_the_manifest_lists_both_fronts_with_their_hashes(int8_tiny_bundle):
    fronts = int8_tiny_bundle.manifest.device_fronts
    assert set(fronts) == {"float32", "int8"} and int8_tiny_bundle.precisions == ["float32", "int8"]
    for spec in fronts.values():
        data = (int8_tiny_bundle.folder / spec.file).read_bytes()
        assert spec.sha256 == hashlib.sha256(data).hexdigest() and spec.size_bytes == len(data)
    assert fronts["int8"].file == "device.int8.onnx"
    # int8 weights take about a quarter of float32's bytes (scales and int32 biases add a little)
    assert fronts["int8"].weight_bytes < 0.5 * fronts["float32"].weight_bytes
    verification = int8_tiny_bundle.manifest.metrics.int8_verification
    assert 0.0 <= verification["remote_indices_equal_share"] <= 1.0


def test_the_int8_front_really_is_quantized(int8_tiny_bundle):
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(int8_tiny_bundle.folder / "device.int8.onnx"))
    ops = {node.op_type for node in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    int8_weights = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert int8_weights, "no int8 weights"


def test_evaluation_reports_the_int8_figures(int8_tiny_bundle):
    from partitioner.testing import synthetic_dataset

    report = evaluate_bundle(int8_tiny_bundle, synthetic_dataset().test)
    for key in ("accuracy_int8", "accuracy_local_only_int8", "int8_remote_indices_equal_share"):
        assert 0.0 <= getattr(report, key) <= 1.0, key
    features = int8_features(int8_tiny_bundle, synthetic_dataset().test.images[:8])
    assert features.shape == (8, *int8_tiny_bundle.manifest.split.feature_shape)


def test_the_skewness_of_int8_features_is_reported(int8_tiny_bundle, capsys, monkeypatch):
    from commands.evaluate import main as evaluate_main
    from partitioner.testing import synthetic_dataset

    monkeypatch.setattr("agilenn.predict.load_dataset", lambda name: synthetic_dataset())
    assert evaluate_main([str(int8_tiny_bundle.folder), "--json", "--dataset", "synthetic"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert 0.0 <= report["skewness_int8"] <= 1.0


def test_the_agent_runs_the_front_it_is_asked_for(int8_tiny_bundle):
    images = np.random.default_rng(1).integers(0, 256, (6, *int8_tiny_bundle.manifest.input.shape)).astype(np.uint8)
    session = int8_tiny_bundle.session("device_int8")
    expected, _, _ = session.run(None, {"image": int8_tiny_bundle.prepare(images)})
    with DeviceAgent(int8_tiny_bundle, DeviceConfig(precision="int8")) as agent:
        results = [agent.infer(image) for image in images]
    assert all(r.source == LOCAL_FALLBACK for r in results)
    assert [r.label for r in results] == expected.argmax(1).tolist()


def test_asking_for_int8_of_a_float_only_bundle_names_the_problem(tiny_bundle):
    with pytest.raises(BundleError, match="has no int8 device front"):
        DeviceAgent(tiny_bundle, DeviceConfig(precision="int8"))
    with pytest.raises(BundleError, match="unknown precision 'int4'"):
        tiny_bundle.device_role("int4")


def test_device_run_takes_precision(int8_tiny_bundle, tmp_path, capsys):
    images = np.random.default_rng(2).integers(0, 256, (3, *int8_tiny_bundle.manifest.input.shape)).astype(np.uint8)
    np.save(tmp_path / "x.npy", images)
    assert device_main(["run", "--bundle", str(int8_tiny_bundle.folder), "--source", str(tmp_path / "x.npy"),
                        "--precision", "int8", "--log-level", "error"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert len(lines) == 3


def test_an_int8_front_that_loses_accuracy_is_refused_and_nothing_is_written(tmp_path, monkeypatch):
    import torch

    from partitioner import int8
    from partitioner.int8 import Int8VerificationError
    from partitioner.testing import make_tiny_bundle

    real = int8.quantize_device_front

    def broken(front, input_shape, calibration, out):
        with torch.no_grad():  # a front whose local head and features are wrong
            for p in front.local.parameters():
                p.mul_(-1.0)
            front.centroids.copy_(front.centroids.flip(0))
        real(front, input_shape, calibration, out)

    monkeypatch.setattr(int8, "quantize_device_front", broken)
    out = tmp_path / "bundle"
    with pytest.raises(Int8VerificationError, match="the int8 device front loses more than 0.005 with 95% confidence"):
        make_tiny_bundle(out, export={"verify_samples": 64, "int8": True})
    assert not out.exists()


def test_bench_device_times_both_fronts_in_one_run(int8_tiny_bundle, capsys):
    from commands.bench import main as bench_main

    assert bench_main(["device", "--bundle", str(int8_tiny_bundle.folder), "--samples", "20", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["samples"] == 20
    for key in ("float32_p50_ms", "int8_p50_ms", "int8_vs_float32_p50", "int8_weight_bytes"):
        assert report[key] > 0, key


def correctness(samples: int, both_right: int, only_float: int, only_int8: int) -> tuple[np.ndarray, np.ndarray]:
    float_right = np.zeros(samples, bool)
    int8_right = np.zeros(samples, bool)
    float_right[:both_right + only_float] = True
    int8_right[:both_right] = True
    int8_right[both_right + only_float:both_right + only_float + only_int8] = True
    return float_right, int8_right


def test_two_samples_of_359_lost_are_noise_and_not_refused():
    from partitioner.int8 import paired_drop

    drop = paired_drop(*correctness(359, 340, 2, 0), confidence=0.95)
    assert drop.drop == pytest.approx(2 / 359)  # 0.56 points: over the 0.5-point limit as a point estimate
    assert drop.lower_bound < 0.005 and not drop.worse_than(0.005)


def test_a_front_clearly_worse_is_refused_on_a_small_split_and_a_small_loss_on_a_large_one():
    from partitioner.int8 import paired_drop

    assert paired_drop(*correctness(359, 320, 12, 1), confidence=0.95).worse_than(0.005)  # 3 points
    assert paired_drop(*correctness(10_000, 9_000, 150, 30), confidence=0.95).worse_than(0.005)  # 1.2 points
    assert not paired_drop(*correctness(10_000, 9_000, 40, 30), confidence=0.95).worse_than(0.005)  # 0.1 point


@pytest.mark.slow
def test_the_digits_config_exports_with_the_default_export_settings(tmp_path, capsys):
    from commands.cli import main as agilenn

    assert agilenn(["partition", "--config", "configs/digits.yaml", "--out", str(tmp_path / "digits"),
                    "--run-dir", str(tmp_path / "run"), "--quiet"]) == 0
    exported = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    verification = exported["int8_verification"]
    assert verification["samples"] == 359 and verification["confidence"] == 0.95
    assert (tmp_path / "digits" / "device.int8.onnx").exists()
