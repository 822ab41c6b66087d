"""Neurosurgeon-style layer splits and full offload, cut from an AgileNN bundle's reference network.

For every candidate cut (the raw input, then the output of each conv block, then the logits) this
measures what the device would run (per-layer table), what the cloud would run, the bytes of the
cut activation quantized to 8 bits and losslessly coded with the shared codec library (zlib-v1
and a fitted range-v1; the smaller is kept), and the test accuracy with that quantization. The
cut itself is chosen per device and link by `simulation.cuts`.

A cut can be exported as a regular bundle (device half -> uint8 indices, alpha 0), so full
offload and a layer split are served by the same device agent and cloud worker as AgileNN.
"""

from __future__ import annotations

import copy
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from agilenn.bundle import DEVICE_MODEL, REMOTE_MODEL, Bundle, InputSpec, Manifest, MixingSpec, QuantizerSpec, SplitSpec
from agilenn.codec import RangeCodec, ZlibCodec
from agilenn.datasets import Dataset
from partitioner.bundle_writer import BundleWriter
from partitioner.checkpoint import load_any_checkpoint
from partitioner.config import PartitionConfig
from partitioner.layers import layer_table
from partitioner.model import AgileNN, Normalise

LEVELS = 256  # cut activations travel as 8-bit indices, as an int8 device runtime computes them


@dataclass
class Reference:
    modules: list[nn.Module]  # Normalise, then every leaf module of extractor and head, in order
    cut_points: list[tuple[str, int]]  # (name, index into modules after which the cut lies)
    input_shape: tuple[int, int, int]
    num_classes: int
    config: PartitionConfig


def load_reference(checkpoint: str | Path, input_shape: tuple[int, int, int] | None = None,
                   num_classes: int | None = None) -> Reference:
    """The unsplit reference network (pre-trained extractor + frozen reference head) of a bundle's
    checkpoint file or of a training run's `checkpoint.pt`."""
    state = load_any_checkpoint(checkpoint)
    config = PartitionConfig.model_validate(state["config"])
    input_shape = tuple(state.get("input_shape") or input_shape)  # type: ignore[arg-type]
    num_classes = int(state.get("num_classes") or num_classes)
    model = AgileNN(config, input_shape, num_classes)
    model.load_state_dict(state["model"])
    extractor = copy.deepcopy(model.extractor)
    if state.get("reference_extractor") is not None:
        extractor.load_state_dict(state["reference_extractor"])
    modules: list[nn.Module] = [Normalise(config.mean, config.std)]
    cuts = [("input", 0)]
    for part_name, part in (("extractor", extractor), ("head", model.evaluator)):
        block = 0
        for child in part.children():
            modules.append(child.eval())
            if isinstance(child, (nn.ReLU, nn.ReLU6)):
                block += 1
                cuts.append((f"{part_name}.{block}", len(modules)))
    cuts.append(("logits", len(modules)))
    return Reference(modules, cuts, input_shape, num_classes, config)


class Prefix(nn.Module):
    """Raw image -> 8-bit indices of the activation at the cut (the device half of a split)."""

    def __init__(self, modules: list[nn.Module], scale: float) -> None:
        super().__init__()
        self.body = nn.Sequential(*modules).eval()
        self.scale = scale

    def activation(self, image: torch.Tensor) -> torch.Tensor:
        return self.body(image)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.clamp(torch.round(self.body(image) / self.scale), 0, LEVELS - 1).to(torch.uint8)


class Suffix(nn.Module):
    """8-bit indices -> logits (the cloud half)."""

    def __init__(self, modules: list[nn.Module], scale: float) -> None:
        super().__init__()
        self.body = nn.Sequential(*modules).eval()
        self.scale = scale

    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        return self.body(indices.float() * self.scale)


class _DeviceHalf(nn.Module):
    """The bundle's device model: (zero local logits, indices)."""

    def __init__(self, prefix: Prefix, num_classes: int) -> None:
        super().__init__()
        self.prefix = prefix
        self.num_classes = num_classes

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        indices = self.prefix(image)
        local = image.flatten(1)[:, :1].mul(0.0).expand(-1, self.num_classes)
        return local, indices


def _halves(ref: Reference, cut: int, scale: float) -> tuple[Prefix, Suffix]:
    return Prefix(ref.modules[:cut], scale), Suffix(ref.modules[cut:], scale)


def _scale(ref: Reference, cut: int, train_images: np.ndarray) -> float:
    """Step of the uniform 8-bit quantizer: raw pixels keep their levels; ReLU6 outputs map [0, 6];
    ReLU outputs map [0, the 99.99th percentile seen on training images]."""
    if cut == 0:
        return 255.0 / (LEVELS - 1)  # index = pixel value (Normalise sits in the suffix)
    last = ref.modules[cut - 1]
    if isinstance(last, nn.ReLU6):
        return 6.0 / (LEVELS - 1)
    with torch.no_grad():
        act = nn.Sequential(*ref.modules[:cut])(torch.from_numpy(train_images))
    return float(max(np.percentile(act.numpy(), 99.99), 1e-6)) / (LEVELS - 1)


