"""A bundle's checkpoint cannot run code when loaded, and a damaged one is refused by name."""

import copy
import pickle
import re
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="needs the train extra (torch)")

from agilenn.bundle import Bundle
from partitioner.analysis import load_checkpoint
from partitioner.checkpoint import (
    BUNDLE_CHECKPOINT,
    CheckpointError,
    load_bundle_checkpoint,
    load_run_checkpoint,
    save_bundle_checkpoint,
)
from partitioner.splits import load_reference
from partitioner.testing import synthetic_dataset, tiny_config
from partitioner.train import CHECKPOINT, Trainer


class CreatesFile:
    """Unpickling this creates `path`: what a malicious checkpoint could do instead."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


@pytest.fixture
def bundle_copy(trained_tiny_bundle, tmp_path):
    folder = tmp_path / "bundle"
    shutil.copytree(trained_tiny_bundle.folder, folder)
    return folder


def test_the_bundle_checkpoint_is_safetensors_and_round_trips(trained_tiny_bundle, tmp_path):
    assert trained_tiny_bundle.manifest.files["checkpoint"] == BUNDLE_CHECKPOINT
    model, config = load_checkpoint(trained_tiny_bundle.folder / BUNDLE_CHECKPOINT)
    reference_extractor = copy.deepcopy(model.extractor)
    with torch.no_grad():
        for p in reference_extractor.parameters():
            p.add_(1.0)
    name = save_bundle_checkpoint(tmp_path, model, reference_extractor, config, (1, 16, 16), 4)
    state = load_bundle_checkpoint(tmp_path / name)
    assert (state["input_shape"], state["num_classes"], state["config"]) == ([1, 16, 16], 4,
                                                                              config.model_dump(mode="json"))
    for part, module in (("model", model), ("reference_extractor", reference_extractor)):
        assert state[part].keys() == module.state_dict().keys()
        for key, tensor in module.state_dict().items():
            assert torch.equal(state[part][key], tensor) and state[part][key].dtype == tensor.dtype


@pytest.mark.parametrize("writer", ["pickle", "torch"])
def test_a_pickle_in_place_of_the_checkpoint_is_refused_without_running(bundle_copy, tmp_path, writer):
    marker = tmp_path / "payload-ran"
    path = bundle_copy / BUNDLE_CHECKPOINT
    if writer == "pickle":
        path.write_bytes(pickle.dumps({"model": CreatesFile(marker)}))
    else:
        torch.save({"model": CreatesFile(marker)}, path)
    Bundle(bundle_copy)  # the checkpoint is outside the hash: the bundle itself still loads
    for load in (load_checkpoint, load_reference):
        with pytest.raises(CheckpointError, match=f"{re.escape(str(path))} is not a readable safetensors checkpoint"):
            load(path)
    with pytest.raises(CheckpointError, match="not a readable safetensors checkpoint"):
        Trainer(tiny_config(fine_tune_from=str(bundle_copy)), tmp_path / "run", dataset=synthetic_dataset(),
                progress=False)
    assert not marker.exists()


def test_a_truncated_checkpoint_is_refused_by_name(bundle_copy):
    path = bundle_copy / BUNDLE_CHECKPOINT
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=f"{re.escape(str(path))} is not a readable safetensors checkpoint"):
        load_checkpoint(path)
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match=f"{re.escape(str(path))} is not a readable safetensors checkpoint"):
        load_checkpoint(path)


def test_a_safetensors_file_of_something_else_is_refused(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / BUNDLE_CHECKPOINT
    save_file({"weight": torch.zeros(2)}, str(path))
    with pytest.raises(CheckpointError, match="not an agilenn checkpoint"):
        load_bundle_checkpoint(path)


def test_a_run_checkpoint_holding_code_is_refused_without_running(tmp_path):
    marker = tmp_path / "payload-ran"
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"config": {}, "optimiser": CreatesFile(marker)}, run / CHECKPOINT)
    with pytest.raises(CheckpointError, match=re.escape(f"{run / CHECKPOINT} was not loaded: it is not a torch checkpoint")):
        load_run_checkpoint(run / CHECKPOINT)
    with pytest.raises(CheckpointError, match=r"GLOBAL \w+\.open was not an allowed global"):
        Trainer(tiny_config(), run, dataset=synthetic_dataset(), progress=False)
    assert not marker.exists()


def test_a_torch_pickle_checkpoint_is_refused_and_never_unpickled(bundle_copy):
    state = load_bundle_checkpoint(bundle_copy / BUNDLE_CHECKPOINT)
    torch.save(state, bundle_copy / "partitioner.pt")
    with pytest.raises(CheckpointError, match="not loaded any other way, since unpickling could run code; export"):
        load_checkpoint(bundle_copy / "partitioner.pt")

