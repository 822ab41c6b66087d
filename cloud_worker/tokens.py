"""Per-device bearer tokens: the token file, and checking a presented token against it.

A token is `<token_id>.<secret>`: `token_id` is 16 hex digits that name the entry, `secret` is
32 random bytes (base64url, 43 characters). The file stores, per entry, the id, the device
name, a random salt, scrypt(secret, salt) and its parameters, the creation date and whether
(and when) it was revoked: never a token or a secret.

Why this shape:

- The id makes lookup one dictionary access and one hash computation, whatever the number of
  devices. Without it a server would have to hash the presented secret against every entry's
  salt. The id is not secret; it appears in `agilenn tokens list` and in logs.
- The secret carries 256 random bits, so no guessing attack is feasible whatever the hash
  costs; the salted one-way hash makes a leaked token file useless for connecting. Unlike a
  password hash, the work factor is therefore kept small (scrypt n=2^11, a few ms): a fleet
  reconnecting after a worker restart verifies thousands of tokens. The parameters are stored
  per entry, so they can be raised later without invalidating the tokens already issued.
- A worker verifies a token once and then remembers, in memory only, a keyed digest of the
  secret it accepted, so later calls with the same token cost a dictionary lookup and a
  constant-time comparison. A revoked entry is refused however it was verified before.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import hmac
import logging
import os
import re
import secrets
import tempfile
import threading
from datetime import UTC, datetime
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field

from agilenn.config_files import ConfigFileError, read_yaml_mapping, validate_mapping

log = logging.getLogger(__name__)

TOKEN_FILE_VERSION = 1
_TOKEN_ID_BYTES = 8
_SECRET_BYTES = 32
_TOKEN_PATTERN = re.compile(r"^([0-9a-f]{16})\.([A-Za-z0-9_-]{43})$")
# scrypt cost for new tokens (see the module docstring for why it is small)
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2 ** 11, 8, 1
_HASH_BYTES = 32

HOW_TO_GET_A_TOKEN = ("ask the operator for a token (agilenn tokens add --file TOKENS.yaml --device NAME) "
                      "and run the device with --token-file")


# One answer for an unknown id and for a wrong secret: ids are not secret, and whether one exists is not
# for a caller without its secret to learn.
NOT_ACCEPTED = f"token not accepted: no token has this id and secret; {HOW_TO_GET_A_TOKEN}"


class TokenEntry(BaseModel):
    """One issued token, as stored: its salted hash, never the token."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[0-9a-f]{16}$", description="names the entry; the part of the token before the dot")
    device: str = Field(min_length=1, description="the device this token was issued to; labels logs and metrics")
    kdf: str = Field("scrypt", pattern="^scrypt$")
    n: int = Field(SCRYPT_N, ge=2)
    r: int = Field(SCRYPT_R, ge=1)
    p: int = Field(SCRYPT_P, ge=1)
    salt: str = Field(description="base64 of the random salt")
    hash: str = Field(description="base64 of scrypt(secret, salt, n, r, p)")
    created: str = Field(description="ISO 8601 time (UTC) the token was issued")
    revoked: bool = False
    revoked_at: str | None = Field(None, description="ISO 8601 time (UTC) the token was revoked")


class TokenFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = TOKEN_FILE_VERSION
    tokens: list[TokenEntry] = Field(default_factory=list)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def hash_secret(secret: str, salt: bytes, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> bytes:
    return hashlib.scrypt(secret.encode("ascii"), salt=salt, n=n, r=r, p=p, dklen=_HASH_BYTES)


def split_token(token: str) -> tuple[str, str] | None:
    """(token_id, secret) of a well-formed token, else None."""
    match = _TOKEN_PATTERN.match(token.strip())
    return (match.group(1), match.group(2)) if match else None


def read_token_file(path: str | Path, missing_ok: bool = False) -> TokenFile:
    path = Path(path)
    if missing_ok and not path.exists():
        return TokenFile()
    data = read_yaml_mapping(path, "token file", empty_ok=True)
    tokens = validate_mapping(TokenFile, data, path, "token file")
    if tokens.version != TOKEN_FILE_VERSION:
        raise ConfigFileError(f"{path}: token file version {tokens.version}, this agilenn reads {TOKEN_FILE_VERSION}")
    ids = [entry.id for entry in tokens.tokens]
    if len(ids) != len(set(ids)):
        raise ConfigFileError(f"{path}: token ids repeat; each entry needs its own id")
    return tokens


@contextlib.contextmanager
def token_file_lock(path: str | Path):
    """Hold an exclusive lock beside the token file from reading it to replacing it, so that two
    `agilenn tokens` commands at once cannot lose each other's change (a revocation above all)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def write_token_file(path: str | Path, tokens: TokenFile) -> None:
    """Replace the file in one move (a server polling it never reads half a file), readable by its owner only."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = ("# agilenn device tokens: salted scrypt hashes, never the tokens themselves.\n"
            "# Edit with `agilenn tokens add|revoke|list`; a running `agilenn cloud serve --tokens` reloads it.\n"
            + yaml.safe_dump(tokens.model_dump(), sort_keys=False))
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())  # on disk before it replaces the file a revocation was written to
        os.chmod(temp, 0o600)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def issue_token(tokens: TokenFile, device: str) -> tuple[str, TokenEntry]:
    """A new token for `device`: (the token, shown once; the entry to store)."""
    if not device.strip():
        raise ValueError("a token needs a device name")
    taken = {entry.id for entry in tokens.tokens}
    token_id = secrets.token_hex(_TOKEN_ID_BYTES)
    while token_id in taken:
        token_id = secrets.token_hex(_TOKEN_ID_BYTES)
    secret = secrets.token_urlsafe(_SECRET_BYTES)
    salt = secrets.token_bytes(16)
    entry = TokenEntry(id=token_id, device=device.strip(), salt=_b64(salt), hash=_b64(hash_secret(secret, salt)),
                       created=_now())
    tokens.tokens.append(entry)
    return f"{token_id}.{secret}", entry


def revoke_tokens(tokens: TokenFile, device: str | None = None, token_id: str | None = None) -> list[TokenEntry]:
    """Mark the tokens of `device` (or the one with `token_id`) revoked; returns those newly revoked."""
    if (device is None) == (token_id is None):
        raise ValueError("revoke by device name or by token id, one of the two")
    revoked, kept = [], []
    for entry in tokens.tokens:
        if (entry.device == device or entry.id == token_id) and not entry.revoked:
            entry = entry.model_copy(update={"revoked": True, "revoked_at": _now()})
            revoked.append(entry)
        kept.append(entry)
    tokens.tokens = kept
    return revoked


class TokenRefusal(Exception):
    """A call's token is refused; `revoked` tells PERMISSION_DENIED from UNAUTHENTICATED."""

    def __init__(self, reason: str, message: str, revoked: bool = False) -> None:
        super().__init__(message)
        self.reason = reason  # missing | malformed | unknown | revoked: a bounded metric label
        self.message = message
        self.revoked = revoked


