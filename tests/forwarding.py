"""A TCP forwarder to a worker for tests: at another address (one a worker advertises that its
certificate does not name), or gone silent (a peer that vanished from the network: every byte
swallowed both ways, every connection kept open, no reset)."""

from __future__ import annotations

import socket
import threading


class TcpForwarder:
    def __init__(self, target_port: int, host: str = "127.0.0.1") -> None:
        self.silent = threading.Event()
        self._target = ("127.0.0.1", target_port)
        self._server = socket.create_server((host, 0))
        self.address = f"{host}:{self._server.getsockname()[1]}"
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self._target)
            self._sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                if not self.silent.is_set():
                    sink.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        self._server.close()
        for sock in self._sockets:
            sock.close()
