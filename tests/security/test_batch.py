"""Attacks between two live tasks of one ``nbagent batch``: the attacker goes after its sibling.

The victim keeps a secret in a variable and waits in a step; meanwhile the attacker looks for the
victim's kernel (the process working in the victim's folder), then reads its connection file and
runs code in it (steal the secret, rewrite the value it answers with), reads its memory through
``/proc/<pid>/mem`` and attaches to it with ``ptrace``. Outside the jail every part works and
``status.jsonl`` records the forged answer as the victim's; in the jail the victim is not in sight.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from .attacks import (
    attack_results,
    attack_step,
    final_step,
    host_env,
    merged,
    outside_and_jail,
    run_cli,
    write_script,
)

Found = tuple[dict[str, Any], dict[str, Any]]
"""(status lines by task id, what the attacker found)."""

GO_AFTER_THE_SIBLING = r"""
import ctypes, os, time

results = {"victim": None, "stolen": None, "forged": False, "memory": None, "ptrace": None}


def find_victim():
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cwd = os.readlink(f"/proc/{entry}/cwd")
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().decode().split("\0")
        except OSError:
            continue
        if os.path.basename(cwd) == PARAMS["victim_folder"] and "-f" in argv:
            return int(entry), argv[argv.index("-f") + 1]
    return None


deadline = time.monotonic() + 8  # as long as the victim's step sleeps
found = None
while found is None and time.monotonic() < deadline:
    found = find_victim()
    time.sleep(0.2)

if found:
    pid, connection_file = found
    results["victim"] = pid
    try:
        with open(f"/proc/{pid}/maps") as f:
            start = next(int(l.split("-")[0], 16) for l in f if l.split()[1].startswith("r"))
        with open(f"/proc/{pid}/mem", "rb") as mem:
            mem.seek(start)
            results["memory"] = f"read {len(mem.read(64))} bytes"
    except Exception as exc:
        results["memory"] = f"failed: {type(exc).__name__}: {exc}"
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
        if libc.ptrace(16, pid, None, None) != 0:  # PTRACE_ATTACH
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
        os.waitpid(pid, 0x40000000)  # __WALL: the attach stop
        libc.ptrace(17, pid, None, None)  # PTRACE_DETACH
        results["ptrace"] = "attached and detached"
    except Exception as exc:
        results["ptrace"] = f"failed: {type(exc).__name__}: {exc}"
    try:
        from jupyter_client import BlockingKernelClient

        client = BlockingKernelClient(connection_file=connection_file)
        client.load_connection_file()
        client.start_channels()

        def run(code):
            msg_id = client.execute(code)
            text = []
            while True:
                msg = client.get_iopub_msg(timeout=30)
                if msg["parent_header"].get("msg_id") != msg_id:
                    continue
                if msg["msg_type"] == "stream":
                    text.append(msg["content"]["text"])
                if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                    return "".join(text)

        # One request, queued while the victim's step runs, so it runs before the victim's next step.
        results["stolen"] = run(
            # Replacing final_answer itself is caught after the step (the identity check of the
            # trust boundaries); rewriting the value the victim answers with is not.
            "print(secret)\n"
            "secret = 'forged by the attacker'"
        ).strip()
        results["forged"] = True
        client.stop_channels()
    except Exception as exc:
        results["stolen"] = results["stolen"] or f"failed: {type(exc).__name__}: {exc}"
print("ATTACK " + json.dumps(results))
"""


def _batch(tmp: Path, where: str, token: str, flags: tuple[str, ...]) -> Found:
    """Run the two tasks; (status lines by id, the attacker's findings)."""
    folder = tmp / where
    folder.mkdir()
    victim_id = f"victim-{token}-{where}"  # the two batches run at once: each attacker finds its own
    secret = f"victim-secret-{token}"
    write_script(
        folder / "victim.json",
        [
            attack_step(f"secret = {secret!r}"),
            attack_step("import time\ntime.sleep(8)"),
            final_step("secret"),
        ],
    )
    write_script(
        folder / "attacker.json",
        [attack_step(GO_AFTER_THE_SIBLING, victim_folder=victim_id), final_step("'attacker finished'")],
    )
    tasks = folder / "tasks.jsonl"
    tasks.write_text(
        json.dumps({"id": victim_id, "question": "Keep a secret.", "model": "scripted:victim.json"})
        + "\n"
        + json.dumps({"id": "attacker", "question": "Look around.", "model": "scripted:attacker.json"})
        + "\n"
    )
    out = folder / "out"
    proc = run_cli(
        ["batch", str(tasks), "--out", str(out), "--jobs", "2", "--timeout", "60", "-q", *flags],
        env=host_env(),
        timeout=240,
    )
    status = {}
    for line in (out / "status.jsonl").read_text().splitlines():
        item = json.loads(line)
        status[item["id"]] = item
    assert set(status) == {victim_id, "attacker"}, proc.stderr[-2000:]
    found = merged(attack_results(out / "attacker" / "attacker.ipynb"))
    return {"victim": status[victim_id], "attacker": status["attacker"]}, {"secret": secret, **found}


@pytest.fixture(scope="module")
def batches(tmp_path_factory: pytest.TempPathFactory, module_token: str) -> dict[str, Found]:
    """The two-task batch outside the jail and, at the same time, under the default sandbox."""
    tmp = tmp_path_factory.mktemp("batch-attacks")

    def play(where: str, flags: tuple[str, ...]) -> Found:
        # --no-fork outside: each kernel then names its connection file on its command line.
        return _batch(tmp, where, module_token, (*flags, "--no-fork") if where == "outside" else flags)

    return outside_and_jail(play)


def test_a_task_cannot_use_its_siblings_kernel(
    batches: dict[str, Found],
) -> None:
    status, found = batches["outside"]
    assert found["victim"] is not None
    assert found["stolen"] == found["secret"]
    assert found["forged"] is True
    assert status["victim"]["answer"] == "forged by the attacker"

    status, found = batches["jail"]
    assert status["attacker"]["status"] == "ok"
    assert found["victim"] is None, found
    assert found["stolen"] is None and found["forged"] is False
    assert status["victim"]["answer"] == found["secret"]


def test_a_task_cannot_read_its_siblings_memory(
    batches: dict[str, Found],
) -> None:
    assert batches["outside"][1]["memory"] == "read 64 bytes"
    assert batches["jail"][1]["memory"] is None, batches["jail"][1]


def test_a_task_cannot_ptrace_its_sibling(batches: dict[str, Found]) -> None:
    assert batches["outside"][1]["ptrace"] == "attached and detached"
    assert batches["jail"][1]["ptrace"] is None, batches["jail"][1]
