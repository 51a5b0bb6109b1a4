"""The host side of a jailed kernel: its private folders, its cgroup, and the whole-run limit checks.

:class:`~nbagent.execution.kernel.Kernel` makes one :class:`JailedRun` per jailed kernel. It owns

- the kernel's runtime folder ``$TMPDIR/nbagent-kernel-<host pid>-*`` (mode 0700): the connection
  file (read and deleted by the launcher, so a killed host leaves no key on disk), the seccomp
  program, the launcher's report, and two folders bound into this jail only: ``ipc/`` (the
  kernel's ZMQ sockets, writable by the jail's uid) and ``bridge/`` (this run's host-bridge
  socket). Folders of host processes that died (SIGKILL) are swept by the next kernel start.
- the run's cgroup (:mod:`.cgroups`, where the host allows one): memory and processes of the
  kernel and all its children together, CPU time of the whole tree (polled by the host), and
  ``kill_all`` so nothing outlives the run.
- the disk check: the host adds up the run folder's blocks while a step runs and after it.
  Approximate by design: files written between two checks, or in ``/tmp`` (a capped tmpfs), are
  not counted until the next check.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from .jail import JAIL_UID
from .sandbox import ENV_PREFIX, Sandbox, format_size

log = logging.getLogger("nbagent")

RUNTIME_PREFIX = "nbagent-kernel-"
_OWNER = re.compile(rf"^{RUNTIME_PREFIX}(\d+)-")
_warned: set[str] = set()
_seccomp_cache: list[bytes | None] = []


def pid_alive(pid: int) -> bool:
    """True while process ``pid`` exists (whoever owns it): folders named after it are in use."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale_runtime_folders(parent: str | None = None) -> list[str]:
    """Remove kernel runtime folders whose host process is gone (it was killed); returns them."""
    parent = parent or tempfile.gettempdir()
    removed = []
    with contextlib.suppress(OSError):
        for name in os.listdir(parent):
            match = _OWNER.match(name)
            if match and not pid_alive(int(match.group(1))):
                shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
                removed.append(name)
    return removed


def folder_size(path: str | os.PathLike[str]) -> int:
    """Bytes a folder tree takes on disk (allocated blocks; hard links counted once)."""
    total = 0
    seen: set[tuple[int, int]] = set()
    stack = [os.fspath(path)]
    while stack:
        with contextlib.suppress(OSError), os.scandir(stack.pop()) as entries:
            for entry in entries:
                with contextlib.suppress(OSError):
                    st = entry.stat(follow_symlinks=False)
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
                    key = (st.st_dev, st.st_ino)
                    if key in seen:
                        continue
                    seen.add(key)
                    total += getattr(st, "st_blocks", 0) * 512 or st.st_size
    return total


def _warn_once(key: str, text: str) -> None:
    if key not in _warned:
        _warned.add(key)
        log.warning(text)


def _seccomp_program() -> bytes | None:
    if not _seccomp_cache:
        program: bytes | None = None
        try:
            seccomp: Any = importlib.import_module(".seccomp", __package__)

            reason = seccomp.seccomp_available()
            if reason is None:
                program = seccomp.seccomp_program()
                reason = _breaks_zmq(program)
                if reason is not None:
                    program = None
            if reason is not None:
                _warn_once("seccomp", f"nbagent: jailed kernels run without a seccomp filter: {reason}")
        except ImportError:
            _warn_once("seccomp", "nbagent: jailed kernels run without a seccomp filter (module missing)")
        _seccomp_cache.append(program)
    return _seccomp_cache[0]


def _breaks_zmq(program: bytes) -> str | None:
    """Why ``program`` would kill every kernel, or ``None``.

    libzmq resolves a TCP bind address through ``getifaddrs`` (a NETLINK_ROUTE socket) and aborts
    the process when that fails; ipykernel binds its IOPub pipe on tcp://127.0.0.1. A filter that
    refuses that socket would leave no kernel standing, so it is tried in a child process first.
    """
    import ctypes
    import socket

    class _Program(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = _Program(len(program) // 8, ctypes.cast(buffer, ctypes.c_void_p))
    libc = ctypes.CDLL(None, use_errno=True)
    pid = os.fork()
    if pid == 0:  # the child only makes system calls, then leaves without cleanup
        code = 2
        try:
            if libc.prctl(38, 1, 0, 0, 0) == 0 and libc.prctl(22, 2, ctypes.byref(fprog), 0, 0) == 0:
                try:
                    socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0).close()
                    code = 0
                except OSError:
                    code = 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) == 1:
        return (
            "the filter refuses the NETLINK_ROUTE socket libzmq needs to bind ipykernel's IOPub "
            "pipe (the kernel would abort); it must allow socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE)"
        )
    return None


