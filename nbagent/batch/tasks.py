"""Batch task files: JSONL or YAML in, checked :class:`BatchTask` objects out.

A task file holds one task per JSONL line (``.jsonl``, ``.ndjson``) or one item of a YAML list
(``.yaml``, ``.yml``). Every problem is reported as one :class:`TaskFileError` naming the file,
the line and the field, before anything runs. Relative paths (data files, ``scripted:`` models)
are relative to the task file's folder, so a task file and its data travel together.

Besides its own fields (:data:`FIELDS`), a task may hold any setting of the model, loop and
budget groups of :class:`~nbagent.agent.config.AgentConfig` by its name (``max_steps``,
``temperature``, ``observation_chars``...), checked as everywhere else; it overrides the batch's
value. The kernel, its sandbox and the tools are the batch's: such a field is refused, naming the
flag of ``nbagent batch`` that sets it. A null value leaves the batch's value.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..agent.config import Setting, unknown_message
from ..agent.config import settings as all_settings
from ..agent.parameters import check_parameters
from ..exceptions import UsageError

Scoring = Literal["exact", "numeric", "dabench"]
SCORINGS: tuple[Scoring, ...] = ("exact", "numeric", "dabench")

TASK_GROUPS = ("model", "loop", "budget")
"""The groups of settings a task may set for itself; the kernel, its sandbox and the tools are
the batch's (one warm pool serves every task)."""

REFUSED = {
    "api_key": "a key written into a task file would travel with it; give 'api_key_env', the NAME of "
    "the environment variable holding the key (or --api-key to nbagent batch)",
}
"""Settings a task file may not hold, and why."""


def task_settings() -> dict[str, Setting]:
    """The settings a task may hold, by name (those of :data:`TASK_GROUPS`, minus :data:`REFUSED`)."""
    return {s.name: s for s in all_settings() if s.group in TASK_GROUPS and s.name not in REFUSED}


def batch_wide_settings() -> dict[str, Setting]:
    """The settings only the batch sets (``nbagent batch --memory-limit 2G``), by name."""
    return {s.name: s for s in all_settings() if s.group not in TASK_GROUPS}


_TASK_FIELDS = {
    "id": "a short name, used for the task's folder and notebook",
    "question": "what to find out",
    "files": "data files copied into the task's folder",
    "parameters": "variables set in the kernel, written as a cell tagged 'parameters'",
}
_RESULT_FIELDS = {
    "task_timeout": "time limit of the whole task, in seconds (overrides --task-timeout)",
    "expected": "the right answer, to score the task",
    "scoring": "exact, numeric or dabench (default: chosen from expected)",
    "tolerance": "for numeric scoring: allowed relative and absolute difference",
    "metadata": "anything of yours; copied to the task's status line",
}

FIELDS: dict[str, str] = {
    **_TASK_FIELDS,
    **{name: f"{spec.help} (overrides {spec.option})" for name, spec in task_settings().items()},
    **_RESULT_FIELDS,
}
"""Every field a task may have, with what it means (a setting's help sentence, for settings)."""

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


class TaskFileError(UsageError):
    """Raised when a task file cannot be read or a task in it is wrong; says where and what."""

    def __init__(self, path: Path, message: str, line: int | None = None, field: str | None = None) -> None:
        where = str(path)
        if line is not None:
            where += f", line {line}"
        if field is not None:
            where += f", field {field!r}"
        super().__init__(f"{where}: {message}")
        self.path = path
        self.line = line
        self.field = field


@dataclass(frozen=True)
class BatchTask:
    """One task of a batch, checked.

    ``settings``: the task's own settings (checked, by name: ``max_steps``, ``temperature``,
    ``observation_chars``...), applied over the batch's :class:`~nbagent.agent.config.AgentConfig`;
    a setting the task does not give is the batch's.
    """

    id: str
    question: str
    files: tuple[Path, ...] = ()
    parameters: Mapping[str, Any] = field(default_factory=dict)
    settings: Mapping[str, Any] = field(default_factory=dict)
    task_timeout: float | None = None
    expected: str | int | float | None = None
    scoring: Scoring | None = None
    tolerance: float | None = None
    metadata: Any = None
    line: int = 0
    source: str = field(default="", compare=False)
    """The task file the task was read from (for error messages)."""

    @property
    def model(self) -> str | None:
        """The task's own model string, if it names one."""
        model = self.settings.get("model")
        return model if isinstance(model, str) else None

    @property
    def where(self) -> str:
        """``tasks.jsonl, line 3``: where the task was written."""
        return f"{self.source}, line {self.line}" if self.source else f"task {self.id!r}"


