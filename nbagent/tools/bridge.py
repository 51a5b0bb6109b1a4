"""The host bridge: code in the kernel calls functions that live in the agent's own process.

Host-side tools (they hold a database connection, an API client or a secret) and managed agents
run here, in the process that drives the kernel, not in the kernel. The kernel reaches them over a
unix socket in a private temporary folder: a path, not a port, so it keeps working when the kernel
runs without network (its own network namespace), exactly like the kernel's own ``ipc`` channels.

One request per connection, one JSON line each way::

    kernel -> host   {"tool": "lookup", "args": {"city": {"kind": "json", "value": "Lyon"}}, "token": "..."}
    host -> kernel   {"result": {"kind": "json", "value": {...}}}   or   {"error": "KeyError: 'Lyon'"}

Values use the tagged format of ``kernel_code/host_bridge.py`` (JSON values, pandas objects, bytes,
images). Calls run on the agent's event loop, in the agent's thread (so a client made there, such
as a sqlite3 connection, works in a tool); coroutine functions are awaited, so a managed agent runs
alongside the step that called it and the step's timeout still applies. When the kernel stops
waiting (the step was interrupted), a pending coroutine is cancelled. Every call is kept in
:attr:`HostBridge.calls` so the agent can record it in the notebook.

The kernel runs model code, so what arrives on the socket is untrusted. Each call must carry the
run's token (:attr:`HostBridge.token`, random per bridge, given to the kernel in its live setup and
never recorded), so a kernel of another run -- or any other process of the user that finds the
socket -- cannot call this run's tools. Connections are bounded in number (``max_connections``
served at once; more are refused at once), in size (``max_request_bytes``) and in time (a request
line must arrive within ``idle_timeout`` seconds), so a flood of idle or endless connections costs
a bounded number of threads and bytes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hmac
import inspect
import json
import os
import secrets
import select
import shutil
import socket
import struct
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..kernel_code.host_bridge import _nbagent_decode, _nbagent_encode

encode_value: Callable[[Any], dict[str, Any]] = _nbagent_encode
"""A value in the bridge's tagged wire format (``TypeError`` for what cannot cross)."""
decode_value: Callable[[dict[str, Any]], Any] = _nbagent_decode
"""The value a tagged payload stands for."""

MAX_CONNECTIONS = 16
"""Connections a bridge serves at once; more are answered with an error and closed."""
MAX_REQUEST_BYTES = 32 << 20
"""Longest request line (arguments included) a bridge reads."""
IDLE_TIMEOUT = 30.0
"""Seconds a connection has to send its whole request line."""


@dataclass
class HostResult:
    """What a host function may return to add a note (markdown) to the record of its call."""

    value: Any
    note: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class HostCall:
    """One call from the kernel to a host function, as recorded in the notebook."""

    tool: str
    args: dict[str, Any]
    """Arguments in wire format (as the kernel sent them)."""
    result: dict[str, Any] | None = None
    error: str | None = None
    started: float = 0.0
    duration: float = 0.0
    note: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def replay_entry(self) -> dict[str, Any]:
        """The entry of the notebook's replay cell: what a re-run answers this call with."""
        entry: dict[str, Any] = {"tool": self.tool, "args": self.args}
        if self.error is not None:
            entry["error"] = f"{self.tool}() failed on the host: {self.error}"
        else:
            entry["result"] = self.result
        return entry

    def to_dict(self) -> dict[str, Any]:
        """A short JSON-able summary (for cell metadata; full results live in the replay cell)."""
        out: dict[str, Any] = {
            "tool": self.tool,
            "args": self.args,
            "status": "error" if self.error is not None else "ok",
            "duration": round(self.duration, 6),
        }
        if self.error is not None:
            out["error"] = self.error
        if self.meta:
            out.update(self.meta)
        return out


HostFunction = Callable[..., Any]


