"""A worker server on a background thread, for tests and scripts that are not asyncio code."""

from __future__ import annotations

import asyncio
import threading
from typing import Self

from agilenn.bundle import Bundle
from cloud_worker.config import WorkerConfig
from cloud_worker.server import InferenceServer, create_server


class ServerThread:
    """`with ServerThread(bundle) as server: ... server.address ...` (binds 127.0.0.1, port 0 by default)."""

    def __init__(self, bundle: Bundle, config: WorkerConfig | None = None, port: int = 0,
                 worker_id: str = "worker-0", *, tls=None, tokens=None) -> None:
        """`tls` (a cloud_worker.security.TlsMaterial) and `tokens` (a cloud_worker.tokens.TokenTable):
        as for `create_server`."""
        self.bundle, self.config, self.worker_id = bundle, config or WorkerConfig(), worker_id
        self.tls, self.tokens = tls, tokens
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="test-grpc-server", daemon=True)
        self.thread.start()
        self.server: InferenceServer = self.call(self._start(port))
        self.port = self.server.port
        self._stopped = False

    async def _start(self, port: int) -> InferenceServer:
        server, _ = create_server(self.bundle, self.config, f"127.0.0.1:{port}", worker_id=self.worker_id,
                                  tls=self.tls, tokens=self.tokens)
        await server.start()
        return server

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def call(self, coroutine, timeout_s: float = 60.0):
        """Run a coroutine in the server's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout_s)

    def set_tokens(self, entries) -> None:
        """Swap the token table's entries, as a reload pushed by the service does."""
        async def swap() -> None:
            self.server.set_tokens(entries)

        self.call(swap())

    def stop(self, grace_s: float = 5.0) -> None:
        if self._stopped:
            return
        self._stopped = True
        try:
            self.call(self.server.stop(grace_s))
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
