"""What a worker needs to be put on a network: TLS material and per-device token checking.

The driver (`CloudService`, `agilenn cloud serve`) reads the PEM files and the token file and
hands their contents to the worker actors through Ray, so a worker on another node needs none
of these files. `TlsMaterial` carries the server certificate chain, its key and optionally
the CA whose client certificates are required (mutual TLS). `TokenInterceptor` checks the
`authorization: Bearer <token>` metadata of every call except health checks against a
`TokenTable`, and labels the call with its device name (`current_device`) for logs and metrics.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from agilenn.config_files import ConfigFileError
from cloud_worker.tokens import HOW_TO_GET_A_TOKEN, TokenRefusal, TokenTable

log = logging.getLogger(__name__)

AUTHORIZATION_METADATA = "authorization"
# calls anyone may make: a load balancer or Kubernetes probe carries no token
# Only a probe's one-shot Check is open; Watch streams need a token like any other call.
_OPEN_METHOD_PREFIXES = ("/grpc.health.v1.Health/Check",)
_TOKEN_ID = re.compile(r"[0-9a-f]{16}")  # the public part of a token (cloud_worker.tokens)

# the device a call's token belongs to ("" when tokens are off), for logs and metric labels
current_device: contextvars.ContextVar[str] = contextvars.ContextVar("agilenn_device", default="")


class DeviceLogFilter(logging.Filter):
    """Gives every log record a `device` attribute: the device of the call being handled, or "-"."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.device = current_device.get() or "-"
        return True


class TlsConfigError(ConfigFileError):
    """A certificate, key or CA file that cannot serve: unreadable, not PEM, or a key that is not the certificate's."""


@dataclass(frozen=True)
class TlsMaterial:
    """PEM contents (not paths: a worker on another node has no such files) of a worker's TLS identity."""

    certificate_chain: bytes
    private_key: bytes = field(repr=False)
    client_ca: bytes | None = None  # set: clients must present a certificate this CA signed

    @property
    def mutual(self) -> bool:
        return self.client_ca is not None

    @classmethod
    def from_files(cls, cert_file: str | Path, key_file: str | Path,
                   client_ca_file: str | Path | None = None) -> TlsMaterial:
        """Read and check the files here, in the driver, so that a bad file is an error naming it
        rather than a worker that fails to start on some node."""
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        def read(path, what) -> bytes:
            try:
                return Path(path).read_bytes()
            except OSError as exc:
                raise TlsConfigError(f"{what} {path}: {exc.strerror or exc}") from None

        def certificates(data: bytes, path, what) -> list:
            try:
                loaded = x509.load_pem_x509_certificates(data)
            except ValueError as exc:
                raise TlsConfigError(f"{what} {path} holds no PEM certificate: {exc}") from None
            return loaded

        chain_pem = read(cert_file, "--tls-cert")
        key_pem = read(key_file, "--tls-key")
        chain = certificates(chain_pem, cert_file, "--tls-cert")
        try:
            key = serialization.load_pem_private_key(key_pem, password=None)
        except (ValueError, TypeError) as exc:
            raise TlsConfigError(f"--tls-key {key_file} is not an unencrypted PEM private key: {exc}") from None
        raw = serialization.PublicFormat.SubjectPublicKeyInfo
        if (key.public_key().public_bytes(serialization.Encoding.DER, raw)
                != chain[0].public_key().public_bytes(serialization.Encoding.DER, raw)):
            raise TlsConfigError(f"--tls-key {key_file} is not the key of the certificate in --tls-cert {cert_file}")
        if chain[0].not_valid_after_utc.timestamp() < time.time():
            raise TlsConfigError(f"--tls-cert {cert_file} expired on {chain[0].not_valid_after_utc:%Y-%m-%d}")
        client_ca = None
        if client_ca_file is not None:
            client_ca = read(client_ca_file, "--client-ca")
            certificates(client_ca, client_ca_file, "--client-ca")
        return cls(chain_pem, key_pem, client_ca)

    def server_credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.private_key, self.certificate_chain)], root_certificates=self.client_ca,
            require_client_auth=self.client_ca is not None)


def _bearer_token(metadata) -> str | None:
    for key, value in metadata or ():
        if key == AUTHORIZATION_METADATA:
            scheme, _, token = value.partition(" ")
            return token.strip() if scheme.lower() == "bearer" else ""
    return None


def _behavior_name(handler) -> str:
    return ("stream_" if handler.request_streaming else "unary_") + (
        "stream" if handler.response_streaming else "unary")


