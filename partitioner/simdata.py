"""Measure every scheme once for the simulator: `agilenn simulate` then needs no torch.

    python -m partitioner.simdata --agilenn bundles/fashion-mnist --baselines bundles/baselines \
        --out bundles/baselines/measured.json [--export-splits [--export-cut extractor.3]] \
        [--variants bundles/variants]
    python -m partitioner.simdata --agilenn bundles/fashion-mnist --out bundles/baselines/measured.json \
        --refresh-agilenn

`--refresh-agilenn` measures the AgileNN bundle again and replaces its scheme and curve point in an
existing file, keeping the baselines, variants and cuts measured before (a main bundle continued from
the same reference network needs neither the baselines nor the variants at hand; one with another
reference network is refused).

Per scheme: test accuracy with the exported ONNX models, real encoded bytes per inference
(median over the test set), the device part's per-layer table (MACs, inner-product length,
int8 weights and activations) and the cloud part's. Per candidate cut of the reference
network: the same (see `partitioner.splits`). The protocol's framing is measured from the
runtime's own protobuf messages. The file's form is `agilenn.measured.MeasuredSchemes`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agilenn.bundle import Bundle
from agilenn.bundle_metrics import BundleMetrics
from agilenn.datasets import Dataset, load_dataset
from agilenn.measured import (
    SCHEMA,
    CutRecord,
    MeasuredSchemes,
    ProtocolOverheads,
    Scheme,
    SchemeKind,
    TradeoffPoint,
    load_measured,
    write_measured,
)
from agilenn.onnx_sessions import create_session
from agilenn.predict import confidence_gate_curve, evaluate_bundle, predict
from partitioner.analysis import load_checkpoint
from partitioner.baselines import BASELINE_FILE
from partitioner.export import DeviceModule, RemoteModule
from partitioner.layers import layer_table
from partitioner.splits import Reference, export_cut, load_reference, measure_cuts

log = logging.getLogger(__name__)

GRPC_FRAMING_BYTES = 5 + 9  # gRPC length prefix + HTTP/2 DATA frame header


class UnknownCutError(ValueError):
    """--export-cut names no cut a layer split can be exported at."""


def protocol_overheads(bundle: Bundle) -> ProtocolOverheads:
    """Bytes around the payload in the runtime's InferRequest, and a whole InferResponse."""
    from agilenn.v1 import inference_pb2

    request = inference_pb2.InferRequest(  # the device agent names the bundle once per stream, in metadata
        request_id=2 ** 32,
        features=inference_pb2.Tensor(data=b"", shape=list(bundle.remote_shape), codec=bundle.codec.codec_id))
    classes = len(bundle.manifest.labels)
    response = inference_pb2.InferResponse(
        request_id=2 ** 32, logits=inference_pb2.Tensor(data=bytes(4 * classes), shape=[classes], codec="raw-f32le"),
        status=inference_pb2.Status(code=0), server_ms=0.5, batch_size=4, worker_id="worker-0")
    return ProtocolOverheads(request_overhead_bytes=request.ByteSize() + 2 + GRPC_FRAMING_BYTES,  # +2: its length
                             response_bytes=response.ByteSize() + GRPC_FRAMING_BYTES,
                             raw_response_bytes=4 * classes)


def _bundle_scheme(name: str, kind: SchemeKind, bundle: Bundle, metrics: BundleMetrics, device: torch.nn.Module,
                   remote: torch.nn.Module, **only_this_kind: Any) -> Scheme:
    shape = bundle.manifest.input.shape
    example = torch.zeros(1, *shape)
    return Scheme(
        name=name, kind=kind, bundle=str(bundle.folder), bundle_hash=bundle.bundle_hash,
        accuracy=metrics.accuracy, payload_bytes=metrics.payload_bytes_median,
        payload_bytes_p99=metrics.payload_bytes_p99, codec=bundle.codec.codec_id,
        levels=bundle.manifest.quantizer.levels, offloaded_channels=bundle.manifest.split.remote_channels,
        fixed_centroids=not bundle.manifest.config.get("quantizer", {}).get("learn_centroids", True),
        encode_symbols=int(np.prod(bundle.remote_shape)), input_bytes=int(np.prod(shape)),
        device_layers=layer_table(device, example),
        cloud_layers=layer_table(remote, torch.zeros(1, *bundle.remote_shape, dtype=torch.uint8)),
        alternatives={"bitpack-v1": metrics.payload_bytes_bitpack, "zlib-v1": metrics.payload_bytes_zlib_median},
        **only_this_kind)


