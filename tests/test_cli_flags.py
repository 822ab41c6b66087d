"""The command-line flags come from the config models: a default is written once, in the model."""

import argparse
import inspect
from pathlib import Path

import pytest
from pydantic import BaseModel, Field

from agilenn.cli_flags import DEFAULT_BUNDLE, FieldFlag, add_field_flags, given_fields
from cloud_worker import cli as cloud_cli
from cloud_worker.config import HealthCheckConfig, ServeConfig
from device_agent import cli as device_cli
from device_agent.config import DeviceConfig

ROOT = Path(__file__).resolve().parent.parent

CLOUD_SERVE = (*cloud_cli.SERVE_FLAGS, *cloud_cli.WORKER_FLAGS, *cloud_cli.SECURITY_FLAGS, cloud_cli.REFLECTION_FLAG)
DEVICE_RUN = (*device_cli.AGENT_FLAGS, *device_cli.POLICY_FLAGS, *device_cli.SECURITY_FLAGS)
SUBCOMMANDS = [
    (cloud_cli.build_parser, "serve", CLOUD_SERVE),
    (cloud_cli.build_parser, "health", cloud_cli.HEALTH_FLAGS),
    (device_cli.build_parser, "run", DEVICE_RUN),
    (device_cli.build_parser, "gateway", device_cli.SECURITY_FLAGS),
]


def subparser(build_parser, name: str) -> argparse.ArgumentParser:
    (commands,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return commands.choices[name]


def model_default(flag: FieldFlag):
    return flag.model.model_fields[flag.field].get_default(call_default_factory=True)


@pytest.mark.parametrize(("build_parser", "name", "flags"), SUBCOMMANDS, ids=[s[1] for s in SUBCOMMANDS])
def test_each_flag_is_unset_by_default_and_its_help_shows_the_models_default(build_parser, name, flags):
    """Unset, so that a config file's value stands; the default a user reads is the model's."""
    actions = {a.dest: a for a in subparser(build_parser, name)._actions}
    for flag in flags:
        action = actions[flag.dest]
        assert action.option_strings == [flag.flag]
        assert action.default is None or action.default is False, flag.flag
        default = model_default(flag)
        if default is not None and default is not False and default != "":  # 0 is shown, "nothing" is not
            assert action.help.endswith(f"(default: {default})"), (flag.flag, action.help)


def test_the_cloud_serve_flags_left_out_give_the_models_defaults():
    args = cloud_cli.build_parser().parse_args(["serve", "--bundle", "b"])
    assert cloud_cli.build_config(args) == ServeConfig()


def test_the_device_flags_left_out_give_the_models_defaults():
    run = device_cli.build_parser().parse_args(["run", "--bundle", "b", "--source", "-"])
    assert device_cli.build_config(run) == DeviceConfig()
    gateway = device_cli.build_parser().parse_args(["gateway", "--serial", "tcp:h:1", "--cloud", "127.0.0.1:1"])
    assert device_cli.build_config(gateway) == DeviceConfig(cloud=["127.0.0.1:1"])


def test_the_health_flags_left_out_give_the_models_and_the_probes_defaults():
    args = cloud_cli.build_parser().parse_args(["health"])
    check = HealthCheckConfig.model_validate(given_fields(args, cloud_cli.HEALTH_FLAGS))
    assert check == HealthCheckConfig()
    pytest.importorskip("grpc_health", reason="the health probe needs the cloud extra")
    from cloud_worker.probe import check_health

    # the probe's own defaults, for callers in code, agree
    signature = inspect.signature(check_health).parameters
    assert (signature["service"].default, signature["timeout_s"].default) == (check.service, check.timeout_s)


def test_a_config_files_values_stand_unless_a_flag_is_given(tmp_path):
    path = tmp_path / "device.yaml"
    path.write_text("deadline_ms: 80\nhedge: true\nlocal_confidence_threshold: 0.9\n")
    parse = device_cli.build_parser().parse_args
    from_file = device_cli.build_config(parse(["run", "--bundle", "b", "--source", "-", "--config", str(path)]))
    assert (from_file.deadline_ms, from_file.hedge, from_file.local_confidence_threshold) == (80, True, 0.9)
    flagged = device_cli.build_config(parse(["run", "--bundle", "b", "--source", "-", "--config", str(path),
                                             "--deadline-ms", "30", "--confidence-threshold", "0.5"]))
    assert (flagged.deadline_ms, flagged.hedge, flagged.local_confidence_threshold) == (30, True, 0.5)


def test_a_zero_on_the_command_line_is_given():
    """0 is a value (port 0: free ports), not "not given"."""
    args = cloud_cli.build_parser().parse_args(["serve", "--bundle", "b", "--port", "0", "--max-batch-wait-ms", "0"])
    config = cloud_cli.build_config(args)
    assert (config.port, config.worker.max_batch_wait_ms) == (0, 0.0)
    assert given_fields(args, cloud_cli.SERVE_FLAGS) == {"port": 0}


def test_a_field_without_a_description_has_no_flag():
    class Undescribed(BaseModel):
        retries: int = Field(3)

    with pytest.raises(ValueError, match=r"Undescribed\.retries has no description"):
        add_field_flags(argparse.ArgumentParser(), [FieldFlag(Undescribed, "retries")])


def test_every_command_that_defaults_to_a_bundle_defaults_to_the_committed_one():
    from simulation.cli import _parser

    assert (ROOT / DEFAULT_BUNDLE / "manifest.json").is_file()
    for name in ("fleet", "emulate"):
        assert subparser(_parser, name).get_default("bundle") == DEFAULT_BUNDLE
