"""Reaching a real model server: keys, URLs, timeouts, retries, streaming and odd replies.

Every test makes real HTTP requests through litellm (or huggingface_hub) to the loopback
OpenAI-compatible server; nothing of litellm is mocked.
"""

from __future__ import annotations

import time

import pytest
from http_helpers import close_pooled_http_clients, dead_url  # noqa: F401 (an autouse fixture)
from jupyter_core.utils import run_sync

from nbagent import HFInferenceModel, LiteLLMModel, ModelError, RetryPolicy, UsageError
from nbagent.models import resolve_model
from nbagent.models.base import estimate_tokens
from nbagent.testing.openai_server import OpenAICompatibleServer

HELLO = [{"role": "user", "content": "hello"}]
FAST_RETRY = RetryPolicy(max_attempts=3, initial_delay=0.01, max_delay=5.0)


def test_an_api_base_server_needs_no_key_and_never_gets_the_users_openai_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-the-users-real-openai-key")
    monkeypatch.delenv("NBAGENT_API_KEY", raising=False)
    with OpenAICompatibleServer(["no key needed", "with a key"]) as server:
        LiteLLMModel("openai/local", api_base=server.url).complete(HELLO)
        LiteLLMModel("openai/local", api_base=server.url, api_key="sk-given").complete(HELLO)
    sent = [h.get("authorization", "") for h in server.headers]
    assert "sk-the-users-real-openai-key" not in " ".join(sent)
    assert sent[1] == "Bearer sk-given"


def test_nbagent_api_key_and_api_base_variables_reach_the_server(monkeypatch: pytest.MonkeyPatch) -> None:
    with OpenAICompatibleServer(["from the variables"]) as server:
        monkeypatch.setenv("NBAGENT_API_BASE", server.url)
        monkeypatch.setenv("NBAGENT_API_KEY", "sk-from-nbagent-variable")
        model = resolve_model("openai/local", temperature=0.25, max_tokens=77)
        reply = model.complete(HELLO)
    assert reply.text == "from the variables"
    assert server.headers[0]["authorization"] == "Bearer sk-from-nbagent-variable"
    assert server.requests[0]["temperature"] == 0.25
    assert server.requests[0]["max_tokens"] == 77


@pytest.mark.parametrize("url", ["localhost:8000/v1", "127.0.0.1:11434", "ftp://host/v1"])
def test_an_api_base_without_a_scheme_is_refused_before_any_request(url: str) -> None:
    with pytest.raises(UsageError, match=r"not an http\(s\) URL.*http://localhost:8000/v1"):
        LiteLLMModel("openai/local", api_base=url)
    with pytest.raises(UsageError, match="not an http"):
        resolve_model("hf:org/model", api_base=url)


def test_a_429_waits_what_retry_after_asks(monkeypatch: pytest.MonkeyPatch) -> None:
    with OpenAICompatibleServer([{"status": 429, "retry_after": 1}, "after the limit"]) as server:
        model = LiteLLMModel("openai/m", api_base=server.url, retry=FAST_RETRY)
        started = time.perf_counter()
        reply = model.complete(HELLO)
        took = time.perf_counter() - started
    assert reply.text == "after the limit"
    assert len(server.requests) == 2
    # The policy alone would wait about 0.01 s; the server asked for 1 s.
    assert 1.0 <= took < 4.0, took


def test_a_retry_after_longer_than_a_retry_may_wait_stops_at_once() -> None:
    with OpenAICompatibleServer([{"status": 429, "retry_after": 3600}, "never reached"]) as server:
        model = LiteLLMModel("openai/m", api_base=server.url, retry=FAST_RETRY)
        started = time.perf_counter()
        with pytest.raises(ModelError, match=r"rate limited \(429\).*asked to wait 3600 s"):
            model.complete(HELLO)
    assert time.perf_counter() - started < 2
    assert len(server.requests) == 1


