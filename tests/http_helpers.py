"""Helpers of the tests that reach a loopback OpenAI-compatible server through litellm."""

from __future__ import annotations

import socket
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
