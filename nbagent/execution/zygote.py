"""The kernel fork server ("zygote"): a process that has done the imports once and forks kernels.

Started by :class:`nbagent.execution.forking.ForkServer` through the kernel spec's own command line, with
``-m ipykernel_launcher`` replaced by ``-m nbagent.execution.zygote``, so whatever the spec's launcher
applies (limits, environment, namespaces) applies to it and to every kernel it forks. ``-f``
names a file shaped like a kernel connection file (so a launcher that reads it is not confused)
whose ``nbagent_zygote`` entry gives the control socket and the modules to preload. It imports
ipykernel and those modules, then serves requests on the Unix socket, one JSON line each:

- ``{"argv": [...kernel command...], "cwd": "..."}`` → ``{"pid": N}``: fork a kernel that runs
  ``ipykernel_launcher`` with the arguments that follow it in ``argv``, in its own session and
  working directory;
- ``{"ping": true}`` → ``{"pong": true}``;
- anything else (not JSON, not an object, a wrong field, longer than :data:`MAX_REQUEST_BYTES`,
  or not sent within :data:`REQUEST_TIMEOUT`) → ``{"error": "..."}``, and the zygote goes on.

It exits when its standard input reaches end-of-file (its host is gone) or on SIGTERM. It is
single-threaded on purpose: forking a process with threads is unsafe.
"""

from __future__ import annotations

import importlib
import json
import os
import select
import signal
import socket
import sys
from typing import Any

CONFIG_KEY = "nbagent_zygote"
"""Key of the zygote's settings (``socket``, ``preload``) in the file given with ``-f``."""


def _reap(signum: int, frame: Any) -> None:
    # Forked kernels are our children: collect their exit so none lingers as a zombie.
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _run_kernel(argv: list[str], cwd: str) -> None:
    """In the forked child: become an ordinary ipykernel process."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.setsid()
    os.chdir(cwd)
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed()  # a fork copies the global generator: give each kernel its own
    args = argv[argv.index("ipykernel_launcher") + 1 :] if "ipykernel_launcher" in argv else argv[1:]
    # The kernel leaves when the zygote (its parent) does, as it would with its host. (ipykernel
    # read JPY_PARENT_PID when the zygote imported it, so it is passed as an option.)
    args.append(f"--IPKernelApp.parent_handle={os.getppid()}")
    sys.argv = ["ipykernel_launcher", *args]
    from ipykernel.kernelapp import IPKernelApp

    IPKernelApp.launch_instance(argv=args)


MAX_REQUEST_BYTES = 1 << 20
"""Longest request line the zygote reads; a longer one is answered with an error."""
REQUEST_TIMEOUT = 5.0
"""Seconds a client has to send its whole request line (the zygote serves one client at a time)."""


def _read_request(conn: socket.socket) -> dict[str, Any]:
    """The one JSON line a client sends, as a checked request; ``ValueError`` says what is wrong."""
    conn.settimeout(REQUEST_TIMEOUT)
    data = b""
    while not data.endswith(b"\n"):
        try:
            chunk = conn.recv(65536)
        except TimeoutError:
            raise ValueError(f"no complete request line within {REQUEST_TIMEOUT:g} s") from None
        if not chunk:
            raise ValueError("the connection closed before a complete request line")
        data += chunk
        if len(data) > MAX_REQUEST_BYTES:
            raise ValueError(f"the request is longer than {MAX_REQUEST_BYTES} bytes")
    try:
        request = json.loads(data)
    except (ValueError, RecursionError):
        raise ValueError("the request is not one line of JSON") from None
    if not isinstance(request, dict):
        raise ValueError("the request is not a JSON object")
    if request.get("ping"):
        return request
    argv, cwd = request.get("argv"), request.get("cwd")
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        raise ValueError("'argv' must be a non-empty list of strings")
    if not isinstance(cwd, str) or not os.path.isdir(cwd):
        raise ValueError("'cwd' must name an existing folder")
    return request


def _answer(conn: socket.socket, answer: dict[str, Any]) -> None:
    try:
        conn.sendall(json.dumps(answer).encode() + b"\n")
    except OSError:
        pass  # the client left; nothing to tell it


def _handle(conn: socket.socket, server: socket.socket, lifeline: int) -> None:
    # A bad request gets an error answer and the zygote lives on: it serves every kernel of a
    # pool, so one malformed line (from a bug, or from code in a kernel that found the socket)
    # must not take the whole batch down.
    try:
        request = _read_request(conn)
    except (ValueError, OSError) as exc:
        _answer(conn, {"error": str(exc)})
        return
    if request.get("ping"):
        _answer(conn, {"pong": True})
        return
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            conn.close()
            server.close()
            devnull = os.open(os.devnull, os.O_RDONLY)
            os.dup2(devnull, lifeline)  # the kernel must not hold the host's lifeline
            os.close(devnull)
            _run_kernel(list(request["argv"]), str(request["cwd"]))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            import traceback

            traceback.print_exc()
            code = 1
        finally:
            os._exit(code)
    _answer(conn, {"pid": pid})


def main(argv: list[str]) -> int:
    """Entry point: ``python -m nbagent.execution.zygote -f CONFIG.json [kernel options...]``."""
    if "-f" not in argv or argv.index("-f") + 1 >= len(argv):
        print("usage: python -m nbagent.execution.zygote -f CONFIG.json", file=sys.stderr)
        return 2
    with open(argv[argv.index("-f") + 1], encoding="utf-8") as f:
        config = json.load(f)[CONFIG_KEY]
    path = str(config["socket"])
    import ipykernel.kernelapp  # noqa: F401  (the import every kernel would repeat)

    for name in config.get("preload", []):
        try:
            importlib.import_module(name)
        except Exception as exc:  # a missing optional module only costs the kernels time
            print(f"nbagent.execution.zygote: could not preload {name}: {exc}", file=sys.stderr)
    signal.signal(signal.SIGCHLD, _reap)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(16)
    lifeline = sys.stdin.fileno()
    try:
        while True:
            ready, _, _ = select.select([server, lifeline], [], [])
            if lifeline in ready and not os.read(lifeline, 4096):
                return 0
            if server in ready:
                try:
                    conn, _ = server.accept()
                except OSError:
                    continue
                with conn:
                    try:
                        _handle(conn, server, lifeline)
                    except Exception as exc:  # the zygote must outlive any one request
                        print(f"nbagent.execution.zygote: request failed: {exc!r}", file=sys.stderr)
    finally:
        server.close()
        try:
            os.unlink(path)
        except OSError:
            pass


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