def load_tasks(path: str | Path) -> list[BatchTask]:
    """Read and check every task of a ``.jsonl`` or ``.yaml``/``.yml`` file.

    Raises :class:`TaskFileError` (a :class:`~nbagent.UsageError`) for the first problem found:
    unreadable file, bad syntax, a missing or wrong field, a missing data file, a repeated id.
    """
    path = Path(path)
    if not path.exists():
        raise TaskFileError(path, "the task file does not exist")
    if not path.is_file():
        raise TaskFileError(path, "is not a file; give a .jsonl or .yaml task file")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        items = _read_jsonl(path)
    elif suffix in (".yaml", ".yml"):
        items = _read_yaml(path)
    else:
        raise TaskFileError(path, "unknown task file type; name it .jsonl (one JSON object a line) or .yaml")
    if not items:
        raise TaskFileError(path, "holds no tasks")
    tasks: list[BatchTask] = []
    seen: dict[str, int] = {}
    for line, raw, lines in items:
        task = _check_task(path, line, raw, lines)
        folded = task.id.casefold()
        if folded in seen:
            raise TaskFileError(
                path, f"id {task.id!r} is already used on line {seen[folded]}; ids must be unique", line, "id"
            )
        seen[folded] = line
        tasks.append(task)
    return tasks


# -- reading ---------------------------------------------------------------------------------

