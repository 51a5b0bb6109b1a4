"""A person in control: approving, editing, skipping or stopping steps; token and cost budgets."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import nbformat
import pytest
from conftest import code, run_cli, scripted

from nbagent import Agent, Kernel, LiteLLMModel, StopRun, UsageError
from nbagent.cli import main
from nbagent.testing import OpenAICompatibleServer


def nbagent_cells(path: Path, role: str) -> list[nbformat.NotebookNode]:
    nb = nbformat.read(path, as_version=4)
    return [c for c in nb.cells if c.metadata.get("nbagent", {}).get("role") == role]


def test_approval_refuses_edits_and_stops_through_the_api(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("precious")
    asked: list[tuple[int, str, str]] = []

    def approve(number: int, thought: str, source: str) -> bool | str:
        asked.append((number, thought, source))
        if number == 1:
            return False
        if number == 2:
            return "x = 10"
        if number == 3:
            return True
        raise StopRun("enough")

    model = scripted(
        code("import os; os.remove('keep.txt')", "Clean up."),
        code("x = 1"),
        code("print(x * 2)"),
        code("final_answer(x)"),
    )
    notebook = tmp_path / "approved.ipynb"
    with Agent(model, approve=approve) as agent:
        result = agent.run("What is x?", notebook=notebook)

    assert result.status == "stopped" and result.answer is None
    assert [a[0] for a in asked] == [1, 2, 3, 4]
    assert asked[0][1] == "Clean up."
    assert (tmp_path / "keep.txt").read_text() == "precious"  # the refused code never ran
    # The model was told of the refusal, and of the edit with the code that ran.
    assert "refused to run this code" in json.dumps(model.calls[1][-1])
    assert "x = 10" in result.steps[1].observation.text and "edited" in result.steps[1].observation.text
    assert result.steps[2].observation.text.strip().endswith("20")
    steps = nbagent_cells(notebook, "step")
    assert "skip-execution" in steps[0].metadata["tags"]  # a re-run does not run refused code
    assert steps[1].source == "x = 10" and steps[1].metadata["nbagent"]["original_code"] == "x = 1"
    assert steps[3].source == "final_answer(x)" and steps[3].execution_count is None
    assert "stopped by the user" in nbagent_cells(notebook, "marker")[-1].source
    assert nbformat.read(notebook, as_version=4).metadata.nbagent.runs[-1]["status"] == "stopped"


def test_an_approve_callback_returning_nonsense_is_a_usage_error(tmp_path: Path) -> None:
    model = scripted(code("x = 1"))
    with (
        Agent(model, approve=lambda n, t, c: None) as agent,  # type: ignore[arg-type,return-value]
        pytest.raises(UsageError, match="must return True"),
    ):
        agent.run("q", notebook=tmp_path / "bad.ipynb")


def test_token_budget_stops_before_the_next_call_and_resume_goes_on_with_a_larger_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = [
        {"reply": code("a = 1"), "prompt_tokens": 100, "completion_tokens": 20},
        {"reply": code("b = 2"), "prompt_tokens": 100, "completion_tokens": 20},
        {"reply": code("c = 3"), "prompt_tokens": 100, "completion_tokens": 20},
        {"reply": code("final_answer(a + b + c)"), "prompt_tokens": 100, "completion_tokens": 20},
    ]
    notebook = tmp_path / "budget.ipynb"
    with OpenAICompatibleServer(script) as server:
        base = ["--model", "openai/loopback", "--api-base", server.url, "-q"]
        os.environ["OPENAI_API_KEY"] = "sk-test"
        try:
            code_run = main(["run", "Sum?", "-o", str(notebook), "--max-total-tokens", "300", *base])
            assert code_run == 1
            assert len(server.requests) == 3  # 360 tokens after three calls: no fourth call
            nb = nbformat.read(notebook, as_version=4)
            assert nb.metadata.nbagent.runs[-1]["status"] == "budget"
            marker = nbagent_cells(notebook, "marker")[-1].source
            assert "360 of 300 tokens" in marker and "resume" in marker

            # The same budget again: still spent, no model call.
            assert main(["resume", str(notebook), "--max-total-tokens", "300", *base]) == 1
            assert len(server.requests) == 3
            assert main(["resume", str(notebook), "--max-total-tokens", "1000", *base]) == 0
        finally:
            del os.environ["OPENAI_API_KEY"]
    assert capsys.readouterr().out.strip().splitlines()[-1] == "6"
    assert len(server.requests) == 4
    assert nbformat.read(notebook, as_version=4).metadata.nbagent.runs[-1]["status"] == "answered"


def test_cost_budget_counts_estimated_usage_when_the_server_reports_none(tmp_path: Path) -> None:
    long_reply = code("x = 1\n# " + "padding " * 4000)  # ~8,000 estimated tokens a reply
    # Streamed in big chunks: litellm's per-chunk work on the default 4 characters is seconds here.
    script = [{"reply": long_reply, "usage": False, "chunk_chars": 4096}] * 3
    script.append({"reply": code("final_answer(x)"), "usage": False})
    with OpenAICompatibleServer(script) as server:
        model = LiteLLMModel("openai/gpt-4o-mini", api_base=server.url, api_key="sk-test")
        with Agent(model, max_cost=0.005) as agent:  # gpt-4o-mini: $0.60 per million output tokens
            result = agent.run("x?", notebook=tmp_path / "cost.ipynb")
    assert result.status == "budget"
    assert result.usage.estimated and result.usage.cost is not None and result.usage.cost >= 0.005
    assert len(server.requests) < 4
    assert "cost budget" in (result.error or "")


def test_budget_flags_that_cannot_work_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    replies = tmp_path / "r.json"
    replies.write_text(json.dumps([code("final_answer(1)")]))
    out = tmp_path / "o.ipynb"
    assert main(["run", "q", "-m", f"scripted:{replies}", "-o", str(out), "--max-total-tokens", "0"]) == 2
    assert "--max-total-tokens must be a whole number of at least 1" in capsys.readouterr().err
    assert main(["run", "q", "-m", f"scripted:{replies}", "-o", str(out), "--max-cost", "-1"]) == 2
    assert "--max-cost must be a positive" in capsys.readouterr().err
    assert not out.exists()


def _read_until(fd: int, needle: bytes, seen: bytearray, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while needle not in seen:
        if time.monotonic() > deadline:
            shown = seen.decode(errors="replace")
            raise AssertionError(f"{needle!r} never came; the terminal shows:\n{shown}")
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            try:
                seen += os.read(fd, 4096)
            except OSError:  # the child closed the terminal
                break


def test_run_approve_asks_on_the_terminal_to_skip_edit_and_stop(tmp_path: Path) -> None:
    replies = tmp_path / "replies.json"
    replies.write_text(
        json.dumps([code("x = 'refused'"), code("x = 1"), code("print(x)"), code("final_answer(x)")])
    )
    editor = tmp_path / "editor.sh"
    editor.write_text("#!/bin/sh\nsed -i 's/x = 1/x = 41 + 1/' \"$1\"\n")
    editor.chmod(0o755)
    notebook = tmp_path / "terminal.ipynb"
    env = {**os.environ, "EDITOR": str(editor), "COLUMNS": "100"}
    env.pop("VISUAL", None)
    command = [sys.executable, "-m", "nbagent", "run", "What is x?", "-m", f"scripted:{replies}"]
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [*command, "-o", str(notebook), "--approve"],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        cwd=tmp_path,
    )
    os.close(slave)
    seen = bytearray()
    try:
        for answer in (b"s", b"e", b"r", b"t"):
            _read_until(master, b"? ", seen)
            del seen[:]
            os.write(master, answer + b"\n")
        assert proc.wait(timeout=60) == 1
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    nb = nbformat.read(notebook, as_version=4)
    assert nb.metadata.nbagent.runs[-1]["status"] == "stopped"
    steps = nbagent_cells(notebook, "step")
    assert steps[1].source == "x = 41 + 1" and steps[1].metadata["nbagent"]["original_code"] == "x = 1"
    assert steps[2].outputs[0]["text"] == "42\n"
    assert "skip-execution" in steps[0].metadata["tags"] and "skip-execution" in steps[3].metadata["tags"]


def test_run_approve_without_a_terminal_exits_2(tmp_path: Path) -> None:
    replies = tmp_path / "r.json"
    replies.write_text(json.dumps([code("final_answer(1)")]))
    done = run_cli("run", "q", "-m", f"scripted:{replies}", "--approve", cwd=tmp_path)  # stdin: no tty
    assert done.returncode == 2 and "not a terminal" in done.stderr
    assert list(tmp_path.glob("*.ipynb")) == []


def test_agent_magic_approve_asks_with_input_and_budgets_stop_it(tmp_path: Path) -> None:
    replies = tmp_path / "replies.json"
    replies.write_text(
        json.dumps([code("y = 'refused'"), code("y = 1"), code("print(y * 2)"), code("final_answer(y)")])
    )
    notebook = tmp_path / "magic.ipynb"
    kernel = Kernel("python3", cwd=tmp_path)
    kernel.start()
    try:
        assert kernel.execute("%load_ext nbagent").ok
        # input() is the front end's; here a stand-in answers: skip, edit (two lines), run, stop.
        approved = kernel.execute(
            "import builtins\n"
            "answers = iter(['s', 'e', 'y = 5', 'y += 0', '', 'r', 't'])\n"
            "asked = []\n"
            "def answer(prompt=''):\n"
            "    asked.append(prompt)\n"
            "    return next(answers)\n"
            "builtins.input = answer\n"
            f"get_ipython().run_cell_magic('agent', '--approve -m scripted:{replies} --notebook {notebook}', "
            "'What is y?')\n"
            "print(y, len(asked))"
        )
        assert approved.ok, approved.outputs
        shown = json.dumps(approved.outputs)
        assert "stopped at your request" in shown and "tokens so far" in shown
        assert approved.outputs[-1]["text"] == "5 7\n"
        more = tmp_path / "more.json"
        more.write_text(json.dumps([code("z = 1"), code("final_answer(z)")]))
        budget = kernel.execute(
            f"%%agent --reset -m scripted:{more} --max-total-tokens 1 --notebook {tmp_path / 'b.ipynb'}\n"
            "What is y?"
        )
        assert budget.ok and "token budget is used" in json.dumps(budget.outputs)
    finally:
        kernel.shutdown()
    nb = nbformat.read(notebook, as_version=4)
    assert nb.metadata.nbagent.runs[-1]["status"] == "stopped"
    steps = nbagent_cells(notebook, "step")
    assert steps[1].source == "y = 5\ny += 0" and steps[1].metadata["nbagent"]["original_code"] == "y = 1"
    assert nbformat.read(tmp_path / "b.ipynb", as_version=4).metadata.nbagent.runs[-1]["status"] == "budget"


def _costly(source: str) -> dict[str, Any]:
    return {"reply": code(source), "input_tokens": 90, "output_tokens": 10}


def test_batch_budgets_per_task_and_in_total_and_resume_with_a_larger_total(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from batch_helpers import read_status, write_batch

    replies = [_costly("a = 1"), _costly("b = 2"), _costly("final_answer(a + b)")]
    tasks = write_batch(
        tmp_path,
        [
            {"id": "first", "question": "Sum?", "replies": replies, "max_total_tokens": 150},
            {"id": "second", "question": "Sum?", "replies": replies},
            {"id": "third", "question": "Sum?", "replies": replies},
        ],
    )
    out = tmp_path / "runs"
    common = ["batch", str(tasks), "--out", str(out), "-q", "--no-fork"]
    assert main([*common, "--total-tokens", "250"]) == 1
    status = {r["id"]: r for r in read_status(out)}
    assert status["first"]["status"] == "budget" and status["first"]["tokens"] == 200
    # 50 tokens were left when the second task started: one model call, then it stopped.
    assert status["second"]["status"] == "budget" and status["second"]["tokens"] == 100
    assert "third" not in status
    assert "not started: 1 tasks" in capsys.readouterr().out

    assert main([*common, "--resume", "--total-tokens", "10000"]) == 1  # two tasks stay 'budget'
    third = {r["id"]: r for r in read_status(out)}["third"]
    assert third["status"] == "ok" and third["answer"] == "3"


def test_batch_refuses_approve_and_budgets_that_cannot_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from batch_helpers import write_batch

    tasks = write_batch(tmp_path, [{"id": "t", "question": "q", "replies": [code("final_answer(1)")]}])
    out = tmp_path / "runs"
    assert main(["batch", str(tasks), "--out", str(out), "--approve"]) == 2
    assert "unattended" in capsys.readouterr().err
    assert main(["batch", str(tasks), "--out", str(out), "--total-cost", "0"]) == 2
    assert "--total-cost must be a positive" in capsys.readouterr().err
    bad = write_batch(tmp_path / "bad", [{"id": "t", "question": "q", "max_cost": "lots"}])
    assert main(["batch", str(bad), "--out", str(out), "-m", "scripted:x.json"]) == 2
    assert "field 'max_cost'" in capsys.readouterr().err
    assert not out.exists()