def measure_agilenn(folder: Path, split, name: str = "agilenn") -> Scheme:
    bundle = Bundle(folder)
    model, config = load_checkpoint(folder / bundle.manifest.files["checkpoint"])
    metrics = evaluate_bundle(bundle, split)
    outputs = predict(bundle, split.images)
    int8 = bundle.manifest.device_fronts.get("int8")
    return _bundle_scheme(name, "agilenn", bundle, metrics, DeviceModule(model, config).eval(),
                          RemoteModule(model).eval(), accuracy_local_only=metrics.accuracy_local_only,
                          alpha_local=metrics.alpha_local, accuracy_reference=metrics.accuracy_reference,
                          device_weight_bytes=None if int8 is None else int8.weight_bytes,
                          accuracy_int8=metrics.accuracy_int8,
                          confidence_gate=confidence_gate_curve(outputs.local_logits, outputs.mixed_logits,
                                                                split.labels))


def measure_deepcod(folder: Path, split) -> Scheme:
    from partitioner.baselines import BaselineConfig, DeepCodDevice, DeepCodNet
    from partitioner.export import RemoteModule

    bundle = Bundle(folder)
    metrics = evaluate_bundle(bundle, split)
    # the layer table comes from the ONNX-free torch twin of the exported shapes
    config = BaselineConfig.model_validate({k: v for k, v in bundle.manifest.config.items() if k != "baseline"})
    net = DeepCodNet(config, tuple(bundle.manifest.input.shape), len(bundle.manifest.labels))
    return _bundle_scheme(bundle.manifest.name, "deepcod", bundle, metrics,
                          DeepCodDevice(net, config, len(bundle.manifest.labels)).eval(), RemoteModule(net).eval())


def measure_local(folder: Path, split) -> Scheme:
    info = json.loads((folder / BASELINE_FILE).read_text())
    session = create_session(folder / info["files"]["model"])
    images = split.images.astype(np.float32)
    logits = np.concatenate([session.run(None, {"image": images[s:s + 1000]})[0] for s in range(0, len(images), 1000)])
    return Scheme(name=info["name"], kind="local-only", bundle=str(folder),
                  accuracy=float((logits.argmax(1) == split.labels).mean()), payload_bytes=0.0,
                  encode_symbols=0, input_bytes=int(np.prod(info["input_shape"])),
                  device_layers=info["device_layers"], cloud_layers=[])


def _from_cut(name: str, kind: SchemeKind, cut: CutRecord, input_bytes: int) -> Scheme:
    return Scheme(name=name, kind=kind, cut=cut.name, accuracy=cut.accuracy, payload_bytes=cut.payload_bytes_median,
                  codec=cut.codec, input_bytes=input_bytes, encode_symbols=cut.encode_symbols,
                  device_layers=cut.device_layers, cloud_layers=cut.cloud_layers)


def split_cut_names(ref: Reference) -> list[str]:
    """The cuts a layer split can be exported at: neither the raw input (full offload) nor the logits."""
    return [name for name, _ in ref.cut_points if name not in ("input", "logits")]


