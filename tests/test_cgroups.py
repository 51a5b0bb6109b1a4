"""Whole-run cgroups: each limit holds for a real process tree, which gets past it without the group.

Each test starts a small Python tree that waits for a go line on stdin, so it can be put in the
group before it forks; the same tree run outside any group shows the attack working.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from nbagent.execution import cgroups
from nbagent.execution.cgroups import CgroupUnavailable, RunCgroup, cgroups_available

CGROUPS_FILE = cgroups.__file__
MIB = 1 << 20


def _needs_cgroups() -> None:
    reason = cgroups_available()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"cgroups unavailable in CI: {reason}")
        pytest.skip(f"cgroups unavailable here: {reason}")


@pytest.fixture
def group(request: pytest.FixtureRequest) -> Iterator[RunCgroup]:
    _needs_cgroups()
    limits = getattr(request, "param", {})
    g = RunCgroup.create(
        f"test-{request.node.originalname[:40]}", memory=limits.get("memory"), pids=limits.get("pids")
    )
    yield g
    g.kill_all()
    g.remove()


def _tree(code: str, group: RunCgroup | None) -> subprocess.Popen[str]:
    """A Python process running ``code`` once it reads a line: in ``group`` first, if given."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.readline()\n" + code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    if group is not None:
        group.add(proc.pid)
    assert proc.stdin is not None
    proc.stdin.write("go\n")
    proc.stdin.flush()
    return proc


def _finish(proc: subprocess.Popen[str], timeout: float = 60) -> dict[str, object]:
    out, _ = proc.communicate(timeout=timeout)
    result: dict[str, object] = json.loads(out.strip().splitlines()[-1])
    return result


SPLIT_MEMORY = """
import json, os
results = []
for _ in range(4):
    pid = os.fork()
    if pid == 0:
        block = b"\\x01" * (40 << 20)  # written, so every page is really held
        os._exit(0)
    results.append(os.waitpid(pid, 0)[1])
print(json.dumps({"exits": [os.waitstatus_to_exitcode(s) for s in results]}))
"""
# One child at a time holds 40 MiB: no limit is reached. Four at once hold 160 MiB.
SPLIT_MEMORY_AT_ONCE = """
import json, os, time
r, w = os.pipe()
pids = []
for _ in range(4):
    pid = os.fork()
    if pid == 0:
        os.close(w)
        block = b"\\x01" * (40 << 20)
        os.read(r, 1)  # hold the memory until every sibling holds its share
        os._exit(0)
    pids.append(pid)
time.sleep(1.5)
os.close(w)
exits = [os.waitstatus_to_exitcode(os.waitpid(p, 0)[1]) for p in pids]
print(json.dumps({"exits": exits}))
"""


@pytest.mark.parametrize("group", [{"memory": 100 * MIB}], indirect=True)
def test_memory_limit_holds_for_the_tree_split_across_children(group: RunCgroup) -> None:
    outside = _finish(_tree(SPLIT_MEMORY_AT_ONCE, None))
    assert outside["exits"] == [0, 0, 0, 0]  # 160 MiB in four children, no limit in the way
    inside = _finish(_tree(SPLIT_MEMORY_AT_ONCE, group))
    exits = inside["exits"]
    assert isinstance(exits, list) and -signal.SIGKILL in exits  # the kernel's OOM killer stepped in
    assert (group.oom_kills() or 0) >= 1
    peak = group.memory_peak()
    assert peak is not None and peak <= 100 * MIB


FORK_MANY = """
import json, os, time
made = refused = 0
children = []
for _ in range(60):
    try:
        pid = os.fork()
    except BlockingIOError:
        refused += 1
        continue
    if pid == 0:
        time.sleep(5)
        os._exit(0)
    made += 1
    children.append(pid)
for pid in children:
    os.kill(pid, 9)
    os.waitpid(pid, 0)
print(json.dumps({"made": made, "refused": refused}))
"""


@pytest.mark.parametrize("group", [{"pids": 20}], indirect=True)
def test_process_limit_holds_for_the_tree(group: RunCgroup) -> None:
    outside = _finish(_tree(FORK_MANY, None))
    assert outside == {"made": 60, "refused": 0}
    inside = _finish(_tree(FORK_MANY, group))
    assert inside["made"] == 19 and inside["refused"] == 41  # the parent is the 20th


STOPPED_AND_FORKING = """
import os, signal, time
for _ in range(5):
    if os.fork() == 0:
        os.kill(os.getpid(), signal.SIGSTOP)  # stopped processes must die too
        time.sleep(60)
if os.fork() == 0:
    while True:  # forks as fast as it can, each child forking again
        try:
            if os.fork() == 0:
                time.sleep(0.05)
        except OSError:
            time.sleep(0.01)
print('{"started": true}', flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("group", [{"pids": 200}], indirect=True)
def test_kill_all_leaves_no_process_behind(group: RunCgroup) -> None:
    with _tree(STOPPED_AND_FORKING, group) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == '{"started": true}'
        time.sleep(0.3)
        pids = group.procs()
        assert len(pids) >= 7
        assert group.kill_all() >= len(pids)
        assert group.procs() == []
        # Dead: gone, or a zombie waiting for init (or for us, the direct child's parent) to reap it.
        assert {_state(pid) for pid in pids} <= {"gone", "Z"}
        assert proc.wait(timeout=5) == -signal.SIGKILL
    group.remove()
    assert not any(os.path.exists(p) for p in group.paths)


BURN = """
import json, os, time
def burn():
    end = time.process_time() + 0.25
    while time.process_time() < end:
        pass
