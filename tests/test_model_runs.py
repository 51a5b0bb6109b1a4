"""Runs against a real model server: odd replies, refused runs, the CLI's model flags, streaming
to a terminal, and a batch that checks its model first and stops on repeated errors."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
from batch_helpers import read_status, write_batch
from conftest import code
from http_helpers import close_pooled_http_clients, dead_url  # noqa: F401 (an autouse fixture)

from nbagent import Agent, LiteLLMModel
from nbagent.agent.agent import CUT_OFF, EMPTY_REPLY
from nbagent.cli import main
from nbagent.testing.openai_server import OpenAICompatibleServer


def test_a_cut_off_reply_is_not_run_and_the_model_is_told(tmp_path: Path) -> None:
    script = [
        {"reply": code("open('ran.txt', 'w').write('x')\nvalues = [1, 2,"), "finish_reason": "length"},
        {"reply": None},
        code("final_answer(3)"),
    ]
    with (
        OpenAICompatibleServer(script) as server,
        Agent(LiteLLMModel("openai/m", api_base=server.url)) as agent,
    ):
        result = agent.run("Three?", notebook=tmp_path / "cut.ipynb")
    assert result.answer == 3
    assert not (tmp_path / "ran.txt").exists()  # the cut-off code never ran
    assert result.steps[0].execution is None and result.steps[0].observation.text == CUT_OFF
    assert result.steps[1].observation.text == EMPTY_REPLY
    assert server.requests[1]["messages"][-1]["content"] == f"Observation:\n{CUT_OFF}"


def test_empty_replies_twice_end_the_run_with_an_error(tmp_path: Path) -> None:
    with (
        OpenAICompatibleServer([{"reply": ""}, {"reply": None}, "never asked"]) as server,
        Agent(LiteLLMModel("openai/m", api_base=server.url)) as agent,
    ):
        result = agent.run("Anything?", notebook=tmp_path / "empty.ipynb")
    assert result.status == "error" and "empty reply twice" in (result.error or "")
    assert len(server.requests) == 2


def test_a_run_refused_before_its_first_step_leaves_no_notebook(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "numbers.csv"
    data.write_text("x\n1\n")
    out = tmp_path / "out"
    out.mkdir()
    url = dead_url()
    started = time.perf_counter()
    code_ = main(
        [
            *("run", "Sum of x?", "-d", str(data), "-o", str(out / "refused.ipynb")),
            *("-m", "openai/m", "--api-base", url),
        ]
    )
    took = time.perf_counter() - started
    err = capsys.readouterr().err
    assert code_ == 1
    assert "cannot connect" in err and url in err and "'openai/m'" in err
    assert list(out.iterdir()) == []  # neither the notebook nor the copied data file
    assert took < 30, took

    # Quiet, the cause is still said (on stderr), and nothing is left either.
    args = ["run", "Sum?", "-q", "-o", str(out / "quiet.ipynb"), "-m", "openai/m", "--api-base", url]
    assert main(args) == 1
    assert "error: model 'openai/m' at " in capsys.readouterr().err
    assert list(out.iterdir()) == []

    # A file that was there before the run is never removed.
    existing = tmp_path / "mine.ipynb"
    existing.write_text("{}")
    with Agent(LiteLLMModel("openai/m", api_base=url)) as agent:
        result = agent.run("Sum?", notebook=existing, overwrite=True)
    assert result.status == "error" and existing.exists()


def test_a_url_without_a_scheme_is_refused_up_front(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["run", "Q?", "-o", str(tmp_path / "x.ipynb"), "-m", "openai/m", "--api-base", "localhost:8000/v1"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "--api-base 'localhost:8000/v1' is not an http(s) URL" in err
    assert list(tmp_path.iterdir()) == []
    for flag, value, says in [
        ("--request-timeout", "0", "--request-timeout must be a positive"),
        ("--temperature", "3", "--temperature must be a number from 0 to 2"),
        ("--max-tokens", "0", "--max-tokens must be a whole number of at least 1"),
        ("--max-retries", "-1", "--max-retries must be a whole number of at least 0"),
    ]:
        assert main(["run", "Q?", "-o", str(tmp_path / "x.ipynb"), "-m", "openai/m", flag, value]) == 2
        assert says in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def _read_pty(fd: int, proc: subprocess.Popen[bytes], deadline: float) -> list[tuple[float, str]]:
    """Everything the process writes to the terminal, each piece with the time it arrived."""
    pieces: list[tuple[float, str]] = []
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                data = os.read(fd, 4096)
            except OSError:  # the process closed its end
                break
            if not data:
                break
            pieces.append((time.monotonic(), data.decode("utf-8", "replace")))
        elif proc.poll() is not None:
            break
    return pieces


def _first_seen(pieces: list[tuple[float, str]], text: str) -> float:
    """When ``text`` was first on the screen."""
    screen = ""
    for when, piece in pieces:
        screen += piece
        if text in screen:
            return when
    raise AssertionError(f"{text!r} never appeared in {screen!r}")


def test_the_terminal_shows_the_reply_as_it_streams_and_the_flags_reach_the_server(tmp_path: Path) -> None:
    thought = "Thought: I will add the numbers one by one, slowly, to show streaming."
    script = [
        {
            "reply": thought + "\n" + "```python\nprint(2 + 3)\n```",
            "chunk_delay": 0.15,
            "chunk_chars": 8,
            "delay": 1.5,
        },
        code("final_answer(5)"),
    ]
    with OpenAICompatibleServer(script) as server:
        primary, secondary = pty.openpty()
        env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "COLUMNS": "100"}
        env.pop("OPENAI_API_KEY", None)
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "nbagent", "run", "What is 2 + 3?", "-o", str(tmp_path / "s.ipynb")),
                *("-m", "openai/streamer", "--api-base", server.url, "--api-key", "sk-flag"),
                *("--temperature", "0.2", "--max-tokens", "300", "--request-timeout", "30"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=secondary,
            env=env,
        )
        os.close(secondary)
        try:
            pieces = _read_pty(primary, proc, time.monotonic() + 120)
            stdout = proc.communicate(timeout=60)[0].decode()
        finally:
            os.close(primary)
    assert proc.returncode == 0, "".join(t for _, t in pieces)
    assert stdout.strip() == "5"
    screen = "".join(t for _, t in pieces)
    assert "waiting for model… 1 s" in screen  # the wait line ticked while the server was silent
    # The thought arrived in pieces over time: its first words well before its last.
    first, last = _first_seen(pieces, "Thought:"), _first_seen(pieces, "show streaming.")
    assert last - first > 0.8, (first, last)
    body = server.requests[0]
    assert body["stream"] is True and body["temperature"] == 0.2 and body["max_tokens"] == 300
    assert server.headers[0]["authorization"] == "Bearer sk-flag"


def test_without_a_terminal_the_log_stays_line_based(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with OpenAICompatibleServer([code("final_answer(7)")]) as server:
        args = ["run", "Seven?", "-o", str(tmp_path / "p.ipynb"), "-m", "openai/m", "--api-base", server.url]
        assert main(args) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == "7"
    assert "waiting for model" not in captured.err and "\r" not in captured.err and "\x1b" not in captured.err
    assert "── step 1 " in captured.err and "  │ final_answer(7)" in captured.err


def _http_tasks(n: int) -> list[dict[str, object]]:
    return [{"id": f"t{i}", "question": f"What is {i} + 1?"} for i in range(n)]


def test_batch_checks_its_model_before_the_first_task(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    task_file = write_batch(tmp_path, _http_tasks(3))
    out = tmp_path / "runs"
    url = dead_url()
    started = time.perf_counter()
    code_ = main(["batch", str(task_file), "--out", str(out), "-m", "openai/m", "--api-base", url, "-q"])
    assert code_ == 2
    err = capsys.readouterr().err
    assert "cannot connect" in err and url in err and "no task was run" in err
    assert not out.exists()
    assert time.perf_counter() - started < 10


def test_batch_stops_after_the_same_error_three_times_and_resume_goes_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    task_file = write_batch(tmp_path, _http_tasks(4))
    out = tmp_path / "runs"
    refused = {
        "status": 401,
        "error": "Incorrect API key provided: sk-wrong. Find your key at the dashboard.",
    }
    with OpenAICompatibleServer(["OK", refused, refused, refused, "never asked"]) as server:
        code_ = main(["batch", str(task_file), "--out", str(out), "-m", "openai/m", "--api-base", server.url])
        assert len(server.requests) == 4
    captured = capsys.readouterr()
    assert code_ == 1
    # The cause, whole, in the summary (not cut to a table column).
    assert "stopped: 3 tasks in a row failed with the same error" in captured.out
    assert "Incorrect API key provided: sk-wrong. Find your key at the dashboard." in captured.out
    assert "--resume" in captured.out
    assert "errors in full:\n  (3 tasks) model 'openai/m' at" in captured.out
    statuses = read_status(out)
    assert [(r["id"], r["status"], r["steps"]) for r in statuses] == [(f"t{i}", "error", 0) for i in range(3)]

    # Fixed: --resume runs the three that failed before their first step, and the one never run.
    answers = ["OK"] + [code(f"final_answer({i} + 1)") for i in range(4)]
    with OpenAICompatibleServer(answers) as server:
        code_ = main(
            [
                "batch",
                str(task_file),
                "--out",
                str(out),
                "-m",
                "openai/m",
                "--api-base",
                server.url,
                "--resume",
                *("--jobs", "2"),
            ]
        )
    assert code_ == 0, capsys.readouterr()
    final = {r["id"]: r for r in read_status(out)}
    assert sorted(final) == [f"t{i}" for i in range(4)]
    assert all(r["status"] == "ok" for r in final.values())
    assert sorted(json.loads(json.dumps(r["answer"])) for r in final.values()) == ["1", "2", "3", "4"]


def test_agent_magic_streams_the_reply_under_the_cell_with_its_model_options(tmp_path: Path) -> None:
    from jupyter_client.manager import KernelManager

    thought = "Thought: counting the letters of a long word, slowly, so it streams."
    script = [
        {
            "reply": thought + "\n```python\nn = len('streaming')\n```",
            "chunk_delay": 0.1,
            "chunk_chars": 8,
            "delay": 1.3,
        },
        code("final_answer(n)"),
    ]
    manager = KernelManager(kernel_name="python3")
    env = {**os.environ, "MY_LOOPBACK_KEY": "sk-from-my-variable", "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    env.pop("OPENAI_API_KEY", None)
    manager.start_kernel(cwd=str(tmp_path), env=env)
    client = manager.client()
    client.start_channels()
    messages: list[dict[str, object]] = []
    try:
        client.wait_for_ready(timeout=60)
        with OpenAICompatibleServer(script) as server:
            line = (
                f"%agent --model openai/m --api-base {server.url} --api-key-env MY_LOOPBACK_KEY "
                "--temperature 0.1 --max-tokens 64 --request-timeout 30 How long is the word?"
            )
            client.execute_interactive("%load_ext nbagent", timeout=60)
            reply = client.execute_interactive(line, timeout=120, output_hook=messages.append)
            # A key typed on the magic's line would be saved in the notebook: only a NAME is taken.
            refused = client.execute_interactive(
                "%agent --api-key-env sk-abc123 Hm?", timeout=60, output_hook=messages.append
            )
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    assert reply["content"]["status"] == "ok"
    updates = [
        m["content"]["data"]["text/plain"]  # type: ignore[index]
        for m in messages
        if m["msg_type"] == "update_display_data"  # type: ignore[index]
    ]
    assert any("waiting for model… 1 s" in u for u in updates), updates
    writing = [u for u in updates if u.startswith("Step 1 · the model is writing…")]
    assert len(writing) >= 3 and len(writing[0]) < len(writing[-1])  # the text grew in place
    results = [m for m in messages if m["msg_type"] == "execute_result"]  # type: ignore[index]
    assert results[0]["content"]["data"]["text/plain"] == "9"  # type: ignore[index]
    assert server.headers[0]["authorization"] == "Bearer sk-from-my-variable"
    assert (server.requests[0]["temperature"], server.requests[0]["max_tokens"]) == (0.1, 64)
    assert refused["content"]["status"] == "error"
    assert "takes the NAME of an environment variable" in json.dumps(refused["content"])


def test_magic_model_options_are_checked() -> None:
    from nbagent.exceptions import UsageError
    from nbagent.magic.magics import parse_options

    opts = parse_options("--temperature 0.3 --max-tokens 50 --request-timeout=20 --api-base http://h:1/v1 Q")
    assert (opts.temperature, opts.max_tokens, opts.request_timeout, opts.api_base) == (
        0.3,
        50,
        20.0,
        "http://h:1/v1",
    )
    for line, says in [
        ("--api-key-env sk-live-123 Q", "takes the NAME of an environment variable"),
        (
            "--api-key-env SURELY_UNSET_KEY_VAR Q",
            "SURELY_UNSET_KEY_VAR: that environment variable is not set",
        ),
        ("--api-key sk-live-123 Q", "unknown option '--api-key'"),
        ("--temperature 9 Q", "from 0 to 2"),
        ("--max-tokens 0 Q", "at least 1"),
        ("--api-base localhost:1 Q", "not an http"),
    ]:
        with pytest.raises(UsageError, match=says):
            parse_options(line)
