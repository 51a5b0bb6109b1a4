"""Task files: JSONL and YAML read into checked tasks; bad input named by file, line and field."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import PENGUINS

from nbagent.agent.config import AgentConfig, settings
from nbagent.batch.runner import BatchSettings, distinct_models, model_kwargs, task_config
from nbagent.batch.tasks import FIELDS, TaskFileError, batch_wide_settings, load_tasks
from nbagent.models.retry import RetryPolicy


def _write(tmp_path: Path, name: str, text: str) -> Path:
    (tmp_path / PENGUINS.name).write_bytes(PENGUINS.read_bytes())
    (tmp_path / "script.json").write_text("[]")
    path = tmp_path / name
    path.write_text(text)
    return path


def test_jsonl_and_yaml_give_the_same_tasks(tmp_path: Path) -> None:
    jsonl = _write(
        tmp_path,
        "t.jsonl",
        '{"id": 7, "question": " Mean mass? ", "files": "penguins.csv", "parameters": {"species": "Adelie"},'
        ' "model": "scripted:script.json", "max_steps": 3, "timeout": 5, "task_timeout": 60,'
        ' "expected": "@mean[3700.66]", "tolerance": 0.01, "metadata": {"level": "easy"}}\n\n'
        '{"id": "b", "question": "Other?"}\n',
    )
    yaml = _write(
        tmp_path,
        "t.yaml",
        """
- id: 7
  question: " Mean mass? "
  files: [penguins.csv]
  parameters: {species: Adelie}
  model: scripted:script.json
  max_steps: 3
  timeout: 5
  task_timeout: 60
  expected: "@mean[3700.66]"
  tolerance: 0.01
  metadata: {level: easy}
- id: b
  question: Other?
