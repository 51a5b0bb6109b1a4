"""The sandbox a kernel runs in: settings on the host, applied by the kernel's own launcher.

Two halves, one module (standard library only, so the launcher starts fast):

- host side: :class:`Sandbox` holds the settings (level, memory, CPU time, processes, disk, file
  size, network, the environment allow-list). :meth:`Sandbox.to_env` turns them into
  ``NBAGENT_SANDBOX_*`` variables given to the kernel process; :func:`is_secret_name` says which
  variables count as secrets (redacted from notebooks at every level).
- kernel side: ``kernels/nbagent-sandbox`` runs :func:`main`, which reads those variables and
  then, by level:

  - ``jail`` (the default): :func:`enter_jail` sets the rlimits bwrap inherits, joins the run's
    cgroup, takes the connection file off the disk, and *execs* ``bwrap`` with the command
    :func:`nbagent.execution.jail.bwrap_command` builds (see that module for the threat model);
  - ``limits``: :func:`enter_sandbox` removes secrets from the environment, sets the resource
    limits, moves into a new network namespace (``unshare -n``; with a user namespace when the
    process is not privileged), drops five capabilities, and *execs* ``ipykernel_launcher``.

  Either way a report of what was done is written for the host. Exec, not spawn: the process
  jupyter_client started stays the one that dies with the kernel.

The kernel talks to the host over ZMQ's ``ipc`` transport (Unix sockets in a folder), which does
not need a network, so a kernel without one works normally. Interrupts are ``interrupt_request``
messages (``interrupt_mode: message`` in the spec): bwrap does not pass signals on.
"""

from __future__ import annotations

import errno
import fnmatch
import json
import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

GIB = 1 << 30
MIB = 1 << 20

DEFAULT_MEMORY = 4 * GIB
"""Default address-space limit of a sandboxed kernel, in bytes."""
DEFAULT_CPU_TIME = 1800
"""Default CPU-time limit of a sandboxed kernel process, in seconds (all its steps together)."""
DEFAULT_FILE_SIZE = 1 * GIB
"""Default limit on the size of any one file the kernel writes, in bytes."""
DEFAULT_MAX_PROCESSES = 512
"""Default limit on the processes (and threads) of a jailed run, all together."""
DEFAULT_DISK = 1 * GIB
"""Default limit on what a jailed run keeps in its working folder, in bytes (measured by the host)."""
MIN_SIZE = 1 * MIB
"""The smallest memory, file-size or disk limit accepted: below it nothing useful runs (``--memory-limit
0.1`` was a typo for something, not a limit)."""

LEVELS = ("jail", "limits")
"""Sandbox levels, strongest first: ``jail`` (bubblewrap: own filesystem view, pid and network
namespaces, no root, whole-run limits) and ``limits`` (rlimits and a network namespace only)."""

SECRET_PATTERNS: tuple[str, ...] = (
    "*_API_KEY",
    "*_APIKEY",
    "*_KEY",
    "*_KEYS",
    "*_TOKEN",
    "*_TOKENS",
    "*_SECRET",
    "*_SECRET_*",
    "*SECRET_KEY*",
    "*PASSWORD*",
    "*PASSWD*",
    "*_PASS",
    "*_PWD",
    "*CREDENTIAL*",
    "*_PRIVATE_KEY*",
    "*_ACCESS_KEY*",
    "*_AUTH",
    "*DATABASE_URL*",
    "*_DSN",
    "AWS_*",
    "AZURE_*",
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "GH_TOKEN",
    "GITHUB_TOKEN",
)
"""Names (shell patterns, matched case-insensitively) of environment variables treated as secrets:
kept out of sandboxed kernels, and their values redacted from every notebook nbagent writes."""

ENV_PREFIX = "NBAGENT_SANDBOX_"
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)
_UNLIMITED = {"", "0", "none", "unlimited", "off"}


def is_secret_name(name: str) -> bool:
    """True when an environment variable of this name is treated as a secret."""
    upper = name.upper()
    return any(fnmatch.fnmatchcase(upper, pattern) for pattern in SECRET_PATTERNS)


def scrub_environment(env: Mapping[str, str], allow: Iterable[str] = ()) -> tuple[dict[str, str], list[str]]:
    """``env`` without its secrets (names in ``allow`` are kept); returns (clean env, removed names)."""
    allowed = {a.upper() for a in allow}
    clean: dict[str, str] = {}
    removed: list[str] = []
    for name, value in env.items():
        if is_secret_name(name) and name.upper() not in allowed:
            removed.append(name)
        else:
            clean[name] = value
    return clean, sorted(removed)


