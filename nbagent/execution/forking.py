"""Forked kernels: start kernels by forking a process that has already done the imports.

Starting an ipykernel costs about a second of CPU, most of it importing ipykernel, pandas and
matplotlib. A :class:`ForkServer` runs one :mod:`nbagent.execution.zygote` process per pool that does
those imports once; each new kernel is a ``fork()`` of it, ready in milliseconds and sharing the
imported modules' memory pages. The kernel is otherwise an ordinary ipykernel process driven by
jupyter_client: :class:`ForkProvisioner` is a jupyter_client kernel provisioner (registered as
``nbagent-fork``) whose "launch" asks the zygote for a fork instead of running a command, and
which signals, polls and kills the forked process by its pid (through a pidfd where Linux has
one, so a recycled pid is never hit).

The zygote is started with the kernel spec's own command line (``-m ipykernel_launcher``
replaced by ``-m nbagent.execution.zygote``), so a launcher that applies limits or namespaces before it
execs Python applies them to the zygote and thereby to every kernel forked from it. A spec that
does not run ``-m ipykernel_launcher`` cannot be forked; :func:`zygote_command` returns ``None``
and the pool starts kernels the ordinary way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from jupyter_client.connect import KernelConnectionInfo
from jupyter_client.kernelspec import KernelSpec
from jupyter_client.provisioning import LocalProvisioner
from traitlets import Unicode

from ..exceptions import KernelStartError
from .kernel import kernel_spec_manager
from .zygote import CONFIG_KEY

PROVISIONER_NAME = "nbagent-fork"
"""Entry-point name of :class:`ForkProvisioner` (group ``jupyter_client.kernel_provisioners``)."""


def fork_supported() -> bool:
    """True where kernels can be forked: POSIX ``fork`` and the provisioner registered."""
    if not hasattr(os, "fork") or sys.platform == "win32":
        return False
    from jupyter_client.provisioning import KernelProvisionerFactory

    return PROVISIONER_NAME in KernelProvisionerFactory.instance().provisioners


def zygote_command(spec: KernelSpec, config_path: str) -> list[str] | None:
    """The spec's command line turned into the zygote's, or ``None`` if it cannot be.

    ``config_path`` takes the place of the connection file (see :mod:`nbagent.execution.zygote`).
    """
    argv = list(spec.argv)
    try:
        at = next(i for i in range(len(argv) - 1) if argv[i] == "-m" and argv[i + 1] == "ipykernel_launcher")
    except StopIteration:
        return None
    argv[at + 1] = "nbagent.execution.zygote"
    if argv and argv[0] in (
        "python",
        f"python{sys.version_info[0]}",
        "python{}.{}".format(*sys.version_info),
    ):
        argv[0] = sys.executable  # as jupyter_client does for the kernel itself
    subst = {"connection_file": config_path, "resource_dir": spec.resource_dir, "prefix": sys.prefix}
    return [_substitute(a, subst) for a in argv]


def _substitute(text: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        text = text.replace("{" + key + "}", value)
    return text


class ForkServer:
    """One zygote process for a pool: started by :meth:`astart`, stopped by :meth:`aclose`.

    Args:
        kernel: kernel spec whose command line starts the zygote.
        cwd: the zygote's working directory (kernels get their own).
        preload: modules imported in the zygote, hence already imported in every kernel.
        startup_timeout: seconds the zygote may take to answer.
    """

    def __init__(
        self,
        kernel: str,
        cwd: str | os.PathLike[str],
        preload: Sequence[str] = (),
        startup_timeout: float = 60,
    ) -> None:
        self.kernel_name = kernel
        self.cwd = Path(cwd)
        self.preload = list(preload)
        self.startup_timeout = startup_timeout
        self._dir = tempfile.mkdtemp(prefix="nbagent-zygote-")
        self.socket_path = os.path.join(self._dir, "zygote.sock")
        self.config_path = os.path.join(self._dir, "zygote.json")
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def provisioner(self) -> dict[str, Any]:
        """The ``kernel_provisioner`` stanza that makes a kernel a fork of this zygote."""
        return {"provisioner_name": PROVISIONER_NAME, "config": {"zygote": self.socket_path}}

    async def astart(self) -> None:
        """Start the zygote and wait until it answers; :class:`KernelStartError` if it cannot."""
        spec = kernel_spec_manager().get_kernel_spec(self.kernel_name)
        cmd = zygote_command(spec, self.config_path)
        if cmd is None:
            raise KernelStartError(
                f"kernel {self.kernel_name!r} does not run ipykernel_launcher; cannot fork it"
            )
        env = {
            **os.environ,
            **{k: _substitute(v, {"resource_dir": spec.resource_dir}) for k, v in spec.env.items()},
        }
        # Shaped like an ipc connection file, for launchers that read the file given with -f.
        config = {
            "transport": "ipc",
            "ip": os.path.join(self._dir, "unused"),
            **{f"{c}_port": 0 for c in ("shell", "iopub", "stdin", "control", "hb")},
            "key": "",
            "signature_scheme": "hmac-sha256",
            "kernel_name": self.kernel_name,
            CONFIG_KEY: {"socket": self.socket_path, "preload": self.preload},
        }
        with open(self.config_path, "w", encoding="utf-8") as f:
            json.dump(config, f)
        self._proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, cwd=str(self.cwd), env=env, start_new_session=True
        )
        try:
            await self._wait_ready()
        except BaseException:
            await self.aclose()  # also when cancelled: no zygote may outlive its pool
            raise

    async def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self._proc.poll() is not None:
                raise KernelStartError(f"the kernel fork server exited with code {self._proc.returncode}")
            with contextlib.suppress(OSError, ValueError):
                if (await request(self.socket_path, {"ping": True})).get("pong"):
                    return
            if time.monotonic() > deadline:
                raise KernelStartError(
                    f"the kernel fork server did not start within {self.startup_timeout:g} s"
                )
            await asyncio.sleep(0.02)

    async def aclose(self) -> None:
        """Stop the zygote (kernels forked from it are stopped by their owners)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.stdin is not None:
                with contextlib.suppress(OSError):
                    proc.stdin.close()  # end of its lifeline: it exits
            for _ in range(100):
                if proc.poll() is not None:
                    break
                await asyncio.sleep(0.02)
            else:
                proc.kill()
                proc.wait()
        shutil.rmtree(self._dir, ignore_errors=True)


