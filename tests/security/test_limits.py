"""Whole-run limits: a fork bomb, memory split across children, many files, a full ``/tmp``.

One scripted run, one attack a step; outside the jail (no limits) every attack gets all it asks
for; at the same time, under the default sandbox with small ``--max-processes``,
``--memory-limit`` and ``--disk-limit``, each is stopped short, and the run still answers.
Bounded: 300 processes, 4 blocks of 300 MB of memory, 400 files of 1 MB, 600 MB in ``/tmp``
(removed by the attack itself).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from .attacks import (
    attack_results,
    attack_step,
    final_step,
    merged,
    outside_and_jail,
    run_cli,
    write_script,
)

JAIL_LIMITS = ("--max-processes", "64", "--memory-limit", "1G", "--disk-limit", "20M")

FORK_BOMB = r"""
import os, signal, time
made, refused, children = 0, 0, []
for _ in range(300):
    try:
        pid = os.fork()
    except OSError:
        refused += 1
        continue
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    made += 1
    children.append(pid)
for pid in children:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
print("ATTACK " + json.dumps({"processes started": made, "forks refused": refused}))
"""

SPLIT_MEMORY = r"""
import subprocess, sys, time
# Fresh interpreters, each far under the per-process limit; together over the run's limit.
HOLD = (
    "import sys\n"
    "try:\n"
    "    block = b'\\x01' * (300 << 20)\n"  # written, so every page is held
    "except MemoryError:\n"
    "    sys.exit(3)\n"
    "print('holding', flush=True)\n"
    "sys.stdin.read()\n"  # until the parent has counted
)
children = [
    subprocess.Popen([sys.executable, "-c", HOLD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    for _ in range(4)
]
held = [child.stdout.readline().strip() == "holding" for child in children]  # "" when it died
time.sleep(0.5)  # a child killed for its sibling's allocation dies now
alive = [child.poll() is None for child in children]
for child in children:
    child.stdin.close()
codes = [child.wait() for child in children]
found = {
    "children holding 300 MB at once": sum(h and a for h, a in zip(held, alive)),
    "children stopped": sorted(code for code in codes if code != 0),  # -9: the OOM killer; 3: MemoryError
}
print("ATTACK " + json.dumps(found))
"""

MANY_FILES = r"""
import os, time
written = 0
try:
    os.makedirs("fill", exist_ok=True)
    block = os.urandom(1 << 20)
    for i in range(400):
        with open(f"fill/{i}.bin", "wb") as f:
            f.write(block)
        written += 1
        time.sleep(0.01)
finally:
    print("ATTACK " + json.dumps({"1 MB files written": written}), flush=True)
"""

FILL_TMP = r"""
import os, shutil, tempfile
folder = tempfile.mkdtemp(dir="/tmp")
written, error = 0, None
try:
    block = b"\x02" * (10 << 20)
    for i in range(60):
        with open(os.path.join(folder, f"{i}.bin"), "wb") as f:
            f.write(block)
        written += 10
except OSError as exc:
    error = f"{type(exc).__name__}: {exc}"
finally:
    shutil.rmtree(folder, ignore_errors=True)
print("ATTACK " + json.dumps({"MB written to /tmp": written, "tmp error": error}))
"""


@pytest.fixture(scope="module")
def limits(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("limit-attacks")
    script = write_script(
        tmp / "attacks.json",
        [
            attack_step(FORK_BOMB),
            attack_step(SPLIT_MEMORY),
            attack_step(MANY_FILES),
            attack_step(FILL_TMP),
            final_step(),
        ],
    )

    def play(where: str, flags: tuple[str, ...]) -> dict[str, Any]:
        notebook = tmp / where / "limits.ipynb"
        proc = run_cli(
            ["run", "Use a lot.", "--model", f"scripted:{script}", "-o", str(notebook), "-q", *flags],
            timeout=300,
        )
        return {
            "returncode": proc.returncode,
            "stderr": proc.stderr[-3000:],
            "notebook": notebook.read_text() if notebook.exists() else "",
            **(merged(attack_results(notebook)) if notebook.exists() else {}),
        }

    return outside_and_jail(play, JAIL_LIMITS)


def _answered(found: dict[str, dict[str, Any]], where: str) -> None:
    assert found[where]["returncode"] == 0, (where, found[where]["stderr"])


def test_fork_bomb_stops_at_max_processes(limits: dict[str, dict[str, Any]]) -> None:
    _answered(limits, "outside")
    assert limits["outside"]["processes started"] == 300
    _answered(limits, "jail")
    assert limits["jail"]["processes started"] < 64
    assert limits["jail"]["forks refused"] > 0


def test_memory_split_across_children_stays_under_memory_limit(limits: dict[str, dict[str, Any]]) -> None:
    _answered(limits, "outside")
    assert limits["outside"]["children holding 300 MB at once"] == 4  # 1.2 GB in all
    _answered(limits, "jail")
    # 1 GiB for the kernel and its children together: the four blocks (1.2 GB) cannot all be held.
    assert limits["jail"]["children holding 300 MB at once"] < 4
    assert limits["jail"]["children stopped"], "no child was stopped, yet they could not all hold"


def test_many_files_stop_at_disk_limit(limits: dict[str, dict[str, Any]]) -> None:
    _answered(limits, "outside")
    assert limits["outside"]["1 MB files written"] == 400
    _answered(limits, "jail")
    assert limits["jail"]["1 MB files written"] < 400  # the host stopped the step
    assert "disk limit" in limits["jail"]["notebook"]  # and said why, to the model and in the notebook


def test_tmp_is_size_capped(limits: dict[str, dict[str, Any]]) -> None:
    _answered(limits, "outside")
    assert limits["outside"]["MB written to /tmp"] == 600
    _answered(limits, "jail")
    assert limits["jail"]["MB written to /tmp"] < 600
    assert "No space left" in str(limits["jail"]["tmp error"])


SPREAD_CPU = r"""
import subprocess, sys
# Each child stays under a per-process CPU limit; together they use twice the run's.
BURN = "import time\nend = time.process_time() + 1.5\nwhile time.process_time() < end:\n    pass\n"
children = [subprocess.Popen([sys.executable, "-c", BURN]) for _ in range(3)]
codes = [child.wait() for child in children]
print("ATTACK " + json.dumps({"children that burned 1.5 CPU seconds": codes.count(0)}))
"""


def test_cpu_time_spread_across_children_stops_at_cpu_limit(tmp_path: Path) -> None:
    script = write_script(tmp_path / "cpu.json", [attack_step(SPREAD_CPU), final_step()])

    def play(where: str, flags: tuple[str, ...]) -> tuple[dict[str, Any], str]:
        notebook = tmp_path / where / "cpu.ipynb"
        proc = run_cli(["run", "Burn.", "--model", f"scripted:{script}", "-o", str(notebook), "-q", *flags])
        assert proc.returncode == 0, (where, proc.stderr[-2000:])  # the run goes on either way
        return merged(attack_results(notebook)), notebook.read_text()

    found = outside_and_jail(play, ("--cpu-limit", "2"))
    assert found["outside"][0] == {"children that burned 1.5 CPU seconds": 3}
    assert found["jail"][0] == {}  # the kernel and its children were stopped mid-step
    assert "CPU-time limit of 2 s" in found["jail"][1]
