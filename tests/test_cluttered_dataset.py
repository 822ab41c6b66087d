"""cluttered-fashion-mnist (agilenn/cluttered.py): the construction, its provenance, its spec and its cache.

Small specs throughout; the tests that need the real Fashion-MNIST files skip without them, the
cache tests run on small synthetic IDX files."""

import gzip
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

pytest.importorskip("PIL", reason="the cluttered datasets resize with Pillow")

from agilenn.cluttered import (
    CACHE_DIR_ENV,
    ClutterSpec,
    cache_key,
    cluttered_provenance,
    generate_split,
    load_cluttered,
    load_spec,
    register_cluttered_dataset,
    resize_bilinear,
)
from agilenn.config_files import ConfigFileError
from agilenn.datasets import (
    FASHION_MNIST_DIR_ENV,
    FASHION_MNIST_LABELS,
    DatasetUnavailableError,
    available_datasets,
    fashion_mnist_files,
    load_dataset,
    read_idx,
    unregister_dataset,
)

DEFAULTS_YAML = Path(__file__).resolve().parents[1] / "configs" / "datasets" / "cluttered_fashion_mnist.yaml"
SMALL = ClutterSpec(train_count=50, test_count=20)
SMALL_64 = ClutterSpec(canvas=64, train_count=50, test_count=20)


@pytest.fixture(scope="module")
def real_source():
    """The real Fashion-MNIST arrays, {split: (images (N, 28, 28), labels)}; skips when the files are absent."""
    try:
        files = fashion_mnist_files()
    except DatasetUnavailableError as exc:
        pytest.skip(f"needs the Fashion-MNIST files: {exc}")
    return {split: (read_idx(files[f"{split}_images"]), read_idx(files[f"{split}_labels"]).astype(np.int64))
            for split in ("train", "test")}


def _write_idx(path, array):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def synthetic_source(tmp_path, monkeypatch):
    """Small IDX files standing in for Fashion-MNIST, and an empty cache folder. Every training pixel is
    in 1..127 and every test pixel in 128..255, so any test pixel in a training canvas would show."""
    rng = np.random.default_rng(7)
    folder = tmp_path / "fashion"
    folder.mkdir()
    for prefix, n, low, high in (("train", 60, 1, 128), ("t10k", 30, 128, 256)):
        _write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", rng.integers(low, high, (n, 28, 28)))
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, n))
    monkeypatch.setenv(FASHION_MNIST_DIR_ENV, str(folder))
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "cache"))
    return folder


def test_the_yaml_file_holds_the_defaults_and_the_name_is_registered():
    spec = load_spec(DEFAULTS_YAML)
    assert spec == ClutterSpec()
    assert (spec.canvas, spec.fragments, spec.fragment_size, spec.scale_min, spec.scale_max) == (96, 8, 14, 1.0, 1.75)
    assert (spec.train_count, spec.test_count, spec.train_seed, spec.test_seed) == (60_000, 10_000, 0, 1)
    assert "cluttered-fashion-mnist" in available_datasets()


def test_missing_source_files_say_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setenv(FASHION_MNIST_DIR_ENV, str(tmp_path))
    with pytest.raises(DatasetUnavailableError, match="apt-get install -y dataset-fashion-mnist"):
        load_dataset("cluttered-fashion-mnist")


