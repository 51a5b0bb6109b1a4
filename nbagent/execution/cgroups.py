"""Whole-run limits: one Linux cgroup per run holds the jailed kernel and every process it starts.

Attacks this stops (rlimits alone cannot: they count per process, or per uid across the machine):

- holding more memory than ``--memory-limit`` by splitting it across children: the group's limit
  covers the whole tree, memory *and swap* where the controller allows;
- a fork bomb: ``pids.max`` bounds the number of processes of the tree;
- processes left running after the run, including stopped ones and ones forking as fast as they
  can: :meth:`RunCgroup.kill_all` freezes the group first (where the host has a freezer), so
  nothing escapes by forking between listing and killing;
- CPU time spread over many processes: :meth:`RunCgroup.cpu_seconds` counts the whole tree, so the
  host can hold the run to its CPU limit.

Two kinds of host (standard library only: the kernel launcher imports this and must start fast):

- cgroup v1 (this project's machines, as root): one folder per controller (``memory``, ``pids``,
  ``cpuacct``, ``freezer``), each ``<the process's own group>/nbagent/<owner pid>-<name>``.
- cgroup v2 with delegation (the usual laptop): the current process's group, or its parent, must be
  writable by the user; groups go in ``nbagent/`` there, with the ``memory`` and ``pids``
  controllers enabled.

Groups nest under the creating process's own group, so limits the host already has (a container's,
a systemd slice's) keep applying. A group's folder name starts with the pid of the nbagent process
that made it; a later :meth:`RunCgroup.create` kills and removes the groups of owners that are gone
(an nbagent that was SIGKILLed cannot clean up after itself).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import re
import signal
import time
from collections.abc import Iterator
from typing import NamedTuple

PARENT = "nbagent"
"""The folder, inside the current process's own cgroup, that holds nbagent's run groups."""

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_V1_CONTROLLERS = ("memory", "pids", "cpuacct", "freezer")


class CgroupUnavailable(OSError):
    """Raised when a run's cgroup cannot be made here; the message says why and what would help."""


class _Mount(NamedTuple):
    path: str  # where the hierarchy is mounted
    root: str  # the hierarchy's folder seen at that mount point (not "/" in some containers)
    version: int
    controllers: frozenset[str]  # v1: the controllers bound to this hierarchy


def _mounts() -> list[_Mount]:
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            # "<id> <parent> <dev> <root> <mount point> <opts> [optional...] - <fstype> <source> <super opts>"
            left, _, right = line.partition(" - ")
            fields, tail = left.split(), right.split()
            if len(fields) < 5 or len(tail) < 3 or tail[0] not in ("cgroup", "cgroup2"):
                continue
            mount_point = fields[4].replace("\\040", " ")
            if tail[0] == "cgroup2":
                found.append(_Mount(mount_point, fields[3], 2, frozenset()))
            else:
                options = frozenset(tail[2].split(","))
                found.append(_Mount(mount_point, fields[3], 1, options & set(_V1_CONTROLLERS)))
    return found


def _own_groups() -> dict[str, str]:
    """The current process's group per v1 controller, and under ``""`` its v2 group."""
    groups: dict[str, str] = {}
    with open("/proc/self/cgroup", encoding="utf-8") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for controller in controllers.split(",") if controllers else [""]:
                groups[controller] = path
    return groups


def _folder(mount: _Mount, group: str) -> str:
    # /proc/self/cgroup names the group from the hierarchy's root; the mount may show a subtree.
    if mount.root != "/" and (group == mount.root or group.startswith(mount.root + "/")):
        group = group[len(mount.root) :] or "/"
    return os.path.normpath(os.path.join(mount.path, group.lstrip("/")))


def _read(path: str) -> str:
    with open(path, encoding="ascii") as f:
        return f.read()


def _write(path: str, text: str) -> None:
    # One write(2) per value: cgroup files take a value per write, and buffering could split it.
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode("ascii"))
    finally:
        os.close(fd)


