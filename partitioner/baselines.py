"""Baselines AgileNN is compared against, trained and exported by one driver.

    python -m partitioner.baselines train --config configs/baselines/local-small.yaml --out bundles/baselines/local-small

Two kinds are trained here (one YAML config each, differences are data):

- ``local-only``: the whole network on the device (a stack of registered networks); exported
  as ``model.onnx`` (raw image -> logits) plus ``baseline.json``;
- ``deepcod``: all features offloaded, DeepCOD-like: the same kind of extractor, learned
  quantizer and range coder as AgileNN, no local channels. Exported as a regular bundle whose
  ``device.onnx`` returns zero local logits and whose mixing weight is 0, so the device agent
  and the cloud worker serve it unchanged.

Full offload and the Neurosurgeon-style layer split need no training: they cut the reference
network of an AgileNN bundle (see `partitioner.splits`).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from agilenn.bundle import DEVICE_MODEL, REMOTE_MODEL, Bundle, InputSpec, Manifest, MixingSpec, QuantizerSpec, SplitSpec
from agilenn.config_files import load_yaml_model
from agilenn.datasets import Dataset, load_dataset
from agilenn.predict import run_batched
from partitioner.bundle_writer import BundleWriter, fit_codec, run_torch
from partitioner.config import Augment, NetworkSpec, Optimiser, Quantizer
from partitioner.data import augment, batches, to_tensors
from partitioner.export import RemoteModule
from partitioner.layers import layer_table
from partitioner.model import Normalise, feature_shape
from partitioner.quantizer import SoftToHardQuantizer, nearest_centroid
from partitioner.registry import build_network
from partitioner.train import sgd_cosine, supervised_epoch

log = logging.getLogger(__name__)

LOCAL_MODEL = "model.onnx"
BASELINE_FILE = "baseline.json"
CHECKPOINT = "checkpoint.pt"  # in the run folder, after every epoch: a stopped run resumes


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BaselineConfig(_Strict):
    name: str
    kind: Literal["local-only", "deepcod"]
    seed: int = 0
    dataset: str
    mean: float
    std: float = Field(gt=0)
    network: list[NetworkSpec] = Field(
        description="local-only: networks applied in turn, the last one a head; deepcod: [extractor, remote head]")
    quantizer: Quantizer | None = Field(None, description="deepcod only")
    codec: Literal["range-v1", "bitpack-v1", "zlib-v1"] = "range-v1"
    training: Optimiser
    augment: Augment = Augment()
    train_limit: int | None = Field(None, ge=1)
    test_limit: int | None = Field(None, ge=1)
    threads: int = Field(1, ge=1)
    logits_atol: float = Field(1e-3, gt=0)

    @model_validator(mode="after")
    def _check_kind(self) -> BaselineConfig:
        if self.kind == "deepcod" and (self.quantizer is None or len(self.network) != 2):
            raise ValueError("a deepcod baseline needs a quantizer and network: [extractor, remote head]")
        if self.kind == "local-only" and self.quantizer is not None:
            raise ValueError("a local-only baseline has no quantizer")
        return self


def load_baseline_config(path: str | Path) -> BaselineConfig:
    return load_yaml_model(path, BaselineConfig, "baseline config")


def _stack(specs: list[NetworkSpec], input_shape: tuple[int, int, int], num_classes: int) -> nn.Sequential:
    """Registered networks in turn; the last gets num_classes and the spatial size of its input."""
    parts: list[nn.Module] = []
    shape = input_shape
    for i, spec in enumerate(specs):
        if i == len(specs) - 1:
            parts.append(build_network(spec.name, in_channels=shape[0], num_classes=num_classes,
                                       spatial=shape[1] * shape[2], **spec.args))
        else:
            net = build_network(spec.name, in_channels=shape[0], **spec.args)
            shape = feature_shape(net, shape)
            parts.append(net)
    return nn.Sequential(*parts)


class DeepCodNet(nn.Module):
    """Extractor -> learned quantizer on every channel -> remote head."""

    def __init__(self, config: BaselineConfig, input_shape: tuple[int, int, int], num_classes: int) -> None:
        super().__init__()
        ext, head = config.network
        self.extractor = build_network(ext.name, in_channels=input_shape[0], **ext.args)
        self.feature_shape = feature_shape(self.extractor, input_shape)
        channels, height, width = self.feature_shape
        self.remote = build_network(head.name, in_channels=channels, num_classes=num_classes,
                                    spatial=height * width, **head.args)
        q = config.quantizer
        assert q is not None
        self.quantizer = SoftToHardQuantizer(q.levels, q.softness, q.init_centroids)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        quantized, _ = self.quantizer(self.extractor(x))
        return self.remote(quantized)


class DeepCodDevice(nn.Module):
    """Raw image -> (zero local logits, indices of every channel): the bundle's device half."""

    def __init__(self, net: DeepCodNet, config: BaselineConfig, num_classes: int) -> None:
        super().__init__()
        self.normalise = Normalise(config.mean, config.std)
        self.extractor = net.extractor
        self.num_classes = num_classes
        self.register_buffer("centroids", net.quantizer.centroids().detach().clone())

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.extractor(self.normalise(image))
        # zeros shaped (N, classes) that stay dynamic in the batch dimension
        local = features.flatten(1)[:, :1].mul(0.0).expand(-1, self.num_classes)
        return local, nearest_centroid(features, self.centroids).to(torch.uint8)