@pytest.mark.parametrize("spec", [SMALL, SMALL_64], ids=["canvas96", "canvas64"])
def test_canvases_targets_fragments_and_labels(real_source, spec):
    for split in ("train", "test"):
        images, labels = real_source[split]
        part = generate_split(images, labels, spec, split)
        n, k, side = spec.count(split), spec.fragments, spec.canvas
        assert part.split == split and len(part) == n
        assert part.images.shape == (n, 1, side, side) and part.images.dtype == np.uint8
        assert part.labels.dtype == np.int64 and np.array_equal(part.labels, labels[part.target_index])
        assert np.array_equal(part.target_index, np.arange(n))
        assert part.fragment_index.shape == (n, k) and part.fragment_at.shape == part.fragment_crop.shape == (n, k, 2)
        assert part.scale.min() >= spec.scale_min and part.scale.max() <= spec.scale_max
        for i in range(n):
            canvas = part.images[i, 0]
            top, left, bottom, right = part.target_box[i]
            assert 0 <= top < bottom <= side and 0 <= left < right <= side  # fully inside the canvas
            assert bottom - top == right - left == int(np.floor(28 * part.scale[i] + 0.5))
            target = images[part.target_index[i]]
            if bottom - top != 28:
                target = resize_bilinear(target, bottom - top, right - left)
            assert np.all(canvas[top:bottom, left:right] >= target)  # the whole resized target is there
            for j in range(k):
                (y, x), (cy, cx), f = part.fragment_at[i, j], part.fragment_crop[i, j], spec.fragment_size
                assert 0 <= y <= side - f and 0 <= x <= side - f
                crop = images[part.fragment_index[i, j], cy:cy + f, cx:cx + f]
                assert np.all(canvas[y:y + f, x:x + f] >= crop)
        # fragments come from other images of the same split; the canvas is black outside what was pasted
        assert np.all(part.fragment_index != part.target_index[:, None])
        assert part.fragment_index.min() >= 0 and part.fragment_index.max() < len(images)
        covered = np.zeros_like(part.images[:, 0], dtype=bool)
        for i in range(n):
            top, left, bottom, right = part.target_box[i]
            covered[i, top:bottom, left:right] = True
            for y, x in part.fragment_at[i]:
                covered[i, y:y + spec.fragment_size, x:x + spec.fragment_size] = True
        assert not part.images[:, 0][~covered].any()


def test_a_seed_gives_the_same_bytes_and_another_seed_others(real_source):
    images, labels = real_source["train"]
    first = generate_split(images, labels, SMALL, "train")
    again = generate_split(images, labels, SMALL, "train")
    assert first.images.tobytes() == again.images.tobytes()
    for name, array in first.provenance.items():
        assert np.array_equal(array, again.provenance[name])
    other = generate_split(images, labels, ClutterSpec(train_count=50, test_count=20, train_seed=5), "train")
    assert first.images.tobytes() != other.images.tobytes()
    # a canvas depends on its seed and index only, not on how many are made
    fewer = generate_split(images, labels, ClutterSpec(train_count=20, test_count=20), "train")
    assert np.array_equal(fewer.images, first.images[:20])


def test_training_canvases_hold_training_images_only(synthetic_source):
    provenance = cluttered_provenance(SMALL)
    data = load_cluttered(SMALL)
    assert data.from_cache  # cluttered_provenance made it
    for split, n_source in (("train", 60), ("test", 30)):
        recorded = provenance[split]
        part = getattr(data, split)
        assert part.split == split
        assert np.array_equal(recorded["target_index"], np.arange(SMALL.count(split)))
        assert recorded["fragment_index"].min() >= 0 and recorded["fragment_index"].max() < n_source
    # the pixels agree: training sources are 1..127, test sources 128..255 everywhere
    assert data.train.images.max() <= 127
    assert data.test.images[data.test.images > 0].min() >= 128


def test_the_cache_key_follows_every_parameter_and_the_source_bytes(synthetic_source):
    files = fashion_mnist_files()
    base = cache_key(SMALL, files)
    assert cache_key(ClutterSpec(train_count=50, test_count=20), files) == base
    changed = {"canvas": 64, "fragments": 7, "fragment_size": 13, "scale_min": 1.1, "scale_max": 1.5,
               "train_count": 40, "test_count": 10, "train_seed": 3, "test_seed": 4}
    assert set(changed) == set(ClutterSpec.model_fields)
    keys = {base} | {cache_key(ClutterSpec(**{**SMALL.model_dump(), name: value}), files)
                     for name, value in changed.items()}
    assert len(keys) == len(changed) + 1
    for role in files:
        path = files[role]
        original = path.read_bytes()
        path.write_bytes(original + b"\0")
        try:
            assert cache_key(SMALL, files) not in keys
        finally:
            path.write_bytes(original)
    assert cache_key(SMALL, files) == base


