"""Cluttered Fashion-MNIST: one Fashion-MNIST item, enlarged, on a larger canvas among fragments of others.

The construction of cluttered MNIST (Mnih et al., "Recurrent Models of Visual Attention", 2014),
applied to the Fashion-MNIST files: on a black canvas, `fragments` random crops (each
`fragment_size` square) of other random images of the same split are pasted at uniformly random
places, then the target image, resized bilinearly by a factor drawn uniformly from
[scale_min, scale_max], at a uniformly random place; every paste is fully inside the canvas and is
combined with what is there by per-pixel max. Canvas i of a split has source image i of that split
as its target (its label is that image's label); training canvases draw only from the training
split, test canvases only from the test split. Each canvas records what it was built from
(`ClutteredSplit`: source indices, crop offsets, places, the target's box and scale).

The canvases are generated once and cached under $AGILENN_CACHE_DIR (default ~/.cache/agilenn):
uncompressed .npy files mapped into memory on a re-run, and an .npz of the provenance, named by a SHA-256 of the spec, the generator and the source files'
bytes; a cache file that does not load or does not match is regenerated. numpy and Pillow (for
the bilinear resize) only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from agilenn.config_files import load_yaml_model
from agilenn.datasets import (
    FASHION_MNIST_LABELS,
    Dataset,
    DatasetUnavailableError,
    Split,
    fashion_mnist_files,
    read_idx,
    register_dataset,
)

CLUTTERED_NAME = "cluttered-fashion-mnist"
CACHE_DIR_ENV = "AGILENN_CACHE_DIR"
DEFAULT_CACHE_DIR = Path("~/.cache/agilenn")
# Bump when the construction changes in a way the spec does not show (the order of random draws,
# rounding): every cache file made before is then regenerated.
GENERATOR_VERSION = 1

log = logging.getLogger(__name__)

SplitName = Literal["train", "test"]


class ClutterSpec(BaseModel):
    """What a cluttered dataset is made of; the defaults are the cluttered-fashion-mnist dataset."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    canvas: int = Field(96, ge=1, description="side of the square canvas, pixels")
    fragments: int = Field(8, ge=0, description="clutter fragments per canvas")
    fragment_size: int = Field(14, ge=1, description="side of each square fragment, pixels")
    scale_min: float = Field(1.0, gt=0, allow_inf_nan=False, description="smallest resize factor of the target")
    scale_max: float = Field(1.75, gt=0, allow_inf_nan=False, description="largest resize factor of the target")
    train_count: int = Field(60_000, ge=1, description="training canvases (targets: training images 0..n-1)")
    test_count: int = Field(10_000, ge=1, description="test canvases (targets: test images 0..n-1)")
    train_seed: int = Field(0, ge=0)
    test_seed: int = Field(1, ge=0)

    @field_validator("fragment_size")
    @classmethod
    def _fragment_fits_the_canvas(cls, value: int, info: ValidationInfo) -> int:
        canvas = info.data.get("canvas")
        if canvas is not None and value > canvas:
            raise ValueError(f"fragment_size {value} is larger than the canvas ({canvas})")
        return value

    @field_validator("scale_max")
    @classmethod
    def _scale_range_is_ordered(cls, value: float, info: ValidationInfo) -> float:
        scale_min = info.data.get("scale_min")
        if scale_min is not None and value < scale_min:
            raise ValueError(f"scale_max {value} is below scale_min {scale_min}")
        return value

    def count(self, split: SplitName) -> int:
        return self.train_count if split == "train" else self.test_count

    def seed(self, split: SplitName) -> int:
        return self.train_seed if split == "train" else self.test_seed


@dataclass(frozen=True)
class ClutteredSplit:
    """One split's canvases and what each was built from; every index points into `split` of the source."""

    split: SplitName
    images: np.ndarray          # uint8 (N, 1, canvas, canvas)
    labels: np.ndarray          # int64 (N,): the targets' labels
    target_index: np.ndarray    # int64 (N,): the source image pasted as the target
    target_box: np.ndarray      # int64 (N, 4): top, left, bottom, right (exclusive) of the resized target
    scale: np.ndarray           # float64 (N,): the drawn resize factor (the box side is round(side * scale))
    fragment_index: np.ndarray  # int64 (N, F): the source image each fragment was cut from
    fragment_crop: np.ndarray   # int64 (N, F, 2): top, left of each crop in its source image
    fragment_at: np.ndarray     # int64 (N, F, 2): top, left of each fragment on the canvas

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def provenance(self) -> dict[str, np.ndarray]:
        """The recorded construction: every array but the canvases and labels."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("split", "images", "labels")}


@dataclass(frozen=True)
class ClutteredData:
    spec: ClutterSpec
    train: ClutteredSplit
    test: ClutteredSplit
    cache_path: Path
    from_cache: bool  # loaded from `cache_path` rather than generated by this call


def load_spec(path: str | Path) -> ClutterSpec:
    """A ClutterSpec from a YAML file (configs/datasets/cluttered_fashion_mnist.yaml holds the defaults)."""
    return load_yaml_model(path, ClutterSpec, "cluttered dataset spec", empty_ok=True)


def _pil_image():
    try:
        from PIL import Image
    except ImportError as exc:
        raise DatasetUnavailableError(
            "generating a cluttered dataset needs Pillow: pip install 'agilenn[data]'"
        ) from exc
    return Image


def resize_bilinear(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """A uint8 (H, W) image resized to (height, width) by Pillow's bilinear filter."""
    Image = _pil_image()
    return np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize((width, height), Image.Resampling.BILINEAR))


