"""Attacks on the host process itself: SIGSTOP of ``nbagent run``, SIGKILL of a Python API host.

The code finds the host the way an attacker would: the question is on the host's command line
(or, for the API, the host script's name), so it scans ``/proc`` for it. Outside the jail the
host is stopped or killed; in the jail it is not in sight, and the run answers.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from .attacks import (
    attack_results,
    attack_step,
    final_step,
    host_env,
    merged,
    nbagent_command,
    outside_and_jail,
    run_cli,
    wait_for_state,
    write_script,
)

SIGNAL_THE_HOST = r"""
import os, signal, time
found, sent = [], []
for entry in os.listdir("/proc"):
    if entry.isdigit() and int(entry) != os.getpid():
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if PARAMS["host_marker"].encode() in f.read():
                    found.append(int(entry))
        except OSError:
            pass
for pid in found:
    try:
        os.kill(pid, getattr(signal, PARAMS["signal"]))
        sent.append(pid)
    except OSError as exc:
        print(f"kill {pid}: {exc}")
time.sleep(1)
print("ATTACK " + json.dumps({"found": found, "signalled": sent}))
"""


def test_code_cannot_stop_the_nbagent_process(tmp_path: Path, token: str) -> None:
    def play(where: str, flags: tuple[str, ...]) -> None:
        question = f"stop the host {token} {where}"
        script = write_script(
            tmp_path / f"{where}.json",
            [attack_step(SIGNAL_THE_HOST, host_marker=question, signal="SIGSTOP"), final_step()],
        )
        notebook = tmp_path / where / "run.ipynb"
        host = subprocess.Popen(
            nbagent_command(
                "run", question, "--model", f"scripted:{script}", "-o", str(notebook), "-q", *flags
            ),
            env=host_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            if where == "outside":
                # The attack works: the host is stopped and would wait forever.
                assert wait_for_state(host.pid, "T", timeout=90) == "T"
            else:
                deadline = time.monotonic() + 150
                while host.poll() is None and time.monotonic() < deadline:
                    assert wait_for_state(host.pid, "T", timeout=0.2) is None, "the code stopped the host"
                out, err = host.communicate(timeout=5)
                assert host.returncode == 0, err[-2000:]
                assert out.strip() == "done"
                assert merged(attack_results(notebook))["signalled"] == []
        finally:
            if host.poll() is None:
                host.kill()
            host.communicate()

    outside_and_jail(play)


API_HOST = """
import json
import sys

from nbagent import Agent, ScriptedModel

replies = json.loads(open(sys.argv[1]).read())
options = {} if sys.argv[3] == "default" else {"kernel": sys.argv[3]}
agent = Agent(ScriptedModel(replies), **options)
result = agent.run("kill the host", notebook=sys.argv[2])
print("ANSWER", result.answer)
"""


def test_code_cannot_kill_a_python_api_host(tmp_path: Path, token: str) -> None:
    def play(where: str, flags: tuple[str, ...]) -> None:
        kernel = "nbagent" if where == "outside" else "default"
        host_script = tmp_path / f"api_host_{token}_{where}.py"  # each attack finds its own host only
        host_script.write_text(textwrap.dedent(API_HOST))
        script = write_script(
            tmp_path / f"{where}.json",
            [attack_step(SIGNAL_THE_HOST, host_marker=host_script.name, signal="SIGKILL"), final_step()],
        )
        notebook = tmp_path / where / "run.ipynb"
        notebook.parent.mkdir()
        proc = subprocess.run(
            [sys.executable, str(host_script), str(script), str(notebook), kernel],
            capture_output=True,
            text=True,
            timeout=150,
            env=host_env(),
            cwd=tmp_path,
        )
        if where == "outside":
            assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr[-2000:])
        else:
            assert proc.returncode == 0, proc.stderr[-2000:]
            assert "ANSWER done" in proc.stdout
            assert merged(attack_results(notebook))["signalled"] == []

    outside_and_jail(play)


def test_a_poison_task_cannot_kill_nbagent_batch(tmp_path: Path, token: str) -> None:
    # The task file's name is on the batch host's command line: the poison task looks for it.
    def play(where: str, flags: tuple[str, ...]) -> None:
        folder = tmp_path / where
        folder.mkdir()
        marker = f"tasks-{token}-{where}"  # the two batches run at once: each poison finds its own
        write_script(
            folder / "poison.json",
            [attack_step(SIGNAL_THE_HOST, host_marker=marker, signal="SIGKILL"), final_step()],
        )
        write_script(folder / "innocent.json", [final_step("'innocent answer'")])
        tasks = folder / f"{marker}.jsonl"
        tasks.write_text(
            json.dumps({"id": "poison", "question": "Poison.", "model": "scripted:poison.json"})
            + "\n"
            + json.dumps({"id": "innocent", "question": "Answer.", "model": "scripted:innocent.json"})
            + "\n"
        )
        out = folder / "out"
        command = ["batch", str(tasks), "--out", str(out), "--jobs", "1", "-q", *flags]
        first = run_cli(command, timeout=180)
        again = run_cli([*command, "--resume"], timeout=180)
        if where == "outside":
            # Killed, and killed again on every --resume: the batch never finishes.
            assert first.returncode == -signal.SIGKILL, first.stderr[-2000:]
            assert again.returncode == -signal.SIGKILL, again.stderr[-2000:]
        else:
            assert first.returncode == 0, first.stderr[-2000:]
            lines = [json.loads(line) for line in (out / "status.jsonl").read_text().splitlines()]
            assert {line["id"]: line["answer"] for line in lines} == {
                "poison": "done",
                "innocent": "innocent answer",
            }
            assert again.returncode == 0  # nothing left to run

    outside_and_jail(play)
