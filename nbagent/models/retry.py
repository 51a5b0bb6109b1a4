"""Retrying transient model failures (rate limits, overloaded servers), within a budget."""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger("nbagent.models")


@dataclass
class RetryPolicy:
    """How often and how patiently to retry a transient failure (429, 5xx).

    The delay doubles from ``initial_delay`` up to ``max_delay``, with jitter. A server's
    ``Retry-After`` is honoured as given; one asking for more than ``max_delay`` ends the retries at
    once (waiting less would only be refused again). All waits of one request together stay within
    ``max_total_wait`` seconds. The defaults fit per-minute provider limits: a 429 with
    ``Retry-After: 60`` is waited out once.
    """

    max_attempts: int = 5
    initial_delay: float = 1.0
    max_delay: float = 60.0
    max_total_wait: float = 180.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before attempt number ``attempt + 1`` (attempts count from 1)."""
        base = min(self.max_delay, self.initial_delay * 2 ** (attempt - 1))
        wait = base * (0.5 + random.random() / 2)
        if retry_after is not None:
            wait = max(wait, retry_after)
        return wait


class RetriesExhausted(Exception):
    """The last failure of a request that was retried until the policy said stop."""

    def __init__(self, cause: BaseException, attempts: int, reason: str) -> None:
        super().__init__(reason)
        self.cause = cause
        self.attempts = attempts
        self.reason = reason


async def with_retries(
    call: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    classify: Callable[[BaseException], tuple[bool, float | None]],
    what: str,
) -> T:
    """Await ``call()``; when ``classify(exc)`` says the failure is transient, wait and try again.

    ``classify`` returns ``(transient, retry_after_seconds)``. A failure that is not transient is
    raised as it is; a transient one the policy gives up on is raised as :class:`RetriesExhausted`.
    """
    attempt = 0
    waited = 0.0
    while True:
        attempt += 1
        try:
            return await call()
        except Exception as exc:
            transient, retry_after = classify(exc)
            if not transient:
                raise
            if attempt >= policy.max_attempts:
                raise RetriesExhausted(exc, attempt, f"gave up after {attempt} attempts") from exc
            if retry_after is not None and retry_after > policy.max_delay:
                raise RetriesExhausted(
                    exc,
                    attempt,
                    f"the server asked to wait {retry_after:g} s (Retry-After), more than the "
                    f"{policy.max_delay:g} s a retry may wait",
                ) from exc
            wait = policy.delay(attempt, retry_after)
            if waited + wait > policy.max_total_wait:
                raise RetriesExhausted(
                    exc,
                    attempt,
                    f"gave up after {attempt} attempts and {waited:.0f} s of waiting "
                    f"(the retry budget is {policy.max_total_wait:g} s)",
                ) from exc
            log.warning("%s failed (%s); retry %d in %.1f s", what, type(exc).__name__, attempt, wait)
            await asyncio.sleep(wait)
            waited += wait


def retry_after_seconds(headers: object) -> float | None:
    """The wait a response asked for, in seconds: ``retry-after-ms``, or ``Retry-After`` as
    seconds or as an HTTP date; ``None`` when it asked for none."""
    getter = getattr(headers, "get", None)
    if getter is None:
        return None
    millis = getter("retry-after-ms") or getter("Retry-After-Ms")
    try:
        if millis is not None:
            return max(0.0, float(millis) / 1000)
    except (TypeError, ValueError):
        pass
    value = getter("retry-after") or getter("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        pass
    try:
        when = email.utils.parsedate_to_datetime(str(value))
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
