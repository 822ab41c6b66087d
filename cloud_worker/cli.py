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

from agilenn.config_files import read_yaml_mapping, validate_mapping
from cloud_worker.config import ServeConfig, WorkerConfig, check_serving_security

log = logging.getLogger("agilenn.cloud")


def build_config(args: argparse.Namespace) -> ServeConfig:
    data: dict = {}
    if args.config:
        data = read_yaml_mapping(args.config, "cloud config", empty_ok=True)
        # the file alone first, so that its errors name the file; the flags are checked below
        data = validate_mapping(ServeConfig, data, args.config, "cloud config").model_dump(exclude_unset=True)
    worker = dict(data.get("worker", {}))
    for field in ("max_batch_size", "max_batch_wait_ms", "max_queue_requests", "metrics_port", "max_message_bytes",
                  "drain_timeout_s", "max_owed_answers", "max_concurrent_rpcs", "max_concurrent_streams"):
        value = getattr(args, field)
        if value is not None:
            worker[field] = value
    if args.reflection:
        worker["reflection"] = True
    data["worker"] = WorkerConfig.model_validate(worker).model_dump()
    for field in ("workers", "host", "port", "ray_address", "cpus_per_worker"):
        value = getattr(args, field)
        if value is not None:
            data[field] = value
    for flag, field in (("tls_cert", "tls_cert_file"), ("tls_key", "tls_key_file"), ("client_ca", "client_ca_file"),
                        ("tokens", "tokens_file")):
        value = getattr(args, flag)
        if value is not None:
            data[field] = value
    if args.insecure:
        data["insecure"] = True
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
    serve.add_argument("--workers", type=int, default=None, help="worker actors (default 2)")
    serve.add_argument("--host", default=None, help="address workers bind (default 127.0.0.1; 0.0.0.0 for other machines)")
    serve.add_argument("--port", type=int, default=None, help="worker i listens on PORT+i (default 50051; 0: free ports)")
    serve.add_argument("--ray-address", default=None, help="join this Ray cluster instead of starting a local one")
    serve.add_argument("--cpus-per-worker", type=float, default=None, help="Ray CPUs each worker holds (default 1)")
    serve.add_argument("--max-batch-size", type=int, default=None)
    serve.add_argument("--max-batch-wait-ms", type=float, default=None)
    serve.add_argument("--max-queue-requests", type=int, default=None,
                       help="requests a worker queues at most; beyond, it answers RESOURCE_EXHAUSTED at once and the "
                            "device answers locally (reason overloaded) (default 128)")
    serve.add_argument("--max-message-bytes", type=int, default=None)
    serve.add_argument("--drain-timeout-s", type=float, default=None)
    serve.add_argument("--max-owed-answers", type=int, default=None,
                       help="answers one stream may owe before the worker stops reading it (default 256)")
    serve.add_argument("--max-concurrent-rpcs", type=int, default=None,
                       help="calls served at once; beyond, RESOURCE_EXHAUSTED (default 1024)")
    serve.add_argument("--max-concurrent-streams", type=int, default=None,
                       help="HTTP/2 streams per connection (default 100)")
    serve.add_argument("--metrics-port", type=int, default=None,
                       help="Prometheus metrics of worker i on METRICS_PORT+i (default: none)")
    serve.add_argument("--config", help="YAML/JSON file with ServeConfig fields (flags override it)")
    security = serve.add_argument_group(
        "security", "the files are read here and handed to the workers through Ray: other nodes need no copy")
    security.add_argument("--tls-cert", metavar="FILE", help="PEM certificate chain: serve TLS (agilenn certs dev)")
    security.add_argument("--tls-key", metavar="FILE", help="PEM private key of --tls-cert")
    security.add_argument("--client-ca", metavar="FILE",
                          help="PEM CA: refuse clients without a certificate it signed (mutual TLS)")
    security.add_argument("--tokens", metavar="FILE",
                          help="token file (agilenn tokens add): calls need `authorization: Bearer <token>`; "
                               "reloaded when it changes or on SIGHUP")
    security.add_argument("--insecure", action="store_true",
                          help="serve plaintext on a host other than loopback (a network you trust)")
    security.add_argument("--reflection", action="store_true", help="serve gRPC reflection (off by default)")
    health = commands.add_parser("health", help="exit 0 when a worker's gRPC health service says it serves "
                                                "(a readiness probe that speaks TLS)")
    health.add_argument("--address", default="127.0.0.1:50051", help="the worker, host:port")
    health.add_argument("--ca", metavar="FILE", help="PEM CA of the worker's certificate: check over TLS")
    health.add_argument("--cert", metavar="FILE", help="PEM client certificate, for a worker that requires one")
    health.add_argument("--key", metavar="FILE", help="PEM private key of --cert")
    health.add_argument("--tls-server-name", help="the name the worker's certificate carries, when not the host")
    health.add_argument("--service", default="", help="the service to ask about (default: the whole server)")
    health.add_argument("--timeout-s", type=float, default=2.0)
    return parser


def probe(args: argparse.Namespace) -> int:
    from cloud_worker.probe import check_health

    serving, seen = check_health(args.address, args.ca, args.cert, args.key, args.tls_server_name, args.service,
                                 args.timeout_s)
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
