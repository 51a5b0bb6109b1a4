"""Helpers of the tests that use the loopback network: litellm pools, a dead URL, a socket listener."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
from jupyter_core.utils import run_sync


@pytest.fixture(autouse=True)
def close_pooled_http_clients() -> Iterator[None]:
    """litellm pools HTTP clients per server in a module cache; each test's server is new."""
    yield
    import litellm

    run_sync(litellm.close_litellm_async_clients)()
    litellm.in_memory_llm_clients_cache.flush_cache()


def dead_url() -> str:
    """A loopback URL where nothing listens (a port just freed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


class SocketListener:
    """Records what connects to a listening socket and what each connection sends: by default a
    TCP socket on the host's 127.0.0.1 (a kernel with the host's network reaches it; one in a
    network namespace of its own does not), or the given one (say, a fake ssh-agent's)."""

    def __init__(self, sock: socket.socket | None = None) -> None:
        self.sock = sock if sock is not None else socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1] if self.sock.family == socket.AF_INET else None
        self.sock.settimeout(0.1)  # so the thread notices close() soon
        self.received: list[bytes] = []
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._closing.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                try:
                    self.received.append(conn.recv(100))
                except OSError:
                    self.received.append(b"")

    def close(self) -> None:
        self._closing.set()
        self._thread.join(timeout=5)
        self.sock.close()
