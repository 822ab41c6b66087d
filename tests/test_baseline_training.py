"""The local-only family's network and the baseline trainer's per-epoch checkpoints."""

import json

import pytest

torch = pytest.importorskip("torch", reason="the baselines need the train extra (torch)")

from partitioner.baselines import CHECKPOINT, BaselineConfig, load_baseline_config, train
from partitioner.layers import count_macs
from partitioner.registry import build_network
from partitioner.testing import synthetic_dataset

FAMILY = ["local-0.4m", "local-2m", "local-5m", "local-21m"]


def _config(epochs: int, **overrides) -> BaselineConfig:
    return BaselineConfig(**{
        "name": "ir-tiny", "kind": "local-only", "dataset": "synthetic", "mean": 0.2, "std": 0.3,
        "augment": {"max_shift_px": 1, "horizontal_flip": False},
        "network": [{"name": "inverted-residual-net",
                     "args": {"stem": 4, "stages": [[1, 8, 1, 2], [2, 8, 2, 1]], "head": 16}}],
        "training": {"epochs": epochs, "batch_size": 32, "lr": 0.05}, **overrides})


def test_inverted_residual_blocks_skip_only_where_shapes_match():
    net = build_network("inverted-residual-net", in_channels=1, num_classes=10,
                        stem=4, stages=[[1, 8, 1, 2], [2, 8, 2, 1]], head=16)
    blocks = [m for m in net.modules() if type(m).__name__ == "InvertedResidual"]
    assert [b.skip for b in blocks] == [False, True, True]  # 4->8 strided, then 8->8 twice at stride 1
    assert net(torch.zeros(3, 1, 32, 32)).shape == (3, 10)


def test_the_cluttered_local_family_spans_the_issues_range_of_macs():
    example = torch.zeros(1, 1, 96, 96)
    macs = []
    for name in FAMILY:
        config = load_baseline_config(f"configs/cluttered-baselines/{name}.yaml")
        assert config.kind == "local-only" and config.dataset == "cluttered-fashion-mnist"
        (spec,) = config.network
        net = build_network(spec.name, in_channels=1, num_classes=10, spatial=96 * 96, **spec.args)
        macs.append(count_macs(net, example))
    assert macs == sorted(macs)
    assert macs[0] < 0.5e6 and macs[-1] >= 20e6  # about 0.3 M to at least 20 M


def test_a_stopped_baseline_resumes_at_its_next_epoch_and_ends_where_an_unbroken_run_does(tmp_path, monkeypatch):
    from partitioner import baselines

    dataset = synthetic_dataset()
    torch.set_num_threads(1)
    config = _config(2, network=[{"name": "inverted-residual-net", "args": {
        "stem": 4, "stages": [[1, 8, 1, 2], [2, 8, 2, 1]], "head": 16, "dropout": 0.0}}])
    whole, _ = train(config, tmp_path / "whole", dataset)

    epochs_run = []
    real_epoch = baselines.supervised_epoch

    def stop_in_second_epoch(*args):
        if epochs_run:
            raise KeyboardInterrupt  # the machine stops mid-epoch
        epochs_run.append(1)
        return real_epoch(*args)

    monkeypatch.setattr(baselines, "supervised_epoch", stop_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "stopped", dataset)
    assert (tmp_path / "stopped" / CHECKPOINT).exists()
    monkeypatch.setattr(baselines, "supervised_epoch", real_epoch)
    resumed, _ = train(config, tmp_path / "stopped", dataset)

    lines = (tmp_path / "stopped" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.allclose(a.float(), b.float()), name


def test_a_checkpoint_of_another_config_is_refused(tmp_path):
    dataset = synthetic_dataset()
    train(_config(1), tmp_path, dataset)
    with pytest.raises(ValueError, match="another config"):
        train(_config(1, training={"epochs": 1, "batch_size": 16, "lr": 0.05}), tmp_path, dataset)


@pytest.mark.parametrize("head", [
    {"name": "conv-head", "args": {"widths": [8, 8], "strides": [1, 2], "pool": "flatten", "dropout": 0.2}},
    {"name": "mlp-head", "args": {"hidden": 8}},
])
def test_a_remote_head_started_from_the_reference_head_is_it_without_the_local_channels(head):
    from partitioner.train import offloaded_head

    channels, k, side = 6, 2, 5
    reference = build_network(head["name"], in_channels=channels, num_classes=4, spatial=side * side, **head["args"])
    remote = build_network(head["name"], in_channels=channels - k, num_classes=4, spatial=side * side, **head["args"])
    for module in reference.modules():  # batch-norm statistics other than the defaults
        if isinstance(module, torch.nn.BatchNorm1d | torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
    remote.load_state_dict(offloaded_head(reference.state_dict(), remote.state_dict(), k, channels))
    features = torch.rand(3, channels, side, side)
    features[:, :k] = 0  # what the remote head does not see
    reference.eval(), remote.eval()
    assert torch.allclose(remote(features[:, k:]), reference(features), atol=1e-5)


def test_a_remote_head_unlike_the_reference_head_is_refused_at_config_time():
    from partitioner.config import PartitionConfig
    from partitioner.testing import tiny_config

    data = tiny_config().model_dump(mode="json")
    data["joint_training"]["remote_init"] = "reference"
    PartitionConfig.model_validate(data)  # the tiny config's heads are alike
    data["networks"]["remote"]["args"] = {**data["networks"]["remote"]["args"], "dropout": 0.5}
    with pytest.raises(ValueError, match="networks.remote to equal networks.reference"):
        PartitionConfig.model_validate(data)


def test_the_patch_extractor_reduces_each_side_by_its_patch_with_long_inner_products():
    from partitioner.layers import layer_table

    net = build_network("patch-extractor", in_channels=1, out_channels=16, patch=4, multiplier=24)
    x = torch.zeros(2, 1, 96, 96)
    assert net(x).shape == (2, 16, 24, 24)
    rows = layer_table(net, x)
    assert [r["inner"] for r in rows] == [16, 24]  # 4x4 on one channel, then 24 -> 16 pointwise
    assert sum(r["macs"] for r in rows) == 16 * 24 * 576 + 24 * 16 * 576