def test_a_second_load_comes_from_the_cache(synthetic_source, tmp_path):
    first = load_cluttered(SMALL)
    assert not first.from_cache and first.cache_path.exists() and first.cache_path.suffix == ".npz"
    assert first.cache_path.parent == tmp_path / "cache"
    stem = first.cache_path.stem  # the provenance file and one uncompressed image file per split, no temp file
    assert sorted(p.name for p in first.cache_path.parent.iterdir()) == sorted(
        [first.cache_path.name, f"{stem}-test-images.npy", f"{stem}-train-images.npy"])
    second = load_cluttered(SMALL)
    assert second.from_cache and second.cache_path == first.cache_path
    for split in ("train", "test"):
        a, b = getattr(first, split), getattr(second, split)
        assert a.images.tobytes() == b.images.tobytes() and np.array_equal(a.labels, b.labels)
        for name in a.provenance:
            assert np.array_equal(a.provenance[name], b.provenance[name])
    assert isinstance(second.train.images, np.memmap)  # mapped, not read: a re-run starts at once
    assert load_cluttered(SMALL_64).cache_path != first.cache_path


def test_a_damaged_image_file_is_regenerated(synthetic_source):
    good = load_cluttered(SMALL)
    image_file = good.cache_path.with_name(f"{good.cache_path.stem}-train-images.npy")
    image_file.write_bytes(image_file.read_bytes()[:-100])  # truncated
    again = load_cluttered(SMALL)
    assert not again.from_cache and again.train.images.tobytes() == good.train.images.tobytes()


def test_a_corrupt_or_mismatched_cache_file_is_regenerated(synthetic_source):
    good = load_cluttered(SMALL)
    path, original = good.cache_path, good.cache_path.read_bytes()
    for damaged in (b"not a zip file", original[: len(original) // 2],
                    original[:-200] + bytes(200)):  # garbage, truncated, a broken central directory
        path.write_bytes(damaged)
        again = load_cluttered(SMALL)
        assert not again.from_cache and again.train.images.tobytes() == good.train.images.tobytes()
        assert path.read_bytes() != damaged and load_cluttered(SMALL).from_cache
    # a well-formed file of another spec, under this spec's name, is not trusted either
    other = load_cluttered(ClutterSpec(train_count=50, test_count=20, test_seed=9))
    path.write_bytes(other.cache_path.read_bytes())
    again = load_cluttered(SMALL)
    assert not again.from_cache and again.test.images.tobytes() == good.test.images.tobytes()


def test_a_dataset_registered_from_a_yaml_file(synthetic_source, tmp_path):
    path = tmp_path / "clutter.yaml"
    path.write_text("canvas: 64\ntrain_count: 50\ntest_count: 20\n")
    spec = register_cluttered_dataset("test-clutter-64", path)
    try:
        assert spec == SMALL_64
        data = load_dataset("test-clutter-64")
        assert data.name == "test-clutter-64" and data.input_shape == (1, 64, 64)
        assert len(data.train) == 50 and len(data.test) == 20 and data.labels == FASHION_MNIST_LABELS
    finally:
        unregister_dataset("test-clutter-64")


def test_a_bad_spec_is_refused_naming_the_field(tmp_path):
    with pytest.raises(ValidationError, match=r"scale_max\n.*below scale_min"):
        ClutterSpec(scale_min=1.5, scale_max=1.2)
    with pytest.raises(ValidationError, match=r"fragment_size\n.*larger than the canvas"):
        ClutterSpec(canvas=32, fragment_size=40)
    with pytest.raises(ValidationError, match="fragments"):
        ClutterSpec(fragments=-1)
    with pytest.raises(ValidationError, match="canvass"):
        ClutterSpec(canvass=96)
    path = tmp_path / "bad.yaml"
    path.write_text("scale_min: 2.0\nscale_max: 1.0\n")
    with pytest.raises(ConfigFileError, match=r"bad\.yaml: invalid cluttered dataset spec: scale_max: "):
        load_spec(path)
    images, labels = np.ones((30, 28, 28), dtype=np.uint8), np.zeros(30, dtype=np.int64)
    with pytest.raises(ValueError, match=r"scale_max 1\.75 .* larger than the canvas \(40\)"):
        generate_split(images, labels, ClutterSpec(canvas=40, train_count=5, test_count=5), "test")
    with pytest.raises(ValueError, match="test_count 31 is more than the 30 source images"):
        generate_split(images, labels, ClutterSpec(test_count=31), "test")
    with pytest.raises(ValueError, match="fragment_size 30 is larger than the source images"):
        generate_split(images, labels, ClutterSpec(fragment_size=30, test_count=5), "test")
