import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs the train extra (torch)")

from partitioner.analysis import load_checkpoint
from partitioner.export import DeviceModule, ExportVerificationError, RemoteModule, verify
from partitioner.testing import synthetic_dataset


def test_bundle_holds_verified_models_and_measured_metrics(trained_tiny_bundle):
    m = trained_tiny_bundle.manifest
    assert m.bundle_hash.startswith("sha256:")
    assert set(m.files) >= {"device", "remote", "reference"}
    v = m.metrics.verification
    assert v["prediction_mismatches"] == 0 and v["max_abs_diff_local_logits"] <= m.config["export"]["logits_atol"]
    for key in ("accuracy", "accuracy_local_only", "accuracy_reference", "payload_bytes_median", "compression_rate"):
        assert getattr(m.metrics, key) is not None, key
    assert m.split.local_channels + m.split.remote_channels == m.split.feature_shape[0]
    assert len(m.quantizer.centroids) == m.quantizer.levels == m.codec["levels"]


def test_onnx_models_reproduce_the_torch_split(trained_tiny_bundle):
    tiny_bundle = trained_tiny_bundle
    model, config = load_checkpoint(tiny_bundle.folder / tiny_bundle.manifest.files["checkpoint"])
    images = synthetic_dataset(test=32, seed=3).test.images.astype(np.float32)
    local, indices = tiny_bundle.session("device").run(None, {"image": images})
    (remote,) = tiny_bundle.session("remote").run(None, {"remote_indices": indices})
    with torch.no_grad():
        out = model(torch.from_numpy(images) * (1 / (255 * config.std)) - config.mean / config.std)
    assert np.allclose(local, out.local_logits.numpy(), atol=1e-4)
    assert np.array_equal(indices, out.indices.numpy().astype(np.uint8))
    mixed = tiny_bundle.mix(local, remote)
    assert np.array_equal(mixed.argmax(1), out.mixed_logits.argmax(1).numpy())


def test_export_refuses_a_bundle_that_disagrees_with_torch(trained_tiny_bundle, tmp_path):
    tiny_bundle = trained_tiny_bundle
    model, config = load_checkpoint(tiny_bundle.folder / tiny_bundle.manifest.files["checkpoint"])
    device, remote = DeviceModule(model, config).eval(), RemoteModule(model).eval()
    images = synthetic_dataset(seed=4).test.images.astype(np.float32)
    # The ONNX files stay as exported; the torch side drifts, as a wrong export would.
    with torch.no_grad():
        for p in model.remote.parameters():
            p.add_(0.5)
    with pytest.raises(ExportVerificationError, match="max_abs_diff_remote_logits"):
        verify(tiny_bundle.folder, device, remote, None, model.alpha().item(), images, config)
