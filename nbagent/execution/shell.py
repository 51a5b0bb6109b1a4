"""The in-process executor: the agent's steps run in the user's own IPython shell.

:class:`ShellExecutor` is what ``%%agent`` runs steps with. A step is ``shell.run_cell(code,
store_history=True)``, so it sees and changes the user's namespace and takes its place in ``In`` and
``Out``. Its outputs are shown live where the shell shows them (under the magic's cell) and, at the
same time, collected into the same nbformat output records the kernel executor makes: the shell's
display publisher, displayhook, traceback display and ``sys.stdout``/``sys.stderr`` are tapped for
the length of the step, and every event becomes the message the kernel would have sent, fed to the
shared :class:`~nbagent.execution.outputs.OutputCollector`.

Threads: code must run on the shell's thread, while the agent's model calls are ``async``. Inside a
Jupyter kernel that thread is already running an event loop, so :meth:`ShellExecutor.run_coroutine`
runs the agent's coroutine on a helper event loop in another thread while the shell's thread waits
for work: each :meth:`~ShellExecutor.aexecute` (and each :meth:`~ShellExecutor.call_soon`) is handed
to it through a queue and done there, in order.

A step that raises is contained (:mod:`nbagent.execution.containment`): its new names are
removed, names it rebound get their old objects back, and in-place changes it made to the user's
objects are reported (they cannot be undone). Its error shows under the cell in the short form the
model reads, with the full traceback one click away.

Timeouts interrupt the step only: a watcher thread sends SIGINT to the shell's thread, which raises
``KeyboardInterrupt`` inside the step's code; IPython reports it like any exception and the
namespace stays as the step left it. An interrupt from the user (Jupyter's stop button) during a
run stops the whole run instead.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import io
import json
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

from .containment import NamespaceGuard
from .outputs import (
    ANSWER_MIME,
    ErrorInfo,
    Execution,
    OutputCollector,
    Status,
    error_from_outputs,
    strip_ansi,
)

T = TypeVar("T")

_DONE = object()
"""Queue marker: the coroutine driven by :meth:`ShellExecutor.run_coroutine` has finished."""


class ShellExecutor:
    """Runs code in an IPython shell (the user's own) and returns :class:`~nbagent.Execution` records.

    Args:
        shell: the ``InteractiveShell`` to run code in (``get_ipython()``).
        cwd: the folder data files are brought to; default: the current directory.
        interrupt_grace: seconds between repeated interrupts of a timed-out step that keeps
            running (a step that catches ``KeyboardInterrupt`` is interrupted again).
        short_error: how a step's error is shown under the user's cell (the full traceback is
            folded below it); given an error output's content, returns text. ``%%agent`` passes
            the shortened form the model reads; default: ``Name: message``.
    """

    def __init__(
        self,
        shell: Any,
        *,
        cwd: str | os.PathLike[str] | None = None,
        interrupt_grace: float = 5.0,
        short_error: Callable[[dict[str, Any]], str] | None = None,
    ) -> None:
        self.shell = shell
        self.short_error = short_error or _name_and_message
        self.cwd = Path(cwd or os.getcwd()).resolve()
        self.interrupt_grace = interrupt_grace
        self._collector = OutputCollector()
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        # The shell's thread: the one that made the executor (the magic runs there).
        self._thread = threading.get_ident()
        self._serving = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._user_interrupted = False
        self._step: _StepInterrupter | None = None

    # -- Executor protocol -----------------------------------------------------------------

    async def astart(self) -> None:
        """Nothing to start: the shell is already running."""

    async def ashutdown(self) -> None:
        """Nothing to stop: the shell belongs to the user and outlives every run."""

    async def ainterrupt(self) -> None:
        """Interrupt the step running in the shell, as Ctrl-C would; nothing if none runs."""
        step = self._step
        if step is not None:
            step.interrupt()

    async def aexecute(
        self, code: str, timeout: float | None = None, *, silent: bool = False, setup: bool = False
    ) -> Execution:
        """Run ``code`` in the shell, on the shell's thread, and return what it did.

        Called on the shell's thread, the code runs at once; called from the helper loop of
        :meth:`run_coroutine`, it is handed to the shell's thread and awaited.
        """
        if self._on_shell_thread():
            return self.execute(code, timeout, silent=silent, setup=setup)
        if not self._serving:
            raise RuntimeError(
                "ShellExecutor.aexecute was called from another thread while the shell's thread is "
                "not waiting for work; run the coroutine with ShellExecutor.run_coroutine()"
            )
        done: concurrent.futures.Future[Execution] = concurrent.futures.Future()
        self._jobs.put((done, code, timeout, silent, setup))
        return await asyncio.wrap_future(done)

    # -- the shell's thread ----------------------------------------------------------------

    def execute(
        self, code: str, timeout: float | None = None, *, silent: bool = False, setup: bool = False
    ) -> Execution:
        """Run ``code`` now, on the calling thread, which must be the shell's thread.

        ``silent``: nbagent's own code (the environment probe, the answer check): kept out of
        ``In``/``Out`` and not shown; its printed text is still collected. ``setup``: nbagent's
        setup code, shown and recorded like a step but kept out of ``In``/``Out``.
        """
        if silent:
            return self._execute_silently(code)
        shell = self.shell
        # The setup code (final_answer) is nbagent's, not a step: it stays out of In/Out.
        store_history = not setup
        outputs = self._collector.begin()
        execution = Execution(code=code, outputs=outputs, started=time.time())
        saved = _SavedShellState(shell)
        guard = NamespaceGuard(shell.user_ns) if store_history else None
        t0 = time.perf_counter()
        result: Any = None
        with _StepInterrupter(timeout, self.interrupt_grace) as interrupter, self._tap_outputs():
            self._step = interrupter
            try:
                result = shell.run_cell(code, store_history=store_history)
                # A plain attribute store: no signal handler can run before it.
                interrupter.running = False
            except KeyboardInterrupt:
                # The interrupt landed in IPython's own bookkeeping after the code ran.
                interrupter.running = False
            finally:
                self._step = None
        saved.restore()
        self._collector.finish()  # long streams are brought up to date here, not on every write
        if any(out.get("output_type") == "stream" for out in outputs):
            _flush_streams()
        execution.duration = time.perf_counter() - t0
        if store_history and result is not None:
            execution.execution_count = result.execution_count

        status: Status = "ok"
        raised = None if result is None else (result.error_before_exec or result.error_in_exec)
        if raised is not None or result is None:
            status = "error"
            execution.error = error_from_outputs(outputs)
            if execution.error is None:
                name = "KeyboardInterrupt" if raised is None else type(raised).__name__
                execution.error = ErrorInfo(name, "" if raised is None else str(raised), "")
        if interrupter.fired:
            status = "timeout"
            execution.note = f"interrupted after {timeout:g} s; the session kept its state"
            if execution.error is None:
                execution.error = ErrorInfo("TimeoutError", f"step exceeded {timeout:g} s", "")
        elif result is None or isinstance(raised, KeyboardInterrupt) or interrupter.interrupted_late:
            self._user_interrupted = True
        if status == "error" and guard is not None:
            undone = guard.undo().describe()
            if undone:
                execution.note = f"{execution.note}; {undone}" if execution.note else undone
        execution.status = status
        return execution

    def _execute_silently(self, code: str) -> Execution:
        outputs = self._collector.begin()
        execution = Execution(code=code, outputs=outputs, started=time.time())
        saved = _SavedShellState(self.shell)
        out, err = io.StringIO(), io.StringIO()
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            result = self.shell.run_cell(code, store_history=False, silent=True)
        saved.restore()
        execution.duration = time.perf_counter() - t0
        for name, buffer in (("stdout", out), ("stderr", err)):
            if buffer.getvalue():
                self._collector.handle(_message("stream", name=name, text=buffer.getvalue()))
        self._collector.finish()
        raised = result.error_before_exec or result.error_in_exec
        if raised is not None:
            execution.status = "error"
            execution.error = ErrorInfo(type(raised).__name__, str(raised), "")
        return execution

    def call_soon(self, fn: Callable[[], object]) -> None:
        """Call ``fn`` on the shell's thread: now if this is it, else in turn with the steps."""
        if self._on_shell_thread() or not self._serving:
            fn()
        else:
            self._jobs.put(fn)

    def run_coroutine(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` (e.g. ``agent.arun(...)``) to the end, from the shell's thread.

        The coroutine runs on a helper event loop in another thread; meanwhile this thread runs
        the code and the calls it asks for. Raises ``KeyboardInterrupt`` when the user
        interrupted the run (the coroutine is cancelled and has finished by then).
        """
        if self._serving or not self._on_shell_thread():
            coro.close()
            raise RuntimeError(
                "ShellExecutor.run_coroutine must be called on the shell's thread, one run at a time"
            )

        async def signalling_done() -> T:
            try:
                return await coro
            finally:
                self._jobs.put(_DONE)

        self._serving = True
        self._user_interrupted = False
        future = asyncio.run_coroutine_threadsafe(signalling_done(), self._helper_loop())
        stopping = False
        try:
            while True:
                try:
                    if not self._serve_one(run_steps=not stopping):
                        break
                except KeyboardInterrupt:
                    self._user_interrupted = True
                if self._user_interrupted and not stopping:
                    stopping = True
                    future.cancel()  # the coroutine still winds down; _DONE says when it has
        finally:
            self._serving = False
        if stopping or future.cancelled():
            raise KeyboardInterrupt
        return future.result()

    def close(self) -> None:
        """Stop the helper event loop thread (a new one starts if the executor is used again)."""
        loop, thread = self._loop, self._loop_thread
        self._loop = self._loop_thread = None
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=5)

    def _serve_one(self, run_steps: bool) -> bool:
        """Do the next job on this thread; False once the driven coroutine has finished."""
        try:
            job = self._jobs.get(timeout=0.5)
        except queue.Empty:
            return True
        if job is _DONE:
            return False
        if not isinstance(job, tuple):
            job()
            return True
        done, code, timeout, silent, setup = job
        if not run_steps:
            done.cancel()  # the user stopped the run: no further step runs
        elif done.set_running_or_notify_cancel():
            try:
                done.set_result(self.execute(code, timeout, silent=silent, setup=setup))
            except BaseException as exc:
                done.set_exception(exc)
                raise
        return True

    def _on_shell_thread(self) -> bool:
        return threading.get_ident() == self._thread

    def _helper_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="nbagent-agent-loop", daemon=True)
            thread.start()
            self._loop, self._loop_thread = loop, thread
        return self._loop

    # -- capturing outputs -------------------------------------------------------------------

    @contextmanager
    def _tap_outputs(self) -> Iterator[None]:
        """Collect what the shell shows during a step, while still showing it."""
        shell = self.shell
        handle = self._collector.handle
        publisher = shell.display_pub
        hook = shell.displayhook

        def quiet() -> bool:
            # Text the shell prints for a display, a result or a traceback is already collected.
            return bool(
                getattr(publisher, "is_publishing", False)
                or getattr(hook, "is_active", False)
                or getattr(shell, "showing_traceback", False)
            )

        def publish(data: dict[str, Any], metadata: dict[str, Any] | None = None, **kwargs: Any) -> None:
            transient = kwargs.get("transient") or {}
            kind = "update_display_data" if kwargs.get("update") else "display_data"
            handle(_message(kind, data=_clean_bundle(data), metadata=metadata or {}, transient=transient))
            if ANSWER_MIME in data:
                return  # the answer becomes the magic cell's result; shown once, there
            original_publish(data, metadata, **kwargs)

        def clear_output(wait: bool = False) -> None:
            # Recorded, not shown: on screen it would wipe the steps shown above in the cell.
            handle(_message("clear_output", wait=wait))

        def write_format_data(format_dict: dict[str, Any], md_dict: dict[str, Any] | None = None) -> None:
            handle(
                _message(
                    "execute_result",
                    data=_clean_bundle(format_dict),
                    metadata=md_dict or {},
                    execution_count=hook.prompt_count,
                )
            )
            original_write_format_data(format_dict, md_dict)

        def showtraceback(etype: type[BaseException], evalue: BaseException, stb: list[str]) -> None:
            error = _message("error", ename=etype.__name__, evalue=str(evalue), traceback=list(stb))
            handle(error)
            # Under the user's cell: the short form the model reads, the full traceback folded.
            original_publish(_short_traceback(error["content"], self.short_error), {})

        original_publish = publisher.publish
        original_write_format_data = hook.write_format_data
        with ExitStack() as stack:
            stack.enter_context(_patched(publisher, "publish", publish))
            stack.enter_context(_patched(publisher, "clear_output", clear_output))
            stack.enter_context(_patched(hook, "write_format_data", write_format_data))
            stack.enter_context(_patched(shell, "_showtraceback", showtraceback))
            for name in ("stdout", "stderr"):
                stack.enter_context(_tapped_stream(name, handle, quiet))
            yield


def _name_and_message(error: dict[str, Any]) -> str:
    return f"{error.get('ename', 'Error')}: {error.get('evalue', '')}"


def _short_traceback(error: dict[str, Any], short_error: Callable[[dict[str, Any]], str]) -> dict[str, str]:
    """A display bundle of an error: its short form, the full traceback in <details>."""
    import html

    short = short_error(error)
    full = strip_ansi("\n".join(error.get("traceback", [])))
    body = (
        f'<pre style="color: var(--jp-error-color1, #b00)">{html.escape(short)}</pre>'
        f"<details><summary>Full traceback</summary><pre>{html.escape(full)}</pre></details>"
    )
    return {"text/html": body, "text/plain": short}


class _SavedShellState:
    """What a nested ``run_cell`` changes that belongs to the cell running the magic."""

    _ATTRIBUTES = ("_last_traceback_during_displayhook",)

    def __init__(self, shell: Any) -> None:
        self.shell = shell
        self.exec_result = getattr(shell.displayhook, "exec_result", None)
        self.attributes = {a: getattr(shell, a) for a in self._ATTRIBUTES if hasattr(shell, a)}

    def restore(self) -> None:
        # The magic's own cell must still receive its result (the answer) through the displayhook.
        self.shell.displayhook.exec_result = self.exec_result
        for name, value in self.attributes.items():
            setattr(self.shell, name, value)


class _StepInterrupter:
    """Interrupts the step running on this thread when ``timeout`` seconds have passed.

    SIGINT is sent to the thread by a watcher; while the step runs, the SIGINT handler raises
    ``KeyboardInterrupt``. A timer's interrupt that arrives after the step has finished is
    ignored; a user's interrupt arriving then is remembered in ``interrupted_late``.
    """

    def __init__(self, timeout: float | None, grace: float) -> None:
        self.timeout = timeout
        self.grace = grace
        self.fired = False
        self.interrupted_late = False
        self.running = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self._previous_handler: Any = None
        self._main = threading.current_thread() is threading.main_thread()
        self._thread_id = threading.get_ident()

    def __enter__(self) -> _StepInterrupter:
        self.running = True
        if self._main:
            # Signal handlers run on the main thread only; elsewhere a step cannot be interrupted.
            self._previous_handler = signal.signal(signal.SIGINT, self._on_sigint)
            if self.timeout is not None:
                self._watcher = threading.Thread(target=self._watch, name="nbagent-step-timer", daemon=True)
                self._watcher.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.running = False
        self._stop.set()
        with self._lock:  # a signal being sent now has been sent once we hold the lock
            pass
        if self._watcher is not None:
            self._watcher.join()
        if self._main:
            # signal.signal() runs pending handlers first, so a late SIGINT still meets ours.
            signal.signal(signal.SIGINT, self._previous_handler)

    def interrupt(self) -> None:
        """Interrupt the step now, from any thread (a user's interrupt, not the timer's)."""
        with self._lock:
            if self.running and self._main:
                signal.pthread_kill(self._thread_id, signal.SIGINT)

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        if self.running:
            raise KeyboardInterrupt
        if not self.fired:
            self.interrupted_late = True

    def _watch(self) -> None:
        assert self.timeout is not None
        if self._stop.wait(self.timeout):
            return
        while True:
            with self._lock:
                if not self.running:
                    return
                self.fired = True
                signal.pthread_kill(self._thread_id, signal.SIGINT)
            if self._stop.wait(self.grace):
                return


@contextmanager
def _patched(obj: Any, name: str, replacement: Any) -> Iterator[None]:
    """Shadow a method on one instance for the duration of a step."""
    own = name in vars(obj)
    previous = vars(obj)[name] if own else None
    setattr(obj, name, replacement)
    try:
        yield
    finally:
        if own:
            setattr(obj, name, previous)
        else:
            delattr(obj, name)


@contextmanager
def _tapped_stream(
    name: str, handle: Callable[[dict[str, Any]], None], quiet: Callable[[], bool]
) -> Iterator[None]:
    """Collect text written to ``sys.<name>`` while still writing it through."""
    stream = getattr(sys, name)
    original_write = stream.write

    def write(text: Any, *args: Any, **kwargs: Any) -> Any:
        written = original_write(text, *args, **kwargs)
        if isinstance(text, str) and text and not quiet():
            handle(_message("stream", name=name, text=text))
        return written

    try:
        patch = _patched(stream, "write", write)
        patch.__enter__()
    except AttributeError:
        # Built-in streams (a terminal's TextIOWrapper) take no attributes: swap the object.
        with _swapped_stream(name, _TeeStream(stream, write)):
            yield
        return
    try:
        yield
    finally:
        patch.__exit__(None, None, None)


@contextmanager
def _swapped_stream(name: str, replacement: Any) -> Iterator[None]:
    previous = getattr(sys, name)
    setattr(sys, name, replacement)
    try:
        yield
    finally:
        setattr(sys, name, previous)


class _TeeStream:
    """A stand-in for a stream whose ``write`` cannot be replaced on the object itself."""

    def __init__(self, stream: Any, write: Callable[..., Any]) -> None:
        self._stream = stream
        self.write = write

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._stream, attr)


def _message(msg_type: str, **content: Any) -> dict[str, Any]:
    """The iopub message a kernel would send for this event (what OutputCollector reads)."""
    return {"header": {"msg_type": msg_type}, "parent_header": {}, "content": content}


def _clean_bundle(data: dict[str, Any]) -> dict[str, Any]:
    """A mime bundle as a notebook stores it: bytes as base64 (images) or text, JSON values."""
    clean: dict[str, Any] = {}
    for mime, value in data.items():
        if isinstance(value, (bytes, bytearray)):
            if mime.startswith("image/") and not mime.endswith("+xml"):
                value = base64.b64encode(value).decode("ascii")
            else:
                value = bytes(value).decode("utf-8", "replace")
        clean[mime] = value
    # Round-trip through JSON so the notebook holds plain data, never live objects.
    result: dict[str, Any] = json.loads(json.dumps(clean, default=str))
    return result


def _flush_streams() -> None:
    # Printed text reaches the page before what the next step shows (ipykernel buffers it).
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # a closed or odd stream must not break the run
            pass


__all__ = ["ShellExecutor"]