def parse_size(text: str | int | None) -> int | None:
    """Bytes from ``"4G"``, ``"512M"``, ``"1.5GiB"``, ``"1024"``; ``None`` for no limit (``0``, ``none``).

    Units are binary (``K`` = 1024 bytes). Raises ``ValueError`` on anything else.
    """
    if text is None:
        return None
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"a size cannot be negative ({text})")
        return text or None
    if text.strip().lower() in _UNLIMITED:
        return None
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a size; write it like 4G, 512M or 1024 (bytes), or 0 for none")
    number, unit = float(match.group(1)), match.group(2).lower()
    value = int(number * (1 << (10 * " kmgt".index(unit or " "))))
    if number and not value:
        # "0.1" once meant "no limit" by rounding down; a slip must not lift a limit.
        raise ValueError(f"{text!r} is less than one byte; write a size like 512M or 2G, or 0 for none")
    return value or None


def format_size(value: int | None) -> str:
    """A readable size (``4 GiB``), or ``unlimited``."""
    if value is None:
        return "unlimited"
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if value >= 1 << shift and value % (1 << (shift - 10)) == 0:
            return f"{value / (1 << shift):g} {unit}"
    return f"{value} bytes"


@dataclass(frozen=True)
class Sandbox:
    """Settings of the sandbox a kernel runs in (used by sandboxed kernel specs such as ``nbagent-sandbox``).

    Args:
        level: ``"jail"`` (the default: bubblewrap gives the kernel a read-only view of Python,
            one writable folder, its own pid and network namespaces, no root, an allow-listed
            environment and whole-run limits; see :mod:`nbagent.execution.jail`) or ``"limits"``
            (the weaker level: rlimits, a network namespace, secrets removed).
        memory: memory limit in bytes (``None``: no limit). In the jail it bounds the kernel and
            all its children together (a cgroup, where the host allows one), and each process's
            address space; going over it raises ``MemoryError`` or kills the process, and
            nbagent restarts the kernel and restores its state.
        cpu_time: CPU seconds the run may use in all (``None``: no limit); past it the kernel is
            killed, and nbagent restarts it and restores its state.
        file_size: the largest file the kernel may write, in bytes (``None``: no limit); a bigger
            write raises ``OSError: File too large``.
        network: ``True`` lets the kernel use the network; by default it runs in a network
            namespace of its own, with only an isolated loopback interface.
        allow_env: names of environment variables to pass to the kernel on purpose (in the
            jail every variable not on the allow-list is dropped; at ``limits``, secrets are).
        max_processes: processes and threads the run may have at once (jail only; ``None``: no
            limit).
        disk: bytes the run may keep in its working folder (jail only; measured by the host
            during and after each step, so approximate; ``None``: no limit).
    """

    memory: int | None = DEFAULT_MEMORY
    cpu_time: int | None = DEFAULT_CPU_TIME
    file_size: int | None = DEFAULT_FILE_SIZE
    network: bool = False
    allow_env: tuple[str, ...] = field(default=())
    level: str = "jail"
    max_processes: int | None = DEFAULT_MAX_PROCESSES
    disk: int | None = DEFAULT_DISK

    def __post_init__(self) -> None:
        for name in ("memory", "cpu_time", "file_size", "max_processes", "disk"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
                raise ValueError(f"sandbox {name} must be a positive integer or None, not {value!r}")
        if self.level not in LEVELS:
            raise ValueError(f"sandbox level must be one of {', '.join(LEVELS)}, not {self.level!r}")
        object.__setattr__(self, "allow_env", tuple(self.allow_env))

    @property
    def jailed(self) -> bool:
        """True at the ``jail`` level."""
        return self.level == "jail"

    def describe(self) -> str:
        """One line saying what the limits are."""
        cpu = "unlimited" if self.cpu_time is None else f"{self.cpu_time} s"
        net = "network allowed" if self.network else "no network"
        text = (
            f"{self.level}: memory {format_size(self.memory)}, CPU time {cpu}, "
            f"file size {format_size(self.file_size)}, {net}"
        )
        if self.jailed:
            procs = "unlimited" if self.max_processes is None else str(self.max_processes)
            text += f", processes {procs}, disk {format_size(self.disk)}"
        return text

    def to_env(self) -> dict[str, str]:
        """The ``NBAGENT_SANDBOX_*`` variables that carry these settings to the launcher."""
        return {
            ENV_PREFIX + "LEVEL": self.level,
            ENV_PREFIX + "MEMORY": str(self.memory or 0),
            ENV_PREFIX + "CPU_TIME": str(self.cpu_time or 0),
            ENV_PREFIX + "FILE_SIZE": str(self.file_size or 0),
            ENV_PREFIX + "NETWORK": "1" if self.network else "0",
            ENV_PREFIX + "ALLOW_ENV": ",".join(self.allow_env),
            ENV_PREFIX + "MAX_PROCESSES": str(self.max_processes or 0),
            ENV_PREFIX + "DISK": str(self.disk or 0),
        }

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Sandbox:
        """The settings carried by ``NBAGENT_SANDBOX_*`` variables (defaults for missing ones)."""

        def number(key: str, default: int | None) -> int | None:
            raw = env.get(ENV_PREFIX + key)
            if raw is None:
                return default
            return int(raw) or None

        allow = tuple(a for a in env.get(ENV_PREFIX + "ALLOW_ENV", "").split(",") if a)
        return cls(
            memory=number("MEMORY", DEFAULT_MEMORY),
            cpu_time=number("CPU_TIME", DEFAULT_CPU_TIME),
            file_size=number("FILE_SIZE", DEFAULT_FILE_SIZE),
            network=env.get(ENV_PREFIX + "NETWORK", "0") == "1",
            allow_env=allow,
            level=env.get(ENV_PREFIX + "LEVEL", "jail"),
            max_processes=number("MAX_PROCESSES", DEFAULT_MAX_PROCESSES),
            disk=number("DISK", DEFAULT_DISK),
        )


# -- kernel side ----------------------------------------------------------------------------

_CLONE_NEWNET = 0x40000000
_CLONE_NEWUSER = 0x10000000
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1


def _unshare(flags: int) -> int:
    """``unshare(2)``: 0 on success, else the errno."""
    unshare = getattr(os, "unshare", None)
    if unshare is not None:  # Python 3.12+
        try:
            unshare(flags)
            return 0
        except OSError as exc:
            return exc.errno or errno.EPERM
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if not hasattr(libc, "unshare"):
        return errno.ENOSYS
    return 0 if libc.unshare(flags) == 0 else ctypes.get_errno()


def _loopback_up() -> None:
    # A fresh network namespace has its loopback down; bring it up so code that talks to
    # itself over 127.0.0.1 (local clusters, test servers) works inside the sandbox.
    import fcntl
    import socket
    import struct

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifreq = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s.fileno(), _SIOCGIFFLAGS, ifreq))[1]
        fcntl.ioctl(s.fileno(), _SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | _IFF_UP))


