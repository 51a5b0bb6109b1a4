"""%%agent in a real kernel: the agent works on the user's variables, in the user's session."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from conftest import code
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_notebook

from nbagent import Execution, Kernel
from nbagent.exceptions import UsageError
from nbagent.magic.magics import parse_options, question_mark_transform
from nbagent.testing.openai_server import OpenAICompatibleServer

SALES = (
    "import pandas as pd\n"
    "sales = pd.DataFrame({'month': ['Jan', 'Feb', 'Mar', 'Apr', 'May'],\n"
    "                      'revenue': [120, 135, 90, 95, 140]})"
)


def texts(execution_or_cell: Any) -> str:
    """Everything a cell shows, as one text: streams, plain/markdown data, error lines."""
    parts = []
    for out in execution_or_cell.outputs:
        if out["output_type"] == "stream":
            parts.append(out["text"])
        elif out["output_type"] == "error":
            parts.append(f"{out['ename']}: {out['evalue']}")
        else:
            data = out.get("data", {})
            parts.append(data.get("text/markdown") or data.get("text/plain", ""))
    return "\n".join(parts)


def write_script(path: Path, *replies: str) -> Path:
    path.write_text(json.dumps(list(replies)), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def user_kernel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kernel]:
    """A plain ipykernel (Jupyter's python3 spec, as a user has) with nbagent loaded."""
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("NBAGENT_MODEL", raising=False)
        k = Kernel("python3", cwd=tmp_path_factory.mktemp("user-kernel"))
        k.start()
    try:
        assert k.execute("%load_ext nbagent").ok
        yield k
    finally:
        k.shutdown()


def run(kernel: Kernel, source: str, timeout: float = 120) -> Execution:
    return kernel.execute(source, timeout=timeout)


# -- the notebook a user would write, run by nbclient ------------------------------------------


def test_notebook_agent_uses_and_leaves_variables_in_the_users_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NBAGENT_MODEL", raising=False)
    write_script(
        tmp_path / "replies.json",
        code(
            "monthly_change = sales.set_index('month').revenue.diff()\n"
            "drop_month = monthly_change.idxmin()\n"
            "print(monthly_change.to_dict())\n"
            "drop_month",
            "Compute the month-to-month change.",
        ),
        code("final_answer(drop_month)", "March has the biggest drop."),
        code("print(-monthly_change.min())\nfinal_answer(int(-monthly_change.min()))", "Use the change."),
    )
    nb = new_notebook(
        cells=[
            new_code_cell("%load_ext nbagent"),
            new_code_cell(SALES),
            new_code_cell(
                "%%agent --model scripted:replies.json --notebook audit.ipynb\n"
                "Which month's revenue dropped most?"
            ),
            new_code_cell("print(repr(_), drop_month, type(monthly_change).__name__)"),
            new_code_cell("%%agent\nBy how much did it drop?"),
            new_code_cell(
                "from nbagent import ScriptedModel\n"
                "m = ScriptedModel(['```python\\ntotal = int(sales.revenue.sum())\\n'\n"
                "                   'final_answer(total)\\n```'])"
            ),
            new_code_cell("%agent --reset"),
            new_code_cell("%agent --model m What is the total revenue?"),
            new_code_cell("print(total, _, 'sales: pandas DataFrame, 5 rows' in m.calls[0][1]['content'])"),
            new_code_cell("%agent --max-steps two Anything?", metadata={"tags": ["raises-exception"]}),
        ],
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
    )
    NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    cells = nb.cells

    first = cells[2]
    shown = texts(first)
    assert "Step 1." in shown and "drop_month = monthly_change.idxmin()" in shown  # thought and code, live
    assert "{'Jan': nan, 'Feb': 15.0, 'Mar': -45.0" in shown  # the step's own output, live
    result = [o for o in first.outputs if o["output_type"] == "execute_result"]
    assert result[-1]["data"]["text/plain"] == "'Mar'"  # the answer is the cell's result
    assert cells[3].outputs[0]["text"] == "'Mar' Mar Series\n"  # `_` and the agent's variables

    assert [o["data"]["text/plain"] for o in cells[4].outputs if o["output_type"] == "execute_result"] == [
        "45"
    ]
    assert "45.0" in texts(cells[4])  # the follow-up used the first run's variables

    assert "the conversation was reset" in texts(cells[6])
    assert [o["data"]["text/plain"] for o in cells[7].outputs if o["output_type"] == "execute_result"] == [
        "580"
    ]
    assert cells[8].outputs[0]["text"] == "580 580 True\n"  # the model was told of `sales`

    error = cells[9].outputs
    assert len(error) == 1 and error[0]["name"] == "stderr"
    assert error[0]["text"] == ("UsageError: --max-steps must be a whole number of at least 1, not 'two'\n")

    audit = nbformat.read(tmp_path / "audit.ipynb", as_version=4)
    nbformat.validate(audit)
    header = audit.cells[0].source
    assert header.startswith("# Which month's revenue dropped most?")
    assert "sales: pandas DataFrame, 5 rows × 2 columns: month" in header
    steps = [c for c in audit.cells if c.metadata["nbagent"]["role"] == "step"]
    assert [c.source.splitlines()[0] for c in steps] == [
        "monthly_change = sales.set_index('month').revenue.diff()",
        "final_answer(drop_month)",
        "print(-monthly_change.min())",
    ]
    assert all(isinstance(c.execution_count, int) for c in steps)
    assert any(c.source.startswith("## Follow-up: By how much did it drop?") for c in audit.cells)
    assert audit.metadata["nbagent"]["runs"][1]["status"] == "answered"

    # After --reset, a new conversation and a new audit notebook in the working directory.
    second = nbformat.read(tmp_path / "agent-session.ipynb", as_version=4)
    nbformat.validate(second)
    assert second.cells[0].source.startswith("# What is the total revenue?")


# -- errors are one line --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("%agent --bogus hi", "UsageError: unknown option '--bogus'; the options are: --api-base"),
        ("%agent --max-step 3 hi", "UsageError: unknown option '--max-step'; did you mean '--max-steps'?"),
        ("%agent --timeout", "UsageError: option --timeout needs a value: --timeout SECONDS"),
        ("%agent hello", "UsageError: no model configured: pass --model MODEL"),
        ("%agent", "UsageError: no question: write it after %agent"),
        (
            "%agent --model scripted:missing.json hi",
            "UsageError: scripted model file 'missing.json' does not exist",
        ),
    ],
)
def test_bad_input_is_one_usage_error_line(user_kernel: Kernel, line: str, message: str) -> None:
    execution = run(user_kernel, line)
    assert execution.status == "error"
    assert [o["output_type"] for o in execution.outputs] == ["stream"]
    text = execution.outputs[0]["text"]
    assert text.startswith(message) and text.count("\n") == 1  # one line, no traceback


