"""Every YAML loader reads through agilenn.config_files: errors name the file and the field."""

import pytest
import yaml

from agilenn.config_files import ConfigFileError
from commands import cli


def test_a_cloud_config_holding_a_list_is_one_line_naming_the_file(tmp_path, capsys):
    path = tmp_path / "cloud.yaml"
    path.write_text("- workers: 2\n")
    assert cli.main(["cloud", "serve", "--bundle", str(tmp_path), "--config", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err and "is a YAML mapping" in err


def test_cloud_config_errors_name_the_file_and_field(tmp_path):
    from argparse import Namespace

    from cloud_worker.cli import build_config, build_parser

    # every flag at its default (none given), so that a new flag needs no change here
    flags = vars(build_parser().parse_args(["serve", "--bundle", "unused"]))
    del flags["config"]
    path = tmp_path / "cloud.yaml"
    path.write_text("workers: 3\nworker: {max_batch_size: 0}\n")
    with pytest.raises(ConfigFileError, match=r"cloud\.yaml: invalid cloud config: worker\.max_batch_size: "):
        build_config(Namespace(config=str(path), **flags))
    path.write_text("workers: 3\nworker: {max_batch_size: 4}\n")
    config = build_config(Namespace(config=str(path), **{**flags, "max_batch_wait_ms": 2.0}))
    assert (config.workers, config.worker.max_batch_size, config.worker.max_batch_wait_ms) == (3, 4, 2.0)
    path.write_text("")
    assert build_config(Namespace(config=str(path), **flags)).workers == 2


def test_device_config_errors_name_the_file_and_field(tmp_path):
    from device_agent.config import load_device_config

    path = tmp_path / "device.yaml"
    path.write_text("deadline_ms: -1\n")
    with pytest.raises(ConfigFileError, match=r"device\.yaml: invalid device config: deadline_ms: "):
        load_device_config(path)
    path.write_text("[1, 2]\n")
    with pytest.raises(ConfigFileError, match=r"device\.yaml: a device config is a YAML mapping"):
        load_device_config(path)
    with pytest.raises(ConfigFileError, match="not found"):
        load_device_config(tmp_path / "none.yaml")


def test_partition_config_errors_name_the_file_and_field(tmp_path):
    from partitioner.config import load_config
    from partitioner.testing import tiny_config

    data = tiny_config().model_dump(mode="json")
    data["quantizer"]["levels"] = "many"
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(data))
    path = tmp_path / "variant.yaml"
    path.write_text("extends: base.yaml\nname: v\n")
    with pytest.raises(ConfigFileError, match=r"variant\.yaml: invalid config: quantizer\.levels: "):
        load_config(path)
    path.write_text("extends: missing.yaml\n")
    with pytest.raises(ConfigFileError, match=r"missing\.yaml not found \(extended by .*variant\.yaml\)"):
        load_config(path)


def test_baseline_config_errors_name_the_file_and_field(tmp_path):
    pytest.importorskip("torch", reason="the baselines need the train extra (torch)")
    from partitioner.baselines import load_baseline_config

    path = tmp_path / "baseline.yaml"
    path.write_text("name: b\nkind: teleport\n")
    with pytest.raises(ConfigFileError, match=r"baseline\.yaml: invalid baseline config: .*kind: "):
        load_baseline_config(path)
    path.write_text("just text\n")
    with pytest.raises(ConfigFileError, match="is a YAML mapping"):
        load_baseline_config(path)


def test_a_profile_error_is_a_config_file_error(tmp_path):
    from simulation.profiles import ProfileError, load_link

    assert issubclass(ProfileError, ConfigFileError)
    path = tmp_path / "link.yaml"
    path.write_text("name: l\n")
    with pytest.raises(ConfigFileError, match=r"link\.yaml: invalid profile: "):
        load_link(path)


def test_a_device_config_file_and_the_flags_are_validated_together(tmp_path):
    """A container's config file may name the client certificate while its command line gives the CA."""
    from agilenn.config_files import ConfigFileError
    from device_agent.cli import build_config, build_parser

    path = tmp_path / "device.yaml"
    path.write_text("cloud: ['agilenn-cloud:50051']\ncert_file: /etc/agilenn/client.pem\nkey_file: /k\n")
    args = build_parser().parse_args(["run", "--bundle", "b", "--source", "-", "--config", str(path),
                                      "--ca", "/etc/agilenn/ca.pem"])
    config = build_config(args)
    assert config.ca_file == "/etc/agilenn/ca.pem" and config.cert_file == "/etc/agilenn/client.pem"
    without_ca = build_parser().parse_args(["run", "--bundle", "b", "--source", "-", "--config", str(path)])
    with pytest.raises(ConfigFileError, match="give ca_file"):
        build_config(without_ca)