def isolate_network() -> tuple[bool, str]:
    """Move this process into a new network namespace; returns (isolated, how or why not).

    Tries ``unshare(CLONE_NEWNET)`` (needs CAP_SYS_ADMIN, e.g. root), then a user namespace
    together with the network namespace (how unprivileged users get one, where the system
    allows it). The user namespace maps the process's own uid and gid, so files keep their owners.
    """
    if not sys.platform.startswith("linux"):
        return False, f"network namespaces do not exist on {sys.platform}"
    first = _unshare(_CLONE_NEWNET)
    how = "network namespace"
    if first != 0:
        uid, gid = os.getuid(), os.getgid()
        second = _unshare(_CLONE_NEWUSER | _CLONE_NEWNET)
        if second != 0:
            return False, (
                f"unshare(CLONE_NEWNET) failed ({os.strerror(first)}), and so did "
                f"unshare(CLONE_NEWUSER|CLONE_NEWNET) ({os.strerror(second)})"
            )
        for path, text in (
            ("/proc/self/setgroups", "deny"),
            ("/proc/self/uid_map", f"{uid} {uid} 1"),
            ("/proc/self/gid_map", f"{gid} {gid} 1"),
        ):
            with open(path, "w") as f:
                f.write(text)
        how = "user and network namespaces"
    try:
        _loopback_up()
    except OSError as exc:
        how += f" (loopback left down: {exc.strerror})"
    return True, how


def _set_limit(which: int, value: int | None, grace: int = 0) -> None:
    import resource

    if value is None:
        return
    _, hard = resource.getrlimit(which)
    if hard == resource.RLIM_INFINITY:
        new_hard = value + grace
    else:  # a hard limit set by someone else cannot be raised; stay within it
        value = min(value, hard)
        new_hard = min(value + grace, hard)
    # The hard limit is lowered too, so code in the kernel cannot raise the soft one back.
    resource.setrlimit(which, (value, new_hard))