def test_model_from_nbagent_model_variable_and_a_light_extension(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = write_script(tmp_path / "replies.json", code("final_answer(6 * 7)"))
    monkeypatch.setenv("NBAGENT_MODEL", f"scripted:{script}")
    with Kernel("python3", cwd=tmp_path) as k:
        assert k.execute("%load_ext nbagent").ok
        execution = k.execute("%agent What is six times seven?", timeout=60)
        imported = k.execute("import sys\nprint('litellm' in sys.modules)")
        k.execute("%unload_ext nbagent")
        unloaded = k.execute("%agent anything")
    assert execution.ok
    assert execution.outputs[-1]["data"]["text/plain"] == "42"  # the trailing '?' did not mean help
    assert imported.outputs[0]["text"] == "False\n"  # litellm is imported only for litellm models
    assert "Line magic function `%agent` not found" in texts(unloaded)


def test_config_sets_model_and_limits(user_kernel: Kernel, tmp_path: Path) -> None:
    script = write_script(tmp_path / "loop.json", *[code(f"step_{i} = {i}") for i in range(3)])
    execution = run(
        user_kernel,
        f"%config AgentMagics.model = 'scripted:{script}'\n"
        "%config AgentMagics.max_steps = 1\n"
        f"%agent --reset --notebook {tmp_path / 'limits.ipynb'} Count for me",
    )
    run(user_kernel, "%config AgentMagics.model = ''\n%config AgentMagics.max_steps = 10")
    assert execution.ok
    # One step, then the final nudge (one more reply); no answer came, so no result.
    assert "no final answer within the step limit" in texts(execution)
    assert not [o for o in execution.outputs if o["output_type"] == "execute_result"]
    assert run(user_kernel, "print(step_0, step_1)").outputs[0]["text"] == "0 1\n"


def test_help_option_prints_the_usage(user_kernel: Kernel) -> None:
    execution = run(user_kernel, "%agent --help")
    assert execution.ok
    shown = texts(execution)
    assert shown.startswith("Ask the agent; it answers by running code in this session")
    assert "--timeout SECONDS" in shown and "--insert" in shown


def test_audit_notebooks_are_never_replaced_by_accident(user_kernel: Kernel, tmp_path: Path) -> None:
    script = write_script(tmp_path / "replies.json", code("final_answer(1)"), code("final_answer(2)"))
    existing = tmp_path / "kept.ipynb"
    existing.write_text("precious", encoding="utf-8")
    refused = run(user_kernel, f"%agent --reset --model scripted:{script} --notebook {existing} One?")
    assert texts(refused) == (
        f"UsageError: output {str(existing)!r} already exists; "
        "choose another name or pass --overwrite (overwrite=True)\n"
    )
    assert existing.read_text(encoding="utf-8") == "precious"

    first = run(user_kernel, f"%agent --model scripted:{script} --notebook {tmp_path / 'a.ipynb'} One?")
    assert first.outputs[-1]["data"]["text/plain"] == "1"
    moved = run(user_kernel, f"%agent --notebook {tmp_path / 'b.ipynb'} Two?")
    assert texts(moved).startswith(
        f"UsageError: this conversation is recorded in {str(tmp_path / 'a.ipynb')!r}"
    )
    assert not (tmp_path / "b.ipynb").exists()


# -- the user's session is safe ---------------------------------------------------------------------


def test_a_failed_step_is_undone_by_binding_and_reports_its_in_place_changes(
    user_kernel: Kernel, tmp_path: Path
) -> None:
    script = write_script(
        tmp_path / "replies.json",
        code(
            "made_here = 'new'\nprecious = 'rebound'\nledger['amount'] *= 2\ndel spare\n1 / 0",
            "This will fail.",
        ),
        code("progress = 'started'\nimport time\nwhile True:\n    time.sleep(0.05)", "This runs too long."),
        code("final_answer([progress, precious, spare, 'made_here' in globals()])", "What is left."),
    )
    run(user_kernel, "import pandas as pd\nprecious = 'the user data'\nspare = 'kept'")
    run(user_kernel, "ledger = pd.DataFrame({'amount': [10, 20]})")
    execution = run(
        user_kernel,
        f"%%agent --reset --model scripted:{script} --timeout 1 --notebook {tmp_path / 'safe.ipynb'}\n"
        "Try things.",
    )
    assert execution.ok
    shown = texts(execution)
    # The failed step: its new name removed, the rebound and deleted names restored, and the
    # in-place change it made to the user's DataFrame reported (it cannot be undone).
    assert (
        "Step 1: the step failed: its new names were removed (made_here); names it rebound or deleted "
        "were restored (precious, spare); it changed ledger in place before failing; that cannot be undone."
    ) in shown
    # A timed-out step keeps what it did (the session kept its state).
    assert "Step 2 was stopped: interrupted after 1 s; the session kept its state." in shown
    assert execution.outputs[-1]["data"]["text/plain"] == "['started', 'the user data', 'kept', False]"
    assert run(user_kernel, "print(ledger['amount'].tolist())").outputs[0]["text"] == "[20, 40]\n"
    # The error under the cell is the model's short form; the full traceback is folded.
    errors = [o["data"] for o in execution.outputs if "<details>" in o.get("data", {}).get("text/html", "")]
    assert len(errors) == 2 and "ZeroDivisionError: division by zero" in errors[0]["text/plain"]
    assert len(errors[0]["text/plain"].splitlines()) < 10 and "Full traceback" in errors[0]["text/html"]

    audit = nbformat.read(tmp_path / "safe.ipynb", as_version=4)
    steps = [c for c in audit.cells if c.metadata["nbagent"]["role"] == "step"]
    assert [c.metadata["nbagent"]["status"] for c in steps] == ["error", "timeout", "ok"]
    assert steps[1].metadata["tags"] == ["raises-exception", "skip-execution"]
    assert "KeyboardInterrupt" in steps[1].metadata["nbagent"]["observation"]
    assert "its new names were removed (made_here)" in steps[0].metadata["nbagent"]["observation"]


def test_user_interrupt_stops_the_whole_run(user_kernel: Kernel, tmp_path: Path) -> None:
    started = tmp_path / "started"
    script = write_script(
        tmp_path / "replies.json",
        code(f"import pathlib, time\npathlib.Path({str(started)!r}).touch()\ntime.sleep(120)"),
        code(f"import pathlib\npathlib.Path({str(tmp_path / 'second')!r}).touch()"),
        code("final_answer('should not get here')"),
    )

    async def interrupt_during_first_step() -> Execution:
        task = asyncio.ensure_future(
            user_kernel.aexecute(
                f"%%agent --reset --model scripted:{script} --notebook {tmp_path / 'stop.ipynb'}\nWait.",
                timeout=120,
            )
        )
        for _ in range(1200):  # wait (up to a minute) for the step to be running
            if started.exists():
                break
            await asyncio.sleep(0.05)
        assert started.exists()
        await user_kernel.ainterrupt()
        return await task

    execution = asyncio.run(interrupt_during_first_step())
    assert execution.ok  # the magic reports the interruption itself, in one line
    assert "interrupted; the audit notebook keeps the steps so far" in texts(execution)
    assert not (tmp_path / "second").exists()  # no step ran after the interrupt
    assert not [o for o in execution.outputs if o["output_type"] == "execute_result"]
    assert run(user_kernel, "print('still alive')").outputs[0]["text"] == "still alive\n"
    audit = nbformat.read(tmp_path / "stop.ipynb", as_version=4)
    assert audit.metadata["nbagent"]["runs"][-1]["status"] == "interrupted"


def test_user_interrupt_while_the_model_thinks_stops_the_run(user_kernel: Kernel, tmp_path: Path) -> None:
    asked = tmp_path / "asked"
    run(
        user_kernel,
        "import asyncio, pathlib\n"
        "from nbagent import Model\n"
        "class SlowModel(Model):\n"
        "    name = 'slow'\n"
        "    async def acomplete(self, messages, stop=()):\n"
        f"        pathlib.Path({str(asked)!r}).touch()\n"
        "        await asyncio.sleep(300)\n"
        "slow = SlowModel()",
    )

    async def interrupt_while_waiting() -> Execution:
        task = asyncio.ensure_future(
            user_kernel.aexecute(f"%agent --reset --model slow --notebook {tmp_path / 'slow.ipynb'} Hm?")
        )
        for _ in range(1200):
            if asked.exists():
                break
            await asyncio.sleep(0.05)
        assert asked.exists()
        await user_kernel.ainterrupt()
        return await asyncio.wait_for(task, timeout=60)

    execution = asyncio.run(interrupt_while_waiting())
    assert execution.ok
    assert "interrupted; the audit notebook keeps the steps so far · *0 steps" in texts(execution)
    audit = nbformat.read(tmp_path / "slow.ipynb", as_version=4)
    assert audit.metadata["nbagent"]["runs"][-1]["status"] == "interrupted"


# -- history, insertion, litellm ---------------------------------------------------------------------


def test_steps_are_in_the_users_in_out_history(user_kernel: Kernel, tmp_path: Path) -> None:
    script = write_script(
        tmp_path / "replies.json",
        code("history_probe = 21\nhistory_probe * 2"),
        code("final_answer(history_probe)"),
    )
    execution = run(user_kernel, f"%%agent --reset --model scripted:{script}\nProbe the history.")
    first_step = execution.outputs[2]
    assert first_step["output_type"] == "execute_result"
    n = first_step["execution_count"]
    check = run(user_kernel, f"print(repr(In[{n}]), Out[{n}], In[{n + 1}], _)")
    assert (
        check.outputs[0]["text"]
        == "'history_probe = 21\\nhistory_probe * 2' 42 final_answer(history_probe) 21\n"
    )
    assert check.execution_count == n + 2  # the next cell follows the steps
    # nbagent's setup code ran in the same shell (told apart by aexecute(setup=True)), yet stays
    # out of the user's history.
    probe = "print(any(('def final' + '_answer') in cell for cell in In), 'final_answer' in dir())"
    setup = run(user_kernel, probe)
    assert setup.outputs[0]["text"] == "False True\n"


def test_insert_offers_the_code_that_worked_as_one_next_cell_and_help_is_kept(tmp_path: Path) -> None:
    script = write_script(
        tmp_path / "replies.json",
        code("x = 2"),
        code("y = x +"),  # a syntax error: not offered
        code("y = x * 21\nfinal_answer(y)"),
    )
    km = KernelManager(kernel_name="python3")
    km.start_kernel(cwd=str(tmp_path))
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        kc.execute_interactive("%load_ext nbagent", timeout=60)
        reply = kc.execute_interactive(
            f"%%agent --model scripted:{script} --insert\nMake y.", timeout=60, output_hook=lambda msg: None
        )
        help_reply = kc.execute_interactive("%agent?", timeout=60, output_hook=lambda msg: None)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    pages = [p["data"]["text/plain"] for p in help_reply["content"]["payload"] if p["source"] == "page"]
    assert len(pages) == 1 and "Ask the agent; it answers by running code in this session" in pages[0]
    payloads = [p for p in reply["content"]["payload"] if p["source"] == "set_next_input"]
    assert payloads == [
        {
            "source": "set_next_input",
            "text": "# Step 1\nx = 2\n\n# Step 3\ny = x * 21\nfinal_answer(y)",
            "replace": False,
        }
    ]


def test_litellm_model_through_loopback_server(user_kernel: Kernel, tmp_path: Path) -> None:
    replies = [code("answer = sum(range(10))"), code("final_answer(answer)")]
    with OpenAICompatibleServer(replies) as server:
        execution = run(
            user_kernel,
            "import os\nos.environ['OPENAI_API_KEY'] = 'test'\n"
            f"%agent --reset --model openai/scripted-model --api-base {server.url} Sum 0 to 9",
        )
    assert execution.ok, texts(execution)
    assert execution.outputs[-1]["data"]["text/plain"] == "45"
    assert len(server.requests) == 2
    assert server.requests[0]["model"] == "scripted-model"


# -- parsing (pure functions) -----------------------------------------------------------------------


def test_options_then_question() -> None:
    opts = parse_options("--model openai/gpt-4o --timeout=5 --notebook 'my runs/a.ipynb' --insert What's up?")
    assert (opts.model, opts.timeout, opts.notebook, opts.insert) == (
        "openai/gpt-4o",
        5.0,
        "my runs/a.ipynb",
        True,
    )
    assert opts.question == "What's up?"
    assert parse_options("-- -5 times 3?").question == "-5 times 3?"
    with pytest.raises(UsageError, match="takes no value"):
        parse_options("--reset=yes")
    with pytest.raises(UsageError, match=r"--timeout must be a positive number of seconds, not .-1."):
        parse_options("--timeout -1 hi")


def test_question_mark_transform_keeps_questions_and_help() -> None:
    assert question_mark_transform(["%agent What is the mean?\n"]) == [
        "get_ipython().run_line_magic('agent', 'What is the mean?')\n"
    ]
    assert question_mark_transform(["x = 1\n", "  %agent --model m why? \n"]) == [
        "x = 1\n",
        "  get_ipython().run_line_magic('agent', '--model m why?')\n",
    ]
    for untouched in (
        ["%agent?\n"],
        ["%agent??\n"],
        ["%%agent\n", "%agent inside a question?\n"],
        ["agents?\n"],
    ):
        assert question_mark_transform(untouched) == untouched


def test_the_session_keeps_its_random_state_and_gets_no_default_tools(
    user_kernel: Kernel, tmp_path: Path
) -> None:
    script = write_script(tmp_path / "replies.json", code("final_answer('done')"))
    run(user_kernel, "import random\nrandom.seed(1234)\nexpected_draw = random.Random(1234).random()")
    run(user_kernel, f"%%agent --reset --model scripted:{script}\nJust answer.")
    check = run(
        user_kernel, "print(random.random() == expected_draw, 'read_file' in dir(), 'list_files' in dir())"
    )
    assert check.outputs[0]["text"] == "True False False\n"
