"""Helpers of the attack suite: play generated code through nbagent's public interfaces, read what it found.

Every attack is code a scripted model "writes". It runs twice: outside the jail (``--kernel
nbagent``, the plain kernel), where it must *succeed*, so that no test can pass by checking
nothing; then under the default sandbox, where it must fail. The attack code prints lines
``ATTACK {json}``; :func:`attack_results` reads them back from the notebook the run wrote.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import nbformat
import pytest

OUTSIDE = ("--kernel", "nbagent")
"""Flags of the run that shows an attack working: the plain kernel, no sandbox."""

MARK = "ATTACK "

T = TypeVar("T")


def needs(missing: str | None) -> None:
    """Skip when a facility the test needs is missing here, except in CI (``CI`` set), where it fails."""
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"CI must provide this: {missing}")
        pytest.skip(missing)


def outside_and_jail(
    play: Callable[[str, tuple[str, ...]], T], jail_flags: tuple[str, ...] = ()
) -> dict[str, T]:
    """``play(where, flags)`` outside the jail and under the sandbox (``jail_flags``) at the same time.

    The two are separate host processes with their own markers, files and listeners: playing them
    side by side proves what playing them one after the other would, in about half the time.
    """
    with ThreadPoolExecutor(max_workers=2) as pool:
        started = {
            where: pool.submit(play, where, flags)
            for where, flags in (("outside", OUTSIDE), ("jail", jail_flags))
        }
        return {where: future.result() for where, future in started.items()}


def attack_step(code: str, **params: Any) -> str:
    """One model reply running ``code``, with ``PARAMS`` (a dict of ``params``) defined first."""
    prelude = f"import json\nPARAMS = json.loads({json.dumps(json.dumps(params))})\n"
    return f"Thought: try it.\n```python\n{prelude}{code}\n```"


def final_step(answer_expression: str = "'done'") -> str:
    """The last reply: answer with ``answer_expression``."""
    return f"Thought: done.\n```python\nfinal_answer({answer_expression})\n```"


def write_script(path: Path, replies: Sequence[str]) -> Path:
    """A scripted model file (README: "The scripted model's file format")."""
    path.write_text(json.dumps(list(replies)), encoding="utf-8")
    return path


def nbagent_command(*args: str) -> list[str]:
    """The command line of the ``nbagent`` CLI in this environment."""
    return [sys.executable, "-m", "nbagent", *args]


def host_env(**extra: str) -> dict[str, str]:
    """The environment of a host nbagent process: ours, with ``extra`` added."""
    env = dict(os.environ)
    env.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    env.update(extra)
    return env


def run_cli(
    args: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float = 150
) -> subprocess.CompletedProcess[str]:
    """Run ``nbagent ARGS`` as a real process (attacks signal and inspect the host process)."""
    return subprocess.run(
        nbagent_command(*args),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(env) if env is not None else host_env(),
        stdin=subprocess.DEVNULL,
    )


def attack_results(notebook: Path) -> list[dict[str, Any]]:
    """The ``ATTACK {json}`` lines the run's steps printed, in order, read from its notebook."""
    nb = nbformat.read(notebook, as_version=4)
    found = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for output in cell.get("outputs", []):
            if output.get("output_type") != "stream":
                continue
            for line in str(output.get("text", "")).splitlines():
                if line.startswith(MARK):
                    found.append(json.loads(line[len(MARK) :]))
    return found


def merged(results: list[dict[str, Any]]) -> dict[str, Any]:
    """All the ``ATTACK`` lines of a run as one dict (later lines win)."""
    out: dict[str, Any] = {}
    for item in results:
        out.update(item)
    return out


def notebook_text(notebook: Path) -> str:
    """Everything a notebook holds, as text (to look for observations and notes)."""
    return notebook.read_text(encoding="utf-8")


def processes_with(marker: str) -> list[int]:
    """Host pids whose command line holds ``marker`` (zombies left out)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
            with open(f"/proc/{entry}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker.encode() in cmdline and state != "Z":
            pids.append(int(entry))
    return pids


def kill_processes_with(marker: str) -> None:
    """Clean up after an attack that worked: SIGKILL what it left running."""
    for pid in processes_with(marker):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 5
    while processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.05)


def wait_for_state(pid: int, states: str, timeout: float) -> str | None:
    """Poll process ``pid`` until its state letter is one of ``states``; the state, or None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            return None
        if state in states:
            return state
        time.sleep(0.05)
    return None