def _keyed(path: str, key: str) -> int | None:
    """The number after ``key`` in a ``key value`` per line file (memory.events, cpu.stat, ...)."""
    try:
        text = _read(path)
    except FileNotFoundError:
        return None
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            return int(value)
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _v1_plan(need: set[str]) -> dict[str, str]:
    """The parent folder (``.../nbagent``) per v1 controller to use; raises CgroupUnavailable."""
    mounts = {c: m for m in _mounts() if m.version == 1 for c in m.controllers}
    own = _own_groups()
    required = need | {"cpuacct"}
    missing = sorted(required - mounts.keys())
    if missing:
        raise CgroupUnavailable(
            errno.ENOENT,
            f"cgroup v1: the {', '.join(missing)} controller is not mounted under /sys/fs/cgroup "
            "(mount it, or use a system with cgroup v2)",
        )
    plan: dict[str, str] = {}
    seen: set[str] = set()
    for controller in _V1_CONTROLLERS:
        mount = mounts.get(controller)
        if mount is None or mount.path in seen:  # an optional controller, or co-mounted with another
            continue
        seen.add(mount.path)
        base = _folder(mount, own.get(controller, "/"))
        if not os.access(base, os.W_OK):
            if controller not in required:
                continue
            raise CgroupUnavailable(
                errno.EACCES,
                f"cgroup v1: {base} is not writable by uid {os.getuid()} "
                "(run nbagent as root, or on a system with cgroup v2 delegation)",
            )
        plan[controller] = os.path.join(base, PARENT)
    return plan


def _v2_parent(need: set[str]) -> str:
    """The v2 folder (``.../nbagent``) to make run groups in, set up for ``need``; or CgroupUnavailable."""
    mount = next((m for m in _mounts() if m.version == 2), None)
    if mount is None:
        raise CgroupUnavailable(errno.ENOENT, "cgroup v2 is not mounted")
    own = _folder(mount, _own_groups().get("", "/"))
    reasons = []
    # The process's own group first. A v2 group holding processes cannot give controllers to
    # children (the "no internal processes" rule), so with systemd delegation, where the process
    # sits in a scope, the scope's parent (owned by the user too) is where the groups can go.
    candidates = [own] if own == mount.path else [own, os.path.dirname(own)]
    for base in candidates:
        try:
            available = set(_read(os.path.join(base, "cgroup.controllers")).split())
        except OSError as exc:
            reasons.append(f"{base}: {exc.strerror}")
            continue
        if not need <= available:
            reasons.append(f"{base} offers no {', '.join(sorted(need - available))} controller")
            continue
        parent = os.path.join(base, PARENT)
        try:
            enabled = set(_read(os.path.join(base, "cgroup.subtree_control")).split())
            if not need <= enabled:
                _write(os.path.join(base, "cgroup.subtree_control"), " ".join("+" + c for c in need))
            os.makedirs(parent, exist_ok=True)
            inner = set(_read(os.path.join(parent, "cgroup.subtree_control")).split())
            if not need <= inner:
                _write(os.path.join(parent, "cgroup.subtree_control"), " ".join("+" + c for c in need))
        except OSError as exc:
            reasons.append(f"{base}: {exc.strerror}")
            continue
        return parent
    raise CgroupUnavailable(
        errno.EACCES,
        "cgroup v2: no writable group offering the "
        + (" and ".join(sorted(need)) or "core")
        + " controllers ("
        + "; ".join(reasons)
        + "); on systemd, run nbagent under `systemd-run --user --scope -p Delegate=yes`",
    )


