import gzip

import numpy as np
import pytest
from pydantic import ValidationError

pytest.importorskip("torch", reason="needs the train extra (torch)")

from torch import nn

from agilenn.config_files import UnknownNameError
from agilenn.datasets import (
    FASHION_MNIST_DIR_ENV,
    Dataset,
    DatasetUnavailableError,
    available_datasets,
    load_dataset,
    read_idx,
    register_dataset,
    unregister_dataset,
)
from partitioner.model import AgileNN
from partitioner.registry import available_networks, build_network, register_network, unregister_network
from partitioner.testing import tiny_config


@pytest.fixture(autouse=True)
def registries_left_as_found():
    """Whatever a test registers is unregistered after it: later tests see the built-ins only."""
    datasets, networks = set(available_datasets()), set(available_networks())
    yield
    for name in set(available_datasets()) - datasets:
        unregister_dataset(name)
    for name in set(available_networks()) - networks:
        unregister_network(name)


def test_unknown_network_lists_the_registered_ones():
    with pytest.raises(KeyError, match="unknown network 'resnet-9000'.*separable-extractor"):
        build_network("resnet-9000", in_channels=1)


def test_bad_network_arguments_are_named():
    with pytest.raises(TypeError, match="'mlp-head' rejected its arguments"):
        build_network("mlp-head", in_channels=1, num_classes=2, spatial=4, depth=3)


def test_a_user_network_plugs_into_the_config():
    @register_network("test-linear-head")
    class LinearHead(nn.Sequential):
        def __init__(self, in_channels, num_classes, spatial):
            super().__init__(nn.Flatten(), nn.Linear(in_channels * spatial, num_classes))

    config = tiny_config(networks={**tiny_config().networks.model_dump(), "local": {"name": "test-linear-head"}})
    model = AgileNN(config, (1, 16, 16), 4)
    assert isinstance(model.local, LinearHead)
    with pytest.raises(ValueError, match="already registered"):
        register_network("test-linear-head")(LinearHead)


def test_config_errors_name_the_field():
    with pytest.raises(ValidationError, match="init_centroids"):
        tiny_config(quantizer={"levels": 4, "init_centroids": [1.0, 2.0]})
    with pytest.raises(ValidationError, match="unknown_field"):
        tiny_config(unknown_field=1)


def test_local_channels_must_leave_remote_channels():
    with pytest.raises(ValueError, match="local_channels=6"):
        AgileNN(tiny_config(local_channels=6), (1, 16, 16), 4)


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(KeyError, match="unknown dataset 'cifar-7'.*fashion-mnist"):
        load_dataset("cifar-7")


def test_missing_fashion_mnist_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv(FASHION_MNIST_DIR_ENV, str(tmp_path))
    with pytest.raises(DatasetUnavailableError, match="apt-get install -y dataset-fashion-mnist"):
        load_dataset("fashion-mnist")


def _write_idx(path, array):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_read_idx_round_trip_and_truncation(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    _write_idx(tmp_path / "x.idx.gz", images)
    assert np.array_equal(read_idx(tmp_path / "x.idx.gz"), images)
    (tmp_path / "bad.idx").write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 9, 1, 2]))
    with pytest.raises(ValueError, match="promises 9 bytes"):
        read_idx(tmp_path / "bad.idx")


def test_fashion_mnist_loads_from_a_folder_of_idx_files(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 6), ("t10k", 4)):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 255, (n, 28, 28)))
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, n))
    monkeypatch.setenv(FASHION_MNIST_DIR_ENV, str(tmp_path))
    data = load_dataset("fashion-mnist")
    assert data.train.images.shape == (6, 1, 28, 28) and data.test.images.shape == (4, 1, 28, 28)
    assert data.num_classes == 10 and data.labels[9] == "ankle boot"


def test_user_arrays_become_a_dataset():
    data = Dataset.from_arrays(np.random.rand(5, 8, 8), np.arange(5) % 2, np.random.rand(3, 8, 8), np.arange(3) % 2)
    assert data.train.images.dtype == np.uint8 and data.input_shape == (1, 8, 8) and data.num_classes == 2
    register_dataset("test-arrays", lambda: data)
    assert load_dataset("test-arrays") is data
    with pytest.raises(ValueError, match="does not match"):
        Dataset.from_arrays(np.zeros((5, 8, 8)), np.zeros(4), np.zeros((1, 8, 8)), np.zeros(1))


def test_unregistering_takes_a_name_back_and_keeps_the_built_ins():
    data = Dataset.from_arrays(np.zeros((2, 4, 4)), np.arange(2), np.zeros((1, 4, 4)), np.zeros(1))
    register_dataset("test-gone", lambda: data)
    unregister_dataset("test-gone")
    with pytest.raises(UnknownNameError, match="unknown dataset 'test-gone'"):
        load_dataset("test-gone")
    with pytest.raises(UnknownNameError, match="unknown dataset 'test-gone'"):
        unregister_dataset("test-gone")
    with pytest.raises(ValueError, match="built-in"):
        unregister_dataset("digits")

    register_network("test-gone")(nn.Identity)
    unregister_network("test-gone")
    with pytest.raises(UnknownNameError, match="unknown network 'test-gone'"):
        build_network("test-gone")
    with pytest.raises(ValueError, match="built-in"):
        unregister_network("mlp-head")
    register_network("test-gone")(nn.Identity)  # the name is free again


def test_builtin_small_datasets_load():
    digits = load_dataset("digits")
    assert digits.input_shape == (1, 8, 8) and len(digits.train) + len(digits.test) == 1797
    mnist = load_dataset("mnist-5k")
    assert mnist.input_shape == (1, 28, 28) and len(mnist.train) + len(mnist.test) == 5000


def test_the_tests_above_left_nothing_registered():
    # runs last in this file: the registering tests above (a network, a dataset) cleaned up after themselves
    assert not [name for name in available_datasets() + available_networks() if name.startswith("test-")]
