"""`agilenn certs dev`: a development CA with a server and a client certificate, for TLS and mutual TLS.

Writes ca.pem, ca.key, server.pem, server.key, client.pem and client.key into --out (keys readable
by their owner only). The server certificate names localhost, 127.0.0.1 and ::1 and every --host
(an IP address or a DNS name): give the names and addresses devices use to reach the workers. For
production, use certificates from your own CA; these are for development and tests.
"""

from __future__ import annotations

import argparse
import sys

from cloud_worker.dev_credentials import (
    CERTIFICATE_FILES,
    DEFAULT_SERVER_NAMES,
    write_dev_certificates,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="agilenn certs", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    dev = commands.add_parser("dev", help="write a development CA, server and client certificates and keys")
    dev.add_argument("--out", required=True, help="folder to write ca.pem, ca.key, server.pem, server.key, "
                                                  "client.pem, client.key into")
    dev.add_argument("--host", action="append", default=[], metavar="NAME",
                     help="another name or IP address the server certificate is valid for (repeat); "
                          f"{', '.join(DEFAULT_SERVER_NAMES)} are always in it")
    dev.add_argument("--days", type=int, default=365, help="validity of the certificates (default 365)")
    dev.add_argument("--client-name", default="agilenn-device", help="common name of the client certificate")
    dev.add_argument("--force", action="store_true", help="replace existing files")
    args = parser.parse_args(argv)

    written = write_dev_certificates(args.out, args.host, args.days, args.client_name, args.force)
    hosts = ", ".join([*DEFAULT_SERVER_NAMES, *args.host])
    print(f"wrote {', '.join(CERTIFICATE_FILES)} to {written.folder} (server certificate for {hosts})",
          file=sys.stderr)
    print(f"serve:  agilenn cloud serve ... --tls-cert {written.server_pem} --tls-key {written.server_key} "
          f"--client-ca {written.ca_pem}", file=sys.stderr)
    print(f"device: agilenn device run ... --ca {written.ca_pem} --cert {written.client_pem} "
          f"--key {written.client_key}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
