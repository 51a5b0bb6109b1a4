"""Any model litellm can reach: OpenAI, Anthropic, Ollama, vLLM, any OpenAI-compatible server."""

from __future__ import annotations

import os
import socket
import sys
import warnings
from collections.abc import Iterator, Sequence
from functools import cached_property
from typing import Any

from ..exceptions import ModelError, UsageError
from .base import Message, Model, Reply, TextCallback, Usage, estimate_tokens, message_text
from .options import API_KEY_ENV, DEFAULT_REQUEST_TIMEOUT, check_api_base
from .retry import RetriesExhausted, RetryPolicy, retry_after_seconds, with_retries

# Providers that speak the OpenAI API: given an api_base, litellm would send them the user's
# OPENAI_API_KEY from the environment, or refuse to call them without one.
OPENAI_COMPATIBLE = frozenset(
    {
        "openai",
        "custom_openai",
        "text-completion-openai",
        "openai_like",
        "hosted_vllm",
        "lm_studio",
        "llamafile",
    }
)
PLACEHOLDER_KEY = "sk-no-key-required"
"""Sent to an OpenAI-compatible ``api_base`` when no key was given: local servers need none, and
the user's real ``OPENAI_API_KEY`` must not go to a server they did not hand it to."""

CHECK_MESSAGES: list[Message] = [{"role": "user", "content": "Reply with the word OK."}]


READONLY_WARNING = r"Item '.*' on TypedDict class '.*' is using the `ReadOnly` qualifier"


def _litellm() -> Any:
    # Imported on first use: litellm takes seconds to import, and offline it would try to
    # download its model cost map unless told to use the bundled copy.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    # pydantic >= 2.12 warns, on the first reply, that litellm's reasoning types use ReadOnly; it is
    # litellm's own typing, harmless, and would otherwise be printed in the middle of a user's run.
    warnings.filterwarnings("ignore", message=READONLY_WARNING, category=UserWarning)
    import litellm

    litellm.suppress_debug_info = True
    return litellm