async def request(socket_path: str, message: dict[str, Any]) -> dict[str, Any]:
    """Send one JSON request to a zygote and read its one-line JSON answer."""
    reader, writer = await asyncio.open_unix_connection(socket_path)
    try:
        writer.write(json.dumps(message).encode() + b"\n")
        await writer.drain()
        line = await reader.readline()
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    if not line:
        raise OSError("the kernel fork server closed the connection")
    answer: dict[str, Any] = json.loads(line)
    return answer


class ForkedProcess:
    """A forked kernel seen from the host: the part of ``subprocess.Popen`` jupyter_client uses.

    The kernel is the zygote's child, not ours, so it is watched through a pidfd (Linux ≥ 5.3):
    readable once the process has exited, and safe against pid reuse.
    """

    stdin = stdout = stderr = None

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._fd: int | None = None
        with contextlib.suppress(AttributeError, OSError):
            self._fd = os.pidfd_open(pid)

    def poll(self) -> int | None:
        """``None`` while the kernel runs; an exit code (unknown: ``-1``) once it has ended."""
        if self.returncode is not None:
            return self.returncode
        if self._fd is not None:
            ready, _, _ = select.select([self._fd], [], [], 0)
            if ready:
                self._ended()
        else:
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                self._ended()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """Block until the kernel has ended (``subprocess.TimeoutExpired`` after ``timeout``)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"kernel {self.pid}", timeout or 0)
            time.sleep(0.01)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, signum: int) -> None:
        """Signal the kernel; nothing happens once it has ended (as with ``Popen``)."""
        if self.poll() is not None:
            return
        if self._fd is not None:
            signal.pidfd_send_signal(self._fd, signum)
        else:
            os.kill(self.pid, signum)

    def kill(self) -> None:
        """SIGKILL."""
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        """SIGTERM."""
        self.send_signal(signal.SIGTERM)

    def _ended(self) -> None:
        self.returncode = -1
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class ForkProvisioner(LocalProvisioner):
    """A jupyter_client provisioner whose kernels are forks of a :mod:`nbagent.execution.zygote`."""

    zygote = Unicode("", config=True, help="Unix socket of the zygote that forks the kernels.")

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> KernelConnectionInfo:
        cwd = str(kwargs.get("cwd") or os.getcwd())
        try:
            answer = await request(self.zygote, {"argv": cmd, "cwd": cwd})
        except (OSError, ValueError) as exc:
            raise KernelStartError(f"the kernel fork server is not reachable: {exc}") from exc
        if "pid" not in answer:
            raise KernelStartError(f"the kernel fork server refused: {answer.get('error', answer)}")
        pid = int(answer["pid"])
        self.process = cast(Any, ForkedProcess(pid))  # duck-types the Popen that jupyter_client expects
        self.pid = self.pgid = pid  # the fork calls setsid(): its group is its pid
        self.cwd = cwd
        return self.connection_info