def measure_cuts(ref: Reference, dataset: Dataset, train_samples: int = 2000, test_limit: int | None = None,
                 ) -> list[dict[str, Any]]:
    """One record per cut: device/cloud layer tables, 8-bit coded bytes, accuracy."""
    train_images = dataset.train.images[:train_samples].astype(np.float32)
    test = dataset.test.head(test_limit)
    test_images = test.images.astype(np.float32)
    example = torch.zeros(1, *ref.input_shape)
    records = []
    for name, cut in ref.cut_points:
        scale = _scale(ref, cut, train_images)
        prefix, suffix = _halves(ref, cut, scale)
        record: dict[str, Any] = {"name": name, "index": cut,
                                  "device_layers": layer_table(prefix.body, example) if cut else []}
        with torch.no_grad():
            shape = tuple(prefix.body(example).shape[1:])
            record["cloud_layers"] = layer_table(suffix.body, torch.zeros(1, *shape)) if cut < len(ref.modules) else []
            if cut == len(ref.modules):  # all local: logits never leave the device
                logits = prefix.body(torch.from_numpy(test_images)).numpy()
                record.update(activation_shape=list(shape), payload_bytes_median=0.0, codec=None,
                              accuracy=float((logits.argmax(1) == test.labels).mean()), encode_symbols=0)
                records.append(record)
                continue
            train_idx = prefix(torch.from_numpy(train_images)).numpy()
            test_idx = prefix(torch.from_numpy(test_images)).numpy()
            logits = suffix(torch.from_numpy(test_idx)).numpy()
        range_codec = RangeCodec.fit(train_idx, LEVELS)
        zlib_sizes = np.array([len(zlib.compress(s.tobytes(), 9)) for s in test_idx])
        range_sizes = np.array([len(range_codec.encode(s)) for s in test_idx])
        best = "zlib-v1" if np.median(zlib_sizes) <= np.median(range_sizes) else "range-v1"
        sizes = zlib_sizes if best == "zlib-v1" else range_sizes
        record.update(activation_shape=list(shape), scale=scale, codec=best,
                      payload_bytes_median=float(np.median(sizes)), payload_bytes_mean=float(sizes.mean()),
                      payload_bytes_zlib_median=float(np.median(zlib_sizes)),
                      payload_bytes_range_median=float(np.median(range_sizes)),
                      raw_bytes=int(np.prod(shape)), encode_symbols=int(np.prod(shape)),
                      accuracy=float((logits.argmax(1) == test.labels).mean()))
        records.append(record)
    return records


def export_cut(ref: Reference, cut_name: str, dataset: Dataset, out: str | Path, codec: str,
               train_samples: int = 5000) -> Bundle:
    """Write the split at `cut_name` as a bundle (k = 0, alpha 0); `input` is full offload."""
    cut = dict(ref.cut_points)[cut_name]
    if cut == len(ref.modules):
        raise ValueError("the 'logits' cut offloads nothing; it is the local-only reference model")
    out = Path(out)
    train_images = dataset.train.images[:train_samples].astype(np.float32)
    scale = _scale(ref, cut, train_images)
    prefix, suffix = _halves(ref, cut, scale)
    device = _DeviceHalf(prefix, ref.num_classes).eval()
    example = torch.zeros(2, *ref.input_shape)
    with torch.no_grad():
        shape = tuple(int(d) for d in prefix.body(example).shape[1:])
        train_idx = prefix(torch.from_numpy(train_images)).numpy()
    if len(shape) != 3:
        raise ValueError(f"cut {cut_name} gives a {len(shape)}-d activation; bundles carry (C, H, W) features")
    codec_entry = (RangeCodec.fit(train_idx, LEVELS).to_manifest() if codec == "range-v1"
                   else ZlibCodec(shape, LEVELS).to_manifest())
    with BundleWriter(out) as writer:
        writer.export_onnx(DEVICE_MODEL, device, example, "image", ["local_logits", "remote_indices"])
        writer.export_onnx(REMOTE_MODEL, suffix.eval(), torch.zeros(2, *shape, dtype=torch.uint8),
                           "remote_indices", ["remote_logits"])
        manifest = Manifest(
            name=f"split-{cut_name}",
            input=InputSpec(shape=ref.input_shape, dtype="float32", mean=ref.config.mean, std=ref.config.std),
            labels=list(dataset.labels),
            split=SplitSpec(feature_shape=shape, local_channels=0, remote_channels=shape[0]),
            quantizer=QuantizerSpec(levels=LEVELS, centroids=[i * scale for i in range(LEVELS)]),
            codec=codec_entry, mixing=MixingSpec(alpha_local=0.0),
            files={"device": DEVICE_MODEL, "remote": REMOTE_MODEL},
            device_macs=sum(row["macs"] for row in layer_table(prefix.body, example)) if cut else 0,
            config={"baseline": "full-offload" if cut == 0 else "layer-split", "cut": cut_name,
                    "reference_config": ref.config.name},
        )
        writer.write_manifest(manifest, dataset.test)
    return Bundle(out)
