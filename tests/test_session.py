"""Agent (settings) and Session (kernel, memory, notebook) apart: ``%%agent`` keeps one session
across cells and asks each cell's question with an agent of that cell's settings."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest
from conftest import code, scripted
from test_magic import run, texts, user_kernel, write_script

import nbagent
from nbagent import Agent, Kernel, UsageError
from nbagent.agent.config import AgentConfig, setting
from nbagent.magic.magics import CELL_SETTINGS, AgentMagics, magic_help, parse_options

__all__ = ["user_kernel"]  # the fixture, shared with test_magic

MAGICS = "get_ipython().magics_manager.registry['AgentMagics']"


def probe(kernel: Kernel, expression: str) -> object:
    """The value of ``expression`` in the user's kernel (JSON-able)."""
    out = run(kernel, f"import json as _j\nprint(_j.dumps({expression}))")
    assert out.ok, texts(out)
    return json.loads(out.outputs[0]["text"])


def test_follow_up_cells_with_other_settings_go_on_in_the_same_session(
    user_kernel: Kernel, tmp_path: Path
) -> None:
    first_script = write_script(
        tmp_path / "first.json",
        code("shared_total = 40 + 2\nprint('made', shared_total)", "Make a number."),
        code("final_answer(shared_total)"),
    )
    audit = tmp_path / "talk.ipynb"
    first = run(
        user_kernel,
        f"%%agent --reset --model scripted:{first_script} --max-steps 5 --notebook {audit}\nMake a number.",
    )
    assert first.ok and first.outputs[-1]["data"]["text/plain"] == "42", texts(first)
    run(
        user_kernel,
        f"first_agent = {MAGICS}.last_agent\n"
        f"first_session = {MAGICS}.session\n"
        "first_settings = (first_agent.max_steps, first_agent.model.name, first_agent.approve, "
        "first_agent.config)\n"
        "from nbagent import ScriptedModel\n"
        "second_model = ScriptedModel(['```python\\nfinal_answer(shared_total + 1)\\n```'])",
    )

    # A follow-up with another model and another step limit: a new agent, the same session.
    second = run(user_kernel, "%%agent --model second_model --max-steps 2 --timeout 30\nAnd one more?")
    assert second.ok and second.outputs[-1]["data"]["text/plain"] == "43", texts(second)
    assert probe(
        user_kernel,
        f"[{MAGICS}.session is first_session, {MAGICS}.last_agent is not first_agent, "
        "(first_agent.max_steps, first_agent.model.name, first_agent.approve, first_agent.config) "
        "== first_settings, first_agent.max_steps, first_agent.timeout, "
        f"{MAGICS}.last_agent.max_steps, {MAGICS}.last_agent.timeout]",
    ) == [True, True, True, 5, 60.0, 2, 30.0]
    # The new model was shown the conversation so far: the first question's step and its output.
    shown = probe(
        user_kernel, "[m['content'] for m in second_model.calls[0] if isinstance(m['content'], str)]"
    )
    assert isinstance(shown, list)
    assert any("shared_total = 40 + 2" in text for text in shown)
    assert any("made 42" in text for text in shown)
    assert any("Make a number." in text for text in shown)

    # One audit notebook for both questions; each run records its own settings.
    nb = nbformat.read(audit, as_version=4)
    runs = nb.metadata["nbagent"]["runs"]
    assert [r["status"] for r in runs] == ["answered", "answered"]
    assert [r["settings"]["max_steps"] for r in runs] == [5, 2]
    assert [r["settings"]["timeout"] for r in runs] == [60.0, 30.0]
    assert any(c.source.startswith("## Follow-up: And one more?") for c in nb.cells)
    assert not (tmp_path / "agent-session.ipynb").exists()


def test_a_follow_up_with_a_model_option_goes_on_with_the_scripted_models_script(
    user_kernel: Kernel, tmp_path: Path
) -> None:
    script = write_script(
        tmp_path / "two.json",
        code("final_answer('first reply')"),
        code("final_answer('second reply')"),
    )
    first = run(user_kernel, f"%%agent --reset --model scripted:{script}\nOne?")
    assert first.outputs[-1]["data"]["text/plain"] == "'first reply'", texts(first)
    # --temperature means nothing to a script: the follow-up takes the script's next reply.
    second = run(user_kernel, "%%agent --temperature 0.5\nTwo?")
    assert second.outputs[-1]["data"]["text/plain"] == "'second reply'", texts(second)


def test_reset_starts_a_new_session_and_notebook(user_kernel: Kernel, tmp_path: Path) -> None:
    script = write_script(tmp_path / "one.json", code("reset_probe = 'kept'\nfinal_answer(1)"))
    first_audit, second_audit = tmp_path / "one.ipynb", tmp_path / "two.ipynb"
    run(user_kernel, f"%agent --reset --model scripted:{script} --notebook {first_audit} One?")
    run(
        user_kernel,
        f"old_session = {MAGICS}.session\n"
        "from nbagent import ScriptedModel\n"
        "fresh_model = ScriptedModel(['```python\\nfinal_answer(reset_probe)\\n```'])",
    )
    second = run(user_kernel, f"%agent --reset --model fresh_model --notebook {second_audit} Two?")
    assert second.ok and second.outputs[-1]["data"]["text/plain"] == "'kept'", texts(second)
    assert probe(
        user_kernel,
        f"[{MAGICS}.session is not old_session, str({MAGICS}.session.recorder.path), "
        "str(old_session.recorder.path), len(old_session.memory.steps)]",
    ) == [True, str(second_audit), str(first_audit), 1]
    # The user's variables stay (the shell is theirs), but the model starts a new conversation.
    shown = json.dumps(probe(user_kernel, "[m['content'] for m in fresh_model.calls[0]]"))
    assert "reset_probe = 'kept'" not in shown
    assert [r["status"] for r in nbformat.read(second_audit, as_version=4).metadata["nbagent"]["runs"]] == [
        "answered"
    ]
    assert len(nbformat.read(first_audit, as_version=4).metadata["nbagent"]["runs"]) == 1


