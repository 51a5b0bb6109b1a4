"""Probe for tests/test_seccomp.py: tries each call the jail's seccomp filter refuses, prints a JSON line.

Run as a script (never imported): ``{"call": "ok" | "EPERM" | ...}``. Numbers are x86-64's.
"""

import ctypes
import errno
import fcntl
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import termios
import threading

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
NR = {  # x86-64 numbers
    "ptrace": 101,
    "personality": 135,
    "chroot": 161,
    "mount": 165,
    "umount2": 166,
    "pivot_root": 155,
    "init_module": 175,
    "delete_module": 176,
    "keyctl": 250,
    "add_key": 248,
    "request_key": 249,
    "unshare": 272,
    "perf_event_open": 298,
    "process_vm_readv": 310,
    "process_vm_writev": 311,
    "setns": 308,
    "finit_module": 313,
    "kexec_load": 246,
    "kexec_file_load": 320,
    "bpf": 321,
    "userfaultfd": 323,
    "clone": 56,
    "clone3": 435,
    "io_uring_setup": 425,
    "io_uring_enter": 426,
    "io_uring_register": 427,
    "open_tree": 428,
    "move_mount": 429,
    "fsopen": 430,
    "fsconfig": 431,
    "fsmount": 432,
    "fspick": 433,
    "pidfd_open": 434,
    "pidfd_getfd": 438,
    "mount_setattr": 442,
    "socket": 41,
}
results = {}
tmp = tempfile.mkdtemp()


def raw(name, *args):
    cargs = [ctypes.c_long(a) if isinstance(a, int) else a for a in args]
    res = libc.syscall(ctypes.c_long(NR[name]), *cargs)
    if res == -1:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    return res


def attempt(name, fn):
    try:
        value = fn()
        if isinstance(value, socket.socket):
            value.close()
        results[name] = "ok"
    except OSError as exc:
        results[name] = errno.errorcode.get(exc.errno, str(exc.errno))


NOWHERE = b"/nonexistent-nbagent-probe"
buf = ctypes.create_string_buffer(256)

attempt("socket AF_VSOCK", lambda: socket.socket(40, socket.SOCK_STREAM))
attempt("socket AF_VSOCK high bits", lambda: raw("socket", (1 << 32) | 40, socket.SOCK_STREAM, 0))
attempt("socket AF_PACKET", lambda: socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM))
attempt("socket AF_NETLINK audit", lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 9))
attempt("socket AF_NETLINK uevent", lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 15))
attempt("socket AF_NETLINK route high bits", lambda: raw("socket", 16, socket.SOCK_RAW, 1 << 32))
attempt("socket AF_INET6 SOCK_RAW", lambda: socket.socket(socket.AF_INET6, socket.SOCK_RAW, 58))
attempt("socket SOCK_RAW", lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP))
attempt(
    "socket SOCK_RAW|SOCK_CLOEXEC",
    lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.IPPROTO_ICMP),
)
attempt(
    "mknod char device", lambda: os.mknod(os.path.join(tmp, "null"), stat.S_IFCHR | 0o600, os.makedev(1, 3))
)
attempt(
    "mknod block device", lambda: os.mknod(os.path.join(tmp, "blk"), stat.S_IFBLK | 0o600, os.makedev(7, 0))
)
# bpf(BPF_MAP_CREATE) of a one-entry array map
attr = ctypes.create_string_buffer(128)
ctypes.memmove(attr, (ctypes.c_uint32 * 4)(2, 4, 4, 1), 16)
attempt("bpf", lambda: raw("bpf", 0, attr, 128))
# perf_event_open of the software CPU clock of this process
pattr = ctypes.create_string_buffer(128)
ctypes.memmove(pattr, (ctypes.c_uint32 * 2)(1, 128), 8)
attempt("perf_event_open", lambda: raw("perf_event_open", pattr, 0, -1, -1, 0))


def ptrace_sibling():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        raw("ptrace", 0x4206, child.pid, 0, 0)  # PTRACE_SEIZE: attach without stopping it
    finally:
        child.kill()
        child.wait()


attempt("ptrace", ptrace_sibling)


class IOVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