_Item = tuple[int, Any, dict[str, int]]
"""(line of the task, the task's value, line of each of its fields)."""


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise TaskFileError(path, f"is not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise TaskFileError(path, f"cannot be read: {exc.strerror}") from None


def _read_jsonl(path: Path) -> list[_Item]:
    items: list[_Item] = []
    for number, text in enumerate(_read_text(path).splitlines(), start=1):
        if not text.strip():
            continue
        try:
            value = json.loads(text)
        except RecursionError:
            raise TaskFileError(
                path, "nested too deeply to be a task; a task is a flat JSON object", number
            ) from None
        except json.JSONDecodeError as exc:
            raise TaskFileError(
                path,
                f"not valid JSON ({exc.msg} at column {exc.colno}); each line must be one JSON object",
                number,
            ) from None
        items.append((number, value, {}))
    return items


def _read_yaml(path: Path) -> list[_Item]:
    import yaml

    text = _read_text(path)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        if root is not None:
            _check_expansion(path, root)
        data = yaml.safe_load(text)
    except RecursionError:
        raise TaskFileError(path, "is nested too deeply to be a list of tasks") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        raise TaskFileError(path, f"not valid YAML ({exc.problem or exc.context})", line) from None
    except yaml.YAMLError as exc:
        raise TaskFileError(path, f"not valid YAML ({exc})") from None
    if data is None:
        return []
    if not isinstance(data, list) or not isinstance(root, yaml.SequenceNode):
        raise TaskFileError(path, "must be a YAML list of tasks (each item starting with '- id: ...')", 1)
    items: list[_Item] = []
    for node, value in zip(root.value, data, strict=True):
        lines: dict[str, int] = {}
        if isinstance(node, yaml.MappingNode):
            for key_node, _ in node.value:
                lines[str(key_node.value)] = key_node.start_mark.line + 1
        items.append((node.start_mark.line + 1, value, lines))
    return items


MAX_YAML_VALUES = 100_000
"""Values a YAML task file may hold once its aliases (``*name``) are expanded: plenty for any
batch, far too few for an alias bomb (a kilobyte of nested aliases that expands to billions)."""


def _check_expansion(path: Path, root: Any) -> None:
    import yaml

    # Counted on the composed node graph, where an alias is a shared node (cheap to build),
    # before the loader expands anything.
    sizes: dict[int, int] = {}
    on_path: set[int] = set()

    def size(node: Any) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in on_path:
            raise TaskFileError(path, "has a YAML alias that contains itself", node.start_mark.line + 1)
        on_path.add(key)
        children: list[Any] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        total = 1
        for child in children:
            total += size(child)
            if total > MAX_YAML_VALUES:
                raise TaskFileError(
                    path,
                    f"expands to more than {MAX_YAML_VALUES} values through its YAML aliases (*name); "
                    "write the values out, or split the file",
                    node.start_mark.line + 1,
                )
        on_path.discard(key)
        sizes[key] = total
        return total

    size(root)


# -- checking --------------------------------------------------------------------------------


def _check_task(path: Path, line: int, raw: Any, lines: dict[str, int]) -> BatchTask:
    if not isinstance(raw, dict):
        raise TaskFileError(
            path, f"a task must be an object with 'id' and 'question', not a {_kind(raw)}", line
        )

    def fail(name: str, message: str) -> TaskFileError:
        return TaskFileError(path, message, lines.get(name, line), name)

    batch_wide = batch_wide_settings()
    for key in raw:
        name = str(key)
        if name in FIELDS:
            continue
        if name in REFUSED:
            raise fail(name, f"not allowed in a task file: {REFUSED[name]}")
        if name in batch_wide:
            raise fail(
                name,
                f"{name} is batch-wide (one kernel pool serves every task); "
                f"give {batch_wide[name].option} to nbagent batch",
            )
        raise fail(name, unknown_message(name, FIELDS, "field"))
    for required in ("id", "question"):
        if required not in raw:
            raise TaskFileError(path, f"missing field {required!r} ({FIELDS[required]})", line)

    task_id = raw["id"]
    if isinstance(task_id, int) and not isinstance(task_id, bool):
        task_id = str(task_id)
    if not isinstance(task_id, str) or not _ID.fullmatch(task_id):
        raise fail(
            "id",
            f"{task_id!r} is not a usable id: use 1-100 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit",
        )
    if task_id.casefold() == "status.jsonl":
        raise fail("id", "'status.jsonl' is the name of the batch's status file; choose another id")

    question = raw["question"]
    if not isinstance(question, str) or not question.strip():
        raise fail("question", "must be a non-empty string")

    folder = path.resolve().parent
    files = raw.get("files", [])
    if isinstance(files, str):
        files = [files]
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        raise fail("files", "must be a list of file paths (strings)")
    resolved: list[Path] = []
    names: set[str] = set()
    for name in files:
        file = (folder / Path(name).expanduser()).resolve()
        if not file.is_file():
            raise fail("files", f"data file {name!r} does not exist (looked for {str(file)!r})")
        if file.name in names:
            raise fail("files", f"two data files are named {file.name!r}; rename one of them")
        names.add(file.name)
        resolved.append(file)

    try:
        parameters = check_parameters(raw.get("parameters") or {})
    except UsageError as exc:
        raise fail("parameters", str(exc)) from None

    chosen: dict[str, Any] = {}
    for name, spec in task_settings().items():
        value = raw.get(name)
        if value is None:
            continue  # null: the batch's value
        try:
            chosen[name] = spec.check(value, name)
        except UsageError as exc:
            if spec.kind == "env_name":  # what was written may be the key itself: not repeated
                raise fail(
                    name,
                    "takes the NAME of an environment variable holding the key, such as "
                    "'OPENAI_API_KEY'; a key written here would travel with the task file",
                ) from None
            raise fail(name, str(exc).removeprefix(f"{name} ")) from None
    model = chosen.get("model")
    if model is not None:
        model = chosen["model"] = resolve_scripted_path(model.strip(), folder)
        if model.startswith("scripted:") and not Path(model[len("scripted:") :]).is_file():
            raise fail("model", f"scripted model file {model[len('scripted:') :]!r} does not exist")
    api_key_env = chosen.get("api_key_env")
    if api_key_env is not None and not os.environ.get(api_key_env):
        raise fail("api_key_env", f"the environment variable {api_key_env} is not set (or empty)")

    task_timeout = raw.get("task_timeout")
    if task_timeout is not None and (not _is_number(task_timeout) or task_timeout <= 0):
        raise fail("task_timeout", f"must be a positive number of seconds, not {task_timeout!r}")

    expected = raw.get("expected")
    if expected is not None and not (isinstance(expected, str) or _is_number(expected)):
        raise fail("expected", f"must be a string or a number, not a {_kind(expected)}")
    scoring = raw.get("scoring")
    if scoring is not None and scoring not in SCORINGS:
        raise fail("scoring", f"must be one of {', '.join(SCORINGS)}, not {scoring!r}")
    tolerance = raw.get("tolerance")
    if tolerance is not None and (not _is_number(tolerance) or tolerance < 0):
        raise fail("tolerance", f"must be a number of at least 0, not {tolerance!r}")

    return BatchTask(
        id=task_id,
        question=question.strip(),
        files=tuple(resolved),
        parameters=parameters,
        settings=chosen,
        task_timeout=None if task_timeout is None else float(task_timeout),
        expected=expected,
        scoring=scoring,
        tolerance=None if tolerance is None else float(tolerance),
        metadata=raw.get("metadata"),
        line=line,
        source=str(path),
    )


def resolve_scripted_path(model: str, folder: Path) -> str:
    """``scripted:REL`` made absolute against ``folder``; other model strings unchanged."""
    if not model.startswith("scripted:"):
        return model
    file = Path(model[len("scripted:") :]).expanduser()
    return "scripted:" + str(file if file.is_absolute() else (folder / file).resolve())


def _is_number(value: Any) -> bool:
    # JSON's NaN and Infinity are floats too, but no setting means anything with them (a NaN
    # timeout compares false with everything, so it would never fire).
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _kind(value: Any) -> str:
    names = {dict: "mapping", list: "list", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), type(value).__name__)
