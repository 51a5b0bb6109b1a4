"""The jail's system-call filter: a seccomp BPF program for ``bwrap --seccomp FD``.

Every system call is allowed except the ones below, which fail with ``EPERM`` (a refusal the
model's code can read and work around, rather than a killed kernel). Each names the attack it
stops; the tests in ``tests/test_seccomp.py`` play each one under the filter and without it.

- ``socket()`` for ``AF_VSOCK`` (talk to the hypervisor or host, which no network namespace
  hides), ``AF_PACKET`` and ``SOCK_RAW`` (forge packets), ``AF_NETLINK`` (probe or drive the
  kernel's audit, uevent, netfilter, ... interfaces); ``io_uring_*`` too, since io_uring can open
  sockets without calling ``socket()``. One netlink socket stays allowed: ``NETLINK_ROUTE``,
  which libzmq opens (``getifaddrs``) to bind ipykernel's IOPub pipe on ``tcp://127.0.0.1`` and
  aborts the kernel without. In the jail's own network namespace, without ``CAP_NET_ADMIN``, it
  can only read that namespace's loopback.
- ``mknod``/``mknodat`` of character and block devices (a device node is a door to raw disks and
  memory); FIFOs and plain files stay allowed.
- ``ptrace``, ``process_vm_readv``/``writev``, ``pidfd_getfd``: read or steer another process.
- ``bpf``, ``perf_event_open``, ``userfaultfd``, ``kexec_*``, ``*_module``, ``keyctl``/``add_key``/
  ``request_key``: kernel attack surface no analysis code needs.
- ``unshare``, ``setns``, ``clone`` with a namespace flag, ``clone3`` (its flags sit in memory a
  filter cannot read; it answers ``ENOSYS``, on which the C library falls back to ``clone``),
  ``mount`` and the new mount API, ``umount2``, ``pivot_root``, ``chroot``: remaking the jail's own
  view of the system, starting with a user namespace in which the process holds capabilities.
- ``personality`` setting ``ADDR_NO_RANDOMIZE``, ``READ_IMPLIES_EXEC`` and the like (turns off
  address randomisation for exploits); reading the personality (``0xffffffff``) stays allowed.
- ``ioctl(TIOCSTI)`` and ``ioctl(TIOCLINUX)``: type commands into a terminal the kernel inherited.

Calls made with another architecture's numbering (``int 0x80`` on x86-64) would dodge the rules,
so the program kills a process that makes them (libseccomp's default for foreign architectures).

Built with ``pyseccomp`` (ctypes over the system's libseccomp). Loading it costs ~75 ms, so the
module imports it lazily and builds the program once per process.
"""

from __future__ import annotations

import errno
import functools
import os
import sys
from typing import Any

_AF_NETLINK = 16
_AF_PACKET = 17
_AF_VSOCK = 40
_NETLINK_ROUTE = 0
_SOCK_RAW = 3
_SOCK_TYPE_MASK = 0xF  # the type without SOCK_NONBLOCK / SOCK_CLOEXEC
_S_IFMT = 0o170000
_S_IFCHR = 0o020000
_S_IFBLK = 0o060000
_TIOCSTI = 0x5412
_TIOCLINUX = 0x541C
_LOW32 = 0xFFFFFFFF  # int arguments: the kernel ignores a register's upper half, so must the filter
_NAMESPACE_FLAGS = {
    "CLONE_NEWNS": 0x00020000,
    "CLONE_NEWCGROUP": 0x02000000,
    "CLONE_NEWUTS": 0x04000000,
    "CLONE_NEWIPC": 0x08000000,
    "CLONE_NEWUSER": 0x10000000,
    "CLONE_NEWPID": 0x20000000,
    "CLONE_NEWNET": 0x40000000,
}
_PERSONALITY_FLAGS = {
    "ADDR_NO_RANDOMIZE": 0x0040000,
    "MMAP_PAGE_ZERO": 0x0100000,
    "ADDR_COMPAT_LAYOUT": 0x0200000,
    "READ_IMPLIES_EXEC": 0x0400000,
    "ADDR_LIMIT_32BIT": 0x0800000,
    "ADDR_LIMIT_3GB": 0x8000000,
}

REFUSED_SYSCALLS: tuple[str, ...] = (
    "add_key",
    "bpf",
    "chroot",
    "create_module",
    "delete_module",
    "finit_module",
    "fsconfig",
    "fsmount",
    "fsopen",
    "fspick",
    "init_module",
    "io_uring_enter",
    "io_uring_register",
    "io_uring_setup",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "mount",
    "mount_setattr",
    "move_mount",
    "open_tree",
    "perf_event_open",
    "pidfd_getfd",
    "pivot_root",
    "process_vm_readv",
    "process_vm_writev",
    "ptrace",
    "query_module",
    "request_key",
    "setns",
    "umount2",
    "unshare",
    "userfaultfd",
)
"""System calls the jail refuses whatever their arguments (those unknown to this architecture skipped)."""