def _scaled_side(side: int, scale: float) -> int:
    return int(np.floor(side * scale + 0.5))


def generate_split(images: np.ndarray, labels: np.ndarray, spec: ClutterSpec, split: SplitName) -> ClutteredSplit:
    """`spec.count(split)` canvases from one split's source images (N, H, W) or (N, 1, H, W) uint8.

    The random draws come from `np.random.default_rng(spec.seed(split))` canvas by canvas, a fixed
    number per canvas, so the first k canvases do not depend on how many are made.
    """
    source = np.asarray(images)
    if source.ndim == 4 and source.shape[1] == 1:
        source = source[:, 0]
    if source.ndim != 3 or source.dtype != np.uint8:
        raise ValueError(f"source images must be uint8 (N, H, W) or (N, 1, H, W), got {source.dtype} {images.shape}")
    labels = np.asarray(labels, dtype=np.int64)
    n, side_h, side_w = source.shape
    count, canvas, k, frag = spec.count(split), spec.canvas, spec.fragments, spec.fragment_size
    if labels.shape != (n,):
        raise ValueError(f"{n} source images but labels shaped {labels.shape}")
    if count > n:
        raise ValueError(f"{split}_count {count} is more than the {n} source images of the {split} split")
    if k and n < 2:
        raise ValueError(f"fragments come from other images: the {split} split needs at least 2, has {n}")
    if k and frag > min(side_h, side_w):
        raise ValueError(f"fragment_size {frag} is larger than the source images ({side_h}x{side_w})")
    largest = max(_scaled_side(side_h, spec.scale_max), _scaled_side(side_w, spec.scale_max))
    if largest > canvas:
        raise ValueError(f"scale_max {spec.scale_max} makes a {side_h}x{side_w} target {largest} pixels, "
                         f"larger than the canvas ({canvas})")

    out = np.zeros((count, 1, canvas, canvas), dtype=np.uint8)
    target_box = np.zeros((count, 4), dtype=np.int64)
    scale = np.zeros(count, dtype=np.float64)
    fragment_index = np.zeros((count, k), dtype=np.int64)
    fragment_crop = np.zeros((count, k, 2), dtype=np.int64)
    fragment_at = np.zeros((count, k, 2), dtype=np.int64)
    # per fragment: source (of the n - 1 others), crop top, crop left, canvas top, canvas left
    high = np.tile(np.array([max(n - 1, 1), side_h - frag + 1, side_w - frag + 1, canvas - frag + 1,
                             canvas - frag + 1], dtype=np.int64), (k, 1))
    rng = np.random.default_rng(spec.seed(split))
    for i in range(count):
        draws = rng.integers(0, high)  # (k, 5)
        u = rng.random(3)              # scale, target top, target left
        board = out[i, 0]
        others = draws[:, 0] + (draws[:, 0] >= i)
        for j in range(k):
            cy, cx, y, x = draws[j, 1:]
            region = board[y:y + frag, x:x + frag]
            np.maximum(region, source[others[j], cy:cy + frag, cx:cx + frag], out=region)
        s = spec.scale_min + u[0] * (spec.scale_max - spec.scale_min)
        th, tw = _scaled_side(side_h, s), _scaled_side(side_w, s)
        top, left = int(u[1] * (canvas - th + 1)), int(u[2] * (canvas - tw + 1))
        target = source[i] if (th, tw) == (side_h, side_w) else resize_bilinear(source[i], th, tw)
        region = board[top:top + th, left:left + tw]
        np.maximum(region, target, out=region)
        fragment_index[i], fragment_crop[i], fragment_at[i] = others, draws[:, 1:3], draws[:, 3:5]
        target_box[i] = (top, left, top + th, left + tw)
        scale[i] = s
    return ClutteredSplit(split, out, labels[:count].copy(), np.arange(count, dtype=np.int64), target_box, scale,
                          fragment_index, fragment_crop, fragment_at)


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_DIR_ENV) or DEFAULT_CACHE_DIR).expanduser()


def cache_key(spec: ClutterSpec, source_files: Mapping[str, str | Path]) -> str:
    """SHA-256 of the spec, the generator (its version, Pillow's) and each source file's bytes."""
    Image = _pil_image()
    sources = {}
    for role, path in sorted(source_files.items()):
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        sources[role] = digest.hexdigest()
    payload = {"generator": GENERATOR_VERSION, "pillow": Image.__version__, "spec": spec.model_dump(),
               "sources": sources}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _image_file(path: Path, split: str) -> Path:
    return path.with_name(f"{path.stem}-{split}-images.npy")