pids = []
for _ in range(2):
    pid = os.fork()
    if pid == 0:
        burn()
        os._exit(0)
    pids.append(pid)
for pid in pids:
    os.waitpid(pid, 0)
print(json.dumps({}))
"""


def test_cpu_seconds_count_children_that_have_exited(group: RunCgroup) -> None:
    before = group.cpu_seconds()
    _finish(_tree(BURN, group))
    assert group.cpu_seconds() - before >= 0.45  # two children of 0.25 s each, both gone by now


def test_groups_of_a_killed_nbagent_are_cleaned_on_the_next_create() -> None:
    _needs_cgroups()
    # A stand-in for an nbagent process: makes a group, puts a sleeper in it, and is SIGKILLed.
    with subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import importlib.util, subprocess, sys, time\n"
            # by its file, as the kernel launcher loads it: importing nbagent would take seconds
            f"spec = importlib.util.spec_from_file_location('cgroups', {CGROUPS_FILE!r})\n"
            "cgroups = importlib.util.module_from_spec(spec)\n"
            "spec.loader.exec_module(cgroups)\n"
            "RunCgroup = cgroups.RunCgroup\n"
            "g = RunCgroup.create('orphan', memory=None, pids=None)\n"
            "p = subprocess.Popen(['sleep', '60'], start_new_session=True)\n"
            "g.add(p.pid)\n"
            "print(p.pid, *g.paths, flush=True)\n"
            "time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    ) as owner:
        assert owner.stdout is not None
        sleeper, *paths = owner.stdout.readline().split()
        owner.kill()
    assert all(os.path.isdir(p) for p in paths)
    assert os.path.exists(f"/proc/{sleeper}")
    g = RunCgroup.create("next-run", memory=None, pids=None)
    try:
        assert not any(os.path.exists(p) for p in paths)
        deadline = time.monotonic() + 5
        while os.path.exists(f"/proc/{sleeper}") and _state(int(sleeper)) != "Z":
            assert time.monotonic() < deadline, "the orphaned sleeper is still running"
            time.sleep(0.01)
    finally:
        g.remove()


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "gone"


def test_v2_groups_work_where_the_unified_hierarchy_is_writable() -> None:
    # Laptops have cgroup v2. Here v2 is mounted beside v1 without the memory and pids
    # controllers: enough for the code that needs none (membership, CPU, freeze, kill).
    try:
        g = RunCgroup.create("v2-check", memory=None, pids=None, hierarchy="v2")
    except CgroupUnavailable as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"no writable cgroup v2 here: {exc}")
    try:
        assert g.version == 2
        _finish(_tree(BURN, g))
        assert g.cpu_seconds() >= 0.45
        with _tree(STOPPED_AND_FORKING.replace("while True", "while False"), g) as proc:
            assert proc.stdout is not None and proc.stdout.readline()
            assert len(g.procs()) >= 6
            g.kill_all()
            assert g.procs() == []
            assert proc.wait(timeout=5) == -signal.SIGKILL
    finally:
        g.kill_all()
        g.remove()


def test_unavailable_v2_controller_says_what_is_missing() -> None:
    try:
        g = RunCgroup.create("v2-memory", memory=64 * MIB, pids=None, hierarchy="v2")
    except CgroupUnavailable as exc:
        assert "memory" in str(exc) and "cgroup v2" in str(exc)
    else:  # this host delegates a v2 memory controller: then the limit must be set
        try:
            with open(os.path.join(g.path, "memory.max")) as f:
                assert f.read().strip() == str(64 * MIB)
        finally:
            g.remove()


@pytest.mark.parametrize("name", ["", "a/b", "..", "x" * 101, "-x"])
def test_bad_group_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="cgroup name"):
        RunCgroup.create(name, memory=None, pids=None)


def test_remove_twice_is_harmless(group: RunCgroup) -> None:
    group.remove()
    group.remove()
    assert not any(os.path.exists(p) for p in group.paths)


def test_a_process_joins_by_writing_its_pid_to_the_procs_files(group: RunCgroup) -> None:
    # What a kernel launcher does before it execs bwrap: join, then everything it starts is in.
    script = (
        "import subprocess, sys\n"
        "for path in sys.argv[1:]:\n"
        "    open(path, 'w').write('0')\n"
        "print('in', flush=True)\n"
        "subprocess.run(['sleep', '30'])\n"
    )
    with subprocess.Popen(
        [sys.executable, "-c", script, *group.procs_files()], stdout=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "in"
        deadline = time.monotonic() + 5
        while len(group.procs()) < 2:  # the launcher and the sleep it started
            assert time.monotonic() < deadline, group.procs()
            time.sleep(0.01)
        assert proc.pid in group.procs()
        group.kill_all()
        assert proc.wait(timeout=5) == -signal.SIGKILL


def test_remove_leaves_no_empty_parent_in_the_callers_cgroup(group: RunCgroup) -> None:
    # The parent sits in the cgroup of whatever started nbagent (a service, a session), which
    # could not remove its own group while an empty nbagent/ folder is left in it.
    group.remove()
    for path in group.paths:
        parent = os.path.dirname(path)
        others = [e for e in os.listdir(parent) if e[:1].isdigit()] if os.path.isdir(parent) else []
        assert not os.path.isdir(parent) or others, f"{parent} was left empty"