def test_a_bad_option_in_a_cell_is_the_configs_message(user_kernel: Kernel) -> None:
    refused = run(user_kernel, "%agent --max-steps 0 hi")
    assert texts(refused) == "UsageError: --max-steps must be a whole number of at least 1, not '0'\n"
    near = run(user_kernel, "%agent --max-step 3 hi")
    assert texts(near).startswith("UsageError: unknown option '--max-step'; did you mean '--max-steps'?")
    configured = run(user_kernel, "%config AgentMagics.max_steps = 0\n%agent --model m hi")
    run(user_kernel, "%config AgentMagics.max_steps = 10")
    assert texts(configured) == (
        "UsageError: c.AgentMagics.max_steps must be a whole number of at least 1, not 0\n"
    )


# -- the options are the config's settings ----------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "nearest"),
    [
        ("--max-step", "--max-steps"),
        ("--timout", "--timeout"),
        ("--modle", "--model"),
        ("--notbook", "--notebook"),
    ],
)
def test_an_unknown_option_names_the_nearest(typed: str, nearest: str) -> None:
    with pytest.raises(UsageError, match=f"unknown option '{typed}'; did you mean '{nearest}'"):
        parse_options(f"{typed} 3 hi")


def test_the_api_key_is_never_an_option() -> None:
    with pytest.raises(UsageError, match=r"would be saved with your notebook.*--api-key-env NAME"):
        parse_options("--api-key sk-live-123 hi")


@pytest.mark.parametrize(
    ("name", "bad"),
    [
        ("max_steps", "0"),
        ("max_steps", "2.5"),
        ("timeout", "0"),
        ("timeout", "-1"),
        ("request_timeout", "0"),
        ("temperature", "3"),
        ("max_tokens", "0"),
        ("max_retries", "-1"),
        ("observation_chars", "100"),
        ("planning_interval", "0"),
        ("max_total_tokens", "0"),
        ("max_cost", "0"),
        ("api_base", "localhost:1"),
        ("api_key_env", "sk-live-123"),
    ],
)
def test_option_bounds_and_messages_are_the_configs(name: str, bad: str) -> None:
    spec = setting(name)
    with pytest.raises(UsageError) as expected:
        spec.parse(bad, spec.option)
    with pytest.raises(UsageError) as got:
        parse_options(f"{spec.option} {bad} hi")
    assert str(got.value) == str(expected.value)
    assert str(got.value).startswith(spec.option)


def test_every_cell_setting_is_an_option_in_the_help_with_the_configs_default() -> None:
    shown = magic_help()
    assert shown == AgentMagics.agent.__doc__
    defaults = AgentConfig()
    for name in CELL_SETTINGS:
        spec = setting(name)
        assert f"{spec.option} {spec.metavar}" in shown
        # %config AgentMagics.NAME starts from the config's default ("" for a text not set).
        expected = getattr(defaults, name)
        trait = AgentMagics.class_traits()[name]
        assert trait.default_value == (expected if spec.kind in ("int", "float") else expected or "")
    assert "(default 10)" in shown.split("--max-steps N", 1)[1].split("\n", 1)[0]
    for magic_only in ("--notebook PATH", "--reset", "--insert", "--overwrite", "--approve", "-h, --help"):
        assert magic_only in shown
    assert "--api-key " not in shown


def test_no_agent_attribute_is_assigned_after_construction() -> None:
    package = Path(nbagent.__file__).parent
    assigned = [
        f"{path.relative_to(package)}:{number}: {line.strip()}"
        for path in sorted(package.rglob("*.py"))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if re.search(r"\bagent\.\w+(\s*,\s*\w+(\.\w+)*)*\s*=[^=]", line)
    ]
    assert assigned == []


# -- the Python API: another agent goes on in a session -----------------------------------------------


def test_an_agent_goes_on_in_another_agents_session(tmp_path: Path) -> None:
    first = Agent(
        scripted(code("carried = 6 * 7\nprint(carried)"), code("final_answer(carried)")), max_steps=4
    )
    second_model = scripted(code("final_answer(carried + 1)"))
    second = Agent(second_model, max_steps=1)
    try:
        one = first.run("Make a number.", notebook=tmp_path / "run.ipynb")
        session, kernel = first.session, first.executor
        two = second.run("One more.", reset=False, session=session)
        assert (one.answer, two.answer) == (42, 43)
        assert second.session is session and second.executor is kernel and second.memory is first.memory
        assert first.max_steps == 4 and second.max_steps == 1  # each agent keeps its settings
        assert "carried = 6 * 7" in json.dumps(second_model.calls[0])  # the memory went on
        nb = nbformat.read(tmp_path / "run.ipynb", as_version=4)
        assert [r["settings"]["max_steps"] for r in nb.metadata["nbagent"]["runs"]] == [4, 1]
        with pytest.raises(UsageError, match="continues the same notebook"):
            second.run("Elsewhere?", notebook=tmp_path / "other.ipynb", reset=False)
    finally:
        second.close()  # it drives the session now: its kernel is shut down
        first.close()
    assert session.executor is None