def _read_cache(path: Path, key: str, spec: ClutterSpec) -> tuple[ClutteredSplit, ClutteredSplit] | None:
    """The cached splits, or None. The canvases are uncompressed .npy files mapped into memory
    (copy-on-write), so a re-run starts at once; the small .npz beside them holds the key and the
    provenance and is written last, so its presence means the image files are complete."""
    if not path.exists():
        return None
    try:
        splits = []
        with np.load(path, allow_pickle=False) as z:
            if str(z["key"]) != key:
                raise ValueError("it was made from another spec or other source files")
            for split in ("train", "test"):
                n, k = spec.count(split), spec.fragments
                images = np.load(_image_file(path, split), mmap_mode="c", allow_pickle=False)
                if images.dtype != np.uint8 or images.shape != (n, 1, spec.canvas, spec.canvas):
                    raise ValueError(f"{split} canvases are {images.dtype} {images.shape}")
                arrays = {f.name: z[f"{split}_{f.name}"] for f in fields(ClutteredSplit)
                          if f.name not in ("split", "images")}
                expected = {"labels": (n,), "target_index": (n,), "target_box": (n, 4), "scale": (n,),
                            "fragment_index": (n, k), "fragment_crop": (n, k, 2), "fragment_at": (n, k, 2)}
                for name, shape in expected.items():
                    if arrays[name].shape != shape:
                        raise ValueError(f"{split}_{name} is shaped {arrays[name].shape}, not {shape}")
                splits.append(ClutteredSplit(split, images, **arrays))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        log.warning("cache file %s is not usable (%s); generating it again", path, exc)
        return None
    return splits[0], splits[1]


def _atomic_write(path: Path, write) -> None:
    """`write(file)` into a temporary file beside `path`, then renamed into place."""
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _write_cache(path: Path, key: str, train: ClutteredSplit, test: ClutteredSplit) -> None:
    """The canvases of each split as an .npy file, then the key and provenance as an .npz; each written
    to a temporary file and renamed into place, the .npz last."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, Any] = {"key": np.array(key)}
    for part in (train, test):
        _atomic_write(_image_file(path, part.split), lambda f, part=part: np.save(f, part.images, allow_pickle=False))
        for f in fields(ClutteredSplit):
            if f.name not in ("split", "images"):
                arrays[f"{part.split}_{f.name}"] = getattr(part, f.name)
    _atomic_write(path, lambda f: np.savez_compressed(f, **arrays))


def load_cluttered(spec: ClutterSpec | None = None, cache: str | Path | None = None) -> ClutteredData:
    """The canvases of `spec` (default: ClutterSpec()) from the Fashion-MNIST files, from the cache
    folder `cache` (default: cache_dir()) when a matching file is there, else generated and cached."""
    spec = spec or ClutterSpec()
    files = fashion_mnist_files()
    key = cache_key(spec, files)
    path = Path(cache).expanduser() if cache is not None else cache_dir()
    path = path / f"{CLUTTERED_NAME}-{key[:24]}.npz"
    cached = _read_cache(path, key, spec)
    if cached is not None:
        return ClutteredData(spec, *cached, path, from_cache=True)
    arrays = {role: read_idx(p) for role, p in files.items()}
    train = generate_split(arrays["train_images"], arrays["train_labels"], spec, "train")
    test = generate_split(arrays["test_images"], arrays["test_labels"], spec, "test")
    try:
        _write_cache(path, key, train, test)
    except OSError as exc:
        log.warning("could not write the cache file %s (%s); the canvases will be generated again next time",
                    path, exc)
    return ClutteredData(spec, train, test, path, from_cache=False)


def cluttered_provenance(spec: ClutterSpec | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Per split ("train", "test"), what each canvas was built from (see ClutteredSplit)."""
    data = load_cluttered(spec)
    return {"train": data.train.provenance, "test": data.test.provenance}


def cluttered_dataset(spec: ClutterSpec | str | Path | None = None, name: str = CLUTTERED_NAME) -> Dataset:
    """The cluttered canvases of `spec` (a ClutterSpec, a YAML file of one, or None for the defaults)
    as a Dataset with Fashion-MNIST's label names."""
    if spec is not None and not isinstance(spec, ClutterSpec):
        spec = load_spec(spec)
    data = load_cluttered(spec)
    return Dataset(name, Split(data.train.images, data.train.labels), Split(data.test.images, data.test.labels),
                   FASHION_MNIST_LABELS)


def register_cluttered_dataset(name: str, spec: ClutterSpec | str | Path) -> ClutterSpec:
    """Make `load_dataset(name)` return the cluttered dataset of `spec` (a ClutterSpec or a YAML file of
    one, read and checked now); returns the spec."""
    if not isinstance(spec, ClutterSpec):
        spec = load_spec(spec)
    register_dataset(name, lambda: cluttered_dataset(spec, name))
    return spec
