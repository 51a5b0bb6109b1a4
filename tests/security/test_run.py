"""Attacks from one ``nbagent run``: files, the host process, sockets, namespaces, leftovers, timeouts.

One scripted run plays every attack of this module in its first step and prints what each got;
it runs outside the jail (``--kernel nbagent``), where each attack must work, and at the same time
under the default sandbox, where each must fail. Canaries are made here: a 0600 file in the home
folder, a variable in the host's environment, a Unix socket standing in for ssh-agent, a TCP
server on the host's loopback.
"""

from __future__ import annotations

import json
import site
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from http_helpers import SocketListener

from .attacks import (
    attack_results,
    attack_step,
    final_step,
    host_env,
    kill_processes_with,
    merged,
    needs,
    outside_and_jail,
    processes_with,
    run_cli,
    write_script,
)

ATTACKS = r"""
import ctypes, os, resource, site, socket, subprocess, sys

results = {}


def attempt(name, fn):
    try:
        results[name] = {"ok": True, "detail": str(fn())[:300]}
    except BaseException as exc:
        results[name] = {"ok": False, "detail": f"{type(exc).__name__}: {exc}"[:300]}


def read(path, mode="r"):
    with open(path, mode) as f:
        return f.read()


attempt("read /etc/shadow", lambda: f"{len(read('/etc/shadow'))} characters")
attempt("read a 0600 file in the home folder", lambda: read(PARAMS["home_canary"]))


def plant_pth():
    # The next host `nbagent` (same interpreter) would run an `import` line of this file.
    target = os.path.join(site.getsitepackages()[0], PARAMS["pth_name"])
    with open(target, "w") as f:
        f.write("# planted by nbagent's attack suite; harmless\n")
    return target


attempt("write a .pth file into site-packages", plant_pth)


def host_pids():
    # The question is on the host's command line: that is how the code finds the host process.
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                if PARAMS["host_marker"].encode() in read(f"/proc/{entry}/cmdline", "rb"):
                    found.append(int(entry))
            except OSError:
                pass
    if not found:
        raise LookupError("no host process in sight")
    return found


def host_environ():
    for pid in host_pids():
        if PARAMS["env_canary"].encode() in read(f"/proc/{pid}/environ", "rb"):
            return f"the canary, from /proc/{pid}/environ"
    raise LookupError("the canary is in no visible environment")


attempt("read the host's /proc/<pid>/environ", host_environ)


def host_memory():
    pid = host_pids()[0]
    for line in read(f"/proc/{pid}/maps").splitlines():
        span, perms = line.split()[:2]
        if perms.startswith("r"):
            start = int(span.split("-")[0], 16)
            break
    with open(f"/proc/{pid}/mem", "rb") as mem:
        mem.seek(start)
        return f"{len(mem.read(64))} bytes of the host's memory"


attempt("read the host's /proc/<pid>/mem", host_memory)


def ssh_agent():
    path = os.environ.get("SSH_AUTH_SOCK") or PARAMS["agent_socket"]
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(path)
        s.sendall(b"kernel was here")
    return path


attempt("reach the ssh agent's socket", ssh_agent)
attempt("open an AF_VSOCK socket", lambda: socket.socket(40, socket.SOCK_STREAM).close())
attempt("open a netlink audit socket", lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 9).close())
attempt("open a raw IP socket", lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, 1).close())


def network():
    with socket.create_connection(("127.0.0.1", PARAMS["port"]), timeout=5) as s:
        s.sendall(b"kernel was here")
    return "connected to the host's loopback"


attempt("reach the host's network", network)


def raise_limits():
    for which in (resource.RLIMIT_FSIZE, resource.RLIMIT_CPU, resource.RLIMIT_AS):
        resource.setrlimit(which, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    return "file size, CPU time and memory limits now unlimited"


attempt("raise the resource limits", raise_limits)

libc = ctypes.CDLL(None, use_errno=True)


def in_child(call):
    # Namespaces change the calling process: try them in a throwaway child.
    pid = os.fork()
    if pid == 0:
        code = 255
        try:
            code = 0 if call() == 0 else (ctypes.get_errno() or 255)
        finally:  # the child must never go on as a second copy of the kernel
            os._exit(code)
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    if code:
        raise PermissionError(code, os.strerror(code))
    return "done"


attempt("unshare a user namespace", lambda: in_child(lambda: libc.unshare(0x10000000)))
attempt(
    "setns into the host's network namespace",
    lambda: in_child(lambda: libc.setns(os.open(f"/proc/{host_pids()[0]}/ns/net", os.O_RDONLY), 0x40000000)),
)


def leave_a_process():
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)", PARAMS["leftover_marker"]],
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return child.pid


attempt("leave a process running after the run", leave_a_process)
print("ATTACK " + json.dumps(results))
"""