source = ctypes.create_string_buffer(b"canary", 16)
local, remote = IOVec(ctypes.addressof(buf), 6), IOVec(ctypes.addressof(source), 6)
attempt(
    "process_vm_readv",
    lambda: raw("process_vm_readv", os.getpid(), ctypes.byref(local), 1, ctypes.byref(remote), 1, 0),
)
attempt(
    "process_vm_writev",
    lambda: raw("process_vm_writev", os.getpid(), ctypes.byref(remote), 1, ctypes.byref(local), 1, 0),
)
attempt("pidfd_getfd", lambda: raw("pidfd_getfd", raw("pidfd_open", os.getpid(), 0), 0, 0))
attempt("kexec_load", lambda: raw("kexec_load", 0, 0, 0, 0xDEAD0000))  # bad flags: EINVAL
attempt("kexec_file_load", lambda: raw("kexec_file_load", -1, -1, 0, 0, 0))  # EBADF
attempt("init_module", lambda: raw("init_module", buf, 16, b""))  # not an ELF module: ENOEXEC
attempt("finit_module", lambda: raw("finit_module", -1, b"", 0))  # EBADF
attempt("delete_module", lambda: raw("delete_module", b"nbagent_no_such_module", 0))  # ENOENT
attempt("keyctl", lambda: raw("keyctl", 0, -2, 1))  # KEYCTL_GET_KEYRING_ID of the process keyring
attempt("add_key", lambda: raw("add_key", b"user", b"nbagent-probe", b"x", 1, -2))
attempt("request_key", lambda: raw("request_key", b"user", b"nbagent-no-such-key", None, 0))  # ENOKEY
attempt("userfaultfd", lambda: raw("userfaultfd", 0))
params = ctypes.create_string_buffer(120)
attempt("io_uring_setup", lambda: raw("io_uring_setup", 1, params))
attempt("io_uring_enter", lambda: raw("io_uring_enter", -1, 0, 0, 0, 0, 0))  # EBADF
attempt("io_uring_register", lambda: raw("io_uring_register", -1, 0, 0, 0))  # EBADF
attempt("mount", lambda: raw("mount", b"none", NOWHERE, b"tmpfs", 0, 0))  # ENOENT
attempt("umount2", lambda: raw("umount2", NOWHERE, 0))
attempt("pivot_root", lambda: raw("pivot_root", NOWHERE, NOWHERE))
attempt("chroot", lambda: raw("chroot", NOWHERE))
attempt("fsopen", lambda: raw("fsopen", b"nbagent-no-such-fs", 0))  # ENODEV
attempt("fsconfig", lambda: raw("fsconfig", -1, 0, 0, 0, 0))
attempt("fsmount", lambda: raw("fsmount", -1, 0, 0))
attempt("fspick", lambda: raw("fspick", -100, NOWHERE, 0))
attempt("move_mount", lambda: raw("move_mount", -1, b"", -1, b"", 0))
attempt("open_tree", lambda: raw("open_tree", -100, NOWHERE, 0))
attempt("mount_setattr", lambda: raw("mount_setattr", -100, NOWHERE, 0, 0, 0))
attempt("setns", lambda: raw("setns", os.open("/proc/self/ns/uts", os.O_RDONLY), 0x04000000))


def clone_new_uts():
    pid = raw("clone", 0x04000000 | 17, 0, 0, 0, 0)  # CLONE_NEWUTS | SIGCHLD, fork-like
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)


attempt("clone CLONE_NEWUTS", clone_new_uts)
attempt("clone3", lambda: raw("clone3", 0, 0))  # size 0: EINVAL without a filter
attempt("personality ADDR_NO_RANDOMIZE", lambda: raw("personality", 0x0040000))
attempt("personality ADDR_NO_RANDOMIZE|bit31", lambda: raw("personality", 0x0040000 | 1 << 31))
attempt("personality READ_IMPLIES_EXEC", lambda: raw("personality", 0x0400000))
master, slave = os.openpty()
attempt("ioctl TIOCSTI", lambda: fcntl.ioctl(slave, termios.TIOCSTI, b"x"))
attempt("ioctl TIOCLINUX", lambda: fcntl.ioctl(slave, 0x541C, b"\x00" * 8))
# unshare last: it changes this process for good
attempt("unshare", lambda: raw("unshare", 0x04000000))  # CLONE_NEWUTS

# What analysis code needs keeps working under the filter.
attempt("allowed: socket AF_INET", lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))
attempt("allowed: socket AF_UNIX", lambda: socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
attempt("allowed: netlink route", lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0))


def zmq_tcp_bind():
    # What every ipykernel does at start: libzmq aborts the process if this cannot list interfaces.
    import zmq

    context = zmq.Context()
    pipe = context.socket(zmq.PAIR)
    pipe.bind("tcp://127.0.0.1:*")
    pipe.close(linger=0)
    context.term()


attempt("allowed: zmq tcp bind", zmq_tcp_bind)
attempt("allowed: mkfifo", lambda: os.mkfifo(os.path.join(tmp, "fifo")))
attempt("allowed: regular mknod", lambda: os.mknod(os.path.join(tmp, "file"), stat.S_IFREG | 0o600))
attempt("allowed: personality query", lambda: raw("personality", 0xFFFFFFFF))
attempt("allowed: subprocess", lambda: subprocess.run(["true"], check=True))
attempt("allowed: fork", lambda: os.waitpid(os.fork() or os._exit(0), 0))


def thread():
    t = threading.Thread(target=lambda: None)
    t.start()
    t.join()


attempt("allowed: thread", thread)
shutil.rmtree(tmp)
print(json.dumps(results))
