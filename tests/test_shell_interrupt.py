"""Interruption is part of the Executor protocol: the user's shell (%%agent) honours it too."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from IPython.core.interactiveshell import InteractiveShell

from nbagent import Execution, ShellExecutor


def test_a_step_in_the_users_shell_is_interrupted_through_the_protocol(tmp_path: Path) -> None:
    executor = ShellExecutor(InteractiveShell.instance(), cwd=tmp_path)

    async def interrupted_step() -> Execution:
        step = asyncio.ensure_future(executor.aexecute("import time\ntime.sleep(60)\nreached = True"))
        await asyncio.sleep(1.0)  # the step is sleeping on the shell's thread
        await executor.ainterrupt()
        return await step

    started = time.monotonic()
    # As with the user's Ctrl-C, the step stops at once and the run it belongs to ends.
    with pytest.raises(KeyboardInterrupt):
        executor.run_coroutine(interrupted_step())
    assert time.monotonic() - started < 30
    assert "reached" not in executor.shell.user_ns
    # With nothing running, an interrupt does nothing, and the shell works as before.
    asyncio.run(executor.ainterrupt())
    assert executor.execute("1 + 1").ok
