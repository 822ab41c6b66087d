"""Export a trained split as a verified bundle (see agilenn.bundle).

Export runs ONNX Runtime against PyTorch on real test samples and refuses to write a
bundle whose logits differ beyond the config's tolerance, whose remote indices differ on
more than a tiny share of elements (float ties at a centroid midpoint), or whose mixed
prediction differs on any sample. The bundle is written to a temporary folder and moved
into place only once it has passed.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from agilenn.bundle import (
    DEVICE_INT8_MODEL,
    DEVICE_MODEL,
    REFERENCE_MODEL,
    REMOTE_MODEL,
    Bundle,
    InputSpec,
    Manifest,
    MixingSpec,
    QuantizerSpec,
    SplitSpec,
    mix_logits,
)
from agilenn.datasets import Dataset
from agilenn.onnx_sessions import create_session
from agilenn.predict import run_batched
from partitioner.analysis import measure_skewness
from partitioner.bundle_writer import BundleWriter, fit_codec, front_spec, run_torch
from partitioner.checkpoint import save_bundle_checkpoint
from partitioner.config import PartitionConfig
from partitioner.layers import count_macs
from partitioner.model import AgileNN, Normalise
from partitioner.quantizer import nearest_centroid

log = logging.getLogger(__name__)


class ExportVerificationError(RuntimeError):
    """ONNX Runtime and PyTorch disagree; no bundle was written."""


class DeviceModule(nn.Module):
    """Raw image -> (local logits, remote indices as uint8): everything the device computes;
    with_features adds the extractor's features as a third output (for the int8 front)."""

    def __init__(self, model: AgileNN, config: PartitionConfig, with_features: bool = False) -> None:
        super().__init__()
        self.normalise = Normalise(config.mean, config.std)
        self.extractor = model.extractor
        self.local = model.local
        self.k = model.local_channels
        self.with_features = with_features
        self.register_buffer("centroids", model.quantizer.centroids().detach().clone())

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        features = self.extractor(self.normalise(image))
        local_logits = self.local(features[:, : self.k])
        indices = nearest_centroid(features[:, self.k:], self.centroids).to(torch.uint8)
        return (local_logits, indices, features) if self.with_features else (local_logits, indices)


class RemoteModule(nn.Module):
    """Remote indices -> remote logits: what the cloud computes (for any model with `remote` and
    `quantizer`, the DeepCOD-like baseline included)."""

    def __init__(self, model: AgileNN) -> None:
        super().__init__()
        self.remote = model.remote
        self.register_buffer("centroids", model.quantizer.centroids().detach().clone())

    def forward(self, remote_indices: torch.Tensor) -> torch.Tensor:
        return self.remote(self.centroids[remote_indices.long()])


class ReferenceModule(nn.Module):
    """The unsplit reference network (pre-trained extractor + reference head), for evaluation."""

    def __init__(self, extractor: nn.Module, head: nn.Module, config: PartitionConfig) -> None:
        super().__init__()
        self.normalise = Normalise(config.mean, config.std)
        self.extractor = extractor
        self.head = head

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.extractor(self.normalise(image)))


def verify(folder: Path, device: DeviceModule, remote: RemoteModule, reference: ReferenceModule | None,
           alpha: float, images: np.ndarray, config: PartitionConfig) -> dict[str, float]:
    """Compare ONNX Runtime with PyTorch on `images`; raise ExportVerificationError on disagreement."""
    def session(name: str):
        return create_session(folder / name)

    tol = config.export
    t_local, t_indices = run_torch(device, images)
    o_local, o_indices = run_batched(session(DEVICE_MODEL), images)
    local_diff = float(np.abs(t_local - o_local).max())
    index_mismatch = float((t_indices != o_indices).mean())
    # The remote model is compared on the same indices, so its tolerance is not blurred by ties.
    (t_remote,) = run_torch(remote, t_indices)
    (o_remote_same,) = run_batched(session(REMOTE_MODEL), t_indices)
    (o_remote,) = run_batched(session(REMOTE_MODEL), o_indices)
    remote_diff = float(np.abs(t_remote - o_remote_same).max())
    t_pred = mix_logits(t_local, t_remote, alpha).argmax(1)
    o_pred = mix_logits(o_local, o_remote, alpha).argmax(1)
    prediction_mismatches = int((t_pred != o_pred).sum())
    report = {"verify_samples": len(images), "max_abs_diff_local_logits": local_diff,
              "max_abs_diff_remote_logits": remote_diff, "index_mismatch_share": index_mismatch,
              "prediction_mismatches": prediction_mismatches}
    if reference is not None:
        (t_ref,) = run_torch(reference, images)
        (o_ref,) = run_batched(session(REFERENCE_MODEL), images)
        report["max_abs_diff_reference_logits"] = float(np.abs(t_ref - o_ref).max())
        report["reference_prediction_mismatches"] = int((t_ref.argmax(1) != o_ref.argmax(1)).sum())
    problems = []
    for key in ("max_abs_diff_local_logits", "max_abs_diff_remote_logits", "max_abs_diff_reference_logits"):
        if key in report and report[key] > tol.logits_atol:
            problems.append(f"{key}={report[key]:.3g} exceeds logits_atol={tol.logits_atol:g}")
    if index_mismatch > tol.index_mismatch_share:
        problems.append(f"remote indices differ on {index_mismatch:.3%} of elements (allowed {tol.index_mismatch_share:.3%})")
    if prediction_mismatches or report.get("reference_prediction_mismatches", 0):
        problems.append(f"predictions differ on {prediction_mismatches} of {len(images)} samples "
                        f"(reference: {report.get('reference_prediction_mismatches', 0)})")
    if problems:
        raise ExportVerificationError("ONNX Runtime disagrees with PyTorch: " + "; ".join(problems))
    return report


