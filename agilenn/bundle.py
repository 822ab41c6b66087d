"""The bundle: what the partitioner writes and the device and cloud read.

A bundle is a folder holding `device.onnx` (raw input -> local logits + remote indices),
`remote.onnx` (remote indices -> remote logits), optionally `reference.onnx` (the unsplit
reference model, for evaluation), and `manifest.json` described by `Manifest`.

The bundle hash covers everything that decides a prediction (the ONNX files, the codec
tables, the centroids, the mixing weight, the input spec), not the training log, so two
sides that agree on it compute the same thing.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agilenn.bundle_metrics import RecordedMetrics
from agilenn.codec import Codec, codec_from_manifest
from agilenn.onnx_sessions import create_session

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
DEVICE_MODEL = "device.onnx"
DEVICE_INT8_MODEL = "device.int8.onnx"
# Device fronts by precision: the role in `files` of each. Both compute the same outputs; the int8
# one (statically quantized, verified against float at export) adds the features it computed.
DEVICE_ROLES = {"float32": "device", "int8": "device_int8"}
REMOTE_MODEL = "remote.onnx"
REFERENCE_MODEL = "reference.onnx"
# Files the bundle hash leaves out: the torch weights serve offline analysis only, no prediction reads them.
UNHASHED_ROLES = ("checkpoint",)


def mix_logits(local_logits, remote_logits, alpha_local):
    """AgileNN's one mixing rule: alpha * local + (1 - alpha) * remote, for numpy arrays and torch
    tensors alike (training, export, the device and offline evaluation all mix through it)."""
    return alpha_local * local_logits + (1.0 - alpha_local) * remote_logits


class BundleError(ValueError):
    """A bundle that is missing, malformed or does not match its own hash."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputSpec(_Strict):
    shape: tuple[int, int, int] = Field(description="(C, H, W) of one sample")
    dtype: str = Field("float32", description="dtype device.onnx takes; values are raw pixel levels 0..255")
    mean: float = Field(description="normalisation applied inside device.onnx: (x/255 - mean)/std")
    std: float


class SplitSpec(_Strict):
    feature_shape: tuple[int, int, int]
    local_channels: int
    remote_channels: int


class QuantizerSpec(_Strict):
    levels: int
    centroids: list[float]


class FrontSpec(_Strict):
    """One device front of the bundle, named by its precision in `Manifest.device_fronts`."""

    file: str
    sha256: str
    size_bytes: int
    weight_bytes: int = Field(description="bytes of the model's stored weights (initializers), what flash holds")


class MixingSpec(_Strict):
    alpha_local: float = Field(ge=0.0, le=1.0, description="mixed = alpha*local + (1-alpha)*remote logits")


class Manifest(_Strict):
    schema_version: int = SCHEMA_VERSION
    bundle_hash: str = ""
    name: str
    input: InputSpec
    labels: list[str]
    split: SplitSpec
    quantizer: QuantizerSpec
    codec: dict[str, Any]
    mixing: MixingSpec
    files: dict[str, str]
    device_macs: int
    device_fronts: dict[str, FrontSpec] = Field(default_factory=dict, description="by precision: float32, int8")
    config: dict[str, Any] = Field(default_factory=dict)
    metrics: RecordedMetrics | None = Field(None, description="measured at export; None until then")

    @field_validator("metrics", mode="before")
    @classmethod
    def _no_metrics_yet(cls, value: Any) -> Any:
        return None if value == {} else value  # a manifest written before its export measured it


def _hashed_part(manifest: Manifest) -> dict[str, Any]:
    data = manifest.model_dump(mode="json")
    return {k: data[k] for k in ("schema_version", "input", "labels", "split", "quantizer", "codec", "mixing")}


def compute_bundle_hash(folder: Path, manifest: Manifest) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps(_hashed_part(manifest), sort_keys=True).encode())
    for role in sorted(manifest.files):
        if role in UNHASHED_ROLES:
            continue  # torch weights only serve offline analysis; predictions come from the ONNX files
        digest.update(role.encode())
        digest.update((folder / manifest.files[role]).read_bytes())
    return "sha256:" + digest.hexdigest()


