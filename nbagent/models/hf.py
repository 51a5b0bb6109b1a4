"""Models served through huggingface_hub's ``InferenceClient`` (HF providers, TGI, endpoints)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..exceptions import ModelError
from .base import Message, Model, Reply, TextCallback, Usage
from .options import DEFAULT_REQUEST_TIMEOUT, check_api_base
from .retry import RetriesExhausted, RetryPolicy, retry_after_seconds, with_retries


class HFInferenceModel(Model):
    """A chat model reached with ``huggingface_hub.AsyncInferenceClient``.

    Args:
        model: model id on the Hub (``"Qwen/Qwen2.5-Coder-32B-Instruct"``), or ``None`` when
            ``base_url`` points at a server that serves one model.
        provider: inference provider (``"together"``, ``"hf-inference"``, ``"auto"``, ...).
        base_url: an endpoint URL (a TGI / vLLM server, an Inference Endpoint).
        api_key: token; by default huggingface_hub uses ``HF_TOKEN`` or the cached login.
        vision: whether the model takes images.
        retry: how 429 and 5xx replies are retried (other failures are not).
        timeout: seconds one request may take.
        temperature: sampling temperature; ``None``: the server's default.
        max_tokens: the longest reply, in tokens; ``None``: the server's default.
        stream: stream replies (their text reaches :meth:`astream`'s ``on_text`` as it comes).
        **kwargs: passed to ``chat_completion`` (``top_p``, ``seed``, ...).
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        provider: str | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        vision: bool = False,
        retry: RetryPolicy | None = None,
        timeout: float | None = DEFAULT_REQUEST_TIMEOUT,
        temperature: float | None = None,
        max_tokens: int | None = None,
        stream: bool = True,
        **kwargs: Any,
    ) -> None:
        from huggingface_hub import AsyncInferenceClient

        if base_url:
            base_url = check_api_base(base_url, "base_url")
        self.name = model or base_url or "hf-inference"
        self.model = model
        self.base_url = base_url
        self.api_key = api_key
        self.supports_images = vision
        self.retry = retry or RetryPolicy()
        self.timeout = timeout
        self.stream = stream
        sampling = {"temperature": temperature, "max_tokens": max_tokens}
        self.kwargs = {k: v for k, v in sampling.items() if v is not None} | kwargs
        client_args: dict[str, Any] = {"timeout": timeout}
        if base_url:
            client_args["base_url"] = base_url
        else:
            client_args["model"] = model
            client_args["provider"] = provider
        if api_key:
            client_args["api_key"] = api_key
        self._client = AsyncInferenceClient(**client_args)

    async def acomplete(self, messages: Sequence[Message], stop: Sequence[str] = ()) -> Reply:
        return await self._chat(messages, stop, {}, None)

    async def astream(
        self, messages: Sequence[Message], stop: Sequence[str] = (), on_text: TextCallback | None = None
    ) -> Reply:
        if not self.stream:
            return await super().astream(messages, stop, on_text)
        return await self._chat(messages, stop, {}, on_text)

    async def _chat(
        self,
        messages: Sequence[Message],
        stop: Sequence[str],
        extra: dict[str, Any],
        on_text: TextCallback | None,
    ) -> Reply:
        params: dict[str, Any] = {"messages": list(messages), **self.kwargs, **extra}
        if stop:
            params["stop"] = list(stop)
        if self.base_url and self.model:
            # A server at base_url is told the model's name; without it huggingface_hub sends "dummy".
            params["model"] = self.model
        streaming = on_text is not None
        if streaming:
            params["stream"] = True
            params["stream_options"] = {"include_usage": True}  # usage comes in the last chunk

        async def call() -> Any:
            response = await self._client.chat_completion(**params)
            if not streaming:
                return response
            return await _gather_stream(response, on_text)

        where = f"model {self.name!r} at {self.base_url or 'Hugging Face inference'}"
        try:
            response = await with_retries(call, self.retry, _classify, f"model {self.name}")
        except RetriesExhausted as exc:
            raise ModelError(f"{where}: {exc.reason}: {exc.cause}") from exc.cause
        except Exception as exc:
            raise ModelError(f"{where} failed: {exc}") from exc
        if isinstance(response, Reply):
            return response
        if not response.choices:
            raise ModelError(
                f"{where} sent a reply without any choice (empty 'choices'); "
                "the server may have filtered or dropped the reply: look at its log, or try again"
            )
        choice = response.choices[0]
        return Reply(
            text=choice.message.content or "",
            usage=_usage(response.usage),
            finish_reason=getattr(choice, "finish_reason", None),
        )

    async def acheck(self) -> None:
        """One tiny request (a one-token reply): raises :class:`ModelError` saying what is wrong."""
        await self._chat(
            [{"role": "user", "content": "Reply with the word OK."}], (), {"max_tokens": 1}, None
        )

    async def aclose(self) -> None:
        await self._client.close()


async def _gather_stream(chunks: Any, on_text: TextCallback | None) -> Reply:
    """The reply a streamed answer adds up to, passing its text on as it comes."""
    pieces: list[str] = []
    finish: str | None = None
    usage: Any = None
    async for chunk in chunks:
        usage = getattr(chunk, "usage", None) or usage
        for choice in getattr(chunk, "choices", None) or []:
            text = getattr(getattr(choice, "delta", None), "content", None)
            if text:
                pieces.append(text)
                if on_text is not None:
                    on_text(text)
            finish = getattr(choice, "finish_reason", None) or finish
    if finish is None and not pieces:
        raise ModelError("the streamed reply held no choice (empty 'choices'); look at the server's log")
    return Reply(text="".join(pieces), usage=_usage(usage), finish_reason=finish)


def _usage(usage: Any) -> Usage:
    return Usage(
        input_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
        output_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
    )


def _classify(exc: BaseException) -> tuple[bool, float | None]:
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    if status is not None:
        return status == 429 or status >= 500, retry_after_seconds(getattr(response, "headers", None))
    # No response at all: a server that is not there, or a request timeout already waited out,
    # is not helped by asking again.
    return False, None