""",
    )
    a, b = load_tasks(jsonl), load_tasks(yaml)
    assert [replace(t, line=0) for t in a] == [replace(t, line=0) for t in b]
    task = a[0]
    assert task.id == "7" and task.question == "Mean mass?"
    assert task.files == ((tmp_path / "penguins.csv").resolve(),)
    assert task.model == f"scripted:{(tmp_path / 'script.json').resolve()}"
    assert dict(task.settings) == {"model": task.model, "max_steps": 3, "timeout": 5.0}
    assert (task.task_timeout, task.tolerance) == (60.0, 0.01)
    assert dict(task.parameters) == {"species": "Adelie"} and task.metadata == {"level": "easy"}
    assert a[1].line == 3 and b[1].line == 13


@pytest.mark.parametrize(
    ("name", "text", "where", "message"),
    [
        (
            "t.jsonl",
            '{"id": "a", "question": "q"}\n{"id": "b", "question": "q",}',
            "line 2",
            "not valid JSON",
        ),
        ("t.jsonl", '["a"]', "line 1", "a task must be an object"),
        ("t.jsonl", '{"id": "a"}', "line 1", "missing field 'question'"),
        ("t.jsonl", '{"id": "a b", "question": "q"}', "line 1, field 'id'", "not a usable id"),
        ("t.jsonl", '{"id": "a", "question": "q", "qustion": 1}', "line 1, field 'qustion'", "unknown field"),
        (
            "t.jsonl",
            '{"id": "a", "question": "q", "files": ["nope.csv"]}',
            "field 'files'",
            "'nope.csv' does not",
        ),
        ("t.jsonl", '{"id": "a", "question": "q", "max_steps": 0}', "field 'max_steps'", "at least 1"),
        ("t.jsonl", '{"id": "a", "question": "q", "timeout": -1}', "field 'timeout'", "a positive number"),
        ("t.jsonl", '{"id": "a", "question": "q", "task_timeout": 0}', "field 'task_timeout'", "positive"),
        ("t.jsonl", '{"id": "a", "question": "q", "expected": [1]}', "field 'expected'", "not a list"),
        ("t.jsonl", '{"id": "a", "question": "q", "scoring": "fuzzy"}', "field 'scoring'", "exact, numeric"),
        (
            "t.jsonl",
            '{"id": "a", "question": "q", "parameters": {"x y": 1}}',
            "field 'parameters'",
            "variable",
        ),
        (
            "t.jsonl",
            '{"id": "a", "question": "q", "model": "scripted:gone.json"}',
            "field 'model'",
            "gone.json",
        ),
        (
            "t.jsonl",
            '{"id": "A", "question": "q"}\n{"id": "a", "question": "q"}',
            "line 2, field 'id'",
            "line 1",
        ),
        ("t.yaml", "- id: a\n  question: q\n- id: b\n  question: [unclosed\n", "line 5", "not valid YAML"),
        ("t.yaml", "id: a\nquestion: q\n", "line 1", "must be a YAML list"),
        ("t.yaml", "- id: a\n  question: q\n  max_steps: many\n", "line 3, field 'max_steps'", "'many'"),
        ("t.yaml", "- id: a\n  question: q\n  parameters: {day: 2024-01-01}\n", "line 3", "date value"),
        ("t.txt", "", "", "name it .jsonl"),
        ("t.jsonl", "\n\n", "", "holds no tasks"),
    ],
)
def test_bad_task_files_name_the_file_line_and_field(
    tmp_path: Path, name: str, text: str, where: str, message: str
) -> None:
    path = _write(tmp_path, name, text)
    with pytest.raises(TaskFileError) as caught:
        load_tasks(path)
    error = str(caught.value)
    assert error.startswith(str(path))
    assert where in error and message in error, error


def test_a_missing_task_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(TaskFileError, match="does not exist"):
        load_tasks(tmp_path / "nope.jsonl")


def _one_task(tmp_path: Path, **fields: object) -> Path:
    path = tmp_path / "tasks.jsonl"
    path.write_text(
        '{"id": "first", "question": "q"}\n' + json.dumps({"id": "a", "question": "q", **fields}) + "\n"
    )
    return path


def test_a_misspelt_field_is_one_error_naming_the_nearest_field_and_the_line(tmp_path: Path) -> None:
    path = _one_task(tmp_path, max_step=3)
    with pytest.raises(TaskFileError) as caught:
        load_tasks(path)
    assert str(caught.value) == (
        f"{path}, line 2, field 'max_step': unknown field 'max_step'; did you mean 'max_steps'?"
    )
    with pytest.raises(TaskFileError, match="did you mean 'expected'"):
        load_tasks(_one_task(tmp_path, expect=3))


@pytest.mark.parametrize(
    ("name", "value", "flag"),
    [
        ("memory_limit", "2G", "--memory-limit"),
        ("kernel", "python3", "--kernel"),
        ("sandbox", "limits", "--sandbox"),
        ("allow_network", True, "--allow-network"),
        ("tool_sources", ["a/b"], "--tool"),
        ("default_tools", False, "--default-tools"),
    ],
)
def test_kernel_sandbox_and_tool_settings_are_batch_wide(
    tmp_path: Path, name: str, value: object, flag: str
) -> None:
    with pytest.raises(TaskFileError) as caught:
        load_tasks(_one_task(tmp_path, **{name: value}))
    error = str(caught.value)
    assert f"line 2, field {name!r}: {name} is batch-wide" in error
    assert f"give {flag} to nbagent batch" in error


def test_a_key_in_a_task_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TaskFileError) as caught:
        load_tasks(_one_task(tmp_path, api_key="sk-secret"))
    error = str(caught.value)
    assert "line 2, field 'api_key': not allowed in a task file" in error and "api_key_env" in error
    assert "sk-secret" not in error


def test_any_model_loop_or_budget_setting_is_a_task_field(tmp_path: Path) -> None:
    [_, task] = load_tasks(
        _one_task(
            tmp_path,
            observation_chars=500,
            planning_interval=2,
            seed=None,  # null: the batch's value
            history_recent_steps=1,
            instructions="Answer in French.",
            vision=False,
            max_retries=0,
            max_cost=0.5,
        )
    )
    assert dict(task.settings) == {
        "observation_chars": 500,
        "planning_interval": 2,
        "history_recent_steps": 1,
        "instructions": "Answer in French.",
        "vision": False,
        "max_retries": 0,
        "max_cost": 0.5,
    }
    # Checked by the same Setting.check as the flags and Agent(...): the same bounds, one error.
    with pytest.raises(
        TaskFileError, match=r"line 2, field 'observation_chars': must be a whole number of at least 200"
    ):
        load_tasks(_one_task(tmp_path, observation_chars=10))
    with pytest.raises(TaskFileError, match="field 'vision': must be true or false"):
        load_tasks(_one_task(tmp_path, vision="yes"))


def test_every_setting_is_a_task_field_or_batch_wide_and_fields_say_what_they_mean() -> None:
    wide = batch_wide_settings()
    for spec in settings():
        if spec.group in ("model", "loop", "budget") and spec.name != "api_key":
            assert FIELDS[spec.name].startswith(spec.help), spec.name  # one help sentence, not two
            assert spec.name not in wide
        else:
            assert spec.name not in FIELDS and (spec.name in wide or spec.name == "api_key")
    for name in ("id", "question", "files", "parameters", "task_timeout", "expected", "scoring", "tolerance"):
        assert FIELDS[name]


def test_task_file_model_fields_are_checked_and_override_the_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def tasks_of(**fields: object) -> Path:
        path = tmp_path / "tasks.jsonl"
        path.write_text(json.dumps({"id": "a", "question": "q", **fields}) + "\n")
        return path

    for fields, says in [
        ({"api_base": "localhost:8000/v1"}, "field 'api_base'.*not an http"),
        ({"api_key_env": "sk-abc"}, "field 'api_key_env'.*NAME of an environment variable"),
        ({"api_key_env": "SURELY_UNSET_KEY_VAR"}, "SURELY_UNSET_KEY_VAR is not set"),
        ({"temperature": 5}, "field 'temperature'"),
        ({"max_tokens": 0}, "field 'max_tokens'"),
        ({"request_timeout": -1}, "field 'request_timeout'"),
    ]:
        with pytest.raises(TaskFileError, match=says) as caught:
            load_tasks(tasks_of(**fields))
        assert "sk-abc" not in str(caught.value)  # a key written by mistake is not repeated

    monkeypatch.setenv("TASK_KEY", "sk-task")
    [task] = load_tasks(
        tasks_of(
            api_base="http://h:1/v1", api_key_env="TASK_KEY", temperature=0.5, max_tokens=99, max_steps=4
        )
    )
    settings = BatchSettings(
        out=tmp_path,
        config=AgentConfig(
            model="openai/m", api_key="sk-batch", request_timeout=9, max_retries=0, max_steps=7
        ),
    )
    retry = RetryPolicy(max_attempts=1)
    assert model_kwargs(settings, task) == {
        "api_base": "http://h:1/v1",
        "api_key": "sk-task",  # the task's own key wins over the batch's
        "timeout": 9,
        "temperature": 0.5,
        "max_tokens": 99,
        "retry": retry,
    }
    assert model_kwargs(settings) == {"api_key": "sk-batch", "timeout": 9, "retry": retry}
    assert len(distinct_models([task, task], settings)) == 1
    config = task_config(settings, task)
    assert (config.model, config.max_steps, config.api_key_env) == ("openai/m", 4, "TASK_KEY")
    assert task.where == f"{tmp_path / 'tasks.jsonl'}, line 1"


def test_the_readme_names_every_task_field() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("**Task file.**", 1)[1].split("**Scoring.**", 1)[0]
    assert [name for name in FIELDS if f"`{name}`" not in section] == []
