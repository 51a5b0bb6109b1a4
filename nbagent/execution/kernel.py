"""The kernel executor: a real IPython kernel process driven through jupyter_client.

The core is ``async``; every public coroutine has a blocking twin made with
``jupyter_core.utils.run_sync`` (``aexecute`` / ``execute``), which also works when called from
inside a running event loop such as a Jupyter kernel.

Waiting has one place (:meth:`Kernel.aexecute`): it reads iopub messages until the kernel is idle
again, and on the way checks the deadline (interrupt, then restart if the interrupt is ignored)
and the kernel process (a dead kernel is noticed within ``poll_interval`` seconds, not waited on).
Turning messages into notebook outputs is the job of :class:`~nbagent.execution.outputs.OutputCollector`.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import dataclasses
import json
import logging
import os
import shutil
import signal
import tempfile
import time
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from queue import Empty
from typing import Any

from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
from jupyter_client.manager import AsyncKernelManager
from jupyter_core.paths import jupyter_path
from jupyter_core.utils import run_sync

from ..exceptions import KernelStartError, NoSuchKernelError, SandboxUnavailableError
from .jail import jail_unavailable
from .outputs import ErrorInfo, Execution, OutputCollector, Status, error_from_outputs
from .run_limits import RUNTIME_PREFIX, JailedRun, sweep_stale_runtime_folders
from .sandbox import ENV_PREFIX, Sandbox

DEFAULT_KERNEL = "nbagent-sandbox"
"""The kernel spec used when none is named: ``kernels/nbagent-sandbox`` (the ``nbagent`` kernel --
plain tracebacks, inline PNGs -- run inside the sandbox: by default the jail)."""

DISK_CHECK_INTERVAL = 2.0
"""Seconds between two measurements of a jailed run's folder while a step runs."""

log = logging.getLogger("nbagent")
_warned_no_netns = False


