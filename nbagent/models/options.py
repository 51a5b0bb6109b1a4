"""How a model is reached: key, URL, request timeout, sampling, and the checks that read them."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ..exceptions import UsageError
from .retry import RetryPolicy

API_KEY_ENV = "NBAGENT_API_KEY"
API_BASE_ENV = "NBAGENT_API_BASE"
DEFAULT_REQUEST_TIMEOUT = 120.0
"""Seconds one model request may take (litellm's own default is 6000 s: a hung server looks like
a hung run)."""


def check_api_base(url: str, what: str = "--api-base") -> str:
    """``url`` if it is an http(s) URL with a host; :class:`UsageError` saying how to write it if not."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UsageError(
            f"{what} {url!r} is not an http(s) URL; write it in full, "
            "e.g. http://localhost:8000/v1 (vLLM, llama.cpp, LM Studio) or http://localhost:11434 (Ollama)"
        )
    return url.strip()


@dataclass
class ModelOptions:
    """What a user chose about reaching the model, wherever a model is chosen (CLI, task file, magic).

    ``None`` leaves a choice to the model's default (and to ``NBAGENT_API_KEY`` / ``NBAGENT_API_BASE``
    for the key and URL).
    """

    api_base: str | None = None
    api_key: str | None = None
    request_timeout: float | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    retry: RetryPolicy | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def check(self) -> ModelOptions:
        """Refuse values that cannot work (one clear :class:`UsageError` each); returns ``self``."""
        if self.api_base is not None:
            self.api_base = check_api_base(self.api_base)
        if self.request_timeout is not None and self.request_timeout <= 0:
            raise UsageError(
                f"--request-timeout must be a positive number of seconds, not {self.request_timeout:g}"
            )
        if self.temperature is not None and not 0 <= self.temperature <= 2:
            raise UsageError(f"--temperature must be between 0 and 2, not {self.temperature:g}")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise UsageError(f"--max-tokens must be at least 1, not {self.max_tokens}")
        return self

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :func:`~nbagent.models.resolve_model` (only what was chosen)."""
        chosen: dict[str, Any] = {
            "api_base": self.api_base,
            "api_key": self.api_key,
            "timeout": self.request_timeout,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "retry": self.retry,
        }
        return {k: v for k, v in chosen.items() if v is not None} | self.extra


def environment_defaults(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` with ``api_key`` / ``api_base`` taken from ``NBAGENT_API_KEY`` / ``NBAGENT_API_BASE``
    when not given (an empty variable counts as unset)."""
    kwargs = dict(kwargs)
    if not kwargs.get("api_base") and os.environ.get(API_BASE_ENV):
        kwargs["api_base"] = check_api_base(os.environ[API_BASE_ENV], API_BASE_ENV)
    if not kwargs.get("api_key") and os.environ.get(API_KEY_ENV):
        kwargs["api_key"] = os.environ[API_KEY_ENV]
    return {k: v for k, v in kwargs.items() if v is not None}
