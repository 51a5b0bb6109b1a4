"""Models over real HTTP: litellm and huggingface_hub against a loopback OpenAI-compatible server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import code
from jupyter_core.utils import run_sync

from nbagent import Agent, HFInferenceModel, LiteLLMModel, ModelError, RetryPolicy, UsageError
from nbagent.testing.openai_server import OpenAICompatibleServer


@pytest.fixture(autouse=True)
def close_pooled_http_clients() -> Iterator[None]:
    """litellm pools HTTP clients per server in a module cache; each test's server is new."""
    yield
    import litellm

    run_sync(litellm.close_litellm_async_clients)()
    litellm.in_memory_llm_clients_cache.flush_cache()


FAST_RETRY = RetryPolicy(max_attempts=3, initial_delay=0.01, max_delay=0.05)
HELLO = [{"role": "user", "content": "hello"}]


def test_litellm_chat_completion_reports_text_and_usage() -> None:
    script = [{"reply": "hi there", "prompt_tokens": 11, "completion_tokens": 3}]
    with OpenAICompatibleServer(script) as server:
        model = LiteLLMModel("openai/loopback-model", api_base=server.url, api_key="sk-test")
        reply = model.complete(HELLO, stop=["\nObservation:"])
    assert reply.text == "hi there"
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (11, 3)
    assert not reply.usage.estimated
    body = server.requests[0]
    assert body["model"] == "loopback-model"
    assert body["messages"] == HELLO
    assert body["stop"] == ["\nObservation:"]


def test_litellm_retries_a_429_then_succeeds() -> None:
    with OpenAICompatibleServer([{"status": 429, "retry_after": 0}, "after the limit"]) as server:
        model = LiteLLMModel("openai/m", api_base=server.url, api_key="sk-test", retry=FAST_RETRY)
        reply = model.complete(HELLO)
    assert reply.text == "after the limit"
    assert len(server.requests) == 2


def test_litellm_gives_up_after_the_retry_budget_with_a_model_error() -> None:
    script = [{"status": 503}, {"status": 503}, {"status": 503}, "never reached"]
    with OpenAICompatibleServer(script) as server:
        model = LiteLLMModel("openai/m", api_base=server.url, api_key="sk-test", retry=FAST_RETRY)
        with pytest.raises(ModelError, match="openai/m"):
            model.complete(HELLO)
    assert len(server.requests) == 3


def test_litellm_does_not_retry_a_client_error() -> None:
    with OpenAICompatibleServer([{"status": 400, "error": "bad request"}, "x"]) as server:
        model = LiteLLMModel("openai/m", api_base=server.url, api_key="sk-test", retry=FAST_RETRY)
        with pytest.raises(ModelError):
            model.complete(HELLO)
    assert len(server.requests) == 1


def test_huggingface_inference_client_path_with_usage_and_a_429() -> None:
    script = [
        {"status": 429, "retry_after": 0},
        {"reply": "from hf", "prompt_tokens": 7, "completion_tokens": 2},
    ]
    with OpenAICompatibleServer(script) as server:
        model = HFInferenceModel(base_url=server.url, api_key="hf_test", retry=FAST_RETRY)
        reply = model.complete(HELLO, stop=["\nObservation:"])
        model.close()
    assert reply.text == "from hf"
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (7, 2)
    assert len(server.requests) == 2
    assert server.requests[1]["messages"] == HELLO
    assert server.requests[1]["stop"] == ["\nObservation:"]


def test_an_agent_run_through_litellm_over_http(tmp_path: Path) -> None:
    script = [
        {"reply": code("x = 6 * 7\nprint(x)"), "prompt_tokens": 100, "completion_tokens": 20},
        {"reply": code("final_answer(x)"), "prompt_tokens": 150, "completion_tokens": 10},
    ]
    with OpenAICompatibleServer(script) as server:
        model = LiteLLMModel("openai/loopback", api_base=server.url, api_key="sk-test")
        with Agent(model) as agent:
            result = agent.run("What is 6 * 7?", notebook=tmp_path / "http.ipynb")
    assert result.answer == 42
    assert result.usage.input_tokens == 250 and result.usage.output_tokens == 30
    # The second request carried the first step's real observation.
    second = server.requests[1]["messages"]
    assert second[-1] == {"role": "user", "content": "Observation:\n42"}
    assert second[0]["role"] == "system" and "final_answer" in second[0]["content"]


def test_model_check_names_a_missing_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(UsageError, match="OPENAI_API_KEY"):
        LiteLLMModel("openai/gpt-4o-mini").check()


def test_model_check_rejects_a_model_litellm_cannot_route() -> None:
    with pytest.raises(UsageError, match="unknown model 'no-such-provider-model'"):
        LiteLLMModel("no-such-provider-model").check()