class LiteLLMModel(Model):
    """A model reached through litellm.

    Args:
        model: a litellm model string, e.g. ``"openai/gpt-4o-mini"``,
            ``"anthropic/claude-sonnet-4-5"``, ``"ollama_chat/qwen2.5-coder"``, or
            ``"openai/<name>"`` with ``api_base`` for any OpenAI-compatible server.
        api_base: base URL of the server (local servers, proxies), with its scheme.
        api_key: key to send; by default litellm reads the provider's usual variable, except for
            an OpenAI-compatible ``api_base``, which gets a placeholder (local servers need no key,
            and ``OPENAI_API_KEY`` is not sent to another server unless passed here).
        vision: whether the model takes images; ``None`` asks litellm.
        retry: how 429 and 5xx replies are retried (other failures are not).
        timeout: seconds one request may take (for a streamed reply: between two pieces of it).
        temperature: sampling temperature; ``None``: the server's default.
        max_tokens: the longest reply, in tokens; ``None``: the server's default.
        stream: stream replies (their text reaches :meth:`astream`'s ``on_text`` as it comes).
        **kwargs: passed to ``litellm.acompletion`` (``top_p``, ``seed``, ...).
    """

    def __init__(
        self,
        model: str,
        *,
        api_base: str | None = None,
        api_key: str | None = None,
        vision: bool | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = DEFAULT_REQUEST_TIMEOUT,
        temperature: float | None = None,
        max_tokens: int | None = None,
        stream: bool = True,
        **kwargs: Any,
    ) -> None:
        self.name = model
        self.api_base = check_api_base(api_base, "api_base") if api_base else None
        self.api_key = api_key
        self._vision = vision
        self.retry = retry or RetryPolicy()
        self.timeout = timeout
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.stream = stream
        self.kwargs = kwargs

    @cached_property
    def supports_images(self) -> bool:  # type: ignore[override]
        if self._vision is not None:
            return self._vision
        try:
            return bool(_litellm().supports_vision(self.name))
        except Exception:
            return False

    @cached_property
    def supports_stop(self) -> bool:  # type: ignore[override]
        try:
            params = _litellm().get_supported_openai_params(self.name) or []
        except Exception:
            return True
        return "stop" in params

    @cached_property
    def provider(self) -> str | None:
        """litellm's name for the provider (``"openai"``, ``"anthropic"``...), ``None`` if unknown."""
        try:
            return str(_litellm().get_llm_provider(self.name, api_base=self.api_base)[1])
        except Exception:
            return None

    @property
    def where(self) -> str:
        """The server, as error messages name it: the ``api_base``, else the provider's own."""
        if self.api_base:
            return self.api_base
        return f"{self.provider}'s API" if self.provider else "the provider's API"

    def check(self) -> None:
        """Raise :class:`UsageError` if litellm cannot route this model or its key is missing."""
        litellm = _litellm()
        if self.provider is None:
            raise UsageError(
                f"unknown model {self.name!r}: litellm cannot tell its provider; "
                "use a string like 'openai/gpt-4o-mini' or 'ollama_chat/llama3.1'"
            )
        if self.api_key or self.api_base:
            return
        env = litellm.validate_environment(self.name)
        missing = env.get("missing_keys") or []
        if missing:
            raise UsageError(
                f"model {self.name!r} needs {', '.join(missing)} in the environment "
                f"(or pass --api-key / set {API_KEY_ENV}); {self.provider} cannot be called without it"
            )

    def _params(self, messages: Sequence[Message], stop: Sequence[str]) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": self.name,
            "messages": list(messages),
            "drop_params": True,
            # Retries are ours (logged, same policy for every provider), not the SDK's.
            "num_retries": 0,
            "max_retries": 0,
        }
        for name in ("timeout", "temperature", "max_tokens"):
            if getattr(self, name) is not None:
                params[name] = getattr(self, name)
        params.update(self.kwargs)
        if stop and self.supports_stop:
            params["stop"] = list(stop)
        if self.api_base:
            params["api_base"] = self.api_base
        key = self.api_key
        if key is None and self.api_base and self.provider in OPENAI_COMPATIBLE:
            key = PLACEHOLDER_KEY
        if key:
            params["api_key"] = key
        return params

    async def acomplete(self, messages: Sequence[Message], stop: Sequence[str] = ()) -> Reply:
        return await self.astream(messages, stop)

    async def astream(
        self, messages: Sequence[Message], stop: Sequence[str] = (), on_text: TextCallback | None = None
    ) -> Reply:
        litellm = _litellm()
        params = self._params(messages, stop)
        if self.stream:
            params["stream"] = True
            params["stream_options"] = {"include_usage": True}  # usage comes in the last chunk

        async def call() -> Any:
            response = await litellm.acompletion(**params)
            if not self.stream:
                return response
            chunks = []
            async for chunk in response:
                chunks.append(chunk)
                if on_text is not None:
                    for piece in _delta_texts(chunk):
                        on_text(piece)
            if not chunks:
                return None
            # litellm counts the tokens itself when the server sent no usage; its stream wrapper
            # keeps the server's chunks, which say whether it did.
            raw = getattr(response, "chunks", None)
            reported[0] = raw is None or any(getattr(c, "usage", None) for c in raw)
            return litellm.stream_chunk_builder(chunks, messages=list(messages))

        reported = [True]
        response = await self._call(call)
        return self._reply(response, messages, reported[0])

    async def acheck(self) -> None:
        """One tiny request (a one-token reply): raises :class:`ModelError` saying what is wrong."""
        try:
            self.check()
        except UsageError as exc:
            raise ModelError(str(exc)) from None
        params = self._params(CHECK_MESSAGES, ())
        params["max_tokens"] = 1
        litellm = _litellm()

        async def call() -> Any:
            return await litellm.acompletion(**params)

        await self._call(call)

    async def _call(self, call: Any) -> Any:
        try:
            return await with_retries(call, self.retry, _classify, f"model {self.name}")
        except RetriesExhausted as exc:
            raise ModelError(self.describe(exc.cause, exc.reason)) from exc.cause
        except ModelError:
            raise
        except Exception as exc:
            raise ModelError(self.describe(exc)) from exc

    def _reply(self, response: Any, messages: Sequence[Message], reported: bool = True) -> Reply:
        choices = getattr(response, "choices", None) or []
        if not choices:
            raise ModelError(
                f"model {self.name!r} at {self.where} sent a reply without any choice (empty 'choices'); "
                "the server may have filtered or dropped the reply: look at its log, or try again"
            )
        choice = choices[0]
        message = getattr(choice, "message", None)
        text = getattr(message, "content", None) or ""
        litellm = _litellm()
        usage = getattr(response, "usage", None)
        input_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
        output_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
        cost: float | None
        try:
            cost = float(litellm.completion_cost(completion_response=response))
        except Exception:
            cost = None
        estimated = not reported or (input_tokens == 0 and output_tokens == 0)
        if estimated:
            # The server reported no usage: estimate it, so that budgets still hold.
            input_tokens = sum(estimate_tokens(message_text(m)) for m in messages)
            output_tokens = estimate_tokens(text)
            try:
                prices = litellm.cost_per_token(
                    model=self.name, prompt_tokens=input_tokens, completion_tokens=output_tokens
                )
                cost = float(sum(prices))
            except Exception:
                cost = None
        return Reply(
            text=text,
            usage=Usage(input_tokens, output_tokens, cost=cost, estimated=estimated),
            finish_reason=getattr(choice, "finish_reason", None),
        )

    def describe(self, exc: BaseException, retries: str | None = None) -> str:
        """A one-line account of a failed request: model, server, what went wrong, what to do."""
        litellm = _litellm()
        head = f"model {self.name!r} at {self.where}"
        detail = _short(exc)
        status = getattr(exc, "status_code", None)
        if isinstance(exc, litellm.Timeout):
            return (
                f"{head}: no reply within {self.timeout:g} s; if the model is just slow, "
                "raise --request-timeout (request_timeout)"
            )
        cause = _network_cause(exc)
        if cause is not None and cause != "dropped":
            return (
                f"{head}: cannot connect ({cause}); is the server running, and are the host and "
                "port of the URL (--api-base) right?"
            )
        if cause == "dropped" or isinstance(exc, litellm.APIConnectionError):
            return f"{head}: the connection failed{'' if retries is None else f' ({retries})'}: {detail}"
        if isinstance(exc, litellm.AuthenticationError) or status in (401, 403):
            return (
                f"{head}: the server refused the credentials ({detail}); check the key: --api-key, "
                f"{API_KEY_ENV}, or the provider's own variable (such as OPENAI_API_KEY)"
            )
        if isinstance(exc, litellm.NotFoundError) or status == 404:
            return (
                f"{head}: not found ({detail}); check the model name (ask the server's /models for "
                "the names it serves) and the URL (an OpenAI-compatible server's usually ends in /v1)"
            )
        if retries is not None:
            what = "rate limited (429)" if status == 429 else f"the server kept failing ({status})"
            return f"{head}: {what}: {retries}; wait and `nbagent resume`, or retry later ({detail})"
        if isinstance(status, int) and 400 <= status < 500:
            return f"{head}: the server refused the request (HTTP {status}): {detail}"
        return f"{head} failed: {detail}"


