"""Task files: JSONL and YAML read into checked tasks; bad input named by file, line and field."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from conftest import PENGUINS

from nbagent.batch.tasks import TaskFileError, load_tasks


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
    assert (task.max_steps, task.timeout, task.task_timeout, task.tolerance) == (3, 5.0, 60.0, 0.01)
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
        ("t.jsonl", '{"id": "a", "question": "q", "timeout": -1}', "field 'timeout'", "positive number"),
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
