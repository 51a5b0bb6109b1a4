"""``nbagent run --approve``: ask on the terminal before each step's code runs."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TextIO

from ..agent.approval import read_decision
from ..exceptions import StopRun, UsageError

CHOICES = "[r]un, [e]dit in $EDITOR, [s]kip, s[t]op"


class TerminalApproval:
    """An ``approve`` callback for :class:`~nbagent.Agent` that asks a person at a terminal.

    The step's code was already printed by the step log; this asks what to do with it: run it,
    edit it first in ``$VISUAL`` / ``$EDITOR`` (default ``vi``), skip it, or stop the run.
    """

    def __init__(self, stdin: TextIO | None = None, stdout: TextIO | None = None) -> None:
        self.stdin = stdin or sys.stdin
        self.stdout = stdout or sys.stderr  # stdout carries only the answer

    @staticmethod
    def check_terminal(stdin: TextIO | None = None) -> None:
        """Refuse ``--approve`` when nobody can answer (standard input is not a terminal)."""
        if not (stdin or sys.stdin).isatty():
            raise UsageError(
                "--approve asks on the terminal before each step, but standard input is not a terminal; "
                "run it interactively (and give the question as an argument, not '-')"
            )

    def __call__(self, number: int, thought: str, code: str) -> bool | str:
        while True:
            self.stdout.write(f"step {number}: {CHOICES}? ")
            self.stdout.flush()
            line = self.stdin.readline()
            if not line:  # end of input: nobody is there to approve anything
                raise StopRun("standard input closed while waiting for approval")
            decision = read_decision(line, number)
            if decision == "run":
                return True
            if decision == "skip":
                return False
            if decision == "edit":
                edited = self._edit(code)
                if edited is not None:
                    return edited
                continue
            self.stdout.write(f"please answer r, e, s or t ({CHOICES})\n")

    def _edit(self, code: str) -> str | None:
        editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
        with tempfile.TemporaryDirectory(prefix="nbagent-edit-") as folder:
            path = Path(folder) / "step.py"
            path.write_text(code, encoding="utf-8")
            try:
                status = subprocess.call([*shlex.split(editor), str(path)])
            except OSError as exc:
                self.stdout.write(f"cannot start the editor {editor!r} ({exc}); set $EDITOR\n")
                return None
            if status != 0:
                self.stdout.write(f"the editor exited with status {status}; the code is unchanged\n")
                return None
            edited = path.read_text(encoding="utf-8").rstrip("\n")
        self.stdout.write("running the edited code\n")
        return edited