_PR_SET_NO_NEW_PRIVS = 38
_PR_CAPBSET_DROP = 24
_DROPPED_CAPABILITIES = {
    "CAP_NET_ADMIN": 12,  # reconfigure the network namespace
    "CAP_SYS_MODULE": 16,
    "CAP_SYS_PTRACE": 19,  # read the host process's memory
    "CAP_SYS_ADMIN": 21,  # setns() back into the host's network namespace, mount, ...
    "CAP_SYS_RESOURCE": 24,  # raise the hard limits again
}


def drop_privileges() -> list[str]:
    """Remove the capabilities that would undo the sandbox; returns the names dropped.

    Dropped from the bounding set, so a root kernel loses them at exec; ``no_new_privs`` keeps
    set-uid programs from giving them back. Needs CAP_SETPCAP (root); without it there is nothing
    to drop, since an unprivileged process cannot lift hard limits or leave its namespace anyway.
    """
    if not sys.platform.startswith("linux"):
        return []
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    dropped = []
    for name, number in _DROPPED_CAPABILITIES.items():
        if libc.prctl(_PR_CAPBSET_DROP, number, 0, 0, 0) == 0:
            dropped.append(name)
    return dropped


def enter_sandbox(sandbox: Sandbox, env: dict[str, str]) -> dict[str, Any]:
    """Apply ``sandbox`` to this process and return a report of what was done.

    ``env`` (the environment the kernel will get) loses its secrets and the ``NBAGENT_SANDBOX_*``
    variables, in place. Limits are inherited by the exec'd kernel and everything it starts.
    """
    import resource

    clean, removed = scrub_environment(
        {k: v for k, v in env.items() if not k.startswith(ENV_PREFIX)}, sandbox.allow_env
    )
    env.clear()
    env.update(clean)
    # CPU: SIGXCPU at the soft limit (the kernel dies and is restarted); SIGKILL 5 s later
    # should something catch SIGXCPU.
    _set_limit(resource.RLIMIT_CPU, sandbox.cpu_time, grace=5)
    _set_limit(resource.RLIMIT_AS, sandbox.memory)
    _set_limit(resource.RLIMIT_FSIZE, sandbox.file_size)
    _set_limit(resource.RLIMIT_CORE, 0)  # a crash must not litter the working folder with cores
    if sandbox.network:
        isolated, how = False, "network allowed"
    else:
        isolated, how = isolate_network()
    dropped = drop_privileges()
    return {
        "pid": os.getpid(),
        "limits": {
            "memory": sandbox.memory,
            "cpu_time": sandbox.cpu_time,
            "file_size": sandbox.file_size,
        },
        "network_allowed": sandbox.network,
        "network_isolated": isolated,
        "network": how,
        "removed_env": removed,
        "dropped_capabilities": dropped,
    }


def _write_report(path: str | None, report: dict[str, Any]) -> None:
    if path:
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(report, f)
        os.replace(tmp, path)


def _load_sibling(name: str) -> Any:
    # Loaded from its file, not imported: importing the nbagent package costs a quarter second.
    import importlib.util

    module_name = "_nbagent_" + name
    if module_name in sys.modules:
        return sys.modules[module_name]
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), name + ".py")
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


_PR_SET_PDEATHSIG = 1


