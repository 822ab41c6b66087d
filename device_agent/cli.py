"""`agilenn device run`: the device agent as a daemon over a source of inputs.

Writes one JSON line per input to the sink (a file, or `-` for standard output) and
structured logs to standard error; exits when the source is exhausted (`--source -`
keeps reading standard input until it closes).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

from agilenn.bundle import Bundle
from agilenn.cli_flags import FieldFlag, add_field_flags, client_tls_flags, given_fields
from agilenn.config_files import read_yaml_mapping, validate_mapping
from device_agent.agent import DeviceAgent
from device_agent.config import DeviceConfig
from device_agent.sources import SourceError, iter_source

log = logging.getLogger("agilenn.device")


class JsonLogFormatter(logging.Formatter):
    """One JSON object per record; a record logged with `extra={"fields": {...}}` carries those fields
    too, so that what watches the device reads them rather than its message text."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"ts": round(record.created, 3), "level": record.levelname.lower(), "logger": record.name,
                 "msg": record.getMessage(), **getattr(record, "fields", {})}
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup_logging(fmt: str, level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLogFormatter() if fmt == "json" else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


AGENT_FLAGS = (
    FieldFlag(DeviceConfig, "deadline_ms"),
    FieldFlag(DeviceConfig, "precision"),
    FieldFlag(DeviceConfig, "local_confidence_threshold", "--confidence-threshold"),
    FieldFlag(DeviceConfig, "logits_codec"),
)
POLICY_FLAGS = (
    FieldFlag(DeviceConfig, "offload_min_on_time_probability", "--min-on-time-probability"),
    FieldFlag(DeviceConfig, "silence_s"),
    FieldFlag(DeviceConfig, "hedge"),
)
SECURITY_FLAGS = client_tls_flags(DeviceConfig, token=True)  # `device run` and `device gateway` alike


def build_config(args: argparse.Namespace) -> DeviceConfig:
    """The config file's fields with the flags over them, validated together: a file may hold a client
    certificate whose CA comes by flag, as a container's command line gives it. A flag the subcommand
    lacks counts as not given."""
    data = read_yaml_mapping(args.config, "device config", empty_ok=True) if args.config else {}
    if args.cloud:
        data["cloud"] = [address for value in args.cloud for address in value.split(",") if address]
    data.update(given_fields(args, (*AGENT_FLAGS, *POLICY_FLAGS, *SECURITY_FLAGS)))
    return validate_mapping(DeviceConfig, data, args.config or "the command line", "device config")


def build_parser() -> argparse.ArgumentParser:
    """The `agilenn device` parser; the deployment files' command lines are checked against it."""
    parser = argparse.ArgumentParser(prog="agilenn device", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the agent over a source of inputs")
    run.add_argument("--bundle", required=True, help="bundle folder (holds manifest.json)")
    run.add_argument("--cloud", action="append", default=[],
                     help="worker address host:port (repeat or comma-separate); none: answer locally")
    run.add_argument("--source", required=True,
                     help="a .npy file, a directory of .npy files, an IDX file (.idx, *-ubyte, or gzipped: .gz), "
                          "or - for .npy arrays on stdin")
    run.add_argument("--sink", default="-", help="JSONL file to write results to, or - for stdout (default)")
    run.add_argument("--config", help="device config file (YAML or JSON with DeviceConfig fields)")
    add_field_flags(run, AGENT_FLAGS)
    add_field_flags(run.add_argument_group("offload policy"), POLICY_FLAGS)
    add_field_flags(run.add_argument_group("security"), SECURITY_FLAGS)
    run.add_argument("--wait-ready-s", type=float, default=5.0,
                     help="wait this long for a worker before the first input (answers are local meanwhile)")
    run.add_argument("--log-format", choices=("text", "json"), default="json")
    run.add_argument("--log-level", default="info")

    gateway = commands.add_parser("gateway", help="be a microcontroller's radio: its PAYLOAD frames on a serial "
                                                  "line to the workers, their answers back (docs/serial.md)")
    gateway.add_argument("--serial", required=True,
                         help="tcp:HOST:PORT (an emulated board's line), a device such as /dev/ttyUSB0, or a pyserial URL")
    gateway.add_argument("--baud", type=int, default=115200, help="for a real serial port")
    gateway.add_argument("--cloud", action="append", default=[], required=True,
                         help="worker address host:port (repeat or comma-separate)")
    gateway.add_argument("--logits", choices=("f32", "q8"), default="f32",
                         help="how the remote logits travel, from the workers (raw-f32le or q8-v1) and in LOGITS "
                              "frames: float32, or int8 with a scale")
    gateway.add_argument("--forward-timeout-s", type=float, default=2.0,
                         help="how long to wait for a worker's answer before leaving it to the board's deadline")
    gateway.add_argument("--config", help="device config file (its link, TLS and token fields apply)")
    add_field_flags(gateway.add_argument_group("security"), SECURITY_FLAGS)
    gateway.add_argument("--log-format", choices=("text", "json"), default="json")
    gateway.add_argument("--log-level", default="info")
    return parser


def gateway_main(args: argparse.Namespace) -> int:
    import threading

    from agilenn.serial_frames import LogitsEncoding
    from device_agent.gateway import Gateway, open_serial

    args.logits_codec = "q8-v1" if args.logits == "q8" else None
    config = build_config(args)
    try:
        port = open_serial(args.serial, args.baud)
    except (ValueError, OSError) as exc:
        log.error("cannot open the serial line %s: %s", args.serial, exc)
        return 1
    encoding = LogitsEncoding.Q8 if args.logits == "q8" else LogitsEncoding.F32
    gateway = Gateway(port, config, encoding, args.forward_timeout_s)
    stop = threading.Event()
    log.info("gateway on %s to %s", args.serial, ", ".join(config.cloud))
    try:
        gateway.serve(stop)
    except KeyboardInterrupt:
        log.info("interrupted")
    except OSError as exc:
        log.error("the serial line %s failed: %s", args.serial, exc)
        return 1
    finally:
        gateway.close()
        port.close()
    log.info("forwarded %d payloads: %d answered, %d refused, %d left to the board's deadline",
             gateway.stats.payloads, gateway.stats.answered, gateway.stats.refused, gateway.stats.silent)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    setup_logging(args.log_format, args.log_level)
    if args.command == "gateway":
        return gateway_main(args)
    config = build_config(args)
    bundle = Bundle(args.bundle)
    shape = bundle.manifest.input.shape
    sources: Counter[str] = Counter()
    started = time.perf_counter()
    with DeviceAgent(bundle, config) as agent, ExitStack() as closing:
        sink = sys.stdout if args.sink == "-" else closing.enter_context(open(Path(args.sink), "w"))
        if config.cloud and not agent.wait_ready(args.wait_ready_s):
            log.warning("no worker reachable after %.1f s; answering locally until one is", args.wait_ready_s)
        try:
            for result in agent.run(iter_source(args.source, shape)):
                sink.write(json.dumps(result.to_json()) + "\n")
                if args.sink == "-":
                    sink.flush()
                sources[result.source] += 1
        except SourceError as exc:
            log.error("%s", exc)
            return 1
        except KeyboardInterrupt:
            log.info("interrupted")
        links = agent.link_stats()
        counts = agent.policy_counts
        silent = agent.silent_links_taken_out
    elapsed = time.perf_counter() - started
    total = sum(sources.values())
    log.info("answered %d inputs in %.2f s: %s", total, elapsed,
             ", ".join(f"{count} {source}" for source, count in sorted(sources.items())) or "none")
    if config.cloud:
        log.info("offload policy: %d predicted_late, %d hedged, %d explored, %d silent links taken out",
                 counts.predicted_late, counts.hedged, counts.explored, silent)
        for link in links:
            log.info("link %s", json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in link.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
