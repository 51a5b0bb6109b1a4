"""Retrying transient model failures (rate limits, overloaded or unreachable servers)."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger("nbagent.models")


@dataclass
class RetryPolicy:
    """How often and how patiently to retry a transient failure.

    The delay doubles from ``initial_delay`` up to ``max_delay``, with jitter; a server's
    ``Retry-After`` is honoured when it asks for longer (up to ``max_delay``).
    """

    max_attempts: int = 5
    initial_delay: float = 1.0
    max_delay: float = 30.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before attempt number ``attempt + 1`` (attempts count from 1)."""
        base = min(self.max_delay, self.initial_delay * 2 ** (attempt - 1))
        wait = base * (0.5 + random.random() / 2)
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.max_delay))
        return wait


async def with_retries(
    call: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    classify: Callable[[BaseException], tuple[bool, float | None]],
    what: str,
) -> T:
    """Await ``call()``; when ``classify(exc)`` says the failure is transient, wait and try again.

    ``classify`` returns ``(transient, retry_after_seconds)``.
    """
    attempt = 0
    while True:
        attempt += 1
        try:
            return await call()
        except Exception as exc:
            transient, retry_after = classify(exc)
            if not transient or attempt >= policy.max_attempts:
                raise
            wait = policy.delay(attempt, retry_after)
            log.warning("%s failed (%s); retry %d in %.1f s", what, type(exc).__name__, attempt, wait)
            await asyncio.sleep(wait)


def retry_after_seconds(headers: object) -> float | None:
    """The ``Retry-After`` header in seconds, if a response carried one."""
    getter = getattr(headers, "get", None)
    if getter is None:
        return None
    value = getter("retry-after") or getter("Retry-After")
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None
