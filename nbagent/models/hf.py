"""Models served through huggingface_hub's ``InferenceClient`` (HF providers, TGI, endpoints)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..exceptions import ModelError
from .base import Message, Model, Reply, Usage
from .retry import RetryPolicy, retry_after_seconds, with_retries


class HFInferenceModel(Model):
    """A chat model reached with ``huggingface_hub.AsyncInferenceClient``.

    Args:
        model: model id on the Hub (``"Qwen/Qwen2.5-Coder-32B-Instruct"``), or ``None`` when
            ``base_url`` points at a server that serves one model.
        provider: inference provider (``"together"``, ``"hf-inference"``, ``"auto"``, ...).
        base_url: an endpoint URL (a TGI / vLLM server, an Inference Endpoint).
        api_key: token; by default huggingface_hub uses ``HF_TOKEN`` or the cached login.
        vision: whether the model takes images.
        **kwargs: passed to ``chat_completion`` (``temperature``, ``max_tokens``, ...).
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
        timeout: float | None = 300.0,
        **kwargs: Any,
    ) -> None:
        from huggingface_hub import AsyncInferenceClient

        self.name = model or base_url or "hf-inference"
        self.model = model
        self.supports_images = vision
        self.retry = retry or RetryPolicy()
        self.kwargs = kwargs
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
        params: dict[str, Any] = {"messages": list(messages), **self.kwargs}
        if stop:
            params["stop"] = list(stop)

        async def call() -> Any:
            return await self._client.chat_completion(**params)

        try:
            response = await with_retries(call, self.retry, _classify, f"model {self.name}")
        except Exception as exc:
            raise ModelError(f"model {self.name!r} failed: {exc}") from exc
        text = response.choices[0].message.content or ""
        usage = response.usage
        return Reply(
            text=text,
            usage=Usage(
                input_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
                output_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
            ),
        )

    async def aclose(self) -> None:
        await self._client.close()


def _classify(exc: BaseException) -> tuple[bool, float | None]:
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    if status is not None:
        return status == 429 or status >= 500, retry_after_seconds(getattr(response, "headers", None))
    # No response at all: the connection failed or timed out.
    name = type(exc).__name__
    return ("Connect" in name or "Timeout" in name or isinstance(exc, OSError)), None