class LocalModule(nn.Module):
    def __init__(self, net: nn.Module, config: BaselineConfig) -> None:
        super().__init__()
        self.normalise = Normalise(config.mean, config.std)
        self.net = net

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalise(image))


def build_model(config: BaselineConfig, dataset: Dataset) -> nn.Module:
    if config.kind == "deepcod":
        return DeepCodNet(config, dataset.input_shape, dataset.num_classes)
    return _stack(config.network, dataset.input_shape, dataset.num_classes)


def train(config: BaselineConfig, run_dir: Path, dataset: Dataset | None = None) -> tuple[nn.Module, Dataset]:
    """Plain cross-entropy training (SGD, cosine), one JSON line per epoch in run_dir/metrics.jsonl."""
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    dataset = dataset if dataset is not None else load_dataset(config.dataset)
    train_x, train_y = to_tensors(dataset.train, config.mean, config.std, config.train_limit)
    test_x, test_y = to_tensors(dataset.test, config.mean, config.std, config.test_limit)
    model = build_model(config, dataset)
    spec = config.training
    opt, sched = sgd_cosine(model.parameters(), spec, math.ceil(len(train_y) / spec.batch_size))
    generator = torch.Generator().manual_seed(config.seed)
    background = -config.mean / config.std
    run_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = run_dir / CHECKPOINT
    first_epoch = 1
    if checkpoint.exists():
        first_epoch = _resume(checkpoint, config, model, opt, sched, generator) + 1
        log.info("%s: resuming after epoch %d from %s", config.name, first_epoch - 1, checkpoint)
    for epoch in range(first_epoch, spec.epochs + 1):
        started = time.time()
        model.train()
        augmented = ((augment(x, config.augment.max_shift_px, config.augment.horizontal_flip, generator, background), y)
                     for x, y in batches(train_x, train_y, spec.batch_size, generator))
        _, correct, seen = supervised_epoch(model, augmented, opt, sched)
        model.eval()
        with torch.no_grad():
            test_correct = sum(int((model(x).argmax(1) == y).sum()) for x, y in batches(test_x, test_y, 1000))
        record = {"epoch": epoch, "train_accuracy": correct / seen, "test_accuracy": test_correct / len(test_y),
                  "seconds": round(time.time() - started, 1)}
        with open(run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        _save(checkpoint, config, model, opt, sched, generator, epoch)
        log.info("%s %s", config.name, record)
    return model.eval(), dataset


def _save(path: Path, config: BaselineConfig, model: nn.Module, opt, sched, generator: torch.Generator,
          epoch: int) -> None:
    state = {"config": config.model_dump(mode="json"), "epoch": epoch, "model": model.state_dict(),
             "optimiser": opt.state_dict(), "scheduler": sched.state_dict(), "generator": generator.get_state()}
    partial = path.with_suffix(".tmp")
    torch.save(state, partial)
    partial.replace(path)  # a stop mid-write leaves the previous epoch's checkpoint whole


def _resume(path: Path, config: BaselineConfig, model: nn.Module, opt, sched, generator: torch.Generator) -> int:
    """Load a run's last epoch; the epoch it finished. A checkpoint of another config is refused."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    saved = {k: v for k, v in state["config"].items() if k != "threads"}
    if saved != {k: v for k, v in config.model_dump(mode="json").items() if k != "threads"}:
        raise ValueError(f"{path} was written by another config of {config.name!r}; "
                         "delete it or pass another --run-dir")
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimiser"])
    sched.load_state_dict(state["scheduler"])
    generator.set_state(state["generator"])
    return int(state["epoch"])


def _check(torch_out: list[np.ndarray], onnx_out: list[np.ndarray], atol: float) -> dict[str, float]:
    logits_diff = float(np.abs(torch_out[0] - onnx_out[0]).max())
    report = {"max_abs_diff_logits": logits_diff}
    if len(torch_out) > 1:
        report["index_mismatch_share"] = float((torch_out[1] != onnx_out[1]).mean())
    if logits_diff > atol or report.get("index_mismatch_share", 0.0) > 1e-3:
        raise RuntimeError(f"ONNX Runtime disagrees with PyTorch: {report}")
    return report


def export_local_only(model: nn.Module, config: BaselineConfig, dataset: Dataset, out: Path) -> dict[str, Any]:
    """model.onnx (raw image -> logits) + baseline.json with accuracy and the device layer table."""
    module = LocalModule(model, config).eval()
    example = torch.zeros(2, *dataset.input_shape)
    with BundleWriter(out) as writer:
        writer.export_onnx(LOCAL_MODEL, module, example, "image", ["logits"])
        test = dataset.test.head(config.test_limit)
        images = test.images.astype(np.float32)
        (logits,) = run_batched(writer.session(LOCAL_MODEL), images)
        verification = _check(run_torch(module, images[:1000]), [logits[:1000]], config.logits_atol)
        info = {"name": config.name, "kind": config.kind, "files": {"model": LOCAL_MODEL},
                "input_shape": list(dataset.input_shape), "labels": list(dataset.labels),
                "accuracy": float((logits.argmax(1) == test.labels).mean()), "samples": len(test),
                "device_layers": layer_table(module, example), "verification": verification,
                "config": config.model_dump(mode="json")}
        info["device_macs"] = sum(row["macs"] for row in info["device_layers"])
        (writer.folder / BASELINE_FILE).write_text(json.dumps(info, indent=1) + "\n")
    return info


def export_deepcod(net: DeepCodNet, config: BaselineConfig, dataset: Dataset, out: Path) -> Bundle:
    """A regular bundle with no local channels (alpha 0), measured as every bundle is."""
    device = DeepCodDevice(net, config, dataset.num_classes).eval()
    remote = RemoteModule(net).eval()
    channels, height, width = net.feature_shape
    example = torch.zeros(2, *dataset.input_shape)
    with BundleWriter(out) as writer:
        writer.export_onnx(DEVICE_MODEL, device, example, "image", ["local_logits", "remote_indices"])
        writer.export_onnx(REMOTE_MODEL, remote, torch.zeros(2, channels, height, width, dtype=torch.uint8),
                           "remote_indices", ["remote_logits"])
        test = dataset.test.head(config.test_limit)
        images = test.images[:1000].astype(np.float32)
        t_local, t_idx = run_torch(device, images)
        o_local, o_idx = run_batched(writer.session(DEVICE_MODEL), images)
        verification = _check([t_local, t_idx], [o_local, o_idx], config.logits_atol)
        verification.update({"max_abs_diff_remote_logits": _check(
            run_torch(remote, t_idx), run_batched(writer.session(REMOTE_MODEL), t_idx), config.logits_atol
        )["max_abs_diff_logits"]})
        train_images = dataset.train.head(config.train_limit).images.astype(np.float32)
        (_, train_idx) = run_torch(device, train_images)
        levels = net.quantizer.levels
        manifest = Manifest(
            name=config.name,
            input=InputSpec(shape=dataset.input_shape, dtype="float32", mean=config.mean, std=config.std),
            labels=list(dataset.labels),
            split=SplitSpec(feature_shape=net.feature_shape, local_channels=0, remote_channels=channels),
            quantizer=QuantizerSpec(levels=levels, centroids=[float(c) for c in net.quantizer.centroids().detach()]),
            codec=fit_codec(config.codec, train_idx, levels),
            mixing=MixingSpec(alpha_local=0.0),
            files={"device": DEVICE_MODEL, "remote": REMOTE_MODEL},
            device_macs=sum(row["macs"] for row in layer_table(device, example)),
            config={**config.model_dump(mode="json"), "baseline": "deepcod"},
        )
        writer.write_manifest(manifest, test, verification)
    return Bundle(out)


def train_and_export(config: BaselineConfig, out: Path, run_dir: Path, dataset: Dataset | None = None) -> dict[str, Any]:
    out.parent.mkdir(parents=True, exist_ok=True)
    model, dataset = train(config, run_dir, dataset)
    if config.kind == "deepcod":
        assert isinstance(model, DeepCodNet)
        bundle = export_deepcod(model, config, dataset, out)
        metrics = bundle.recorded_metrics
        return {"bundle": str(out), "accuracy": metrics.accuracy, "payload_bytes_median": metrics.payload_bytes_median,
                "device_macs": bundle.manifest.device_macs}
    info = export_local_only(model, config, dataset, out)
    return {"bundle": str(out), "accuracy": info["accuracy"], "device_macs": info["device_macs"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m partitioner.baselines", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a baseline config and export it")
    t.add_argument("--config", required=True)
    t.add_argument("--out", required=True)
    t.add_argument("--run-dir", default=None, help="default: runs/baselines/<name>")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)  # one line per epoch; the exporter's INFO chatter stays off
    config = load_baseline_config(args.config)
    run_dir = Path(args.run_dir or Path("runs") / "baselines" / config.name)
    print(json.dumps(train_and_export(config, Path(args.out), run_dir)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