def export_bundle(model: AgileNN, reference_extractor: nn.Module, config: PartitionConfig, dataset: Dataset,
                  out: str | Path, overwrite: bool = False) -> Bundle:
    """Write, verify and measure a bundle at `out`; returns it loaded."""
    out = Path(out)
    model.eval()
    device, remote = DeviceModule(model, config).eval(), RemoteModule(model).eval()
    reference = ReferenceModule(reference_extractor, model.evaluator, config).eval()
    input_shape = dataset.input_shape
    channels, height, width = model.feature_shape
    k = model.local_channels
    example = torch.zeros(2, *input_shape)

    with BundleWriter(out, overwrite) as writer:
        writer.export_onnx(DEVICE_MODEL, device, example, "image", ["local_logits", "remote_indices"])
        writer.export_onnx(REMOTE_MODEL, remote, torch.zeros(2, channels - k, height, width, dtype=torch.uint8),
                           "remote_indices", ["remote_logits"])
        writer.export_onnx(REFERENCE_MODEL, reference, example, "image", ["reference_logits"])

        test = dataset.test.head(config.test_limit)
        verification = verify(writer.folder, device, remote, reference, model.alpha().item(),
                              test.images[: config.export.verify_samples].astype(np.float32), config)
        log.info("export verified: %s", verification)

        train_images = dataset.train.head(config.train_limit).images.astype(np.float32)
        (_, train_indices) = run_torch(device, train_images)
        codec_entry = fit_codec(config.export.codec, train_indices, model.quantizer.levels)

        files = {"device": DEVICE_MODEL, "remote": REMOTE_MODEL, "reference": REFERENCE_MODEL}
        int8_verification = None
        if config.export.int8:
            from partitioner.int8 import quantize_device_front, verify_int8

            picked = np.random.default_rng(config.seed).permutation(len(train_images))
            quantize_device_front(DeviceModule(model, config, with_features=True).eval(), input_shape,
                                  train_images[picked[: config.export.int8_calibration_samples]],
                                  writer.folder / DEVICE_INT8_MODEL)
            int8_verification = verify_int8(writer.folder, DEVICE_MODEL, DEVICE_INT8_MODEL, REMOTE_MODEL,
                                                       model.alpha().item(), test, config.export.int8_max_accuracy_drop,
                                                       config.export.int8_confidence)
            log.info("int8 front verified: %s", int8_verification)
            files["device_int8"] = DEVICE_INT8_MODEL
        fronts = {precision: front_spec(writer.folder / name) for precision, name in
                  (("float32", DEVICE_MODEL), ("int8", files.get("device_int8"))) if name is not None}

        checkpoint = save_bundle_checkpoint(writer.folder, model, reference_extractor, config, input_shape,
                                            dataset.num_classes)
        manifest = Manifest(
            name=config.name,
            input=InputSpec(shape=input_shape, dtype="float32", mean=config.mean, std=config.std),
            labels=list(dataset.labels),
            split=SplitSpec(feature_shape=model.feature_shape, local_channels=k, remote_channels=channels - k),
            quantizer=QuantizerSpec(levels=model.quantizer.levels,
                                    centroids=[float(c) for c in model.quantizer.centroids().detach()]),
            codec=codec_entry,
            mixing=MixingSpec(alpha_local=model.alpha().item()),
            files={**files, "checkpoint": checkpoint},
            device_macs=count_macs(device, example),
            device_fronts=fronts,
            config=config.model_dump(mode="json"),
        )
        writer.write_manifest(manifest, test, verification, int8_verification,
                              measure=lambda folder: measure_skewness(folder / checkpoint, test))
    return Bundle(out)