class TokenTable:
    """The entries a worker checks tokens against, by id. `update` swaps in a reloaded file's entries."""

    def __init__(self, entries: list[TokenEntry] | tuple[TokenEntry, ...] = ()) -> None:
        self._entries: dict[str, TokenEntry] = {}
        self._cache_key = secrets.token_bytes(32)  # digests of accepted secrets mean nothing outside this process
        self._accepted: dict[str, bytes] = {}
        self.generation = 0  # bumped by every update, so open streams know to check their token again
        self.update(entries)

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def devices(self) -> list[str]:
        return sorted({entry.device for entry in self._entries.values()})

    def update(self, entries) -> None:
        fresh = {entry.id: entry for entry in entries}
        # an accepted secret stays accepted only while its entry's hash is the same
        self._accepted = {tid: digest for tid, digest in self._accepted.items()
                          if tid in fresh and tid in self._entries and fresh[tid].hash == self._entries[tid].hash}
        self._entries = fresh
        self.generation += 1

    def _digest(self, secret: str) -> bytes:
        return hmac.new(self._cache_key, secret.encode("ascii"), hashlib.sha256).digest()

    def lookup(self, token: str) -> tuple[TokenEntry, str, bool]:
        """(entry, secret, already verified) for a presented token; raises TokenRefusal for a malformed
        token or an unknown id. Call `verify` next unless already verified (it is the slow part)."""
        parts = split_token(token)
        if parts is None:
            raise TokenRefusal("malformed", "malformed token: expected <token_id>.<secret> as `agilenn tokens add` "
                                            f"prints it; {HOW_TO_GET_A_TOKEN}")
        token_id, secret = parts
        entry = self._entries.get(token_id)
        if entry is None:  # refused before any hashing, in the very words of a wrong secret
            raise TokenRefusal("unknown", NOT_ACCEPTED)
        if entry.revoked:
            self.check_current(token_id)  # refused before any hashing
        accepted = self._accepted.get(token_id)
        return entry, secret, accepted is not None and hmac.compare_digest(accepted, self._digest(secret))

    @staticmethod
    def secret_matches(entry: TokenEntry, secret: str) -> bool:
        """The slow, salted comparison: run it off the event loop."""
        expected = base64.b64decode(entry.hash)
        return hmac.compare_digest(hash_secret(secret, base64.b64decode(entry.salt), entry.n, entry.r, entry.p),
                                   expected)

    def accept(self, entry: TokenEntry, secret: str, matched: bool) -> TokenEntry:
        """The verdict for a looked-up token once `secret_matches` has run (or was cached)."""
        if not matched:
            raise TokenRefusal("unknown", NOT_ACCEPTED)
        if self._entries.get(entry.id) is entry:  # not replaced by a reload while hashing
            self._accepted[entry.id] = self._digest(secret)
        return self.check_current(entry.id)

    def check_current(self, token_id: str) -> TokenEntry:
        """The entry of an accepted token as the table holds it now; raises TokenRefusal when it was
        revoked or removed since."""
        entry = self._entries.get(token_id)
        if entry is None:
            raise TokenRefusal("unknown", f"unknown token: token {token_id} is no longer in this service's token "
                                          f"table; {HOW_TO_GET_A_TOKEN}")
        if entry.revoked:
            when = f" on {entry.revoked_at}" if entry.revoked_at else ""
            raise TokenRefusal("revoked", f"token {token_id} of device {entry.device!r} was revoked{when}; ask the "
                                          "operator for a new one (agilenn tokens add --file TOKENS.yaml --device "
                                          f"{entry.device})", revoked=True)
        return entry


class TokenFileWatcher:
    """Re-reads a token file when it changes (polled every `poll_s`) or when asked (`request_reload`,
    safe to call from a signal handler), and hands the new entries to `push`. A file that has become
    unreadable or invalid keeps the previous table in force and is reported once per change."""

    def __init__(self, path: str | Path, push, poll_s: float = 1.0) -> None:
        self.path = Path(path)
        self.poll_s = poll_s
        self._push = push
        self._signature: tuple | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.reloads = 0

    def _stat(self) -> tuple | None:
        try:
            stat = self.path.stat()
        except OSError:
            return None
        return stat.st_mtime_ns, stat.st_size, stat.st_ino

    def load(self) -> list[TokenEntry]:
        """The file's entries now (raises on a bad file); later changes are measured from this reading."""
        signature = self._stat()
        entries = read_token_file(self.path).tokens
        self._signature = signature
        return entries

    def check(self, force: bool = False) -> bool:
        """Reload and push when the file changed (or `force`); True when a new table was pushed."""
        signature = self._stat()
        if not force and signature == self._signature:
            return False
        self._signature = signature
        try:
            entries = read_token_file(self.path).tokens
        except (ConfigFileError, OSError) as exc:
            log.error("token file not reloaded, the previous table stays in force: %s", exc)
            return False
        self._push(entries)
        self.reloads += 1
        log.info("token table reloaded from %s: %d tokens, %d revoked", self.path, len(entries),
                 sum(entry.revoked for entry in entries))
        return True

    def request_reload(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="token-file-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            asked = self._wake.wait(self.poll_s)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                self.check(force=asked)
            except Exception:
                log.exception("pushing the token table failed")

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
