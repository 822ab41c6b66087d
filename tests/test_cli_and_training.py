import json

import numpy as np
import pytest
import yaml

pytest.importorskip("torch", reason="needs the train extra (torch)")

from commands import cli
from partitioner.testing import synthetic_dataset, tiny_config
from partitioner.train import CHECKPOINT, Trainer


def test_help_lists_every_command(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in cli.SUBCOMMANDS:
        assert name in out


def test_unknown_command_is_named(capsys):
    assert cli.main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def test_a_missing_extra_is_named(monkeypatch, capsys):
    def fail(name):
        raise ModuleNotFoundError("No module named 'torch'", name="torch")

    monkeypatch.setattr(cli.importlib, "import_module", fail)
    assert cli.main(["partition", "--config", "x.yaml", "--out", "y"]) == 3
    assert "pip install 'agilenn[train]'" in capsys.readouterr().err


def test_an_unknown_dataset_is_one_clear_line(tiny_bundle, capsys):
    assert cli.main(["evaluate", str(tiny_bundle.folder), "--dataset", "cifar-7", "--no-skewness"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("agilenn evaluate: error: unknown dataset 'cifar-7'; known datasets: ")


def test_a_key_error_from_a_bug_is_not_hidden_as_a_user_error(monkeypatch):
    class Broken:
        @staticmethod
        def main(argv):
            return {}["missing"]

    monkeypatch.setattr(cli.importlib, "import_module", lambda name: Broken)
    with pytest.raises(KeyError, match="missing"):
        cli.main(["evaluate", "bundle"])


def test_partition_then_evaluate_in_process(tmp_path, capsys):
    config = tiny_config(dataset="digits", train_limit=300, test_limit=100,
                         networks={**tiny_config().networks.model_dump(),
                                   "local": {"name": "gap-head"}})
    path = tmp_path / "digits.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    out = tmp_path / "bundle"
    assert cli.main(["partition", "--config", str(path), "--out", str(out), "--run-dir", str(tmp_path / "run"),
                     "--quiet"]) == 0
    exported = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert exported["bundle_hash"].startswith("sha256:")

    assert cli.main(["evaluate", str(out), "--json", "--limit", "50"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["samples"] == 50 and report["dataset"] == "digits"
    for key in ("accuracy", "accuracy_local_only", "accuracy_reference", "skewness_trapezoid", "skewness_ig32",
                "payload_bytes_median", "payload_bytes_mean", "raw_input_bytes", "compression_rate", "device_macs"):
        assert report[key] is not None, key
    assert report["raw_input_bytes"] == 64
    assert 0.0 <= report["skewness_ig32"] <= 1.0


def test_partition_refuses_to_overwrite(tmp_path, capsys):
    (tmp_path / "bundle").mkdir()
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tiny_config().model_dump(mode="json")))
    with pytest.raises(SystemExit):
        cli.main(["partition", "--config", str(path), "--out", str(tmp_path / "bundle")])
    assert "--overwrite" in capsys.readouterr().err


def test_training_resumes_from_its_checkpoint(tmp_path):
    data = synthetic_dataset()
    config = tiny_config()
    first = Trainer(config, tmp_path, dataset=data, progress=False)
    first.run()
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["stage"] for line in lines][:3] == ["reference"] * 3
    again = Trainer(config, tmp_path, dataset=data, progress=False)
    assert again.stage == "done"
    # Nothing is retrained: the resumed model equals the saved one.
    for (name, a), (_, b) in zip(first.model.state_dict().items(), again.model.state_dict().items()):
        assert (a == b).all(), name


def test_a_checkpoint_of_another_config_is_refused(tmp_path):
    data = synthetic_dataset()
    Trainer(tiny_config(), tmp_path, dataset=data, progress=False).run()
    assert (tmp_path / CHECKPOINT).exists()
    with pytest.raises(ValueError, match="different config"):
        Trainer(tiny_config(seed=1), tmp_path, dataset=data, progress=False)
    # the name is a label, not a setting: a finished run exports under another one
    assert Trainer(tiny_config(name="tiny-renamed"), tmp_path, dataset=data, progress=False).stage == "done"


def test_a_polish_stage_added_after_training_resumes_from_the_trained_model(tmp_path):
    data = synthetic_dataset()
    Trainer(tiny_config(), tmp_path, dataset=data, progress=False).run()
    polish = {"epochs": 1, "batch_size": 32, "lr": 0.01, "lam": 0.5, "rho": 0.9}
    again = Trainer(tiny_config(polish=polish), tmp_path, dataset=data, progress=False)
    assert again.stage == "polish"
    again.run()
    stages = [json.loads(line)["stage"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert stages.count("polish") == 1 and stages.count("joint") == 2
    # Once polished, the polish settings are part of the checkpoint's identity.
    with pytest.raises(ValueError, match="different config"):
        Trainer(tiny_config(polish={**polish, "lam": 0.4}), tmp_path, dataset=data, progress=False)


def test_a_heads_stage_fits_only_the_predictors_and_leaves_the_payload_as_it_was(tmp_path):
    import torch

    data = synthetic_dataset()
    trained = Trainer(tiny_config(), tmp_path, dataset=data, progress=False)
    trained.run()
    before = {k: v.clone() for k, v in trained.model.state_dict().items()}
    heads = {"epochs": 2, "batch_size": 32, "lr": 0.05, "distill_weight": 1.0}
    again = Trainer(tiny_config(heads=heads), tmp_path, dataset=data, progress=False)
    assert again.stage == "heads"  # a heads stage added after training
    again.run()
    after = again.model.state_dict()
    frozen = [k for k in before if k.startswith(("extractor.", "evaluator.", "quantizer."))]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)
    assert not torch.equal(before["remote.0.weight"], after["remote.0.weight"])
    assert not torch.equal(before["local.1.weight"], after["local.1.weight"])
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if r["stage"] == "heads"] == [1, 2]
    # the test indices' entropy is what the joint stage left (the parameters above say why)
    sent = [r["test_bits_per_symbol"] for r in records if r["stage"] in ("joint", "heads")]
    assert sent[-1] == sent[-3]
    assert Trainer(tiny_config(heads=heads), tmp_path, dataset=data, progress=False).stage == "done"
    with pytest.raises(ValueError, match="different config"):
        Trainer(tiny_config(heads={**heads, "lr": 0.01}), tmp_path, dataset=data, progress=False)


def test_fine_tuning_from_a_config_trains_its_split_first_and_then_reuses_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = tiny_config(name="tiny-base").model_dump(mode="json")
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    data = synthetic_dataset()
    tuned = tiny_config(joint_training={"epochs": 1, "batch_size": 32, "lr": 0.01}, fine_tune_from="base.yaml")
    Trainer(tuned, tmp_path / "runs" / "tiny", dataset=data, progress=False).run()
    stages = [json.loads(line)["stage"] for line in (tmp_path / "runs/tiny-base/metrics.jsonl").read_text().splitlines()]
    assert "reference" in stages and stages[-1] == "done"
    first = json.loads((tmp_path / "runs/tiny/metrics.jsonl").read_text().splitlines()[0])
    assert (first["stage"], first["source"]) == ("fine-tune-start", str(tmp_path / "runs/tiny-base" / CHECKPOINT))
    # a second fine-tune finds the base finished: nothing of it is trained again
    Trainer(tuned, tmp_path / "runs" / "tiny-again", dataset=data, progress=False).run()
    again = [json.loads(line)["stage"] for line in (tmp_path / "runs/tiny-base/metrics.jsonl").read_text().splitlines()]
    assert again.count("reference") == stages.count("reference")
    # a folder holding only the split's exported checkpoint is used as it is
    (tmp_path / "runs/tiny-base" / CHECKPOINT).unlink()
    (tmp_path / "runs/tiny-base/partitioner.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="tiny-base/partitioner.safetensors is not a readable"):
        Trainer(tuned, tmp_path / "runs" / "tiny-third", dataset=data, progress=False)


def test_fine_tuning_from_configs_that_loop_is_refused_by_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name, source in (("a", "b.yaml"), ("b", "a.yaml")):
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(tiny_config(name=name, fine_tune_from=source)
                                                                .model_dump(mode="json")))
    with pytest.raises(ValueError, match=r"fine_tune_from: b.yaml loops back to itself \(.*b.yaml -> .*a.yaml -> "):
        Trainer(tiny_config(fine_tune_from="b.yaml"), tmp_path / "runs" / "tiny", dataset=synthetic_dataset(),
                progress=False)


def test_a_config_extends_its_base_and_states_only_what_differs(tmp_path):
    from partitioner.config import load_config

    base = tiny_config(polish={"epochs": 1, "lr": 0.01, "lam": 0.5}).model_dump(mode="json")
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    (tmp_path / "variants").mkdir()
    variant = tmp_path / "variants" / "l2.yaml"
    variant.write_text("extends: ../base.yaml\nname: tiny-l2\nquantizer: {levels: 2}\n"
                       "joint_training: {epochs: 1}\npolish: null\n")
    config = load_config(variant)
    assert (config.name, config.quantizer.levels, config.polish) == ("tiny-l2", 2, None)
    # mappings merge key by key: the base's other joint settings stay
    assert config.joint_training.epochs == 1 and config.joint_training.rho == base["joint_training"]["rho"]
    (tmp_path / "base.yaml").write_text("extends: variants/l2.yaml\n")
    with pytest.raises(ValueError, match="loops back"):
        load_config(variant)


def test_fine_tuning_starts_from_a_trained_split_and_refits_what_it_reshapes(tmp_path):
    import torch

    data = synthetic_dataset()
    source = Trainer(tiny_config(), tmp_path / "source", dataset=data, progress=False)
    source.run()
    config = tiny_config(name="tiny-l2", quantizer={"levels": 2}, local_channels=3,
                         joint_training={"epochs": 1, "batch_size": 32, "lr": 0.01},
                         fine_tune_from=str(tmp_path / "source"))
    tuned = Trainer(config, tmp_path / "tuned", dataset=data, progress=False)
    # before any step: the source's extractor and evaluator, fresh quantizer and first predictor layers
    for name in ("extractor", "evaluator"):
        for (key, a), (_, b) in zip(getattr(tuned.model, name).state_dict().items(),
                                    getattr(source.model, name).state_dict().items()):
            assert torch.equal(a, b), key
    first = json.loads((tmp_path / "tuned" / "metrics.jsonl").read_text().splitlines()[0])
    assert first["stage"] == "fine-tune-start" and first["fresh_parameters"] == ["quantizer.gap_logits"]
    assert first["resized_parameters"] == ["local.1.weight", "remote.0.weight"]
    # one more local channel, its weights at zero: the local head starts as the source's
    features = source.model.extractor.eval()(tuned.test_x[:16])
    with torch.no_grad():
        np.testing.assert_allclose(tuned.model.local.eval()(features[:, :3]).numpy(),
                                   source.model.local.eval()(features[:, :2]).numpy(), rtol=1e-5, atol=1e-5)
        # the remote head keeps the weights of the channels both splits offload
        assert torch.equal(tuned.model.remote[0].weight, source.model.remote[0].weight[:, 1:])
    centroids = tuned.model.quantizer.centroids()
    assert len(centroids) == 2 and 0 < centroids[0] < centroids[1] < 6  # k-means over the features, in order
    tuned.run()
    stages = [json.loads(line)["stage"] for line in (tmp_path / "tuned" / "metrics.jsonl").read_text().splitlines()]
    assert "reference" not in stages and "remap" not in stages and stages.count("joint") == 1


def test_fine_tuning_refuses_a_source_it_cannot_start_from(tmp_path):
    data = synthetic_dataset()
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        Trainer(tiny_config(fine_tune_from=str(tmp_path / "missing")), tmp_path / "a", dataset=data, progress=False)
    Trainer(tiny_config(), tmp_path / "source", dataset=data, progress=False).run()
    wider = tiny_config(networks={**tiny_config().networks.model_dump(),
                                  "extractor": {"name": "separable-extractor", "args": {"out_channels": 8, "width": 8}}},
                        fine_tune_from=str(tmp_path / "source"))
    with pytest.raises(ValueError, match="another extractor"):
        Trainer(wider, tmp_path / "b", dataset=data, progress=False)
    with pytest.raises(ValueError, match="mean"):
        Trainer(tiny_config(mean=0.5, fine_tune_from=str(tmp_path / "source")), tmp_path / "c", dataset=data,
                progress=False)


def test_a_checkpoint_from_before_a_setting_existed_still_resumes(tmp_path):
    import torch

    data = synthetic_dataset()
    Trainer(tiny_config(), tmp_path, dataset=data, progress=False).run()
    state = torch.load(tmp_path / CHECKPOINT, weights_only=False)
    del state["config"]["fine_tune_from"], state["config"]["quantizer"]["learn_centroids"]
    torch.save(state, tmp_path / CHECKPOINT)
    assert Trainer(tiny_config(), tmp_path, dataset=data, progress=False).stage == "done"


def test_fixed_centroids_stay_where_k_means_put_them(tmp_path):
    data = synthetic_dataset()
    Trainer(tiny_config(), tmp_path / "source", dataset=data, progress=False).run()
    config = tiny_config(name="fixed", quantizer={"levels": 4, "learn_centroids": False},
                         joint_training={"epochs": 1, "batch_size": 32, "lr": 0.05},
                         fine_tune_from=str(tmp_path / "source"))
    tuned = Trainer(config, tmp_path / "tuned", dataset=data, progress=False)
    start = tuned.model.quantizer.centroids().detach().clone()
    first = json.loads((tmp_path / "tuned" / "metrics.jsonl").read_text().splitlines()[0])
    assert first["centroids"] == [round(c, 4) for c in start.tolist()]  # refitted although the shape matches
    tuned.run()
    assert (tuned.model.quantizer.centroids().detach() == start).all()


def test_configured_centroids_win_over_the_source_when_fine_tuning(tmp_path):
    data = synthetic_dataset()
    Trainer(tiny_config(), tmp_path / "source", dataset=data, progress=False).run()
    config = tiny_config(quantizer={"levels": 4, "init_centroids": [0.5, 1.5, 3.0, 5.0], "learn_centroids": False},
                         fine_tune_from=str(tmp_path / "source"))
    tuned = Trainer(config, tmp_path / "tuned", dataset=data, progress=False)
    assert [round(c, 4) for c in tuned.model.quantizer.centroids().tolist()] == [0.5, 1.5, 3.0, 5.0]


def test_joint_settings_may_change_until_joint_training_takes_a_step(tmp_path):
    import torch

    data = synthetic_dataset()
    first = Trainer(tiny_config(), tmp_path, dataset=data, progress=False)
    first._train_reference()
    first._remap()  # saved at the start of the joint stage, before any joint step
    changed = tiny_config(quantizer={"levels": 3}, joint_training={"epochs": 1, "batch_size": 32, "rate_weight": 0.1},
                          networks={**tiny_config().networks.model_dump(), "remote": {"name": "conv-head",
                                                                                       "args": {"widths": [8]}}})
    resumed = Trainer(changed, tmp_path, dataset=data, progress=False)
    assert (resumed.stage, resumed.epoch, resumed.model.quantizer.levels) == ("joint", 0, 3)
    for name, value in first.model.extractor.state_dict().items():
        assert torch.equal(resumed.model.extractor.state_dict()[name], value), name
    # the k-means levels were fitted again, for three levels
    assert len(resumed.model.quantizer.centroids()) == 3
    with pytest.raises(ValueError, match="different config"):
        Trainer(tiny_config(reference_training={"epochs": 4, "batch_size": 32, "lr": 0.05}), tmp_path, dataset=data,
                progress=False)
    resumed.run()  # joint training has now taken its steps: its settings are fixed
    with pytest.raises(ValueError, match="different config"):
        Trainer(tiny_config(quantizer={"levels": 3}), tmp_path, dataset=data, progress=False)