async def close_http_clients() -> None:
    """Close the HTTP clients litellm keeps for this event loop (call before the loop ends: a
    client left open is a socket left open)."""
    litellm = sys.modules.get("litellm")
    if litellm is None:
        return  # never imported: nothing was opened
    try:
        await litellm.close_litellm_async_clients()
        litellm.in_memory_llm_clients_cache.flush_cache()
    except Exception:
        pass  # closing is a courtesy at exit; a failure here must not hide the run's outcome


def _classify(exc: BaseException) -> tuple[bool, float | None]:
    """Retry rate limits, server errors and dropped connections; not what a retry cannot fix
    (keys, names, URLs, a server that is not there, a request timeout already waited out)."""
    litellm = _litellm()
    if isinstance(exc, litellm.Timeout):
        return False, None
    # litellm reports a refused connection as a 500; the exception chain tells what happened.
    cause = _network_cause(exc)
    if cause is not None or isinstance(exc, litellm.APIConnectionError):
        return cause == "dropped", None
    status = getattr(exc, "status_code", None)
    if isinstance(exc, litellm.RateLimitError) or status == 429:
        return True, _retry_after(exc)
    if isinstance(status, int) and status >= 500:
        return True, _retry_after(exc)
    return False, None


def _retry_after(exc: BaseException) -> float | None:
    # litellm copies the provider's response headers onto the exception it raises; its
    # ``response`` is often a stand-in without them.
    for headers in (
        getattr(exc, "litellm_response_headers", None),
        getattr(getattr(exc, "response", None), "headers", None),
    ):
        seconds = retry_after_seconds(headers)
        if seconds is not None:
            return seconds
    return None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _network_cause(exc: BaseException) -> str | None:
    """What the network did: ``"connection refused"``, ``"unknown host"``, ``"no connection"``,
    ``"dropped"`` (cut mid-request: worth a retry), or ``None`` (the network was not the problem)."""
    cannot_connect = False
    for link in _chain(exc):
        name = type(link).__name__
        if isinstance(link, ConnectionRefusedError):
            return "connection refused"
        if isinstance(link, socket.gaierror):
            return "unknown host"
        if isinstance(link, (ConnectionResetError, BrokenPipeError)) or name in (
            "ReadError",
            "RemoteProtocolError",
            "WriteError",
            "ServerDisconnectedError",
        ):
            return "dropped"
        if name in ("ConnectError", "ClientConnectorError", "ConnectTimeout"):
            cannot_connect = True
    return "no connection" if cannot_connect else None


def _delta_texts(chunk: Any) -> Iterator[str]:
    for choice in getattr(chunk, "choices", None) or []:
        delta = getattr(choice, "delta", None)
        text = getattr(delta, "content", None)
        if text:
            yield text


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
