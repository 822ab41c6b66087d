"""`agilenn cloud serve`: serve a bundle's remote part on N Ray-managed gRPC workers.

Starts a local Ray in-process (the embedded default) or joins a cluster with
--ray-address, prints the worker endpoints, and serves until interrupted (Ctrl-C or
SIGTERM), then drains in-flight requests and stops. --tls-cert/--tls-key serve TLS
(--client-ca: mutual TLS), --tokens requires a device token on every call (SIGHUP or a
change to the file reloads it); plaintext off loopback needs --insecure.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from agilenn.cli_flags import FieldFlag, add_field_flags, client_tls_flags, given_fields
from agilenn.config_files import read_yaml_mapping, validate_mapping
from cloud_worker.config import (
    HealthCheckConfig,
    ServeConfig,
    WorkerConfig,
    check_serving_security,
)

log = logging.getLogger("agilenn.cloud")


WORKER_FLAGS = tuple(FieldFlag(WorkerConfig, field) for field in (
    "max_batch_size", "max_batch_wait_ms", "max_queue_requests", "max_message_bytes", "drain_timeout_s",
    "max_owed_answers", "max_concurrent_rpcs", "max_concurrent_streams", "metrics_port"))
SERVE_FLAGS = tuple(FieldFlag(ServeConfig, field) for field in (
    "workers", "host", "port", "ray_address", "cpus_per_worker"))
SECURITY_FLAGS = (
    FieldFlag(ServeConfig, "tls_cert_file", "--tls-cert", "FILE"),
    FieldFlag(ServeConfig, "tls_key_file", "--tls-key", "FILE"),
    FieldFlag(ServeConfig, "client_ca_file", "--client-ca", "FILE"),
    FieldFlag(ServeConfig, "tokens_file", "--tokens", "FILE"),
    FieldFlag(ServeConfig, "insecure"),
)
REFLECTION_FLAG = FieldFlag(WorkerConfig, "reflection")  # a worker's, shown with the security flags
HEALTH_FLAGS = (FieldFlag(HealthCheckConfig, "address"), *client_tls_flags(HealthCheckConfig),
                FieldFlag(HealthCheckConfig, "service"), FieldFlag(HealthCheckConfig, "timeout_s"))


def build_config(args: argparse.Namespace) -> ServeConfig:
    data: dict = {}
    if args.config:
        data = read_yaml_mapping(args.config, "cloud config", empty_ok=True)
        # the file alone first, so that its errors name the file; the flags are checked below
        data = validate_mapping(ServeConfig, data, args.config, "cloud config").model_dump(exclude_unset=True)
    worker = {**data.get("worker", {}), **given_fields(args, (*WORKER_FLAGS, REFLECTION_FLAG))}
    data["worker"] = WorkerConfig.model_validate(worker).model_dump()
    data.update(given_fields(args, (*SERVE_FLAGS, *SECURITY_FLAGS)))
    config = ServeConfig.model_validate(data)
    check_serving_security(config)  # refuse an exposed plaintext service before anything starts
    return config


def token_reload_handler(reload_tokens):
    """A SIGHUP handler that asks for the token file to be reloaded; the work happens off the handler."""
    def handler(_signum, _frame) -> None:
        log.info("SIGHUP: reloading the token file")
        reload_tokens()

    return handler


def build_parser() -> argparse.ArgumentParser:
    """The `agilenn cloud` parser; the deployment files' command lines are checked against it."""
    parser = argparse.ArgumentParser(prog="agilenn cloud", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve a bundle until interrupted")
    serve.add_argument("--bundle", required=True, help="bundle folder (holds manifest.json)")
    add_field_flags(serve, SERVE_FLAGS)
    add_field_flags(serve, WORKER_FLAGS)
    serve.add_argument("--config", help="YAML/JSON file with ServeConfig fields (flags override it)")
    security = serve.add_argument_group(
        "security", "the files are read here and handed to the workers through Ray: other nodes need no copy")
    add_field_flags(security, (*SECURITY_FLAGS, REFLECTION_FLAG))
    health = commands.add_parser("health", help="exit 0 when a worker's gRPC health service says it serves "
                                                "(a readiness probe that speaks TLS)")
    add_field_flags(health, HEALTH_FLAGS)
    return parser


def probe(args: argparse.Namespace) -> int:
    from cloud_worker.probe import check_health

    check = HealthCheckConfig.model_validate(given_fields(args, HEALTH_FLAGS))
    serving, seen = check_health(check.address, check.ca_file, check.cert_file, check.key_file,
                                 check.tls_server_name, check.service, check.timeout_s)
    print(seen, file=sys.stdout if serving else sys.stderr)
    return 0 if serving else 1


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "health":
        return probe(args)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = build_config(args)

    from cloud_worker.service import CloudService

    service = CloudService(args.bundle, config)
    stop = threading.Event()
    endpoints = service.start()
    # after Ray's start, which installs its own crash handler for SIGTERM
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    if config.tokens_file is not None:
        signal.signal(signal.SIGHUP, token_reload_handler(service.reload_tokens))
    for worker in service.workers:
        metrics = f", metrics on :{worker['metrics_port']}" if worker.get("metrics_port") else ""
        log.info("%s serving at %s (pid %s%s)", worker["worker_id"], worker["endpoint"], worker["pid"], metrics)
    print(" ".join(endpoints), flush=True)
    try:
        stop.wait()
    finally:
        log.info("draining and stopping")
        service.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
