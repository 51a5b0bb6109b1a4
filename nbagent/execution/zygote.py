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
- ``{"ping": true}`` → ``{"pong": true}``.

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


def _handle(conn: socket.socket, server: socket.socket, lifeline: int) -> None:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(65536)
        if not chunk:
            return
        data += chunk
    request = json.loads(data)
    if request.get("ping"):
        conn.sendall(b'{"pong": true}\n')
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
    conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")


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
                conn, _ = server.accept()
                with conn:
                    _handle(conn, server, lifeline)
    finally:
        server.close()
        try:
            os.unlink(path)
        except OSError:
            pass


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