class HostBridge:
    """Serves the kernel's calls to host functions over a unix socket.

    Args:
        functions: name -> callable (sync or async); keyword arguments come from the kernel.
        max_connections: connections served at once (see the module docstring).
        max_request_bytes: longest request line read.
        idle_timeout: seconds a connection has to send its request line.
    """

    def __init__(
        self,
        functions: Mapping[str, HostFunction],
        *,
        max_connections: int = MAX_CONNECTIONS,
        max_request_bytes: int = MAX_REQUEST_BYTES,
        idle_timeout: float = IDLE_TIMEOUT,
    ) -> None:
        self.functions = dict(functions)
        self.token = secrets.token_hex(16)
        """The secret each call must carry: it binds the calls to the run whose kernel got it."""
        self.max_connections = max_connections
        self.max_request_bytes = max_request_bytes
        self.idle_timeout = idle_timeout
        self._slots = threading.BoundedSemaphore(max_connections)
        self.calls: list[HostCall] = []
        self.loop: asyncio.AbstractEventLoop | None = None
        self._dir: str | None = None
        self._server: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._closing = threading.Event()

    @property
    def address(self) -> str | None:
        """The socket's path while serving."""
        return None if self._dir is None else os.path.join(self._dir, "host.sock")

    def start(self, folder: str | os.PathLike[str] | None = None) -> str:
        """Start serving (idempotent); returns the socket path to give the kernel.

        ``folder``: where to put the socket -- a jailed kernel's bridge folder, bound into that
        jail only (so no other run's kernel can reach this bridge); default: a private temporary
        folder.
        """
        if self._server is not None and folder is not None and self._dir != os.fspath(folder):
            self.close()  # a new session in another kernel's jail
        if self._server is None:
            self._owns_dir = folder is None
            # mode 0700: only this user
            self._dir = tempfile.mkdtemp(prefix="nbagent-bridge-") if folder is None else os.fspath(folder)
            address = self.address
            assert address is not None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(address)
            server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            server.bind(address)
            # In a jail's folder the kernel runs as another uid; that folder is visible to that
            # jail and to this user only, so the socket itself may be open.
            os.chmod(address, 0o600 if folder is None else 0o666)
            server.listen(16)
            server.settimeout(0.2)
            self._server = server
            self._closing.clear()
            self._thread = threading.Thread(target=self._accept_loop, name="nbagent-bridge", daemon=True)
            self._thread.start()
        address = self.address
        assert address is not None
        return address

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Run calls on ``loop`` (the agent's loop, running while a step executes)."""
        self.loop = loop

    def close(self) -> None:
        """Stop serving and remove the socket."""
        self._closing.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._dir is not None:
            if getattr(self, "_owns_dir", True):
                shutil.rmtree(self._dir, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(self._dir, "host.sock"))
            self._dir = None

    # -- serving (bridge thread) ----------------------------------------------------------------

    def _accept_loop(self) -> None:
        server = self._server
        assert server is not None
        while not self._closing.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if not self._slots.acquire(blocking=False):
                with conn:  # over the limit: refused at once, no thread spent on it
                    try:
                        conn.setblocking(False)
                        _send(
                            conn, {"error": f"the nbagent host serves {self.max_connections} calls at once"}
                        )
                    except OSError:
                        pass
                continue
            threading.Thread(
                target=self._serve_in_slot, args=(conn,), name="nbagent-bridge-call", daemon=True
            ).start()

    def _serve_in_slot(self, conn: socket.socket) -> None:
        try:
            self._serve(conn)
        finally:
            self._slots.release()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.settimeout(self.idle_timeout)
                request = json.loads(_read_line(conn, self.max_request_bytes))
                if not isinstance(request, dict):
                    raise TypeError("a request is a JSON object")
                name, args = str(request["tool"]), request.get("args") or {}
                if not isinstance(args, dict) or not all(isinstance(v, dict) for v in args.values()):
                    raise TypeError("'args' must map names to tagged values")
            except TimeoutError:
                _send_quietly(conn, {"error": f"no complete request within {self.idle_timeout:g} s"})
                return
            except (ValueError, KeyError, TypeError, OSError, RecursionError) as exc:
                _send_quietly(conn, {"error": f"bad request to the nbagent host: {exc}"})
                return
            token = request.get("token")
            if not isinstance(token, str) or not hmac.compare_digest(token, self.token):
                _send_quietly(
                    conn, {"error": f"{name}(): refused: this call does not come from this run's kernel"}
                )
                return
            conn.settimeout(None)
            if _peer_pid(conn) == os.getpid():
                # The code runs in this very process (an in-process executor, such as the user's own
                # shell), most likely on the agent's loop thread, which waits for this reply: run
                # the call here rather than queue it on that loop and wait forever.
                _send(conn, asyncio.run(self._invoke(name, args)))
                return
            loop = self.loop
            if loop is None or loop.is_closed() or not loop.is_running():
                _send(
                    conn, {"error": f"{name}(): the agent is not running, so its host tools cannot be called"}
                )
                return
            future = asyncio.run_coroutine_threadsafe(self._invoke(name, args), loop)
            while True:
                try:
                    reply = future.result(timeout=0.2)
                    break
                except concurrent.futures.TimeoutError:
                    if self._closing.is_set() or _peer_gone(conn):
                        future.cancel()  # the kernel stopped waiting (interrupted): stop the work too
                        return
                except concurrent.futures.CancelledError:
                    return
            try:
                _send(conn, reply)
            except OSError:
                pass  # the kernel was interrupted just as the reply was ready

    # -- running a call (agent loop) ------------------------------------------------------------

    async def _invoke(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        call = HostCall(tool=name, args=args, started=time.time())
        t0 = time.perf_counter()
        reply: dict[str, Any]
        try:
            function = self.functions.get(name)
            if function is None:
                raise LookupError(f"no host tool named {name!r}")
            kwargs = {k: decode_value(v) for k, v in args.items()}
            value = function(**kwargs)
            if inspect.isawaitable(value):
                value = await value
            if isinstance(value, HostResult):
                call.note, call.meta, value = value.note, value.meta, value.value
            try:
                call.result = encode_value(value)
            except TypeError as exc:
                raise TypeError(f"{name}() returned a value that {exc}") from None
            reply = {"result": call.result}
        except asyncio.CancelledError:
            call.error = "cancelled: the step calling it was interrupted"
            raise
        except Exception as exc:
            call.error = f"{type(exc).__name__}: {exc}"
            call.note = str(getattr(exc, "note", ""))
            reply = {"error": f"{name}() failed on the host: {call.error}"}
        finally:
            call.duration = time.perf_counter() - t0
            self.calls.append(call)
        return reply


def _read_line(conn: socket.socket, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while not chunks or not chunks[-1].endswith(b"\n"):
        chunk = conn.recv(min(1 << 20, limit + 1 - size))
        if not chunk:
            raise ValueError("the connection closed before a full request arrived")
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise ValueError(f"request longer than {limit} bytes")
    return b"".join(chunks)


def _send_quietly(conn: socket.socket, payload: dict[str, Any]) -> None:
    try:
        _send(conn, payload)
    except OSError:
        pass  # the other end is gone (or never read): nothing more to do


def _send(conn: socket.socket, payload: dict[str, Any]) -> None:
    conn.sendall(json.dumps(payload).encode() + b"\n")


def _peer_pid(conn: socket.socket) -> int | None:
    option = getattr(socket, "SO_PEERCRED", None)  # Linux; elsewhere the peer is taken to be a kernel
    if option is None:
        return None
    try:
        creds = conn.getsockopt(socket.SOL_SOCKET, option, struct.calcsize("3i"))
    except OSError:
        return None
    pid: int = struct.unpack("3i", creds)[0]
    return pid


def _peer_gone(conn: socket.socket) -> bool:
    readable, _, _ = select.select([conn], [], [], 0)
    if not readable:
        return False
    try:
        return conn.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True