def bundled_kernels_dir() -> Path:
    """The folder holding nbagent's own kernel specs (``kernels/`` in a checkout)."""
    package = Path(__file__).resolve().parents[1]
    for candidate in (package / "_kernels", package.parent / "kernels"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("nbagent's kernels/ folder is missing from this installation")


def kernel_spec_manager() -> KernelSpecManager:
    """A spec manager that knows nbagent's kernels first, then every Jupyter kernel spec."""
    return KernelSpecManager(kernel_dirs=[str(bundled_kernels_dir()), *jupyter_path("kernels")])


def is_sandboxed_spec(name: str) -> bool:
    """True when kernel spec ``name`` is one of nbagent's sandboxed specs (``nbagent-sandbox``)."""
    try:
        spec = kernel_spec_manager().get_kernel_spec(name)
    except NoSuchKernel:
        return False
    return bool((spec.metadata.get("nbagent") or {}).get("sandbox"))


def available_kernels() -> list[str]:
    """Names of every kernel spec :class:`Kernel` can start."""
    return sorted(kernel_spec_manager().find_kernel_specs())


def check_kernel_name(name: str) -> str:
    """``name`` if a kernel spec of that name is installed; :class:`~nbagent.NoSuchKernelError`
    (a :class:`~nbagent.UsageError`) listing those that are, if not."""
    known = available_kernels()
    if name not in known:
        raise NoSuchKernelError(f"unknown kernel {name!r}; available kernels: {', '.join(known) or 'none'}")
    return name


_live_kernels: weakref.WeakSet[Kernel] = weakref.WeakSet()


@atexit.register
def _stop_leftover_kernels() -> None:
    # A library user who never calls close() must not leave kernel processes behind.
    for kernel in list(_live_kernels):
        kernel._kill_now()


class Kernel:
    """A kernel process that runs code and returns :class:`~nbagent.Execution` records.

    Args:
        name: kernel spec name; nbagent's own specs (``kernels/``) are searched first.
        cwd: working directory of the kernel process (default: the current directory).
        env: extra environment variables for the kernel process.
        startup_timeout: seconds to wait for a new kernel to answer.
        interrupt_grace: seconds a timed-out step gets to stop after SIGINT before the kernel is
            restarted.
        poll_interval: how often (seconds) a silent kernel is checked for being alive.
        sandbox: limits for sandboxed kernel specs (``nbagent-sandbox``); default
            :class:`~nbagent.execution.sandbox.Sandbox()`. Ignored by other kernels.
        provisioner: a jupyter_client ``kernel_provisioner`` stanza used instead of the spec's
            (a warm pool passes :class:`nbagent.execution.forking.ForkServer`'s to fork kernels).
        inside_cwd: in the jail, the path at which ``cwd`` (the one writable folder) is seen by
            the code, e.g. the notebook's folder while the files live in a run folder beside it;
            default: ``cwd`` itself.
        run_folder: ``cwd`` is a folder nbagent made for this run (the agent's ``<stem>.work/``,
            a pool's spare): in the jail, what it holds counts against ``Sandbox.disk``. A folder
            of yours is never measured (its existing content is not the run's).
    """

    def __init__(
        self,
        name: str = DEFAULT_KERNEL,
        *,
        cwd: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        extra_arguments: Sequence[str] = (),
        startup_timeout: float = 60.0,
        interrupt_grace: float = 5.0,
        poll_interval: float = 0.25,
        sandbox: Sandbox | None = None,
        provisioner: Mapping[str, Any] | None = None,
        inside_cwd: str | os.PathLike[str] | None = None,
        run_folder: bool = False,
    ) -> None:
        self.name = name
        self.cwd = Path(cwd or os.getcwd()).resolve()
        self.inside_cwd = Path(inside_cwd).resolve() if inside_cwd is not None else None
        self.run_folder = run_folder
        self.env = dict(env or {})
        self.extra_arguments = list(extra_arguments)
        self.startup_timeout = startup_timeout
        self.interrupt_grace = interrupt_grace
        self.poll_interval = poll_interval
        self.sandbox = sandbox or Sandbox()
        self.sandboxed = False
        self.sandbox_report: dict[str, Any] | None = None
        """What the sandbox launcher did at the last (re)start: limits, network, removed variables."""
        self.provisioner = dict(provisioner) if provisioner is not None else None
        self.restarts = 0
        self._km: AsyncKernelManager | None = None
        self._kc: Any = None
        self._runtime_dir: str | None = None
        self._jail: JailedRun | None = None
        self._limit_hit: str | None = None
        self._collector = OutputCollector()
        self.interrupted: Execution | None = None
        """The execution a cancellation (Ctrl-C) stopped last, with the outputs it had made."""

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def started(self) -> bool:
        """True once the kernel process has been started (and not shut down)."""
        return self._km is not None

    @property
    def pid(self) -> int | None:
        """Process id of the kernel, when it runs locally."""
        provisioner = getattr(self._km, "provisioner", None)
        process = getattr(provisioner, "process", None)
        return getattr(process, "pid", None)

    @property
    def client(self) -> Any:
        """The jupyter_client ``AsyncKernelClient`` of the running kernel (``None`` before start), for
        code that speaks the messaging protocol itself (benchmarks, debuggers)."""
        return self._kc

    @property
    def jailed(self) -> bool:
        """True when this kernel runs (or will run) in the jail: a sandboxed spec at level ``jail``."""
        return self.sandbox.jailed and is_sandboxed_spec(self.name)

    @property
    def bridge_folder(self) -> Path | None:
        """A folder, visible inside this kernel's jail only, for this run's host-bridge socket."""
        return Path(self._jail.bridge) if self._jail is not None else None

    async def astart(self) -> None:
        """Start the kernel process and wait until it answers.

        Raises :class:`~nbagent.SandboxUnavailableError` before anything starts when the spec is
        sandboxed, the level is ``jail``, and this machine cannot build the jail.
        """
        if self._km is not None:
            return
        ksm = kernel_spec_manager()
        try:
            spec = ksm.get_kernel_spec(self.name)
        except NoSuchKernel:
            check_kernel_name(self.name)  # raises, listing the kernels there are
            raise
        self.sandboxed = bool((spec.metadata.get("nbagent") or {}).get("sandbox"))
        jailed = self.sandboxed and self.sandbox.jailed
        if jailed:
            reason = jail_unavailable()
            if reason is not None:
                raise SandboxUnavailableError(reason)
            # In a thread: making the cgroup (and, once, trying the seccomp filter) blocks, and a
            # pool starts kernels beside running tasks on this loop.
            self._jail = await asyncio.to_thread(JailedRun, self.sandbox)
            self._runtime_dir = self._jail.folder
            ip = os.path.join(self._jail.ipc, "k")
        else:
            # Named after this process, so a later start removes it if this process is killed.
            sweep_stale_runtime_folders()
            self._runtime_dir = tempfile.mkdtemp(prefix=f"{RUNTIME_PREFIX}{os.getpid()}-")
            ip = os.path.join(self._runtime_dir, "k")
        # ipc transport: no TCP ports, and it keeps working when the kernel has no network.
        km = AsyncKernelManager(
            kernel_name=self.name,
            kernel_spec_manager=ksm,
            transport="ipc",
            ip=ip,
            connection_file=os.path.join(self._runtime_dir, "connection.json"),
        )
        if self.provisioner is not None and km.kernel_spec is not None:
            km.kernel_spec.metadata["kernel_provisioner"] = self.provisioner
        env = {**os.environ, **self.env}
        if self.sandboxed:
            # Variables given on purpose through ``env`` pass the sandbox's filter.
            allow = (*self.sandbox.allow_env, *self.env)
            env.update(dataclasses.replace(self.sandbox, allow_env=allow).to_env())
            env[ENV_PREFIX + "REPORT"] = os.path.join(self._runtime_dir, "sandbox.json")
        if self._jail is not None:
            env.update(
                await asyncio.to_thread(self._jail.env, str(self.inside_cwd) if self.inside_cwd else None)
            )
        try:
            await km.start_kernel(cwd=str(self.cwd), env=env, extra_arguments=self.extra_arguments)
        except Exception as exc:
            await asyncio.to_thread(self._close_runtime)
            raise KernelStartError(f"could not start kernel {self.name!r}: {exc}") from exc
        self._km = km
        _live_kernels.add(self)
        await self._connect()

    def _close_runtime(self) -> None:
        if self._jail is not None:
            self._jail.close()
            self._jail = None
        if self._runtime_dir:
            shutil.rmtree(self._runtime_dir, ignore_errors=True)
            self._runtime_dir = None

    async def _connect(self) -> None:
        assert self._km is not None
        self._kc = self._km.client()
        self._kc.start_channels()
        try:
            await self._kc.wait_for_ready(timeout=self.startup_timeout)
        except RuntimeError as exc:
            await self.ashutdown()
            raise KernelStartError(
                f"kernel {self.name!r} did not become ready within {self.startup_timeout:.0f} s: {exc}"
            ) from exc
        if self.sandboxed:
            self._read_sandbox_report()
        if self._jail is not None:
            self._jail.started()
        self._limit_hit = None

    def _read_sandbox_report(self) -> None:
        global _warned_no_netns
        assert self._runtime_dir is not None
        try:
            with open(os.path.join(self._runtime_dir, "sandbox.json"), encoding="utf-8") as f:
                self.sandbox_report = json.load(f)
        except (OSError, ValueError):
            self.sandbox_report = None
            return
        report = self.sandbox_report
        if not report["network_allowed"] and not report["network_isolated"] and not _warned_no_netns:
            # Said once per process: every kernel on this machine would say the same.
            _warned_no_netns = True
            log.warning(
                "nbagent: network namespaces are not permitted here (%s); kernels run WITH "
                "network access, and with the other sandbox limits.",
                report["network"],
            )

    async def arestart(self) -> None:
        """Restart the kernel process; all state in it is lost."""
        if self._km is None:
            await self.astart()
            return
        if self._kc is not None:
            self._kc.stop_channels()
        if self._jail is not None:
            await asyncio.to_thread(self._jail.kill_all)  # nothing of the old kernel survives
        # cwd is passed again because a pool may have moved the kernel's folder since it started.
        await self._km.restart_kernel(now=True, cwd=str(self.cwd))
        self.restarts += 1
        await self._connect()

    async def ainterrupt(self) -> None:
        """Send the kernel an interrupt (SIGINT for local ipykernels)."""
        if self._km is not None:
            await self._km.interrupt_kernel()

    async def ais_alive(self) -> bool:
        """True while the kernel process runs."""
        return self._km is not None and bool(await self._km.is_alive())

    async def ashutdown(self) -> None:
        """Stop the kernel process and remove its connection files."""
        km, self._km = self._km, None
        if self._kc is not None:
            self._kc.stop_channels()
            self._kc = None
        if km is not None:
            try:
                await km.shutdown_kernel(now=True)
            except Exception:  # the process may already be gone; cleanup must not fail
                pass
        # Killing and removing the cgroup waits for the processes to go: not on the loop.
        await asyncio.to_thread(self._close_runtime)
        _live_kernels.discard(self)

    def _kill_now(self) -> None:
        if self.pid:
            try:
                os.kill(self.pid, 9)
            except OSError:
                pass
        self._close_runtime()

    # -- running code ----------------------------------------------------------------------

    async def aexecute(
        self,
        code: str,
        timeout: float | None = None,
        *,
        silent: bool = False,
        setup: bool = False,
        expressions: Mapping[str, str] | None = None,
    ) -> Execution:
        """Run ``code`` and return what it did.

        ``timeout`` (seconds) bounds the run: when it passes the kernel is interrupted; if it
        has not stopped ``interrupt_grace`` seconds later, it is restarted. A kernel that dies
        is restarted too, so the next call works; ``Execution.restarted`` tells the caller.
        ``silent`` runs it outside the history: the execution count does not move. ``setup``
        (nbagent's setup code) changes nothing here: the kernel and its history are nbagent's.
        ``expressions`` (name -> Python expression) are Jupyter's ``user_expressions``: evaluated
        right after the code, when it succeeded, in the same request (no extra round trip); their
        ``text/plain`` values land in ``Execution.expressions``.
        """
        await self.astart()
        kc = self._kc
        try:
            code.encode("utf-8")
        except UnicodeEncodeError:
            # A lone surrogate (say, from a model reply) cannot go over the wire as UTF-8, and
            # jupyter_client would raise; it becomes "?" instead.
            code = code.encode("utf-8", "replace").decode("utf-8")
        outputs = self._collector.begin()
        execution = Execution(code=code, outputs=outputs, started=time.time())
        t0 = time.perf_counter()
        msg_id = kc.execute(
            code,
            silent=silent,
            store_history=not silent,
            user_expressions=dict(expressions or {}),
            allow_stdin=False,
            stop_on_error=False,
        )

        self.interrupted = None
        try:
            return await self._await_execution(kc, msg_id, execution, t0, timeout)
        except asyncio.CancelledError:
            # The run was stopped (Ctrl-C): stop the cell as Jupyter does and keep what it
            # printed, with the KeyboardInterrupt under it, for the caller to record.
            self.interrupted = execution
            try:
                await self._stop_after_cancel(msg_id, execution)
            finally:
                execution.duration = time.perf_counter() - t0
            raise

    async def _stop_after_cancel(self, msg_id: str, execution: Execution, grace: float = 3.0) -> None:
        execution.status = "interrupted"
        try:
            await self.ainterrupt()
            end = time.perf_counter() + grace
            while (left := end - time.perf_counter()) > 0:
                try:
                    msg = await self._kc.get_iopub_msg(timeout=left)
                except Empty:
                    break
                if msg["parent_header"].get("msg_id") != msg_id:
                    continue
                msg_type = msg["header"]["msg_type"]
                if msg_type == "status" and msg["content"]["execution_state"] == "idle":
                    break
                if msg_type != "execute_input":
                    self._collector.handle(msg)
        except Exception:  # best effort: the run is being stopped; what was collected is kept
            pass
        self._collector.finish()
        execution.error = error_from_outputs(execution.outputs) or ErrorInfo(
            "KeyboardInterrupt", "the run was interrupted by the user", ""
        )

    async def _await_execution(
        self, kc: Any, msg_id: str, execution: Execution, t0: float, timeout: float | None
    ) -> Execution:
        deadline = None if timeout is None else t0 + timeout
        interrupted_at: float | None = None
        next_alive_check = t0 + self.poll_interval
        status: Status | None = None
        while True:
            now = time.perf_counter()
            if now >= next_alive_check:
                next_alive_check = now + self.poll_interval
                if not await self.ais_alive():
                    status = "died"
                    break
                if self._jail is not None:
                    over = self._jail.over_cpu()
                    if over is not None:
                        # The whole tree's CPU time, as SIGXCPU would for one process.
                        self._limit_hit = over
                        self._kill_process()
                    disk = self._over_disk(every=DISK_CHECK_INTERVAL)
                    if disk is not None and interrupted_at is None:
                        execution.limits.append(disk)
                        interrupted_at = now
                        await self.ainterrupt()
            if deadline is not None and interrupted_at is None and now >= deadline:
                interrupted_at = now
                await self.ainterrupt()
            if interrupted_at is not None and now - interrupted_at >= self.interrupt_grace:
                status = "timeout"
                execution.note = (
                    f"the step ran over {timeout:g} s and ignored the interrupt for "
                    f"{self.interrupt_grace:g} s; the kernel was restarted"
                )
                await self.arestart()
                execution.restarted = True
                break
            wait = next_alive_check - now
            if deadline is not None and interrupted_at is None:
                wait = min(wait, deadline - now)
            try:
                msg = await kc.get_iopub_msg(timeout=max(wait, 0.0))
            except Empty:
                continue
            except (ValueError, TypeError, KeyError) as exc:
                # The kernel runs model code, which can send anything: a message jupyter_client
                # cannot even decode is left out, and the step goes on.
                log.debug("nbagent: an undecodable iopub message was ignored: %s", exc)
                continue
            # Only the shape this loop relies on is checked here; the collector checks the rest.
            parent = msg.get("parent_header")
            if not isinstance(parent, dict) or parent.get("msg_id") != msg_id:
                continue
            header, content = msg.get("header"), msg.get("content")
            msg_type = header.get("msg_type") if isinstance(header, dict) else None
            idle = isinstance(content, dict) and content.get("execution_state") == "idle"
            if msg_type == "status" and idle:
                break
            if msg_type == "execute_input":
                count = content.get("execution_count") if isinstance(content, dict) else None
                if isinstance(count, int) and not isinstance(count, bool):
                    execution.execution_count = count
                continue
            self._collector.handle(msg)
        self._collector.finish()

        if status == "died":
            execution.note = f"the kernel process {self._death_cause()} and was restarted"
            await self.arestart()
            execution.restarted = True
        elif status is None:
            await self._read_reply(msg_id, execution)
            status = "ok" if execution.error is None else "error"
            if interrupted_at is not None:
                status = "timeout"
                execution.note = f"interrupted after {timeout:g} s; the kernel kept its state"
        if not execution.limits:
            disk = self._over_disk()
            if disk is not None:
                execution.limits.append(disk)
        if (
            execution.limits
            and status == "timeout"
            and (timeout is None or time.perf_counter() - t0 < timeout)
        ):
            status = "error"  # stopped for the disk, not the clock
            execution.note = "stopped: " + execution.limits[0]
            execution.error = ErrorInfo("DiskLimitExceeded", execution.limits[0], "")
        execution.status = status
        execution.duration = time.perf_counter() - t0
        if status == "timeout" and execution.error is None:
            execution.error = ErrorInfo("TimeoutError", f"step exceeded {timeout:g} s", "")
        return execution

    def _over_disk(self, every: float = 0.0) -> str | None:
        if self._jail is None or not self.run_folder:
            return None
        return self._jail.over_disk(self.cwd, every=every)

    def _kill_process(self) -> None:
        process = getattr(getattr(self._km, "provisioner", None), "process", None)
        if process is not None:
            with contextlib.suppress(OSError):
                process.kill()
        if self._jail is not None:
            self._jail.kill_all()

    def _death_cause(self) -> str:
        limit = self._limit_hit or (self._jail.oom_killed() if self._jail is not None else None)
        if limit is not None:
            return f"was killed for going over {limit}"
        process = getattr(getattr(self._km, "provisioner", None), "process", None)
        code = getattr(process, "returncode", None)
        if code is None:
            return "died"
        if self._jail is not None and 128 < code < 128 + 65:
            code = 128 - code  # bwrap reports its child's death by signal N as exit code 128 + N
        if code >= 0:
            return f"exited with code {code}"
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        why = {
            "SIGSEGV": " (a segmentation fault)",
            "SIGXCPU": f" (its CPU-time limit of {self.sandbox.cpu_time} s)" if self.sandboxed else "",
            "SIGKILL": " (killed from outside, e.g. out of memory)",
            "SIGABRT": " (aborted)",
        }.get(name, "")
        return f"was killed by {name}{why}"

    async def _read_reply(self, msg_id: str, execution: Execution) -> None:
        # The reply normally arrives before idle; a missing one must not hang the run.
        while True:
            try:
                reply = await self._kc.get_shell_msg(timeout=max(self.poll_interval, 1.0) * 4)
            except Empty:
                break
            except (ValueError, TypeError, KeyError):
                continue  # undecodable: see aexecute
            parent, content = reply.get("parent_header"), reply.get("content")
            if not isinstance(parent, dict) or parent.get("msg_id") != msg_id:
                continue
            if not isinstance(content, dict):
                break
            count = content.get("execution_count")
            if execution.execution_count is None and isinstance(count, int) and not isinstance(count, bool):
                execution.execution_count = count
            found = content.get("user_expressions")
            if isinstance(found, dict):
                for name, value in found.items():
                    data = value.get("data") if isinstance(value, dict) else None
                    text = data.get("text/plain") if isinstance(data, dict) else None
                    if isinstance(name, str) and isinstance(text, str):
                        execution.expressions[name] = text[:1000]  # the kernel's word: bounded
            if content.get("status") == "error":
                traceback = content.get("traceback")
                execution.error = error_from_outputs(execution.outputs) or ErrorInfo(
                    str(content.get("ename", "Error"))[:1000],
                    str(content.get("evalue", ""))[:10_000],
                    "\n".join(map(str, traceback))[:100_000] if isinstance(traceback, list) else "",
                )
            break

    # -- blocking twins and context managers ---------------------------------------------------

    start = run_sync(astart)
    execute = run_sync(aexecute)
    restart = run_sync(arestart)
    interrupt = run_sync(ainterrupt)
    is_alive = run_sync(ais_alive)
    shutdown = run_sync(ashutdown)

    def __enter__(self) -> Kernel:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    async def __aenter__(self) -> Kernel:
        await self.astart()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.ashutdown()