def test_server_errors_are_retried_within_the_budget() -> None:
    script = [{"status": 503}, {"status": 502}, {"status": 500}, "never reached"]
    with OpenAICompatibleServer(script) as server:
        model = LiteLLMModel("openai/m", api_base=server.url, retry=FAST_RETRY)
        with pytest.raises(ModelError, match=r"kept failing.*gave up after 3 attempts"):
            model.complete(HELLO)
    assert len(server.requests) == 3


@pytest.mark.parametrize(
    ("status", "says"),
    [
        (401, "refused the credentials.*--api-key"),
        (403, "refused the credentials"),
        (404, "not found.*/models"),
    ],
)
def test_client_errors_are_not_retried_and_name_the_model_and_url(status: int, says: str) -> None:
    with OpenAICompatibleServer([{"status": status}, "never reached"]) as server:
        model = LiteLLMModel("openai/the-model", api_base=server.url, api_key="sk-x", retry=FAST_RETRY)
        with pytest.raises(ModelError, match=says) as caught:
            model.complete(HELLO)
    assert len(server.requests) == 1
    assert "'openai/the-model'" in str(caught.value) and server.url in str(caught.value)


def test_a_dead_server_fails_at_once_naming_the_url() -> None:
    url = dead_url()
    model = LiteLLMModel("openai/m", api_base=url)  # the default retry policy
    started = time.perf_counter()
    with pytest.raises(ModelError, match=r"cannot connect.*is the server running") as caught:
        model.complete(HELLO)
    assert time.perf_counter() - started < 3
    assert url in str(caught.value) and "'openai/m'" in str(caught.value)


def test_a_slow_server_hits_the_request_timeout_once() -> None:
    with OpenAICompatibleServer([{"reply": "too late", "delay": 3}, "never asked"]) as server:
        model = LiteLLMModel("openai/m", api_base=server.url, timeout=0.5, retry=FAST_RETRY)
        started = time.perf_counter()
        with pytest.raises(ModelError, match=r"no reply within 0.5 s.*--request-timeout"):
            model.complete(HELLO)
        took = time.perf_counter() - started
    assert took < 2.5, took
    assert len(server.requests) == 1


def test_a_streamed_reply_arrives_in_pieces_with_its_usage() -> None:
    script = [{"reply": "x = 1\nprint(x)", "prompt_tokens": 21, "completion_tokens": 8, "chunk_delay": 0.05}]
    pieces: list[tuple[float, str]] = []
    with OpenAICompatibleServer(script) as server:
        model = LiteLLMModel("openai/m", api_base=server.url)
        reply = run_sync(model.astream)(HELLO, (), lambda t: pieces.append((time.perf_counter(), t)))
    assert reply.text == "x = 1\nprint(x)"
    assert "".join(t for _, t in pieces) == reply.text and len(pieces) >= 3
    assert pieces[-1][0] - pieces[0][0] > 0.1  # they came as the server sent them, not all at once
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (21, 8)
    assert server.requests[0]["stream"] is True
    assert server.requests[0]["stream_options"] == {"include_usage": True}


def test_a_reply_cut_at_the_token_limit_says_so() -> None:
    with OpenAICompatibleServer([{"reply": "```python\nx = [1, 2,", "finish_reason": "length"}]) as server:
        reply = LiteLLMModel("openai/m", api_base=server.url, max_tokens=5).complete(HELLO)
    assert reply.finish_reason == "length"
    assert server.requests[0]["max_tokens"] == 5


def test_a_reply_without_choices_is_a_clear_model_error() -> None:
    with OpenAICompatibleServer([{"choices": []}, {"choices": []}]) as server:
        with pytest.raises(ModelError, match="without any choice"):
            LiteLLMModel("openai/m", api_base=server.url, stream=False).complete(HELLO)
        # Streamed, litellm makes up an empty choice: it arrives as an empty reply (which the agent
        # tells the model about, and ends the run on when it happens again).
        assert LiteLLMModel("openai/m", api_base=server.url).complete(HELLO).text == ""


