"""The `agilenn` command: one entry point, subcommands loaded only when used.

Each subcommand is a module with `main(argv) -> int`, so tests call it in-process and a
device install never imports the training stack.
"""

from __future__ import annotations

import importlib
import sys

# subcommand -> (module, extra that provides its dependencies, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str, str]] = {
    "partition": ("partitioner.cli", "train", "train a split and export a bundle"),
    "evaluate": ("commands.evaluate", "device", "measure a bundle on a dataset's test split"),
    "cloud": ("cloud_worker.cli", "cloud", "serve a bundle's remote part on Ray-managed workers"),
    "device": ("device_agent.cli", "device", "run the device agent over a source of inputs"),
    "demo": ("commands.demo", "cloud", "run the whole system on the embedded default"),
    "bench": ("commands.bench", "cloud", "measure the cloud data plane"),
    "certs": ("commands.certs", "cloud", "write a development CA and server and client certificates"),
    "tokens": ("commands.tokens", "cloud", "issue, revoke and list per-device tokens"),
    "firmware": ("firmware.cli", "firmware", "generate, build, run and check the device front as integer C for MCUs"),
    "simulate": ("simulation.cli", "device", "model every scheme's latency, energy and memory on weak devices and links"),
}

# Top-level packages each extra installs; used to name the extra when an import fails.
_EXTRA_PACKAGES = {
    "torch": "train", "onnx": "train", "onnxscript": "train", "captum": "train", "tqdm": "train",
    "onnxruntime": "device", "grpc": "device", "google": "device",
    "ray": "cloud", "grpc_health": "cloud", "grpc_reflection": "cloud", "prometheus_client": "cloud",
    "cryptography": "cloud",
    "matplotlib": "sim",
}


def _usage() -> str:
    width = max(len(name) for name in SUBCOMMANDS)
    lines = ["usage: agilenn <command> [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, _, help_) in SUBCOMMANDS.items()]
    lines += ["", "Run `agilenn <command> --help` for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    if argv[0] == "--version":
        from agilenn import __version__

        print(__version__)
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"agilenn: unknown command {name!r}; commands: {', '.join(SUBCOMMANDS)}", file=sys.stderr)
        return 2
    module_name, extra, _ = SUBCOMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").split(".")[0]
        needed = _EXTRA_PACKAGES.get(missing, extra)
        if missing in _EXTRA_PACKAGES or missing == module_name.split(".")[0]:
            print(f"agilenn {name}: needs {missing!r}, which the '{needed}' extra installs: "
                  f"pip install 'agilenn[{needed}]'", file=sys.stderr)
            return 3
        raise
    try:
        return int(module.main(rest) or 0)
    except _user_errors() as exc:
        print(f"agilenn {name}: error: {exc}", file=sys.stderr)
        return 1


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors that describe bad input: shown as one line, not a traceback."""
    from pydantic import ValidationError

    from agilenn.bundle import BundleError
    from agilenn.codec import PayloadError
    from agilenn.config_files import ConfigFileError, UnknownNameError
    from agilenn.datasets import DatasetUnavailableError

    # no bare KeyError: one from a bug must show its traceback
    return (BundleError, PayloadError, DatasetUnavailableError, ValidationError, FileNotFoundError,
            FileExistsError, ConfigFileError, UnknownNameError)


if __name__ == "__main__":
    sys.exit(main())