def manifest_json(manifest: Manifest) -> str:
    """The manifest file's text. Its metrics hold the figures that were measured, no more: a figure
    that does not apply (the int8 ones without an int8 front) is left out, not written as null."""
    data = manifest.model_dump(mode="json")
    if manifest.metrics is not None:
        data["metrics"] = manifest.metrics.model_dump(mode="json", exclude_unset=True)
    return json.dumps(data, indent=1) + "\n"


def write_manifest(folder: Path, manifest: Manifest) -> Manifest:
    """Stamp the manifest with its bundle hash and write it; returns the stamped manifest."""
    stamped = manifest.model_copy(update={"bundle_hash": compute_bundle_hash(folder, manifest)})
    (folder / MANIFEST_NAME).write_text(manifest_json(stamped))
    return stamped


def serving_files(folder: str | Path) -> dict[str, bytes]:
    """A bundle's files as {file name: bytes}, enough for `write_serving_files` and `Bundle` to load and
    verify it elsewhere: the manifest and every file the hash covers. The files the hash leaves out
    (the torch checkpoint, megabytes no server reads) stay behind, and the manifest handed on no longer
    lists them; its hash is unchanged, since the hash does not cover the file list."""
    folder = Path(folder)
    manifest = Bundle(folder, verify=False).manifest
    files = {role: name for role, name in manifest.files.items() if role not in UNHASHED_ROLES}
    served = manifest.model_copy(update={"files": files})
    contents = {name: (folder / name).read_bytes() for name in files.values()}
    contents[MANIFEST_NAME] = manifest_json(served).encode()
    return contents


def write_serving_files(contents: dict[str, bytes], folder: str | Path) -> Path:
    """Write files from `serving_files` into `folder` (which must exist); names must be plain file names."""
    folder = Path(folder)
    for name, data in contents.items():
        if not name or Path(name).name != name or name in (".", ".."):
            raise BundleError(f"bundle file name {name!r} is not a plain file name")
        (folder / name).write_bytes(data)
    return folder


def _check_file_name(folder: Path, role: str, name: str) -> None:
    """A bundle's files are plain names inside its folder: no path, no link out of it."""
    if not name or Path(name).name != name or name in (".", "..") or "\\" in name:
        raise BundleError(f"{folder}: the {role} file {name!r} is not a plain file name inside the bundle")
    path = (folder / name)
    if path.exists() and folder.resolve() not in path.resolve().parents:
        raise BundleError(f"{folder}: the {role} file {name!r} leads out of the bundle, to {path.resolve()}")


def _check_front_digests(folder: Path, manifest: Manifest) -> None:
    """Each device front whose SHA-256 the manifest declares must have it."""
    for precision, front in manifest.device_fronts.items():
        _check_file_name(folder, f"{precision} device front", front.file)
        path = folder / front.file
        if path.exists() and hashlib.sha256(path.read_bytes()).hexdigest() != front.sha256:
            raise BundleError(f"{folder}: the {precision} device front {front.file} does not have the SHA-256 "
                              f"the manifest declares ({front.sha256})")