def seccomp_available() -> str | None:
    """``None`` when :func:`seccomp_program` can build the filter here, else the reason it cannot."""
    if not sys.platform.startswith("linux"):
        return f"seccomp filters exist only on Linux, not {sys.platform}"
    try:
        _pyseccomp()
    except ImportError:
        return "the pyseccomp package is not installed (pip install pyseccomp)"
    except (OSError, RuntimeError) as exc:  # pyseccomp raises RuntimeError when libseccomp is missing
        return f"libseccomp cannot be loaded ({exc}); install it (Debian: apt-get install libseccomp2)"
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            if not any(line.startswith("Seccomp:") for line in f):
                return "this Linux kernel was built without seccomp"
    except OSError as exc:
        return f"cannot read /proc/self/status ({exc.strerror})"
    return None


def _pyseccomp() -> Any:
    import pyseccomp

    return pyseccomp


@functools.lru_cache(maxsize=1)
def seccomp_program() -> bytes:
    """The filter as a BPF program (``struct sock_filter`` array), for ``bwrap --seccomp FD``.

    Built once per process. Raises ``RuntimeError`` with :func:`seccomp_available`'s reason where
    it cannot be built.
    """
    reason = seccomp_available()
    if reason is not None:
        raise RuntimeError(f"cannot build the seccomp filter: {reason}")
    sc = _pyseccomp()
    refuse = sc.ERRNO(errno.EPERM)
    rules = sc.SyscallFilter(sc.ALLOW)

    def add(name: str, *args: Any, action: int = refuse) -> None:
        try:
            rules.add_rule(action, name, *args)
        except (OSError, ValueError) as exc:
            # A call this architecture does not have (create_module on a recent x86-64) needs no rule.
            if isinstance(exc, OSError) and exc.errno not in (errno.EINVAL, errno.EFAULT, errno.EDOM):
                raise

    def arg(index: int, mask: int, value: int) -> Any:
        return sc.Arg(index, sc.MASKED_EQ, mask, value)

    for name in REFUSED_SYSCALLS:
        add(name)
    for family in (_AF_VSOCK, _AF_PACKET):
        add("socket", arg(0, _LOW32, family))
    # Netlink but NETLINK_ROUTE (protocol 0); a protocol with its upper half set is refused too.
    add("socket", arg(0, _LOW32, _AF_NETLINK), sc.Arg(2, sc.NE, _NETLINK_ROUTE))
    # Raw sockets of every family but netlink (libzmq's NETLINK_ROUTE socket is SOCK_RAW).
    add("socket", sc.Arg(0, sc.NE, _AF_NETLINK), arg(1, _SOCK_TYPE_MASK, _SOCK_RAW))
    for node_type in (_S_IFCHR, _S_IFBLK):
        add("mknod", arg(1, _S_IFMT, node_type))
        add("mknodat", arg(2, _S_IFMT, node_type))
    for request in (_TIOCSTI, _TIOCLINUX):
        add("ioctl", arg(1, _LOW32, request))
    for flag in _NAMESPACE_FLAGS.values():
        add("clone", arg(0, flag, flag))
    add("clone3", action=sc.ERRNO(errno.ENOSYS))
    # Refuse a personality with a dangerous flag unless it is the query 0xffffffff. A rule can test
    # an argument once, so: flag set *and* some other bit clear (true of every value but the query).
    for flag in _PERSONALITY_FLAGS.values():
        for bit in range(32):
            if 1 << bit != flag:
                add("personality", arg(0, flag | 1 << bit, flag))
    fd = os.memfd_create("nbagent-seccomp")
    try:
        with os.fdopen(fd, "rb", closefd=False) as sink:
            rules.export_bpf(sink)
        os.lseek(fd, 0, os.SEEK_SET)
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks)


def seccomp_fd() -> int:
    """A new file descriptor to read the program from (``bwrap --seccomp FD``; pass it with ``pass_fds``).

    bwrap reads the descriptor to its end, so each jail needs its own. The caller closes it.
    """
    program = seccomp_program()
    fd = os.memfd_create("nbagent-seccomp", 0)
    try:
        os.write(fd, program)
        os.lseek(fd, 0, os.SEEK_SET)
    except OSError:
        os.close(fd)
        raise
    return fd