def enter_jail(sandbox: Sandbox, env: dict[str, str], args: list[str]) -> tuple[list[str], dict[str, Any]]:
    """Prepare the jail for the kernel ``args`` and return (the bwrap command, a report).

    Runs in the launcher, before the exec: limits that bwrap inherits, the cgroup, the
    connection file handed over as a copy (and removed from disk), the seccomp program.
    """
    import resource
    import signal

    jail = _load_sibling("jail")
    settings = {k: v for k, v in env.items() if k.startswith(ENV_PREFIX)}
    # The jail, and all it runs, dies with the host: bwrap is not our child's child but our own
    # process after exec, and a parent-death signal survives an exec of a non-set-uid program.
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        parent = env.get("JPY_PARENT_PID")
        if parent and parent.isdigit() and os.getppid() != int(parent):
            raise SystemExit("nbagent sandbox: the host exited while the kernel was starting")
    # Join the run's cgroup before anything forks, so every process of the jail counts.
    joined: list[str] = []
    for procs in filter(None, settings.get(ENV_PREFIX + "CGROUP_PROCS", "").split(os.pathsep)):
        try:
            with open(procs, "w") as f:
                f.write(str(os.getpid()))
            joined.append(procs)
        except OSError as exc:
            raise SystemExit(f"nbagent sandbox: cannot join the run's cgroup {procs}: {exc}") from None
    _set_limit(resource.RLIMIT_CPU, sandbox.cpu_time, grace=5)
    _set_limit(resource.RLIMIT_AS, sandbox.memory)
    _set_limit(resource.RLIMIT_FSIZE, sandbox.file_size)
    _set_limit(resource.RLIMIT_CORE, 0)
    if not joined and sandbox.max_processes is not None:
        # Weaker fallback without a pids cgroup: RLIMIT_NPROC counts every process of the uid.
        _set_limit(resource.RLIMIT_NPROC, sandbox.max_processes)

    # The key leaves the disk: the kernel gets a copy through a memory file, the host keeps it
    # in memory, and a killed host leaves no readable key behind.
    argv = list(args)
    connection_fd = None
    if "-f" in argv and argv.index("-f") + 1 < len(argv):
        at = argv.index("-f") + 1
        with open(argv[at], "rb") as f:
            data = f.read()
        if settings.get(ENV_PREFIX + "KEEP_CONNECTION_FILE") != "1":
            os.unlink(argv[at])
        connection_fd = os.memfd_create("nbagent-connection")
        os.write(connection_fd, data)
        os.lseek(connection_fd, 0, os.SEEK_SET)
        os.set_inheritable(connection_fd, True)
        argv[at] = jail.INSIDE_CONNECTION_FILE
    seccomp_fd = None
    seccomp_path = settings.get(ENV_PREFIX + "SECCOMP")
    if seccomp_path:
        seccomp_fd = os.open(seccomp_path, os.O_RDONLY)
        os.set_inheritable(seccomp_fd, True)

    allow = list(sandbox.allow_env)
    inside_env = jail.passed_environment(env, allow)
    python_bin = os.path.dirname(sys.executable)
    inside_env.update(
        PATH=os.pathsep.join(dict.fromkeys([python_bin, "/usr/local/bin", "/usr/bin", "/bin"])),
        HOME="/tmp/home",
        TMPDIR="/tmp",
        MPLCONFIGDIR="/tmp/matplotlib",
        IPYTHONDIR="/tmp/home/.ipython",
        # The host's pid means nothing in the jail's pid namespace; 1 tells ipykernel not to poll
        # for its parent (the jail dies with the host instead) and not to print a console banner.
        JPY_PARENT_PID="1",
    )
    workdir = os.getcwd()
    cwd = settings.get(ENV_PREFIX + "CWD") or workdir
    shared = [p for p in settings.get(ENV_PREFIX + "SHARED", "").split(os.pathsep) if p]
    cmd = jail.bwrap_command(
        [sys.executable, "-m", "ipykernel_launcher", *argv],
        workdir=workdir,
        cwd=cwd,
        env=inside_env,
        network=sandbox.network,
        shared_folders=shared,
        connection_fd=connection_fd,
        seccomp_fd=seccomp_fd,
        font_caches=jail.font_cache_files(env),
    )
    report = {
        "level": "jail",
        "pid": os.getpid(),
        "limits": {
            "memory": sandbox.memory,
            "cpu_time": sandbox.cpu_time,
            "file_size": sandbox.file_size,
            "max_processes": sandbox.max_processes,
        },
        "network_allowed": sandbox.network,
        "network_isolated": not sandbox.network,
        "network": "network allowed" if sandbox.network else "network namespace (bwrap)",
        "uid": jail.jail_uid(),
        "cgroup": joined,
        "seccomp": seccomp_fd is not None,
        "passed_env": sorted(inside_env),
        "removed_env": sorted(k for k in env if k not in inside_env and not k.startswith(ENV_PREFIX)),
        "dropped_capabilities": ["all"],
    }
    return cmd, report


def main(argv: Sequence[str] | None = None) -> None:
    """Launcher entry point: sandbox this process, then exec the kernel (in a jail at level ``jail``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    env = dict(os.environ)
    report_path = env.get(ENV_PREFIX + "REPORT")
    try:
        sandbox = Sandbox.from_env(env)
    except ValueError as exc:
        print(f"nbagent sandbox: bad setting: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if sandbox.jailed:
        cmd, report = enter_jail(sandbox, env, args)
        _write_report(report_path, report)
        os.execv(cmd[0], cmd)
    report = enter_sandbox(sandbox, env)
    _write_report(report_path, report)
    os.execve(sys.executable, [sys.executable, "-m", "ipykernel_launcher", *args], env)


if __name__ == "__main__":
    main()