TIMEOUT_STEP = "held = 42\nwhile True:\n    pass"
AFTER_TIMEOUT = 'print("ATTACK " + json.dumps({"state kept after a timeout": held == 42}))'


@dataclass
class Runs:
    """What each of the two runs found, and what the host saw of it."""

    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    returncode: dict[str, int] = field(default_factory=dict)
    stderr: dict[str, str] = field(default_factory=dict)
    agent_connections: dict[str, int] = field(default_factory=dict)
    network_connections: dict[str, int] = field(default_factory=dict)
    pth_planted: dict[str, bool] = field(default_factory=dict)
    leftovers: dict[str, list[int]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class _Found:
    """What one run found, and what the host saw of it."""

    results: dict[str, Any]
    returncode: int
    stderr: str
    agent_connections: int
    network_connections: int
    pth_planted: bool
    leftovers: list[int]
    seconds: float


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, module_token: str, home_canary: tuple[Path, str]) -> Runs:
    tmp = tmp_path_factory.mktemp("run-attacks")
    env_canary = f"env-canary-{module_token}"
    pth_dir = Path(site.getsitepackages()[0])

    def play(where: str, flags: tuple[str, ...]) -> _Found:
        # Each run has its own ssh-agent socket and loopback server, so that both can run at once.
        agent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        agent_path = tmp / f"ssh-agent-{where}.sock"
        agent.bind(str(agent_path))
        agent.listen(8)
        agent_listener = SocketListener(agent)
        server_listener = SocketListener(socket.create_server(("127.0.0.1", 0)))
        question = f"security check {module_token} {where}"
        pth = pth_dir / f"nbagent_attack_{module_token}_{where}.pth"
        leftover_marker = f"nbagent-leftover-{module_token}-{where}"
        try:
            script = write_script(
                tmp / f"{where}.json",
                [
                    attack_step(
                        ATTACKS,
                        home_canary=str(home_canary[0]),
                        pth_name=pth.name,
                        host_marker=question,
                        env_canary=env_canary,
                        agent_socket=str(agent_path),
                        port=server_listener.sock.getsockname()[1],
                        leftover_marker=leftover_marker,
                    ),
                    attack_step(TIMEOUT_STEP),
                    attack_step(AFTER_TIMEOUT),
                    final_step(),
                ],
            )
            notebook = tmp / where / "run.ipynb"
            started = time.monotonic()
            proc = run_cli(
                [
                    "run",
                    question,
                    "--model",
                    f"scripted:{script}",
                    "-o",
                    str(notebook),
                    "--timeout",
                    "6",
                    "-q",
                    *flags,
                ],
                env=host_env(NBAGENT_SECURITY_CANARY=env_canary, SSH_AUTH_SOCK=str(agent_path)),
            )
            return _Found(
                results=merged(attack_results(notebook)) if notebook.exists() else {},
                returncode=proc.returncode,
                stderr=proc.stderr,
                agent_connections=len(agent_listener.received),
                network_connections=len(server_listener.received),
                pth_planted=pth.exists(),
                leftovers=processes_with(leftover_marker),
                seconds=time.monotonic() - started,
            )
        finally:
            pth.unlink(missing_ok=True)
            kill_processes_with(leftover_marker)
            agent_listener.close()
            server_listener.close()

    out = Runs()
    for where, found in outside_and_jail(play).items():
        out.results[where] = found.results
        out.returncode[where] = found.returncode
        out.stderr[where] = found.stderr
        out.agent_connections[where] = found.agent_connections
        out.network_connections[where] = found.network_connections
        out.pth_planted[where] = found.pth_planted
        out.leftovers[where] = found.leftovers
        out.seconds[where] = found.seconds
    return out


