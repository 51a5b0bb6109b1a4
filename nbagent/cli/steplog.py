"""StepLog: the live step log ``nbagent run`` and ``nbagent resume`` print on stderr."""

from __future__ import annotations

import shutil
import sys
import textwrap
from pathlib import Path
from typing import TextIO

from .._version import __version__
from ..agent.agent import RunListener, RunResult
from ..agent.memory import Plan, Step, Task
from ..agent.observe import escape_controls
from ..models import Usage


class StepLog(RunListener):
    """A live, readable log of a run on a text stream (stderr by default)."""

    def __init__(self, stream: TextIO | None = None, max_lines: int = 12) -> None:
        self.stream = stream or sys.stderr
        self.max_lines = max_lines
        self.width = min(shutil.get_terminal_size((100, 20)).columns, 100)
        self.spent = Usage()  # since the run (or resume) started: the budgets are read against it

    def _print(self, text: str = "") -> None:
        print(escape_controls(text), file=self.stream, flush=True)

    def _clip(self, text: str, prefix: str) -> str:
        lines = text.rstrip("\n").splitlines() or [""]
        if len(lines) > self.max_lines:
            lines = [
                *lines[: self.max_lines - 1],
                f"… ({len(lines) - self.max_lines + 1} more lines)",
            ]
        return "\n".join(prefix + line for line in lines)

    def task_started(self, task: Task, notebook_path: Path | None) -> None:
        where = f" → {notebook_path}" if notebook_path else ""
        self.spent = Usage()
        self._print(f"nbagent {__version__}: {task.question}{where}")
        if task.files:
            self._print(f"data: {', '.join(task.files)}")

    def reply_received(self, number: int, thought: str, code: str | None) -> None:
        rule = f"── step {number} "
        self._print(rule + "─" * max(self.width - len(rule), 3))
        if thought:
            self._print(textwrap.fill(thought, self.width, initial_indent="", subsequent_indent=""))
        if code is not None:
            self._print(self._clip(code, "  │ "))

    def step_finished(self, step: Step) -> None:
        execution = step.execution
        status = "no code" if execution is None else execution.status
        took = "" if execution is None else f" in {execution.duration:.2f} s"
        self._print(self._clip(step.observation.text, "  ▸ "))
        self.spent = self.spent + step.usage
        self._print(
            f"  [{status}{took}; model {step.model_duration:.2f} s, {step.usage.total_tokens} tokens; "
            f"{_spent(self.spent)} so far]"
        )

    def plan_made(self, plan: Plan) -> None:
        rule = "── plan " if plan.kind == "initial" else "── updated plan "
        self._print(rule + "─" * max(self.width - len(rule), 3))
        self._print(self._clip(plan.text, "  "))
        self.spent = self.spent + plan.usage

    def run_finished(self, result: RunResult) -> None:
        self._print("─" * self.width)
        tokens = result.usage.total_tokens
        cost = f", ${result.usage.cost:.4f}" if result.usage.cost else ""
        where = f"; notebook: {result.notebook_path}" if result.notebook_path else ""
        self._print(
            f"{result.status} after {len(result.steps)} steps, {result.duration:.1f} s, "
            f"{tokens} tokens{cost}{where}"
        )
        if result.error:
            self._print(f"error: {result.error}")


def _spent(usage: Usage) -> str:
    approx = "~" if usage.estimated else ""
    cost = f", ${usage.cost:.4f}" if usage.cost else ""
    return f"{approx}{usage.total_tokens:,} tokens{cost}"