def _choose(need: set[str], hierarchy: str | None) -> tuple[int, dict[str, str]]:
    """(version, {controller: parent folder}); v2 uses the key ``""``."""
    if hierarchy not in (None, "v1", "v2"):
        raise ValueError(f"hierarchy must be 'v1', 'v2' or None, not {hierarchy!r}")
    if not os.path.exists("/proc/self/cgroup"):
        raise CgroupUnavailable(errno.ENOSYS, "cgroups exist only on Linux")
    v2_reason = ""
    if hierarchy != "v1":
        try:
            return 2, {"": _v2_parent(need)}
        except CgroupUnavailable as exc:
            if hierarchy == "v2":
                raise
            v2_reason = str(exc.strerror)
    try:
        return 1, _v1_plan(need)
    except CgroupUnavailable as exc:
        if hierarchy == "v1" or not v2_reason:
            raise
        raise CgroupUnavailable(exc.errno, f"{v2_reason}; {exc.strerror}") from None


class RunCgroup:
    """The cgroup of one run: its limits hold for the kernel and every process it starts, together.

    Make one with :meth:`create`, put the jail's first process in with :meth:`add` before it
    starts others (children join their parent's group), read the whole tree's use with
    :meth:`cpu_seconds`, :meth:`memory_peak`, :meth:`oom_kills` and :meth:`pids_current`, and at
    the end of the run call :meth:`kill_all`, then :meth:`remove`. Used as a context manager it
    does both on exit.
    """

    def __init__(self, version: int, folders: dict[str, str]) -> None:
        self.version = version
        """1 or 2: which kind of cgroup hierarchy holds the group."""
        self._folders = folders  # controller ("" for v2) -> this group's folder

    # -- making and finding groups ------------------------------------------------------------

    @classmethod
    def create(
        cls, name: str, *, memory: int | None, pids: int | None, hierarchy: str | None = None
    ) -> RunCgroup:
        """Make the group ``name`` (letters, digits, ``_.-``) with these limits; empty until :meth:`add`.

        ``memory`` is bytes of memory (and swap, where the controller counts it) for the whole
        tree, ``pids`` the most processes and threads it may have at once; ``None`` leaves
        either unlimited. ``hierarchy`` forces ``"v1"`` or ``"v2"`` (default: v2 where it has the
        controllers needed, else v1). Groups left by nbagent processes that are gone are killed
        and removed first. Raises :class:`CgroupUnavailable` where the host does not allow it.
        """
        if not _NAME.match(name):
            raise ValueError(
                f"cgroup name {name!r}: use 1-100 letters, digits, '_', '.' or '-', "
                "starting with a letter or digit"
            )
        for what, value in (("memory", memory), ("pids", pids)):
            if value is not None and (not isinstance(value, int) or value <= 0):
                raise ValueError(f"cgroup {what} limit must be a positive integer or None, not {value!r}")
        need = {c for c, v in (("memory", memory), ("pids", pids)) if v is not None}
        version, parents = _choose(need, hierarchy)
        _clean_stale(version, parents)
        leaf = f"{os.getpid()}-{name}"
        folders = {c: os.path.join(parent, leaf) for c, parent in parents.items()}
        group = cls(version, folders)
        if any(os.path.isdir(f) for f in folders.values()):
            # Our own leftover of the same name (a restart that did not clean up): start afresh.
            group.kill_all()
            group.remove()
        try:
            for folder in folders.values():
                try:
                    os.makedirs(folder)
                except FileNotFoundError:  # another run removed the empty parent just then
                    if version == 2:
                        _v2_parent(need)  # remade with its controllers enabled for children
                    os.makedirs(folder)
            group._set_limits(memory, pids)
        except OSError as exc:
            with contextlib.suppress(OSError):
                group.remove()
            raise CgroupUnavailable(
                exc.errno or errno.EIO, f"cannot set up cgroup {group.path}: {exc.strerror or exc}"
            ) from exc
        return group

    def _set_limits(self, memory: int | None, pids: int | None) -> None:
        if self.version == 2:
            g = self._folders[""]
            if memory is not None:
                _write(os.path.join(g, "memory.max"), str(memory))
                if os.path.exists(os.path.join(g, "memory.swap.max")):
                    # memory.max counts RAM only; no swap makes it memory+swap.
                    _write(os.path.join(g, "memory.swap.max"), "0")
            if pids is not None:
                _write(os.path.join(g, "pids.max"), str(pids))
            return
        if memory is not None:
            m = self._folders["memory"]
            _write(os.path.join(m, "memory.limit_in_bytes"), str(memory))
            memsw = os.path.join(m, "memory.memsw.limit_in_bytes")
            if os.path.exists(memsw):  # absent when the kernel does not account swap
                _write(memsw, str(memory))
        if pids is not None:
            _write(os.path.join(self._folders["pids"], "pids.max"), str(pids))

    @property
    def path(self) -> str:
        """The group's folder (on v1, the one in the memory hierarchy, else the first)."""
        return self._folders.get("", self._folders.get("memory", next(iter(self._folders.values()))))

    @property
    def paths(self) -> tuple[str, ...]:
        """Every folder of the group: one on v2, one per controller on v1."""
        return tuple(self._folders.values())

    def __repr__(self) -> str:
        return f"<RunCgroup v{self.version} {self.path}>"

    def __enter__(self) -> RunCgroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill_all()
        self.remove()

    # -- processes ------------------------------------------------------------------------------

    def add(self, pid: int) -> None:
        """Move process ``pid`` (a host pid) into the group; processes it starts later join too."""
        for folder in self._folders.values():
            _write(os.path.join(folder, "cgroup.procs"), str(pid))

    def procs_files(self) -> tuple[str, ...]:
        """The ``cgroup.procs`` files to write a pid to, one per folder.

        For a launcher that joins the group itself before it execs the jail: writing ``0`` or its
        own pid to each moves it, and everything it starts afterwards, into the group.
        """
        return tuple(os.path.join(folder, "cgroup.procs") for folder in self._folders.values())

    def procs(self) -> list[int]:
        """The host pids of the processes in the group now."""
        found: set[int] = set()
        for folder in self._folders.values():
            try:
                found.update(int(p) for p in _read(os.path.join(folder, "cgroup.procs")).split())
            except FileNotFoundError:
                pass
        return sorted(found)

    def pids_current(self) -> int | None:
        """Processes and threads in the group now (``None`` without a pids controller)."""
        return _number(self._file("pids", "pids.current"))

    def kill_all(self, timeout: float = 5.0) -> int:
        """SIGKILL every process in the group, stopped and forking ones included; returns how many.

        Returns once the group is empty (or after ``timeout`` seconds, when a process is stuck in
        the kernel, e.g. on a hung network filesystem).
        """
        if self.version == 2 and os.path.exists(os.path.join(self._folders[""], "cgroup.kill")):
            count = len(self.procs())
            if count:
                _write(os.path.join(self._folders[""], "cgroup.kill"), "1")
            self._wait_empty(timeout)
            return count
        if not any(os.path.isdir(f) for f in self._folders.values()):
            return 0  # removed already
        killed: set[int] = set()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            frozen = self._freeze(True)
            pids = self.procs()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            killed.update(pids)
            if frozen:
                # A frozen process dies only once thawed; it cannot fork before its SIGKILL lands.
                self._freeze(False)
            if not pids or self._wait_empty(0.5):
                break
        return len(killed)

    def _freeze(self, freeze: bool) -> bool:
        """Freeze or thaw the group; False when the host has no freezer for it."""
        if self.version == 2:
            control = os.path.join(self._folders[""], "cgroup.freeze")
            if not os.path.exists(control):
                return False
            _write(control, "1" if freeze else "0")
            events = os.path.join(self._folders[""], "cgroup.events")
            done = lambda: _keyed(events, "frozen") == int(freeze)  # noqa: E731
        else:
            folder = self._folders.get("freezer")
            if folder is None:
                return False
            state = os.path.join(folder, "freezer.state")
            _write(state, "FROZEN" if freeze else "THAWED")
            done = lambda: _read(state).strip() == ("FROZEN" if freeze else "THAWED")  # noqa: E731
        # A process in uninterruptible sleep delays freezing; go on after a second regardless.
        deadline = time.monotonic() + 1.0
        while not done() and time.monotonic() < deadline:
            time.sleep(0.001)
        return True

    def _wait_empty(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.procs():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.002)
        return True

    def remove(self, timeout: float = 2.0) -> None:
        """Delete the group's folders; call :meth:`kill_all` first. Removing twice is harmless."""
        for folder in self._folders.values():
            deadline = time.monotonic() + timeout
            while True:
                try:
                    os.rmdir(folder)
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:
                    # EBUSY while the last processes finish exiting.
                    if exc.errno != errno.EBUSY or time.monotonic() >= deadline:
                        raise OSError(
                            exc.errno,
                            f"cannot remove cgroup {folder}: {exc.strerror}; "
                            "processes are still in it (call kill_all() first)",
                        ) from exc
                    time.sleep(0.005)
            # The empty parent goes too: it sits inside the cgroup of whatever started nbagent,
            # which could not remove its own group while it is there. Busy: another run uses it.
            try:
                os.rmdir(os.path.dirname(folder))
            except OSError:
                pass

    # -- what the tree used ---------------------------------------------------------------------

    def _file(self, controller: str, name: str) -> str | None:
        folder = self._folders.get("" if self.version == 2 else controller)
        if folder is None:
            return None
        path = os.path.join(folder, name)
        return path if os.path.exists(path) else None

    def cpu_seconds(self) -> float:
        """CPU time used by every process that has been in the group (exited ones included)."""
        if self.version == 2:
            usec = _keyed(os.path.join(self._folders[""], "cpu.stat"), "usage_usec")
            return (usec or 0) / 1e6
        return int(_read(os.path.join(self._folders["cpuacct"], "cpuacct.usage"))) / 1e9

    def memory_peak(self) -> int | None:
        """The most memory (with swap where counted) the tree held at once, in bytes; ``None`` if unknown."""
        if self.version == 2:
            return _number(self._file("memory", "memory.peak"))
        return _number(
            self._file("memory", "memory.memsw.max_usage_in_bytes")
            or self._file("memory", "memory.max_usage_in_bytes")
        )

    def oom_kills(self) -> int | None:
        """How many processes of the group the kernel killed for going over the memory limit."""
        if self.version == 2:
            path = self._file("memory", "memory.events")
        else:
            path = self._file("memory", "memory.oom_control")
        return None if path is None else (_keyed(path, "oom_kill") or 0)