def _worked(runs: Runs, where: str, attack: str) -> bool:
    result = runs.results[where].get(attack)
    assert result is not None, f"the {where} run did not report {attack!r}: {runs.stderr[where][-2000:]}"
    return bool(result["ok"])


def _assert_stopped(runs: Runs, attack: str) -> None:
    assert _worked(runs, "outside", attack), f"outside the jail {attack!r} should work: {runs.results}"
    assert runs.returncode["jail"] == 0, runs.stderr["jail"][-2000:]
    assert not _worked(runs, "jail", attack), (
        f"the jail let {attack!r} through: {runs.results['jail'][attack]}"
    )


def test_both_runs_answer(runs: Runs) -> None:
    print(json.dumps({"seconds": runs.seconds, "results": runs.results}, indent=1))
    assert runs.returncode == {"outside": 0, "jail": 0}, runs.stderr


def test_cannot_read_etc_shadow(runs: Runs) -> None:
    _assert_stopped(runs, "read /etc/shadow")


def test_cannot_read_a_private_file_in_the_home_folder(runs: Runs, home_canary: tuple[Path, str]) -> None:
    _assert_stopped(runs, "read a 0600 file in the home folder")
    assert runs.results["outside"]["read a 0600 file in the home folder"]["detail"] == home_canary[1]
    assert home_canary[1] not in runs.results["jail"]["read a 0600 file in the home folder"]["detail"]


def test_cannot_plant_a_pth_file_in_site_packages(runs: Runs) -> None:
    _assert_stopped(runs, "write a .pth file into site-packages")
    assert runs.pth_planted == {"outside": True, "jail": False}


def test_cannot_read_the_host_process_environment(runs: Runs) -> None:
    _assert_stopped(runs, "read the host's /proc/<pid>/environ")


def test_cannot_read_the_host_process_memory(runs: Runs) -> None:
    _assert_stopped(runs, "read the host's /proc/<pid>/mem")


def test_cannot_reach_the_ssh_agent(runs: Runs) -> None:
    _assert_stopped(runs, "reach the ssh agent's socket")
    assert runs.agent_connections == {"outside": 1, "jail": 0}


@pytest.mark.parametrize(
    "attack", ["open an AF_VSOCK socket", "open a netlink audit socket", "open a raw IP socket"]
)
def test_cannot_open_vsock_netlink_or_raw_sockets(runs: Runs, attack: str) -> None:
    outside = str(runs.results["outside"].get(attack))
    if attack == "open an AF_VSOCK socket" and ("No such device" in outside or "not supported" in outside):
        needs("no vsock on this machine")
    _assert_stopped(runs, attack)


def test_still_no_network(runs: Runs) -> None:
    _assert_stopped(runs, "reach the host's network")
    assert runs.network_connections == {"outside": 1, "jail": 0}


def test_resource_limits_still_cannot_be_raised(runs: Runs) -> None:
    _assert_stopped(runs, "raise the resource limits")


@pytest.mark.parametrize("attack", ["unshare a user namespace", "setns into the host's network namespace"])
def test_setns_and_unshare_still_refused(runs: Runs, attack: str) -> None:
    _assert_stopped(runs, attack)


def test_no_process_outlives_the_run(runs: Runs) -> None:
    assert _worked(runs, "outside", "leave a process running after the run")
    assert runs.leftovers["outside"], "outside the jail the process should have outlived the run"
    assert _worked(runs, "jail", "leave a process running after the run")  # starting one is fine
    assert runs.leftovers["jail"] == []


def test_timeouts_still_interrupt_and_keep_state(runs: Runs) -> None:
    for where in ("outside", "jail"):
        assert runs.results[where].get("state kept after a timeout") is True, (
            where,
            runs.stderr[where][-2000:],
        )
