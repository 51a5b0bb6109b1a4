"""The jail's seccomp filter: each refused call works without the filter and gets EPERM under it.

A small Python probe tries every call once and prints what each returned. It runs twice: as a
plain child process, then under ``bwrap --dev-bind / / --seccomp FD`` with the filter (bwrap
from the system, as nbagent's jail uses it). Calls that would change the host when they succeed
(mount, kexec, modules) are made with arguments the kernel rejects for another reason (ENOENT,
EBADF, EINVAL): an answer other than EPERM proves the call got past where the filter stands.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nbagent.execution.seccomp import REFUSED_SYSCALLS, seccomp_available, seccomp_fd, seccomp_program

PROBE = Path(__file__).with_name("seccomp_probe.py")

# What the probe's call returns without the filter when it does not simply succeed (as root on
# Linux): the call reached the kernel, which rejected the arguments chosen to be harmless.
NOT_REFUSED_WITHOUT_FILTER = {"EPERM"}
# What each probe must get under the filter.
REFUSED = "EPERM"
EXPECTED_UNDER_FILTER = {"clone3": "ENOSYS"}

BWRAP = shutil.which("bwrap")


def _run_probe(*, filtered: bool) -> dict[str, str]:
    script = PROBE
    if not filtered:
        proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    else:
        assert BWRAP is not None
        fd = seccomp_fd()
        try:
            proc = subprocess.run(
                [BWRAP, "--dev-bind", "/", "/", "--seccomp", str(fd), sys.executable, str(script)],
                capture_output=True,
                text=True,
                timeout=60,
                pass_fds=(fd,),
            )
        finally:
            os.close(fd)
    assert proc.returncode == 0, proc.stderr
    results: dict[str, str] = json.loads(proc.stdout.strip().splitlines()[-1])
    return results


def _needs(what: str | None, why: str) -> None:
    """Skip for a missing facility, except in CI, where every facility must be there."""
    if what:
        if os.environ.get("CI"):
            pytest.fail(f"{why}: {what} (CI must have it)")
        pytest.skip(f"{why}: {what}")


@pytest.fixture(scope="module")
def probes() -> tuple[dict[str, str], dict[str, str]]:
    """(results without the filter, results under it), each from one run of the probe."""
    _needs(seccomp_available(), "no seccomp filter")
    _needs(None if BWRAP else "bwrap is not installed (apt-get install bubblewrap)", "no bwrap")
    _needs(None if os.geteuid() == 0 else "not root", "the unfiltered probe needs root to succeed")
    _needs(None if os.uname().machine == "x86_64" else os.uname().machine, "the probe's numbers are x86-64's")
    return _run_probe(filtered=False), _run_probe(filtered=True)


REFUSED_PROBES = [
    "socket AF_VSOCK",
    "socket AF_VSOCK high bits",
    "socket AF_PACKET",
    "socket AF_NETLINK audit",
    "socket AF_NETLINK uevent",
    "socket AF_NETLINK route high bits",
    "socket AF_INET6 SOCK_RAW",
    "socket SOCK_RAW",
    "socket SOCK_RAW|SOCK_CLOEXEC",
    "mknod char device",
    "mknod block device",
    "bpf",
    "perf_event_open",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "pidfd_getfd",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "keyctl",
    "add_key",
    "request_key",
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "move_mount",
    "open_tree",
    "mount_setattr",
    "setns",
    "unshare",
    "clone CLONE_NEWUTS",
    "clone3",
    "personality ADDR_NO_RANDOMIZE",
    "personality ADDR_NO_RANDOMIZE|bit31",
    "personality READ_IMPLIES_EXEC",
    "ioctl TIOCSTI",
    "ioctl TIOCLINUX",
]

# Calls that succeed outright without the filter (the others are rejected for their arguments).
SUCCEED_WITHOUT_FILTER = {
    "socket AF_VSOCK",
    "socket AF_PACKET",
    "socket AF_NETLINK audit",
    "socket AF_NETLINK uevent",
    "socket AF_NETLINK route high bits",
    "socket AF_INET6 SOCK_RAW",
    "socket SOCK_RAW",
    "socket SOCK_RAW|SOCK_CLOEXEC",
    "mknod char device",
    "mknod block device",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "pidfd_getfd",
    "keyctl",
    "add_key",
    "setns",
    "unshare",
    "clone CLONE_NEWUTS",
    "personality ADDR_NO_RANDOMIZE",
    "personality READ_IMPLIES_EXEC",
    "ioctl TIOCSTI",
}


@pytest.mark.parametrize("probe", REFUSED_PROBES)
def test_filter_refuses_the_call_that_works_without_it(
    probes: tuple[dict[str, str], dict[str, str]], probe: str
) -> None:
    plain, filtered = probes
    if probe in SUCCEED_WITHOUT_FILTER:
        assert plain[probe] == "ok", f"without the filter {probe} should work, got {plain[probe]}"
    else:
        assert plain[probe] not in NOT_REFUSED_WITHOUT_FILTER, f"{probe} is refused even without a filter"
    assert filtered[probe] == EXPECTED_UNDER_FILTER.get(probe, REFUSED)


@pytest.mark.parametrize(
    "probe",
    [
        "allowed: socket AF_INET",
        "allowed: socket AF_UNIX",
        "allowed: netlink route",
        "allowed: zmq tcp bind",
        "allowed: mkfifo",
        "allowed: regular mknod",
        "allowed: personality query",
        "allowed: subprocess",
        "allowed: fork",
        "allowed: thread",
    ],
)
def test_filter_keeps_what_analysis_code_needs(
    probes: tuple[dict[str, str], dict[str, str]], probe: str
) -> None:
    plain, filtered = probes
    assert plain[probe] == "ok"
    assert filtered[probe] == "ok"


def test_every_refused_syscall_is_probed() -> None:
    probed = {p.split()[0] for p in REFUSED_PROBES}
    # create_module and query_module no longer exist in x86-64 kernels (ENOSYS either way).
    assert set(REFUSED_SYSCALLS) - {"create_module", "query_module"} <= probed


def test_program_is_built_once_and_is_bpf() -> None:
    _needs(seccomp_available(), "no seccomp filter")
    program = seccomp_program()
    assert program is seccomp_program()  # cached: kernel start-up does not rebuild it
    assert len(program) % 8 == 0 and 0 < len(program) // 8 <= 4096  # struct sock_filter, kernel max
    fd = seccomp_fd()
    try:
        assert os.read(fd, len(program) + 1) == program
    finally:
        os.close(fd)
