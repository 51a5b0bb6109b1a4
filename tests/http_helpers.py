"""Helpers of the tests that use the loopback network: litellm pools, a dead URL, a TCP listener."""

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


class TcpListener:
    """A TCP listener on the host's 127.0.0.1 that records what connects to it (a kernel with the
    host's network reaches it; one in a network namespace of its own does not)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.received: list[bytes] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                try:
                    self.received.append(conn.recv(100))
                except OSError:
                    self.received.append(b"")

    def close(self) -> None:
        self.sock.close()