class Bundle:
    """A loaded, verified bundle. ONNX Runtime sessions are created on first use."""

    def __init__(self, folder: str | Path, verify: bool = True) -> None:
        self.folder = Path(folder)
        path = self.folder / MANIFEST_NAME
        if not path.exists():
            raise BundleError(f"{self.folder} is not a bundle: {MANIFEST_NAME} not found")
        try:
            raw = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise BundleError(f"{path} is not valid JSON: {exc}") from None
        version = raw.get("schema_version")
        if version != SCHEMA_VERSION:
            raise BundleError(f"{path}: schema_version {version!r} is not supported (this agilenn reads {SCHEMA_VERSION})")
        try:
            self.manifest = Manifest.model_validate(raw)
        except ValidationError as exc:
            raise BundleError(f"{path} does not describe a bundle: {exc}") from None
        for role, name in self.manifest.files.items():
            _check_file_name(self.folder, role, name)
            if not (self.folder / name).exists():
                raise BundleError(f"{self.folder}: the {role} file {name} is missing")
        if verify:
            _check_front_digests(self.folder, self.manifest)
            actual = compute_bundle_hash(self.folder, self.manifest)
            if actual != self.manifest.bundle_hash:
                raise BundleError(
                    f"{self.folder}: contents hash to {actual} but the manifest says {self.manifest.bundle_hash}; "
                    "the bundle was modified after export"
                )
        self.codec: Codec = self._codec()
        self.centroids = np.asarray(self.manifest.quantizer.centroids, dtype=np.float32)
        self._sessions: dict[tuple[str, int], Any] = {}

    def _codec(self) -> Codec:
        """The manifest's codec, which must code the indices the split sends."""
        try:
            codec = codec_from_manifest(self.manifest.codec)
        except (ValueError, KeyError, TypeError) as exc:
            raise BundleError(f"{self.folder}: the manifest's codec entry is invalid: {exc}") from None
        expected = (self.remote_shape, self.manifest.quantizer.levels)
        if (tuple(codec.shape), codec.levels) != expected:
            raise BundleError(f"{self.folder}: the codec codes indices shaped {tuple(codec.shape)} at {codec.levels} "
                              f"levels, but the split sends {expected[0]} at {expected[1]}")
        return codec

    @property
    def bundle_hash(self) -> str:
        return self.manifest.bundle_hash

    @property
    def remote_shape(self) -> tuple[int, int, int]:
        _channels, height, width = self.manifest.split.feature_shape
        return (self.manifest.split.remote_channels, height, width)

    @property
    def recorded_metrics(self) -> RecordedMetrics:
        """The figures measured at export; a bundle written without them is refused by name."""
        if self.manifest.metrics is None:
            raise BundleError(f"{self.folder}: the manifest records no metrics (export measures them)")
        return self.manifest.metrics

    def has(self, role: str) -> bool:
        return role in self.manifest.files

    @property
    def precisions(self) -> list[str]:
        """Precisions the bundle has a device front for (float32 always)."""
        return [p for p, role in DEVICE_ROLES.items() if self.has(role)]

    def device_role(self, precision: str) -> str:
        """The `files` role of the device front of `precision`; a clear error if the bundle has none."""
        if precision not in DEVICE_ROLES:
            raise BundleError(f"unknown precision {precision!r}; known: {', '.join(DEVICE_ROLES)}")
        role = DEVICE_ROLES[precision]
        if not self.has(role):
            raise BundleError(f"{self.folder} has no {precision} device front (it has: {', '.join(self.precisions)}); "
                              "re-export it with export.int8 on")
        return role

    def session(self, role: str, threads: int = 1):
        """An ONNX Runtime session for `device`, `remote` or `reference`, one per role and thread count."""
        key = (role, threads)
        if key not in self._sessions:
            if not self.has(role):
                raise BundleError(f"{self.folder} has no {role} model")
            self._sessions[key] = create_session(self.folder / self.manifest.files[role], threads)
        return self._sessions[key]

    def mix(self, local_logits: np.ndarray, remote_logits: np.ndarray) -> np.ndarray:
        return mix_logits(local_logits, remote_logits, self.manifest.mixing.alpha_local)

    def prepare(self, images: np.ndarray) -> np.ndarray:
        """uint8 or float images, (N, C, H, W), one (C, H, W), or one (H, W) for a one-channel bundle, to
        device.onnx's input (float32, batched); BundleError for another shape."""
        images = np.asarray(images)
        if images.ndim == 2 and self.manifest.input.shape[0] == 1:
            images = images[None]
        if images.ndim == 3:
            images = images[None]
        expected = tuple(self.manifest.input.shape)
        if images.shape[1:] != expected:
            raise BundleError(f"input shaped {images.shape[1:]} per sample, the bundle takes {expected}")
        return images.astype(np.float32, copy=False)