class JailedRun:
    """Folders, cgroup and limit checks of one jailed kernel (across its restarts)."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        sweep_stale_runtime_folders()
        self.folder = tempfile.mkdtemp(prefix=f"{RUNTIME_PREFIX}{os.getpid()}-")
        self.ipc = os.path.join(self.folder, "ipc")
        self.bridge = os.path.join(self.folder, "bridge")
        os.mkdir(self.ipc, 0o700)
        os.mkdir(self.bridge, 0o700)
        if os.geteuid() == 0:
            # Folders nbagent made for this kernel only: the kernel binds its sockets in ipc/ and
            # connects to the bridge's in bridge/; no other user may enter either.
            os.chown(self.ipc, JAIL_UID, JAIL_UID)
            os.chown(self.bridge, JAIL_UID, JAIL_UID)
        self.cgroup: Any = None
        self.cgroup_problem: str | None = None
        self._cpu_base = 0.0
        self._oom_base = 0
        self._last_disk_check = 0.0
        self._make_cgroup()

    def _make_cgroup(self) -> None:
        if (
            self.sandbox.memory is None
            and self.sandbox.max_processes is None
            and self.sandbox.cpu_time is None
        ):
            return
        try:
            cgroups: Any = importlib.import_module(".cgroups", __package__)
        except ImportError:
            self.cgroup_problem = "the cgroups module is missing"
        else:
            reason = cgroups.cgroups_available()
            if reason is None:
                try:
                    self.cgroup = cgroups.RunCgroup.create(
                        os.path.basename(self.folder),
                        memory=self.sandbox.memory,
                        pids=self.sandbox.max_processes,
                    )
                except cgroups.CgroupUnavailable as exc:
                    reason = str(exc)
            self.cgroup_problem = reason
        if self.cgroup is None:
            _warn_once(
                "cgroup",
                f"nbagent: no cgroup for jailed kernels ({self.cgroup_problem}); memory and CPU are "
                "limited per process and processes per user (RLIMIT_NPROC), not per run",
            )

    def procs_files(self) -> list[str]:
        """The ``cgroup.procs`` files the launcher writes its pid to (one per v1 hierarchy)."""
        cg = self.cgroup
        if cg is None:
            return []
        files = getattr(cg, "procs_files", None)
        if callable(files):
            return [str(f) for f in files()]
        if files:
            return [str(f) for f in files]
        paths = getattr(cg, "paths", None) or [cg.path]
        return [str(Path(p) / "cgroup.procs") for p in paths]

    def env(self, inside_cwd: str | None) -> dict[str, str]:
        """The launcher's settings for this run (added to the sandbox's own)."""
        env = {
            ENV_PREFIX + "SHARED": os.pathsep.join([self.ipc, self.bridge]),
            ENV_PREFIX + "CGROUP_PROCS": os.pathsep.join(self.procs_files()),
        }
        if inside_cwd:
            env[ENV_PREFIX + "CWD"] = inside_cwd
        program = _seccomp_program()
        if program is not None:
            path = os.path.join(self.folder, "seccomp.bpf")
            if not os.path.exists(path):
                with open(path, "wb") as f:
                    f.write(program)
            env[ENV_PREFIX + "SECCOMP"] = path
        return env

    def started(self) -> None:
        """A (re)started kernel gets the whole CPU budget again, as an rlimit would."""
        if self.cgroup is not None:
            with contextlib.suppress(Exception):
                self._cpu_base = float(self.cgroup.cpu_seconds())
            with contextlib.suppress(Exception):
                self._oom_base = int(self.cgroup.oom_kills())

    def over_cpu(self) -> str | None:
        """Why the run must be stopped for CPU time, or ``None``."""
        if self.cgroup is None or self.sandbox.cpu_time is None:
            return None
        with contextlib.suppress(Exception):
            used = float(self.cgroup.cpu_seconds()) - self._cpu_base
            if used > self.sandbox.cpu_time:
                return (
                    f"its CPU-time limit of {self.sandbox.cpu_time} s (the kernel and its children together)"
                )
        return None

    def oom_killed(self) -> str | None:
        """Why the kernel died, when the cgroup's memory limit killed it."""
        if self.cgroup is None:
            return None
        with contextlib.suppress(Exception):
            if int(self.cgroup.oom_kills()) > self._oom_base:
                return (
                    f"its memory limit of {format_size(self.sandbox.memory)} "
                    "(the kernel and its children together)"
                )
        return None

    def over_disk(self, workdir: str | os.PathLike[str], *, every: float = 0.0) -> str | None:
        """One sentence when the run folder holds more than the disk limit (checked every ``every`` s)."""
        limit = self.sandbox.disk
        now = time.monotonic()
        if limit is None or now - self._last_disk_check < every:
            return None
        self._last_disk_check = now
        used = folder_size(workdir)
        if used <= limit:
            return None
        return (
            f"the working folder holds {format_size(used)}, over this run's disk limit of "
            f"{format_size(limit)}; delete files you no longer need before writing more"
        )

    def kill_all(self) -> None:
        """Kill every process of the run still alive (through the cgroup, where there is one)."""
        if self.cgroup is not None:
            with contextlib.suppress(Exception):
                self.cgroup.kill_all()

    def close(self) -> None:
        """Kill what is left, remove the cgroup and the runtime folder."""
        self.kill_all()
        if self.cgroup is not None:
            with contextlib.suppress(Exception):
                self.cgroup.remove()
            self.cgroup = None
        shutil.rmtree(self.folder, ignore_errors=True)
