"""A warm kernel pool: kernels started ahead of need, each used by one task only.

A batch asks the pool for a kernel per task. The pool keeps ``size`` kernels started and warmed
(the heavy imports done) beyond those in use, so a task does not wait for a kernel start while
the pool keeps up. No kernel serves two tasks: a task's kernel is shut down when it is released,
and a fresh one is started to take its place.

Each warm kernel starts in its own empty spare folder beside the task folders
(``<out>/.pool/``). When a task takes it, that folder is *renamed* to the task's folder: the
kernel's working directory moves with it (a process's working directory follows a renamed
directory on POSIX systems), so the kernel needs no ``chdir`` and a sandboxing kernel spec that
confines the kernel to its start folder keeps working. :meth:`nbagent.Kernel.arestart` starts a
replacement process in the moved folder.

Where it can, the pool forks its kernels from a process that has done the imports once
(:mod:`nbagent.execution.forking`): a kernel then costs about a tenth of the CPU of a fresh start, which is
what lets a batch outrun one kernel process per notebook. Otherwise each kernel is started the
ordinary way and warmed by running imports that bind no name in the kernel's namespace. Either
way a notebook whose code forgets an import still fails when re-run alone, as it should.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from ..exceptions import KernelError, UsageError
from .forking import ForkServer, fork_supported
from .jail import make_jail_folder
from .kernel import DEFAULT_KERNEL, Kernel, is_sandboxed_spec
from .run_limits import pid_alive
from .sandbox import Sandbox

WARM_MODULES = ("numpy", "pandas", "matplotlib.pyplot")
"""Modules imported into every pool kernel before a task gets it."""

_counter = itertools.count(1)


def sweep_stale_spares(folder: Path) -> list[str]:
    """Remove spare folders (``k<pid>-<n>``) left by a pool whose process was killed; returns them."""
    removed = []
    with contextlib.suppress(OSError):
        for entry in folder.iterdir():
            owner = entry.name[1:].split("-", 1)[0]
            if entry.name.startswith("k") and owner.isdigit() and not pid_alive(int(owner)):
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry.name)
    return removed


def warmup_code(modules: Sequence[str]) -> str:
    """Code that imports ``modules`` (missing ones skipped) and leaves no name behind."""
    names = ", ".join(repr(m) for m in modules)
    return (
        "def _nbagent_warm_up():\n"
        "    import importlib\n"
        f"    for name in ({names},):\n"
        "        try:\n"
        "            importlib.import_module(name)\n"
        "        except Exception:\n"
        "            pass\n"
        "_nbagent_warm_up()\n"
        "del _nbagent_warm_up\n"
    )


class KernelPool:
    """Kernels started and warmed ahead of need; each is handed to one task, then shut down.

    Args:
        size: kernels kept warm beyond those in use (a batch passes its ``--jobs``).
        folder: where spare folders are made; it must be on the same filesystem as the task
            folders given to :meth:`acquire` (a batch uses ``<out>/.pool``).
        kernel: kernel spec name.
        warm_modules: modules imported in each kernel before it is handed out.
        limit: kernels to start in all (the number of tasks), so no kernel is started that no
            task will use; ``None``: no limit.
        startup_timeout: seconds a kernel may take to start.
        fork: fork kernels from a pre-imported process (:mod:`nbagent.execution.forking`); ``None``: where
            the platform and the kernel spec allow it, else start them the ordinary way.
        sandbox: the sandbox of a sandboxed spec. In the jail every kernel is started in a jail
            of its own (never forked from a shared zygote: tasks share no jail, pid namespace or
            writable folder); its spare folder is the jail's one writable folder, seen inside at
            the spare's own path after it is moved to the task.
    """

    def __init__(
        self,
        size: int,
        folder: str | os.PathLike[str],
        *,
        kernel: str = DEFAULT_KERNEL,
        warm_modules: Sequence[str] = WARM_MODULES,
        limit: int | None = None,
        startup_timeout: float = 60.0,
        fork: bool | None = None,
        sandbox: Sandbox | None = None,
    ) -> None:
        if size < 1:
            raise UsageError(f"a kernel pool needs a size of at least 1, not {size}")
        self.size = size
        self.folder = Path(folder).resolve()
        self.kernel_name = kernel
        self.warm_modules = list(warm_modules)
        self.warm_code = warmup_code(warm_modules) if warm_modules else ""
        self.sandbox = sandbox or Sandbox()
        self.jailed = self.sandbox.jailed and is_sandboxed_spec(kernel)
        # A zygote would put every task's kernel in one jail: jailed kernels start on their own.
        self.fork = False if self.jailed else fork
        self.limit = limit
        self.startup_timeout = startup_timeout
        self.started = 0
        """Kernels started so far."""
        self._ready: asyncio.Queue[Kernel | BaseException] = asyncio.Queue()
        # Planned kernels (see plan()): the task folder -> its kernel, or why it failed.
        self._plan: collections.deque[tuple[Path, Path]] = collections.deque()
        self._planned: dict[Path, asyncio.Future[Kernel | BaseException]] = {}
        self._starting: set[asyncio.Task[None]] = set()
        self._stopping: set[asyncio.Task[None]] = set()
        self._leased: set[Kernel] = set()
        self._waiting = 0
        self._closed = False
        self._forks: asyncio.Task[ForkServer | None] | None = None

    @property
    def warm(self) -> int:
        """Kernels started and waiting for a task."""
        return self._ready.qsize() + self._planned_ready

    def plan(self, folders: Sequence[tuple[str | os.PathLike[str], str | os.PathLike[str]]]) -> None:
        """Say, in the order tasks will ask, which folders they will ask for (jailed pools).

        Each pair is (the ``workdir`` given to :meth:`acquire`, the path the code should see it
        at). A jail's mounts are made when it starts, so a kernel warmed for a known task sees
        its folder where a stock re-run of the notebook would; without a plan the code sees
        the spare folder's path.
        """
        self._plan.extend((Path(w).resolve(), Path(i).resolve()) for w, i in folders)

    def planned(self, workdir: str | os.PathLike[str]) -> bool:
        """True when a kernel is planned (or warming) for ``workdir`` (see :meth:`plan`)."""
        target = Path(workdir).resolve()
        return target in self._planned or any(entry[0] == target for entry in self._plan)

    @property
    def in_use(self) -> int:
        """Kernels handed to tasks and not yet released."""
        return len(self._leased)

    @property
    def forking(self) -> bool:
        """True once the pool has a running fork server (its kernels are forks)."""
        forks = self._forks
        return forks is not None and forks.done() and not forks.cancelled() and forks.result() is not None

    async def astart(self) -> None:
        """Start warming ``size`` kernels (returns at once; kernels come up in the background)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        sweep_stale_spares(self.folder)
        if self._forks is None and self.fork is not False and (self.fork or fork_supported()):
            self._forks = asyncio.ensure_future(self._start_fork_server())
        self._fill()

    async def acquire(self, workdir: str | os.PathLike[str]) -> Kernel:
        """A warm kernel no task has used, its working directory moved to ``workdir``.

        ``workdir`` must not exist yet; the pool creates it. Raises :class:`KernelError` when
        a kernel cannot be started.
        """
        if self._closed:
            raise KernelError("the kernel pool is closed")
        target = Path(workdir).resolve()
        if target.exists():
            raise UsageError(f"task folder {str(target)!r} already exists; remove it first")
        self.folder.mkdir(parents=True, exist_ok=True)
        planned = target in self._planned or any(entry[0] == target for entry in self._plan)
        while True:
            if planned:
                item = await self._await_planned(target)
            else:
                self._waiting += 1
                try:
                    self._fill()
                    item = await self._ready.get()
                finally:
                    self._waiting -= 1
                self._fill()
            if isinstance(item, BaseException):
                raise KernelError(f"could not start a kernel for the task: {item}") from item
            if await item.ais_alive():
                break
            await item.ashutdown()  # it died while waiting; take the next
            shutil.rmtree(item.cwd, ignore_errors=True)
            if planned:
                self._start_one((target, item.inside_cwd or target))
        os.rename(item.cwd, target)
        item.cwd = target
        self._leased.add(item)
        return item

    async def _await_planned(self, target: Path) -> Kernel | BaseException:
        if target not in self._planned:
            entry = next((e for e in self._plan if e[0] == target), None)
            if entry is not None:
                self._plan.remove(entry)  # its turn came early: start it now
            self._start_one(entry or (target, target))
        self._fill()
        future = self._planned[target]
        try:
            return await asyncio.shield(future)
        finally:
            if future.done():
                del self._planned[target]
            self._fill()

    @property
    def _planned_ready(self) -> int:
        return sum(1 for f in self._planned.values() if f.done())

    async def release(self, kernel: Kernel) -> None:
        """Give back a kernel from :meth:`acquire`; it is shut down (in the background)."""
        self._leased.discard(kernel)
        stop = asyncio.ensure_future(kernel.ashutdown())
        self._stopping.add(stop)
        stop.add_done_callback(self._stopping.discard)

    async def aclose(self) -> None:
        """Stop every kernel of the pool, warm or in use, and remove the spare folders."""
        self._closed = True
        for task in list(self._starting):
            task.cancel()
        for task in list(self._starting):
            with contextlib.suppress(BaseException):
                await task
        kernels = list(self._leased)
        self._leased.clear()
        while not self._ready.empty():
            item = self._ready.get_nowait()
            if isinstance(item, Kernel):
                kernels.append(item)
        for future in self._planned.values():
            if future.done() and isinstance(future.result(), Kernel):
                kernels.append(future.result())  # type: ignore[arg-type]
            future.cancel()
        self._planned.clear()
        await asyncio.gather(*(k.ashutdown() for k in kernels), return_exceptions=True)
        for kernel in kernels:
            if kernel.cwd.parent == self.folder:
                shutil.rmtree(kernel.cwd, ignore_errors=True)
        if self._stopping:
            await asyncio.gather(*list(self._stopping), return_exceptions=True)
        if self._forks is not None:
            self._forks.cancel()
            with contextlib.suppress(BaseException):
                server = await self._forks
                if server is not None:
                    await server.aclose()
        with contextlib.suppress(OSError):
            self.folder.rmdir()  # only when empty: another pool may share it

    async def __aenter__(self) -> KernelPool:
        await self.astart()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- filling -----------------------------------------------------------------------------

    def _fill(self) -> None:
        # Every waiting caller must have a kernel on its way, whatever the limit; beyond that,
        # ``size`` more are kept warm while the limit allows.
        while not self._closed:
            coming = self._ready.qsize() + len(self._starting) + self._planned_ready
            if coming < self._waiting or (
                coming < self._waiting + self.size and (self.limit is None or self.started < self.limit)
            ):
                self._start_one()
            else:
                break

    def _start_one(self, planned: tuple[Path, Path | None] | None = None) -> None:
        if planned is None and self._plan:
            planned = self._plan.popleft()
        if planned is not None:
            self._planned[planned[0]] = asyncio.get_running_loop().create_future()
        self.started += 1
        task = asyncio.ensure_future(self._warm_kernel(planned))
        self._starting.add(task)
        task.add_done_callback(self._starting.discard)

    async def _start_fork_server(self) -> ForkServer | None:
        server = ForkServer(self.kernel_name, self.folder, self.warm_modules, self.startup_timeout)
        try:
            await server.astart()
        except Exception:
            if self.fork:
                raise
            # e.g. a spec that does not run ipykernel_launcher: kernels start the ordinary way
            # (and report their own errors, such as an unknown kernel name)
            return None
        return server

    def _deliver(self, key: Path | None, item: Kernel | BaseException) -> None:
        future = self._planned.get(key) if key is not None else None
        if future is None:
            self._ready.put_nowait(item)
        elif not future.done():
            future.set_result(item)

    async def _warm_kernel(self, planned: tuple[Path, Path | None] | None = None) -> None:
        key = planned[0] if planned is not None else None
        spare = self.folder / f"k{os.getpid()}-{next(_counter)}"
        if self.jailed:
            make_jail_folder(spare)  # nbagent's own folder: the jail's uid writes in it
        else:
            spare.mkdir(parents=True)
        server: ForkServer | None = None
        try:
            # shielded: a warm-up cancelled while waiting must not cancel the shared start
            server = await asyncio.shield(self._forks) if self._forks is not None else None
        except Exception as exc:
            self._deliver(key, exc)
            shutil.rmtree(spare, ignore_errors=True)
            return
        provisioner = server.provisioner if server is not None else None
        kernel = Kernel(
            self.kernel_name,
            cwd=spare,
            startup_timeout=self.startup_timeout,
            provisioner=provisioner,
            sandbox=self.sandbox,
            inside_cwd=planned[1] if planned is not None else None,
            run_folder=True,
        )
        try:
            await kernel.astart()
            if self.warm_code and server is None:
                await kernel.aexecute(self.warm_code, timeout=self.startup_timeout, silent=True)
        except asyncio.CancelledError:
            await kernel.ashutdown()
            shutil.rmtree(spare, ignore_errors=True)
            raise
        except Exception as exc:
            await kernel.ashutdown()
            shutil.rmtree(spare, ignore_errors=True)
            self._deliver(key, exc)
            return
        if self._closed:
            await kernel.ashutdown()
            shutil.rmtree(spare, ignore_errors=True)
            return
        self._deliver(key, kernel)
