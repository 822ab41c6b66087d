"""`agilenn tokens`: issue, revoke and list per-device tokens in a token file.

`add` prints the new token alone on standard output, once: the file keeps only its salted hash,
so a lost token cannot be shown again (revoke it and add another). A running
`agilenn cloud serve --tokens FILE` picks up every change within a second, or at once on SIGHUP.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from cloud_worker.tokens import issue_token, read_token_file, revoke_tokens, token_file_lock, write_token_file


def _write_private(path: Path, text: str) -> None:
    """Create `path` readable and writable by its owner only, before any secret is in it."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, 0o600)  # an existing file keeps its mode through O_CREAT: set it
    with os.fdopen(descriptor, "w") as stream:
        stream.write(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="agilenn tokens", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    add = commands.add_parser("add", help="issue a token for a device; prints the token alone on stdout")
    add.add_argument("--file", required=True, help="token file (created when missing)")
    add.add_argument("--device", required=True, help="device name; labels the workers' logs and metrics")
    add.add_argument("--out", default=None, metavar="FILE",
                     help="write the token to FILE, readable by its owner only (0600), instead of printing it")
    revoke = commands.add_parser("revoke", help="revoke a device's tokens (or one token by id)")
    revoke.add_argument("--file", required=True, help="token file")
    which = revoke.add_mutually_exclusive_group(required=True)
    which.add_argument("--device", help="revoke every token of this device")
    which.add_argument("--id", dest="token_id", help="revoke the token with this id (the part before the dot)")
    listing = commands.add_parser("list", help="list the tokens: id, device, created, revoked (never secrets)")
    listing.add_argument("--file", required=True, help="token file")
    listing.add_argument("--json", action="store_true", help="one JSON object per token, one a line")
    args = parser.parse_args(argv)

    if args.command == "add":
        with token_file_lock(args.file):
            tokens = read_token_file(args.file, missing_ok=True)
            token, entry = issue_token(tokens, args.device)
            write_token_file(args.file, tokens)
        if args.out:
            _write_private(Path(args.out), token + "\n")
            print(f"token {entry.id} issued to device {entry.device!r}, written to {args.out} (mode 0600); "
                  "give it to the device (agilenn device run --token-file FILE)", file=sys.stderr)
            return 0
        print(f"token {entry.id} issued to device {entry.device!r}; it is shown once, store it on the device "
              "(agilenn device run --token-file FILE)", file=sys.stderr)
        print(token)
        return 0
    if args.command == "revoke":
        with token_file_lock(args.file):
            tokens = read_token_file(args.file)
            revoked = revoke_tokens(tokens, device=args.device, token_id=args.token_id)
            if revoked:
                write_token_file(args.file, tokens)
        if not revoked:
            named = f"device {args.device!r}" if args.device else f"id {args.token_id}"
            print(f"no valid token of {named} in {args.file}; nothing revoked", file=sys.stderr)
            return 1
        for entry in revoked:
            print(f"revoked token {entry.id} of device {entry.device!r}", file=sys.stderr)
        return 0
    tokens = read_token_file(args.file)
    for entry in tokens.tokens:
        row = {"id": entry.id, "device": entry.device, "created": entry.created, "revoked": entry.revoked,
               "revoked_at": entry.revoked_at}
        if args.json:
            print(json.dumps(row))
        else:
            state = f"revoked {entry.revoked_at or ''}".strip() if entry.revoked else "valid"
            print(f"{entry.id}  {entry.device:<24}  created {entry.created}  {state}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
