"""StepLog: the live step log ``nbagent run`` and ``nbagent resume`` print on stderr.

On a terminal the model's reply appears as it streams in, after a live "waiting for model… 12 s"
line; written to a pipe or a file (CI, logs) the log stays plain lines, one block per step.
"""

from __future__ import annotations

import shutil
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import TextIO

from .._version import __version__
from ..agent.agent import RunListener, RunResult
from ..agent.observe import escape_controls
from ..models import Usage
from ..records import Plan, Step, Task

CLEAR_LINE = "\r\x1b[K"


class StepLog(RunListener):
    """A live, readable log of a run on a text stream (stderr by default).

    ``live``: show replies as they stream and a ticking wait line (default: when the stream is a
    terminal).
    """

    def __init__(self, stream: TextIO | None = None, max_lines: int = 12, live: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.max_lines = max_lines
        self.width = min(shutil.get_terminal_size((100, 20)).columns, 100)
        self.spent = Usage()  # since the run (or resume) started: the budgets are read against it
        if live is None:
            isatty = getattr(self.stream, "isatty", None)
            live = bool(isatty and isatty())
        self.live = live
        self._lock = threading.Lock()
        self._ticker: threading.Thread | None = None
        self._stop_ticking = threading.Event()
        self._streamed = ""  # the current step's reply as shown so far (live only)

    def _print(self, text: str = "") -> None:
        with self._lock:
            print(escape_controls(text), file=self.stream, flush=True)

    def _write(self, text: str) -> None:
        with self._lock:
            self.stream.write(text)
            self.stream.flush()

    def _rule(self, number: int) -> str:
        rule = f"── step {number} "
        return rule + "─" * max(self.width - len(rule), 3)

    # -- live: the wait line and the streamed reply -----------------------------------------------

    def model_called(self, number: int) -> None:
        if not self.live:
            return
        self._print(self._rule(number))
        self._streamed = ""
        self._stop_ticking.clear()
        self._ticker = threading.Thread(target=self._tick, name="nbagent-wait-line", daemon=True)
        self._ticker.start()

    def _tick(self) -> None:
        started = time.monotonic()
        while True:
            elapsed = time.monotonic() - started
            self._write(f"{CLEAR_LINE}waiting for model… {int(elapsed)} s")
            if self._stop_ticking.wait(1.0 - elapsed % 1.0):
                return

    def _stop_wait_line(self) -> None:
        ticker, self._ticker = self._ticker, None
        if ticker is not None:
            self._stop_ticking.set()
            ticker.join()
            self._write(CLEAR_LINE)

    def reply_text(self, number: int, text: str) -> None:
        if not self.live:
            return
        self._stop_wait_line()
        self._streamed += text
        self._write(escape_controls(text))

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
        if self.live:
            self._stop_wait_line()
            if self._streamed:  # already on screen, as it came
                if not self._streamed.endswith("\n"):
                    self._write("\n")
                return
        else:
            self._print(self._rule(number))
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
        self._stop_wait_line()
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