def _wrap(handler, make_behavior):
    """`handler` with its behaviour replaced by `make_behavior(old)`, kind and (de)serializers kept."""
    name = _behavior_name(handler)
    return handler._replace(**{name: make_behavior(getattr(handler, name))})


def _refusing(handler, code: grpc.StatusCode, message: str):
    """A handler of the same kind as `handler` that ends the call at once with `code`: a streaming
    call is refused before any request is read (a device's stream sends nothing until it has input)."""
    async def refuse(_request_or_iterator, context):
        await context.abort(code, message)

    return _wrap(handler, lambda _old: refuse)


def _refusal_code(refusal: TokenRefusal) -> grpc.StatusCode:
    return grpc.StatusCode.PERMISSION_DENIED if refusal.revoked else grpc.StatusCode.UNAUTHENTICATED


class TokenInterceptor(grpc.aio.ServerInterceptor):
    """Checks every call's bearer token against `table` (health checks pass without one).

    Missing, malformed or unknown token: UNAUTHENTICATED; revoked: PERMISSION_DENIED; each message
    says what to do. An accepted call runs with `current_device` set to the token's device. A
    stream checks its token again when the table changes, at its next request: revoking a token
    ends the streams it opened.
    """

    _LOG_EVERY_S = 10.0  # a device retrying with a bad token is logged at most this often
    # Token ids are not secret, so anyone could make a worker hash (scrypt) without limit. Unknown and
    # revoked ids are refused before hashing; an id that failed MAX_FAILED_CHECKS checks within
    # FAILED_CHECKS_WINDOW_S is refused without hashing for LOCKOUT_S; at most MAX_CONCURRENT_VERIFICATIONS
    # checks run at once and the others wait their turn in order (a first check of a genuine device
    # waits, it is not refused), up to MAX_WAITING_VERIFICATIONS waiting, beyond which UNAVAILABLE.
    MAX_CONCURRENT_VERIFICATIONS = 4
    MAX_WAITING_VERIFICATIONS = 256
    MAX_FAILED_CHECKS = 5
    FAILED_CHECKS_WINDOW_S = 60.0
    LOCKOUT_S = 30.0

    def __init__(self, table: TokenTable, metrics, worker_id: str = "") -> None:
        self.table = table
        self.metrics = metrics
        self.worker_id = worker_id
        self.awaiting_table = False  # a restarted worker refuses (UNAVAILABLE) until it is sent the current table
        self._logged: dict[tuple[str, str], float] = {}
        self._verifications = 0  # scrypt checks under way or waiting (the event loop's thread alone changes it)
        self._slots: asyncio.Semaphore | None = None  # made in the serving loop
        self._failures: dict[str, list[float]] = {}  # token id -> times of its recent failed checks
        self._locked_until: dict[str, float] = {}

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(_OPEN_METHOD_PREFIXES):
            return handler
        if self.awaiting_table:
            return _refusing(handler, grpc.StatusCode.UNAVAILABLE,
                             f"worker {self.worker_id} restarted and is waiting for the current token table; "
                             "retry shortly")
        table = self.table
        token = _bearer_token(handler_call_details.invocation_metadata)
        try:
            if token is None:
                raise TokenRefusal("missing", "no token: this service needs `authorization: Bearer <token>` call "
                                              f"metadata; {HOW_TO_GET_A_TOKEN}")
            entry, secret, verified = table.lookup(token)
            if verified:
                entry = table.accept(entry, secret, True)
        except TokenRefusal as refusal:
            return self._refuse(handler, handler_call_details.method, refusal, token)
        authorised = self._authorised(handler, entry.id, entry.device)
        if verified:
            return authorised
        # The slow check runs inside the call, where the peer is known (a failing peer is locked out too).
        return _wrap(authorised, lambda behavior: self._verifying(behavior, entry, secret, token,
                                                                  handler_call_details.method))

    def _verifying(self, behavior, entry, secret: str, token: str, method: str):
        """`behavior` behind the token's slow check: refused (the call aborted) unless the secret matches."""
        async def verify(context) -> None:
            peer = "peer " + (context.peer() or "?")
            locked = max(self._locked_for(entry.id), self._locked_for(peer))
            if locked > 0:
                self.metrics.auth_refusals.labels(reason="locked").inc()
                await context.abort(grpc.StatusCode.UNAUTHENTICATED,
                                    f"token not accepted: too many failed token checks; retry in {locked:.0f} s")
            if self._verifications >= self.MAX_CONCURRENT_VERIFICATIONS + self.MAX_WAITING_VERIFICATIONS:
                self.metrics.auth_refusals.labels(reason="busy").inc()
                await context.abort(grpc.StatusCode.UNAVAILABLE,
                                    f"worker {self.worker_id} is checking other tokens; retry shortly")
            if self._slots is None:
                self._slots = asyncio.Semaphore(self.MAX_CONCURRENT_VERIFICATIONS)
            self._verifications += 1
            try:
                async with self._slots:  # first come, first served
                    matched = self._locked_for(entry.id) <= 0 and await asyncio.get_running_loop(
                    ).run_in_executor(None, self.table.secret_matches, entry, secret)
            finally:
                self._verifications -= 1
            if not matched:
                self._failed(entry.id)
                self._failed(peer)
            try:
                self.table.accept(entry, secret, matched)
            except TokenRefusal as refusal:
                self._log_refusal(method, refusal, token)
                await context.abort(_refusal_code(refusal), refusal.message)

        if inspect.isasyncgenfunction(behavior):
            async def generator(request, context):
                await verify(context)
                async for response in behavior(request, context):
                    yield response
            return generator

        async def coroutine(request, context):
            await verify(context)
            return await behavior(request, context)
        return coroutine



    def _locked_for(self, token_id: str) -> float:
        """Seconds left of `token_id`'s lock-out (0: not locked)."""
        left = self._locked_until.get(token_id, 0.0) - time.monotonic()
        if left <= 0:
            self._locked_until.pop(token_id, None)
        return max(left, 0.0)

    def _failed(self, token_id: str) -> None:
        now = time.monotonic()
        recent = [t for t in self._failures.get(token_id, []) if now - t < self.FAILED_CHECKS_WINDOW_S] + [now]
        if len(self._failures) > 4096:  # bounded memory whatever the ids tried
            self._failures.clear()
        self._failures[token_id] = recent
        if len(recent) >= self.MAX_FAILED_CHECKS:
            self._locked_until[token_id] = now + self.LOCKOUT_S
            self._failures.pop(token_id, None)
            log.warning("token id %s failed %d checks within %g s: refused without checking for %g s",
                        token_id, len(recent), self.FAILED_CHECKS_WINDOW_S, self.LOCKOUT_S)

    def _refuse(self, handler, method: str, refusal: TokenRefusal, token: str | None):
        self._log_refusal(method, refusal, token)
        return _refusing(handler, _refusal_code(refusal), refusal.message)

    def _log_refusal(self, method: str, refusal: TokenRefusal, token: str | None) -> None:
        self.metrics.auth_refusals.labels(reason=refusal.reason).inc()
        # name the entry only by a well-formed id: anything else may be (part of) a secret
        token_id = (token or "").partition(".")[0]
        token_id = token_id if _TOKEN_ID.fullmatch(token_id) else "-"
        now = time.monotonic()
        key = (refusal.reason, token_id)
        if now - self._logged.get(key, -self._LOG_EVERY_S) >= self._LOG_EVERY_S:
            if len(self._logged) > 1024:
                self._logged.clear()
            self._logged[key] = now
            log.warning("refused %s (token %s): %s", method, token_id, refusal.message)

    def _authorised(self, handler, token_id: str, device: str):
        table = self.table
        interceptor = self
        accepted_in = table.generation  # read now: a reload before the stream's first read must count

        async def checked(requests, context):
            seen = accepted_in
            async for request in requests:
                if table.generation != seen:  # the table was reloaded: is this token still good?
                    seen = table.generation
                    try:
                        table.check_current(token_id)
                    except TokenRefusal as refusal:
                        interceptor.metrics.auth_refusals.labels(reason=refusal.reason).inc()
                        log.warning("ending a stream of device %s: %s", device, refusal.message)
                        code = (grpc.StatusCode.PERMISSION_DENIED if refusal.revoked
                                else grpc.StatusCode.UNAUTHENTICATED)
                        await context.abort(code, refusal.message)
                yield request

        def make(behavior):
            streaming_requests = handler.request_streaming
            if inspect.isasyncgenfunction(behavior):
                async def generator(request, context):
                    current_device.set(device)
                    source = checked(request, context) if streaming_requests else request
                    async for response in behavior(source, context):
                        yield response
                return generator

            async def coroutine(request, context):
                current_device.set(device)
                source = checked(request, context) if streaming_requests else request
                return await behavior(source, context)
            return coroutine

        return _wrap(handler, make)
