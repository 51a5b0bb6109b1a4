"""Any model litellm can reach: OpenAI, Anthropic, Ollama, vLLM, any OpenAI-compatible server."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from functools import cached_property
from typing import Any

from ..exceptions import ModelError, UsageError
from .base import Message, Model, Reply, Usage, estimate_tokens, message_text
from .retry import RetryPolicy, retry_after_seconds, with_retries

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
            ``"anthropic/claude-sonnet-4-5"``, ``"ollama/qwen2.5-coder"``, or
            ``"openai/<name>"`` with ``api_base`` for any OpenAI-compatible server.
        api_base: base URL of the server (local servers, proxies).
        api_key: key to send; by default litellm reads the provider's usual variable.
        vision: whether the model takes images; ``None`` asks litellm.
        retry: how transient failures (429, 5xx, connection errors) are retried.
        **kwargs: passed to ``litellm.acompletion`` (``temperature``, ``max_tokens``, ...).
    """

    def __init__(
        self,
        model: str,
        *,
        api_base: str | None = None,
        api_key: str | None = None,
        vision: bool | None = None,
        retry: RetryPolicy | None = None,
        **kwargs: Any,
    ) -> None:
        self.name = model
        self.api_base = api_base
        self.api_key = api_key
        self._vision = vision
        self.retry = retry or RetryPolicy()
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

    def check(self) -> None:
        """Raise :class:`UsageError` if litellm cannot route this model or its key is missing."""
        litellm = _litellm()
        try:
            _, provider, _, _ = litellm.get_llm_provider(self.name, api_base=self.api_base)
        except Exception:
            raise UsageError(
                f"unknown model {self.name!r}: litellm cannot tell its provider; "
                "use a string like 'openai/gpt-4o-mini' or 'ollama/llama3.1'"
            ) from None
        if self.api_key or self.api_base:
            return
        env = litellm.validate_environment(self.name)
        missing = env.get("missing_keys") or []
        if missing:
            raise UsageError(
                f"model {self.name!r} needs {', '.join(missing)} in the environment "
                f"(or pass an api_key); {provider} cannot be called without it"
            )

    async def acomplete(self, messages: Sequence[Message], stop: Sequence[str] = ()) -> Reply:
        litellm = _litellm()
        params: dict[str, Any] = {
            "model": self.name,
            "messages": list(messages),
            "drop_params": True,
            # Retries are ours (logged, same policy for every provider), not the SDK's.
            "num_retries": 0,
            "max_retries": 0,
            **self.kwargs,
        }
        if stop and self.supports_stop:
            params["stop"] = list(stop)
        if self.api_base:
            params["api_base"] = self.api_base
        if self.api_key:
            params["api_key"] = self.api_key

        async def call() -> Any:
            return await litellm.acompletion(**params)

        try:
            response = await with_retries(call, self.retry, _classify, f"model {self.name}")
        except Exception as exc:
            raise ModelError(f"model {self.name!r} failed: {_short(exc)}") from exc
        choice = response.choices[0]
        text = choice.message.content or ""
        usage = getattr(response, "usage", None)
        input_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
        output_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
        cost: float | None
        try:
            cost = float(litellm.completion_cost(completion_response=response))
        except Exception:
            cost = None
        estimated = input_tokens == 0 and output_tokens == 0
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
        )


def _classify(exc: BaseException) -> tuple[bool, float | None]:
    litellm = _litellm()
    transient = (
        litellm.RateLimitError,
        litellm.APIConnectionError,
        litellm.Timeout,
        litellm.ServiceUnavailableError,
        litellm.InternalServerError,
    )
    if isinstance(exc, transient):
        response = getattr(exc, "response", None)
        return True, retry_after_seconds(getattr(response, "headers", None))
    return False, None


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
