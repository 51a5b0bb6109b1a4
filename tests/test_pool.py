"""The warm kernel pool: kernels ready ahead of need, one task each, moved into the task's folder."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest
from batch_helpers import processes_in

from nbagent.exceptions import KernelError, UsageError
from nbagent.execution.forking import zygote_command
from nbagent.execution.kernel import kernel_spec_manager
from nbagent.execution.pool import KernelPool


@pytest.mark.parametrize("fork", [True, False], ids=["forked", "started"])
def test_pool_hands_out_warm_kernels_once_each_in_the_task_folder(tmp_path: Path, fork: bool) -> None:
    async def go() -> None:
        # The plain nbagent spec runs -m ipykernel_launcher, so it can be forked.
        async with KernelPool(2, tmp_path / ".pool", kernel="nbagent", fork=fork) as pool:
            # Wait for the pool to warm up, then check a task's wait is short.
            for _ in range(400):
                if pool.warm == 2:
                    break
                await asyncio.sleep(0.05)
            assert pool.warm == 2
            a = await pool.acquire(tmp_path / "a")
            b = await pool.acquire(tmp_path / "b")
            assert a is not b and a.pid != b.pid
            assert a.cwd == (tmp_path / "a").resolve() and (tmp_path / "a").is_dir()
            run = await a.aexecute(
                "import os, sys\nprint(os.getcwd())\nprint('pandas' in sys.modules, 'pd' in dir())"
            )
            assert run.outputs[0]["text"] == f"{(tmp_path / 'a').resolve()}\nTrue False\n"
            assert run.execution_count == 1  # the warm-up left the count alone
            assert pool.forking is fork

            # Each kernel has its own random state, and figures come back as inline PNGs.
            draws = [
                (await k.aexecute("import numpy as np; print(np.random.rand())")).outputs[0]["text"]
                for k in (a, b)
            ]
            assert draws[0] != draws[1]
            plot = await b.aexecute("import matplotlib.pyplot as plt\nplt.plot([1, 3, 2]);")
            assert any("image/png" in out.get("data", {}) for out in plot.outputs), plot.outputs

            # A step past its time limit is interrupted and the kernel keeps its state.
            await a.aexecute("kept = 42")
            slow = await a.aexecute("import time\ntime.sleep(30)", timeout=1)
            assert slow.status == "timeout" and not slow.restarted
            assert (await a.aexecute("print(kept)")).outputs[0]["text"] == "42\n"

            # A restart (here: after the kernel dies) starts the new process in the moved folder.
            died = await a.aexecute("import os; os._exit(3)")
            assert died.status == "died" and died.restarted
            again = await a.aexecute("import os; print(os.getcwd())")
            assert again.outputs[0]["text"].strip() == str((tmp_path / "a").resolve())

            old_pid = a.pid
            await pool.release(a)
            c = await pool.acquire(tmp_path / "c")
            assert c.pid not in (old_pid, b.pid)
            assert pool.in_use == 2
        assert processes_in(tmp_path) == []
        assert not (tmp_path / ".pool").exists()

    asyncio.run(go())


def test_pool_refuses_an_existing_folder_and_reports_a_kernel_that_cannot_start(tmp_path: Path) -> None:
    async def go() -> None:
        (tmp_path / "taken").mkdir()
        async with KernelPool(1, tmp_path / ".pool", limit=1) as pool:
            with pytest.raises(UsageError, match="already exists"):
                await pool.acquire(tmp_path / "taken")
        async with KernelPool(1, tmp_path / ".pool", kernel="no-such-kernel") as pool:
            with pytest.raises(KernelError, match="unknown kernel 'no-such-kernel'"):
                await pool.acquire(tmp_path / "x")
        assert not (tmp_path / "x").exists()
        assert processes_in(tmp_path) == []

    asyncio.run(go())


def test_a_spec_that_cannot_be_forked_gets_ordinary_kernels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A kernel spec that does not run "-m ipykernel_launcher": the pool cannot fork it.
    spec_dir = tmp_path / "jupyter" / "kernels" / "plain-launch"
    spec_dir.mkdir(parents=True)
    argv = [sys.executable, "-c", "from ipykernel import kernelapp; kernelapp.launch_new_instance()"]
    (spec_dir / "kernel.json").write_text(
        json.dumps(
            {"argv": [*argv, "-f", "{connection_file}"], "display_name": "plain", "language": "python"}
        )
    )
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    assert zygote_command(kernel_spec_manager().get_kernel_spec("plain-launch"), "x.json") is None

    async def go() -> None:
        async with KernelPool(1, tmp_path / ".pool", kernel="plain-launch", limit=1) as pool:
            kernel = await pool.acquire(tmp_path / "t")
            run = await kernel.aexecute("import sys; print('pandas' in sys.modules)")
            assert run.outputs[0]["text"] == "True\n"  # warmed by running the imports instead
            assert not pool.forking
        assert processes_in(tmp_path) == []

    asyncio.run(go())
