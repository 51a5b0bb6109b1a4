"""Helpers for the batch tests: write task files whose tasks use their own scripted models."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nbformat
from conftest import PENGUINS, code


def write_batch(folder: Path, tasks: Sequence[dict[str, Any]], name: str = "tasks.jsonl") -> Path:
    """Write a JSONL task file; a task's ``replies`` list becomes its own scripted model file."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / PENGUINS.name).write_bytes(PENGUINS.read_bytes())
    lines = []
    for task in tasks:
        task = dict(task)
        replies = task.pop("replies", None)
        if replies is not None:
            script = folder / f"replies-{task['id']}.json"
            script.write_text(json.dumps(replies), encoding="utf-8")
            task["model"] = f"scripted:{script.name}"
        lines.append(json.dumps(task))
    path = folder / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def answering_task(task_id: str, answer_code: str, **fields: Any) -> dict[str, Any]:
    """A task that reads penguins.csv, prints its kernel's pids (own, parent, grandparent) and
    folder, then answers."""
    return {
        "id": task_id,
        "question": f"Question {task_id} about the penguins",
        "files": [PENGUINS.name],
        "replies": [
            code(
                "import os\nimport pandas as pd\ndf = pd.read_csv('penguins.csv')\n"
                "print('pid', os.getpid())\nprint('ppid', os.getppid())\nprint('cwd', os.getcwd())\n"
                "with open(f'/proc/{os.getppid()}/stat') as f:\n"
                "    print('gppid', f.read().rsplit(')', 1)[1].split()[1])"
            ),
            code(f"final_answer({answer_code})", "Done."),
        ],
        **fields,
    }


def read_status(out: Path) -> list[dict[str, Any]]:
    """The lines of ``out/status.jsonl``."""
    path = out / "status.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def read_notebook(path: Path) -> nbformat.NotebookNode:
    """A notebook, validated against the nbformat schema."""
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    return nb


def stream_text(nb: nbformat.NotebookNode) -> str:
    """All stream output of a notebook, joined."""
    return "".join(
        out.get("text", "")
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
        if out.output_type == "stream"
    )


def processes_in(folder: Path) -> list[int]:
    """Pids of live processes whose working directory is inside ``folder`` (leaked kernels)."""
    found = []
    root = str(folder.resolve())
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:
            continue
        if cwd == root or cwd.startswith(root + os.sep):
            found.append(int(entry))
    return found
