"""The one path every exporter writes through: AgileNN, the DeepCOD-like baseline, full offload,
the layer split and the local-only baselines.

A bundle is built in a private staging folder beside its destination and moved into place only
when complete and checked, so a failed export never leaves a half-written bundle behind and a
reader never sees one. ONNX files are written without the exporter's source stack traces: those
name the folders of the machine that exported them, so the same model would hash differently
from another checkout (and a shipped file would leak build paths).
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Self

import numpy as np
import torch
from torch import nn

from agilenn.bundle import Bundle, FrontSpec, Manifest, write_manifest
from agilenn.bundle_metrics import RecordedMetrics
from agilenn.codec import BitPackCodec, RangeCodec, ZlibCodec
from agilenn.datasets import Split
from agilenn.onnx_sessions import create_session
from agilenn.predict import evaluate_bundle

ONNX_OPSET = 18
# Node metadata the torch exporter fills with absolute source paths of the exporting machine.
BUILD_PATH_METADATA = ("pkg.torch.onnx.stack_trace",)


def _node_containers(container: Any) -> Iterator[Any]:
    """A graph or function, then every subgraph of its nodes (If, Loop, Scan bodies)."""
    yield container
    for node in container.node:
        for attribute in node.attribute:
            if attribute.HasField("g"):
                yield from _node_containers(attribute.g)
            for graph in attribute.graphs:
                yield from _node_containers(graph)


def strip_build_paths(path: str | Path) -> bool:
    """Remove the exporter's source stack traces from an ONNX file in place; True when any were found."""
    import onnx

    model = onnx.load(str(path))
    found = False
    for container in (model.graph, *model.functions):
        for graph in _node_containers(container):
            for node in graph.node:
                kept = [p for p in node.metadata_props if p.key not in BUILD_PATH_METADATA]
                if len(kept) != len(node.metadata_props):
                    found = True
                    del node.metadata_props[:]
                    node.metadata_props.extend(kept)
    if found:
        onnx.save(model, str(path))
    return found


def front_spec(path: Path) -> FrontSpec:
    """File name, hash, size and stored-weight bytes of an exported device front."""
    import onnx

    model = onnx.load(str(path))
    weights = sum(int(np.prod(t.dims, dtype=np.int64)) * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
                  for t in model.graph.initializer)
    data = path.read_bytes()
    return FrontSpec(file=path.name, sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data),
                     weight_bytes=weights)


def export_onnx(module: nn.Module, example: torch.Tensor, path: Path, input_name: str,
                output_names: list[str]) -> None:
    """`module` as an ONNX file at `path` (opset 18, dynamic batch), free of build paths."""
    module.eval()
    # The exporter warns about every torchvision operator it cannot register; agilenn uses none.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    batch = torch.export.Dim("batch", min=1, max=65536)
    with warnings.catch_warnings():
        # torch's exporter calls a pytree API that torch itself has deprecated
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*LeafSpec.*")
        program = torch.onnx.export(
            module, (example,), dynamo=True, input_names=[input_name], output_names=output_names,
            dynamic_shapes=({0: batch},), opset_version=ONNX_OPSET, verbose=False,
        )
    program.save(str(path), external_data=False)
    strip_build_paths(path)


def run_torch(module: nn.Module, inputs: np.ndarray, batch_size: int = 1000) -> list[np.ndarray]:
    """`module` over `inputs` in batches without gradients; each output concatenated."""
    module.eval()
    outputs: list[list[np.ndarray]] = []
    with torch.no_grad():
        for start in range(0, len(inputs), batch_size):
            result = module(torch.from_numpy(inputs[start:start + batch_size]))
            result = result if isinstance(result, tuple) else (result,)
            outputs.append([r.numpy() for r in result])
    return [np.concatenate(parts) for parts in zip(*outputs)]


def fit_codec(codec_id: str, train_indices: np.ndarray, levels: int) -> dict:
    """The manifest entry of a codec for indices shaped (N, C, H, W)."""
    shape = tuple(train_indices.shape[1:])
    if codec_id in (RangeCodec.PER_CHANNEL, RangeCodec.PER_POSITION):
        return RangeCodec.fit(train_indices, levels, per_position=codec_id == RangeCodec.PER_POSITION).to_manifest()
    if codec_id == ZlibCodec.codec_id:
        return ZlibCodec(shape, levels).to_manifest()
    return BitPackCodec(shape, levels).to_manifest()


class BundleWriter:
    """Stage an export beside `out`; on leaving the `with` block without an error, replace `out` with it.

        with BundleWriter(out) as writer:
            writer.export_onnx(DEVICE_MODEL, device, example, "image", [...])
            ... verify with writer.session(DEVICE_MODEL) ...
            writer.write_manifest(manifest, test_split, verification)
    """

    def __init__(self, out: str | Path, overwrite: bool = True) -> None:
        self.out = Path(out)
        if self.out.exists() and not overwrite:
            raise FileExistsError(f"{self.out} exists; pass overwrite=True (--overwrite) to replace it")
        self._staging: Path | None = None

    @property
    def folder(self) -> Path:
        if self._staging is None:
            raise RuntimeError("BundleWriter is used inside a `with` block")
        return self._staging

    def __enter__(self) -> Self:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self._staging = Path(tempfile.mkdtemp(prefix=".export-", dir=self.out.parent))
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        staging, self._staging = self._staging, None
        assert staging is not None
        if exc_type is not None:
            shutil.rmtree(staging, ignore_errors=True)
            return
        if self.out.exists():
            shutil.rmtree(self.out)
        staging.chmod(0o755)  # mkdtemp made it private
        staging.replace(self.out)

    def export_onnx(self, name: str, module: nn.Module, example: torch.Tensor, input_name: str,
                    output_names: list[str]) -> Path:
        path = self.folder / name
        export_onnx(module, example, path, input_name, output_names)
        return path

    def session(self, name: str, threads: int = 1) -> Any:
        return create_session(self.folder / name, threads)

    def write_manifest(self, manifest: Manifest, test: Split, verification: dict[str, Any] | None = None,
                       int8_verification: dict[str, Any] | None = None,
                       measure: Callable[[Path], dict[str, Any]] | None = None) -> Manifest:
        """Stamp and write `manifest`, then measure the staged bundle on `test` (plus `measure(folder)`)
        and record the figures in its metrics, beside the export's verification reports."""
        manifest = write_manifest(self.folder, manifest)
        metrics = evaluate_bundle(Bundle(self.folder), test)
        if measure is not None:
            metrics = metrics.with_figures(measure(self.folder))
        reports = {name: report for name, report in (("verification", verification),
                                                     ("int8_verification", int8_verification)) if report is not None}
        recorded = RecordedMetrics(**metrics.model_dump(exclude_unset=True), **reports)
        return write_manifest(self.folder, manifest.model_copy(update={"metrics": recorded}))
