"""Shared fixtures: one real kernel for tests where isolation is not the point."""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

# litellm must never try to fetch its cost map from the internet during tests.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from nbagent import Kernel, ScriptedModel

REPO = Path(__file__).resolve().parents[1]
PENGUINS = REPO / "examples" / "data" / "penguins.csv"


@pytest.fixture(scope="session")
def kernel() -> Iterator[Kernel]:
    """A real kernel shared by the tests of a session; tests must not rely on a fresh state."""
    k = Kernel()
    k.start()
    yield k
    k.shutdown()


def code(source: str, thought: str = "Next step.") -> str:
    """A model reply holding ``thought`` and one python block."""
    return f"Thought: {thought}\n```python\n{source}\n```"


def scripted(*replies: str) -> ScriptedModel:
    """A scripted model replying with ``replies`` in order."""
    return ScriptedModel(list(replies))


@dataclass
class CliResult:
    """What an in-process ``nbagent`` call returned and printed."""

    returncode: int
    stdout: str
    stderr: str


def run_cli(
    *args: str, cwd: Path, env: Mapping[str, str | None] | None = None, stdin: str | None = None
) -> CliResult:
    """Call the CLI's ``main([...])`` in this process, as if ``nbagent ARGS`` ran in ``cwd``.

    For argument and input checks: milliseconds instead of a new interpreter's 2 s of imports.
    ``env`` sets variables for the call (``None`` removes one); everything is put back afterwards.
    """
    from nbagent.cli import main

    saved_env = {name: os.environ.get(name) for name in env or {}}
    saved_cwd, saved_stdin = Path.cwd(), sys.stdin
    out, err = io.StringIO(), io.StringIO()
    try:
        for name, value in (env or {}).items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        os.chdir(cwd)
        sys.stdin = io.StringIO(stdin or "")
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as exc:  # argparse errors and --help
                code = exc.code if isinstance(exc.code, int) else 2
    finally:
        sys.stdin = saved_stdin
        os.chdir(saved_cwd)
        for name, old in saved_env.items():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old
    return CliResult(code, out.getvalue(), err.getvalue())