def _number(path: str | None) -> int | None:
    if path is None:
        return None
    text = _read(path).strip()
    return None if text == "max" else int(text)


def _groups_in(parent: str) -> Iterator[tuple[str, int]]:
    try:
        entries = os.listdir(parent)
    except FileNotFoundError:
        return
    for entry in entries:
        owner, sep, _ = entry.partition("-")
        if sep and owner.isdigit() and os.path.isdir(os.path.join(parent, entry)):
            yield entry, int(owner)


def _clean_stale(version: int, parents: dict[str, str]) -> None:
    """Kill and remove the groups whose nbagent process is gone (it was killed before cleaning up)."""
    stale: dict[str, dict[str, str]] = {}
    for controller, parent in parents.items():
        for entry, owner in _groups_in(parent):
            if owner != os.getpid() and not _alive(owner):
                stale.setdefault(entry, {})[controller] = os.path.join(parent, entry)
    for folders in stale.values():
        group = RunCgroup(version, folders)
        try:
            group.kill_all(timeout=1.0)
            group.remove(timeout=0.5)
        except OSError:
            pass  # still busy: the next create tries again; this run's own group is unaffected


@functools.lru_cache(maxsize=1)
def cgroups_available() -> str | None:
    """``None`` when this process can make run groups with memory and process limits, else why not.

    Answered by making (and removing) a probe group once per process.
    """
    try:
        group = RunCgroup.create("probe", memory=1 << 30, pids=64)
    except (CgroupUnavailable, OSError) as exc:
        return str(exc.strerror or exc)
    group.remove()
    return None