def test_a_null_content_is_an_empty_reply() -> None:
    with OpenAICompatibleServer([{"reply": None}]) as server:
        reply = LiteLLMModel("openai/m", api_base=server.url, stream=False).complete(HELLO)
    assert reply.text == ""


def test_the_check_asks_one_tiny_question_and_names_a_dead_server() -> None:
    with OpenAICompatibleServer(["OK"]) as server:
        run_sync(LiteLLMModel("openai/m", api_base=server.url).acheck)()
    assert len(server.requests) == 1 and server.requests[0]["max_tokens"] == 1
    with pytest.raises(ModelError, match="cannot connect"):
        run_sync(LiteLLMModel("openai/m", api_base=dead_url()).acheck)()


def test_hf_with_a_base_url_sends_the_real_model_name() -> None:
    with OpenAICompatibleServer(["from hf"]) as server:
        model = resolve_model("hf:Org/Coder-7B", api_base=server.url, max_tokens=9)
        assert isinstance(model, HFInferenceModel)
        reply = model.complete(HELLO)
        model.close()
    assert reply.text == "from hf"
    assert server.requests[0]["model"] == "Org/Coder-7B"
    assert server.requests[0]["max_tokens"] == 9


def test_hf_check_asks_one_tiny_question_and_refused_keys_are_not_retried() -> None:
    with OpenAICompatibleServer(["OK", {"status": 401}, "never reached"]) as server:
        model = HFInferenceModel("Org/Coder-7B", base_url=server.url, retry=FAST_RETRY)
        run_sync(model.acheck)()
        with pytest.raises(ModelError, match=f"'Org/Coder-7B' at {server.url}"):
            model.complete(HELLO)
        model.close()
    assert server.requests[0]["max_tokens"] == 1
    assert len(server.requests) == 2


def test_retry_after_is_read_in_each_form_servers_use() -> None:
    import email.utils

    from nbagent.models.retry import retry_after_seconds

    assert retry_after_seconds({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert retry_after_seconds({"retry-after": "2"}) == 2.0
    in_ten = email.utils.formatdate(time.time() + 10, usegmt=True)
    assert 8 <= (retry_after_seconds({"retry-after": in_ten}) or 0) <= 10
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds(None) is None
    # A policy never waits less than the server asked for.
    assert RetryPolicy(initial_delay=0.01).delay(1, retry_after=2.0) >= 2.0


def test_hf_streams_its_reply_with_usage() -> None:
    script = [
        {"reply": "a streamed hf reply", "prompt_tokens": 12, "completion_tokens": 4, "chunk_delay": 0.02}
    ]
    pieces: list[str] = []
    with OpenAICompatibleServer(script) as server:
        model = HFInferenceModel("Org/Coder-7B", base_url=server.url)
        reply = run_sync(model.astream)(HELLO, (), pieces.append)
        model.close()
    assert reply.text == "a streamed hf reply" and "".join(pieces) == reply.text and len(pieces) > 2
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (12, 4)
    assert reply.finish_reason == "stop"
    assert server.requests[0]["stream"] is True


@pytest.mark.parametrize("stream", [True, False])
def test_a_reply_without_usage_is_estimated_and_says_so(stream: bool) -> None:
    with OpenAICompatibleServer([{"reply": "x" * 400, "usage": False}]) as server:
        reply = LiteLLMModel("openai/m", api_base=server.url, stream=stream).complete(HELLO)
    # nbagent's estimate of 400 letters (in pieces of up to eight): 50 tokens.
    assert reply.usage.estimated and reply.usage.output_tokens == estimate_tokens("x" * 400) == 50
    with OpenAICompatibleServer([{"reply": "x" * 400, "prompt_tokens": 3, "completion_tokens": 2}]) as server:
        reply = LiteLLMModel("openai/m", api_base=server.url, stream=stream).complete(HELLO)
    assert not reply.usage.estimated and (reply.usage.input_tokens, reply.usage.output_tokens) == (3, 2)