def build(agilenn: Path, baselines: Path, dataset_name: str | None = None, test_limit: int | None = None,
          export_splits: bool = False, dataset: Dataset | None = None, variants: Path | None = None,
          export_cut_name: str | None = None, image_codecs: bool = False) -> MeasuredSchemes:
    """Measure every scheme. With `export_splits`, also write full offload as a bundle, and the layer
    split at `export_cut_name` when one is given. With `image_codecs`, full offload also with the
    image coded as PNG and as JPEG at a few qualities (partitioner.image_offload)."""
    torch.set_num_threads(1)
    bundle = Bundle(agilenn)
    ref = load_reference(agilenn / bundle.manifest.files["checkpoint"])
    if export_cut_name is not None and export_cut_name not in split_cut_names(ref):
        raise UnknownCutError(f"--export-cut {export_cut_name!r} is not an interior cut of the reference network; "
                              f"choose one of {', '.join(split_cut_names(ref))}")
    if dataset is None:
        dataset = load_dataset(dataset_name or bundle.manifest.config["dataset"])
    split = dataset.test.head(test_limit)
    input_bytes = int(np.prod(bundle.manifest.input.shape))
    schemes = [measure_agilenn(agilenn, split)]
    tradeoff = []
    for folder in sorted(p for p in baselines.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if (folder / BASELINE_FILE).exists():
            schemes.append(measure_local(folder, split))
        elif (folder / "manifest.json").exists():
            config = json.loads((folder / "manifest.json").read_text()).get("config", {})
            if config.get("baseline") == "deepcod":
                tradeoff.append(measure_deepcod(folder, split))
    # AgileNN at other bit widths and channel counts (configs/variants): more points of its curve
    agilenn_points = [schemes[0]] + [measure_agilenn(folder, split, Bundle(folder).manifest.name)
                                     for folder in _variant_folders(variants, bundle)]
    cuts = [CutRecord.model_validate(c) for c in measure_cuts(ref, dataset, test_limit=test_limit)]
    by_name = {c.name: c for c in cuts}
    schemes.append(_from_cut("local-large", "local-only", by_name["logits"], input_bytes))
    schemes.append(_from_cut("full-offload", "full-offload", by_name["input"], input_bytes))
    if image_codecs:
        from partitioner.image_offload import image_offload_schemes

        reference = torch.nn.Sequential(*ref.modules)
        schemes.extend(image_offload_schemes(reference, schemes[-1], split))
    # the DeepCOD-like scheme is the variant closest to AgileNN's bit width and coder; the others
    # are points on the accuracy-vs-bytes curve
    if tradeoff:
        main = min(tradeoff, key=lambda s: (s.levels != schemes[0].levels, -s.offloaded_channels, s.name))
        schemes.append(main.model_copy(update={"name": "deepcod", "variant": main.name}))
    data = MeasuredSchemes(
        schema=SCHEMA, dataset=dataset.name, samples=len(split), created=time.strftime("%Y-%m-%d"),
        command="python -m partitioner.simdata " + " ".join(sys.argv[1:]),
        raw_input_bytes=input_bytes, classes=dataset.num_classes,
        protocol=protocol_overheads(bundle), schemes=schemes, cuts=cuts,
        tradeoff=[_point(s, "agilenn") for s in agilenn_points] + [_point(s, "deepcod") for s in tradeoff])
    if export_splits:
        export_cut(ref, "input", dataset, baselines / "full-offload", codec=by_name["input"].codec)
        if export_cut_name is None:
            log.warning("no layer split exported: pass --export-cut NAME, the cut `agilenn simulate` names in its "
                        "layer-split row for the device and link of interest")
        else:
            export_cut(ref, export_cut_name, dataset, baselines / "layer-split",
                       codec=by_name[export_cut_name].codec)
    return data


def refresh_agilenn(agilenn: Path, measured: MeasuredSchemes, dataset: Dataset | None = None) -> MeasuredSchemes:
    """`measured` with the AgileNN scheme and its curve point measured again from the bundle at `agilenn`."""
    torch.set_num_threads(1)
    bundle = Bundle(agilenn)
    if dataset is None:
        dataset = load_dataset(bundle.manifest.config["dataset"])
    if dataset.name != measured.dataset:
        raise ValueError(f"{agilenn} is a {dataset.name} bundle; the measured file is of {measured.dataset}")
    old = next((s for s in measured.schemes if s.name == "agilenn"), None)
    if old is None:
        raise ValueError("the measured file has no agilenn scheme to refresh")
    scheme = measure_agilenn(agilenn, dataset.test.head(measured.samples))
    before = old.accuracy_reference
    if before is not None and scheme.accuracy_reference != before:
        # local-large, full offload, the layer split and the cuts were measured on the old reference network
        raise ValueError(f"{agilenn} has another reference network (accuracy {scheme.accuracy_reference} against "
                         f"{before}); measure every scheme again instead of refreshing")
    schemes = [scheme if s.name == "agilenn" else s for s in measured.schemes]
    tradeoff = [_point(scheme, "agilenn") if (p.family, p.name) == ("agilenn", "agilenn") else p
                for p in measured.tradeoff]
    return measured.model_copy(update={
        "schemes": schemes, "tradeoff": tradeoff, "protocol": protocol_overheads(bundle),
        "created": time.strftime("%Y-%m-%d"),
        "command": f"{measured.command}; python -m partitioner.simdata " + " ".join(sys.argv[1:])})


def _variant_folders(parent: Path | None, main: Bundle) -> list[Path]:
    """AgileNN bundles under `parent` for the same inputs and labels as `main` (itself excluded)."""
    if parent is None:
        return []
    if not parent.is_dir():
        raise FileNotFoundError(f"{parent}: no such folder of bundles")
    folders = []
    for folder in sorted(p for p in parent.iterdir() if (p / "manifest.json").exists()):
        manifest = Bundle(folder, verify=False).manifest
        if folder.resolve() == main.folder.resolve() or manifest.config.get("baseline"):
            continue
        if (manifest.config.get("dataset"), manifest.input.shape, manifest.labels) != \
                (main.manifest.config.get("dataset"), main.manifest.input.shape, main.manifest.labels):
            raise ValueError(f"{folder}: a variant for other inputs or labels than {main.folder} "
                             f"({manifest.config.get('dataset')}, {manifest.input.shape})")
        folders.append(folder)
    if not folders:
        log.warning("%s holds no AgileNN variant bundles (scripts/train_variants.sh writes them)", parent)
    return folders


def _point(scheme: Scheme, family: str) -> TradeoffPoint:
    return TradeoffPoint(family=family, name=scheme.name, accuracy=scheme.accuracy,
                         payload_bytes=scheme.payload_bytes, levels=scheme.levels,
                         offloaded_channels=scheme.offloaded_channels, codec=scheme.codec,
                         fixed_centroids=scheme.fixed_centroids,
                         device_macs=sum(layer.macs for layer in scheme.device_layers),
                         alternatives=scheme.alternatives)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m partitioner.simdata", description=__doc__.splitlines()[0])
    parser.add_argument("--agilenn", required=True, help="the AgileNN bundle (its reference network is cut too)")
    parser.add_argument("--baselines", help="folder of exported baselines (partitioner.baselines)")
    parser.add_argument("--refresh-agilenn", action="store_true",
                        help="measure only the AgileNN bundle again and replace it in the existing --out file "
                             "(a bundle continued from the same reference network)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--variants", default=None, type=Path,
                        help="folder of AgileNN variant bundles (scripts/train_variants.sh), points of its curve")
    parser.add_argument("--dataset", default=None)
    parser.add_argument("--limit", type=int, default=None, help="only the first N test samples")
    parser.add_argument("--export-splits", action="store_true",
                        help="also export full offload (BASELINES/full-offload) and, with --export-cut, the "
                             "layer split (BASELINES/layer-split) as bundles")
    parser.add_argument("--export-cut", default=None, metavar="NAME",
                        help="with --export-splits: the cut of the reference network to export the layer split "
                             "at, e.g. extractor.3. `agilenn simulate --device D --link L` names the cut it "
                             "chooses for that device and link in its layer-split row (\"best cut for this "
                             "device and link: after 'NAME'\"); without --export-cut no layer split is exported")
    parser.add_argument("--image-codecs", action="store_true",
                        help="also full offload with the image coded as PNG and as JPEG at qualities "
                             "95, 75, 50, 25 (the reference network's accuracy on the decoded images)")
    args = parser.parse_args(argv)
    if args.export_cut is not None and not args.export_splits:
        parser.error("--export-cut names the layer split to export; it needs --export-splits")
    if not args.refresh_agilenn and args.baselines is None:
        parser.error("--baselines is required (or --refresh-agilenn with an existing --out file)")
    if args.refresh_agilenn:
        ignored = [flag for flag, given in (("--baselines", args.baselines), ("--variants", args.variants),
                                             ("--dataset", args.dataset), ("--limit", args.limit),
                                             ("--export-splits", args.export_splits),
                                             ("--image-codecs", args.image_codecs)) if given]
        if ignored:
            parser.error(f"--refresh-agilenn measures only the AgileNN bundle; {', '.join(ignored)} would be ignored")
    logging.basicConfig(level=logging.WARNING)
    if args.refresh_agilenn:
        if not Path(args.out).exists():
            parser.error(f"--refresh-agilenn: {args.out} does not exist; measure every scheme first")
        data = refresh_agilenn(Path(args.agilenn), load_measured(args.out))
    else:
        data = _build_from_args(parser, args)
    write_measured(args.out, data)
    summary = {s.name: {"accuracy": round(s.accuracy, 4), "payload_bytes": s.payload_bytes} for s in data.schemes}
    print(json.dumps(summary))
    return 0


def _build_from_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> MeasuredSchemes:
    try:
        data = build(Path(args.agilenn), Path(args.baselines), args.dataset, args.limit, args.export_splits,
                     variants=args.variants, export_cut_name=args.export_cut, image_codecs=args.image_codecs)
    except UnknownCutError as exc:
        parser.error(str(exc))
    return data


if __name__ == "__main__":
    sys.exit(main())
