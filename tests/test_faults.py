"""Fault injection: hangs, crashes, kills and bad input, on real kernels and real processes.

No step can hang the run, crash it, leak a process or lose the notebook; each case checks what
the model was told and what the notebook holds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from conftest import PENGUINS, code, run_cli, scripted

from nbagent import Agent, Sandbox, ScriptedModel
from nbagent.agent.agent import RESERVED_FINAL_ANSWER
from nbagent.execution.outputs import OutputCollector


def cells_by_role(nb: nbformat.NotebookNode, role: str) -> list[nbformat.NotebookNode]:
    return [c for c in nb.cells if c.metadata.get("nbagent", {}).get("role") == role]


def nbagent(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nbagent", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=170,
        env={**os.environ, **(env or {})},
    )


# -- hangs -----------------------------------------------------------------------------------


def test_an_infinite_loop_is_interrupted_and_the_kernel_keeps_its_state(tmp_path: Path) -> None:
    model = scripted(
        code("answer_base = 41"),
        code("while True:\n    pass", "Loop forever."),
        code("final_answer(answer_base + 1)"),
    )
    with Agent(model, timeout=1.0) as agent:
        result = agent.run("q", notebook=tmp_path / "loop.ipynb")
    assert result.status == "answered" and result.answer == 42
    looped = result.steps[1]
    assert looped.execution is not None and looped.execution.status == "timeout"
    assert not looped.execution.restarted
    assert "[Timed out: interrupted after 1 s; the kernel kept its state.]" in looped.observation.text
    assert "KeyboardInterrupt" in looped.observation.text
    assert looped.execution.duration < 1.0 + 5.0  # the interrupt worked: no restart after the grace
    nb = nbformat.read(tmp_path / "loop.ipynb", as_version=4)
    assert cells_by_role(nb, "step")[1].metadata.tags == ["raises-exception", "skip-execution"]


def test_a_c_loop_that_ignores_sigint_is_restarted_and_the_state_restored(tmp_path: Path) -> None:
    model = scripted(
        code("import pandas as pd\npenguins = pd.read_csv('penguins.csv')\nrows = len(penguins)"),
        # deque consumes count() in C, never returning to the interpreter to see the SIGINT.
        code("import collections, itertools\ncollections.deque(itertools.count(), maxlen=0)", "Spin in C."),
        code("final_answer(rows)"),
    )
    with Agent(model, timeout=1.0) as agent:
        result = agent.run("q", files=[PENGUINS], notebook=tmp_path / "c.ipynb")
    assert result.status == "answered" and result.answer == 344
    spun = result.steps[1]
    assert spun.execution is not None and spun.execution.status == "timeout" and spun.execution.restarted
    text = spun.observation.text
    assert "ran over 1 s and ignored the interrupt for 5 s; the kernel was restarted" in text
    assert "its state was restored by re-running 1 earlier cell" in text
    # The model saw it before its next reply.
    assert "state was restored" in json.dumps(model.calls[2])


# -- deaths ----------------------------------------------------------------------------------


def test_exit_and_segfault_are_detected_fast_and_the_state_is_restored(tmp_path: Path) -> None:
    model = scripted(
        code("data = [1, 2, 3]\nimport numpy as np"),
        code("import os\nos._exit(1)", "Exit."),
        code("extra = np.array(data) * 2", "Build on the restored state."),
        code("import ctypes\nctypes.string_at(0)", "Segfault."),
        code("final_answer(int(extra.sum()) + sum(data))"),
    )
    with Agent(model, timeout=60) as agent:
        result = agent.run("q", notebook=tmp_path / "deaths.ipynb")
        assert agent.executor is not None
    assert result.status == "answered" and result.answer == 18
    exited, segfault = result.steps[1], result.steps[3]
    for step in (exited, segfault):
        assert step.execution is not None and step.execution.status == "died" and step.execution.restarted
        # Noticed by polling the process, not by waiting for the 60 s timeout.
        assert step.execution.duration < 15
    assert "[Kernel died: the kernel process exited with code 1 and was restarted" in exited.observation.text
    assert "restored by re-running 1 earlier cell" in exited.observation.text
    assert "killed by SIGSEGV (a segmentation fault)" in segfault.observation.text
    assert "restored by re-running 2 earlier cells" in segfault.observation.text
    nb = nbformat.read(tmp_path / "deaths.ipynb", as_version=4)
    died = [c for c in cells_by_role(nb, "step") if c.metadata.nbagent.status == "died"]
    assert len(died) == 2 and all(c.metadata.tags == ["raises-exception", "skip-execution"] for c in died)


def test_allocating_past_the_memory_limit_is_a_memory_error_and_the_run_goes_on(tmp_path: Path) -> None:
    model = scripted(
        code("kept = 'state'"),
        code("hog = [bytearray(100 * 2**20) for _ in range(100)]", "Take 10 GB."),
        code("final_answer(kept)"),
    )
    with Agent(model, sandbox=Sandbox(memory=2**30)) as agent:
        result = agent.run("q", notebook=tmp_path / "mem.ipynb")
    assert result.status == "answered" and result.answer == "state"
    hog = result.steps[1]
    assert hog.execution is not None and hog.execution.status == "error" and not hog.execution.restarted
    assert "MemoryError" in hog.observation.text


def test_repeated_deaths_end_the_run_with_status_kernel_died(tmp_path: Path) -> None:
    die = code("import os\nos._exit(3)", "Die.")
    (tmp_path / "s.json").write_text(json.dumps([code("x = 1"), die, die, code("final_answer(x)")]))
    proc = nbagent(
        "run", "q", "--model", "scripted:s.json", "-o", "d.ipynb", "--max-restarts", "1", cwd=tmp_path
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout == ""
    assert "kernel_died after 3 steps" in proc.stderr
    assert "the kernel had to be restarted 2 times in this run (more than max_restarts=1)" in proc.stderr
    nb = nbformat.read(tmp_path / "d.ipynb", as_version=4)
    nbformat.validate(nb)
    run = nb.metadata.nbagent.runs[0]
    assert run["status"] == "kernel_died" and "restarted 2 times" in run["error"]
    assert "the run stopped" in nb.cells[-1].source
    steps = cells_by_role(nb, "step")
    assert len(steps) == 3 and "too many restarts, so the run stops" in steps[-1].metadata.nbagent.observation


def test_a_cell_that_fails_on_replay_is_reported_as_a_partial_restore(tmp_path: Path) -> None:
    (tmp_path / "once.txt").write_text("read me once")
    model = scripted(
        code("import os\ntext = open('once.txt').read()\nos.remove('once.txt')"),
        code("kept = 2"),
        code("import os\nos._exit(1)", "Die."),
        code("final_answer(kept)"),
    )
    with Agent(model) as agent:
        # A data file, so the jailed kernel has it in its working folder.
        result = agent.run("q", files=[tmp_path / "once.txt"], notebook=tmp_path / "partial.ipynb")
    assert result.status == "answered" and result.answer == 2
    text = result.steps[2].observation.text
    assert "only partly restored by re-running 2 earlier cells" in text
    assert "step 1's cell failed (FileNotFoundError" in text
    assert "re-create what you need" in text


# -- the host process killed: resume ------------------------------------------------------------


def kernel_children(pid: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                children.append(int(entry.name))
    return children


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_sigkill_mid_run_leaves_a_valid_notebook_no_kernel_and_resume_reaches_the_answer(
    tmp_path: Path,
) -> None:
    replies = [
        code("import pandas as pd\npenguins = pd.read_csv('penguins.csv')\nrows = len(penguins)", "Load."),
        # Waits (sleeping) until the test says go: the first run is killed in here.
        code(
            "import pathlib, time\nwhile not pathlib.Path('go').exists():\n    time.sleep(0.05)\n"
            "doubled = rows * 2",
            "Wait, then double.",
        ),
        code("final_answer(doubled)", "Answer."),
    ]
    (tmp_path / "s.json").write_text(json.dumps(replies))
    nb_path = tmp_path / "crash.ipynb"
    argv = ["run", "How many rows, doubled?", "--data", str(PENGUINS), "--model", "scripted:s.json"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "nbagent", *argv, "-o", str(nb_path), "--timeout", "150"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    for line in proc.stderr:  # the step log prints step 2's code just before it runs
        if "while not pathlib.Path('go')" in line:
            break
    kernels = kernel_children(proc.pid)
    assert kernels, "the run has a kernel process"
    time.sleep(0.5)
    proc.kill()
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    # Every finished step is on disk, in a valid notebook.
    nb = nbformat.read(nb_path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.nbagent.runs[0]["status"] == "running"
    assert [c.metadata.nbagent.step for c in cells_by_role(nb, "step")] == [1]
    # The orphaned kernel notices its parent is gone and exits: nothing leaks.
    deadline = time.monotonic() + 20
    while any(alive(k) for k in kernels) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(alive(k) for k in kernels)

    # The jailed kernel's working folder is crash.work/, seen at tmp_path's path.
    (tmp_path / "crash.work" / "go").touch()
    resumed = run_cli("resume", str(nb_path), "--model", "scripted:s.json", cwd=tmp_path)  # in-process
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.strip() == "688"
    nb = nbformat.read(nb_path, as_version=4)
    nbformat.validate(nb)
    run = nb.metadata.nbagent.runs[0]
    assert run["status"] == "answered" and run["answer"] == "688" and len(run["resumed"]) == 1
    assert run["steps"] == 3
    assert [c.metadata.nbagent.step for c in cells_by_role(nb, "step")] == [1, 2, 3]
    marker = cells_by_role(nb, "marker")[0].source
    assert "the run was resumed" in marker and "the host process stopped mid-run" in marker
    assert "its state was restored by re-running 1 earlier cell" in marker
    assert "688" in cells_by_role(nb, "answer")[0].outputs[0]["data"]["text/plain"]

    # Resuming an answered notebook runs nothing and changes nothing.
    before = nb_path.read_bytes()
    again = run_cli("resume", str(nb_path), "--model", "scripted:s.json", cwd=tmp_path)
    assert again.returncode == 0 and again.stdout.strip() == "688"
    assert nb_path.read_bytes() == before


def test_agent_resume_rebuilds_memory_and_counts_steps_already_taken(tmp_path: Path) -> None:
    nb_path = tmp_path / "r.ipynb"
    plan = "Facts known: nothing yet.\nPlan: make the array, then double its sum."
    first = scripted(
        plan, code("import numpy as np\nbase = np.arange(5)\nprint('sum is', base.sum())", "Start.")
    )
    with Agent(first, max_steps=1, planning_interval=10) as agent:
        stopped = agent.run("What is the sum doubled?", notebook=nb_path)
    # A plan, one step, then the final request, which the two-reply script cannot answer.
    assert stopped.status == "error"

    model = ScriptedModel(
        ["(the plan: skipped)", "(step 1: skipped)", code("final_answer(int(base.sum()) * 2)")]
    )
    with Agent(model, max_steps=3, planning_interval=10) as agent:
        result = agent.resume(nb_path)
    assert result.status == "answered" and result.answer == 20
    assert [s.number for s in result.steps] == [1, 2]
    assert model.skipped == 2 and len(model.calls) == 1  # no new plan: 1 step done, interval 10
    # The model saw the question, its plan and step 1 as they were, rebuilt from the notebook.
    sent = json.dumps(model.calls[0])
    assert "What is the sum doubled?" in sent and "sum is 10" in sent and "Start." in sent
    assert "double its sum" in sent
    nb = nbformat.read(nb_path, as_version=4)
    assert nb.metadata.nbagent.runs[0]["status"] == "answered"
    assert "it ended: error" in cells_by_role(nb, "marker")[-1].source


def resume_bad_inputs(tmp: Path) -> dict[str, tuple[list[str], str]]:
    (tmp / "notjson.ipynb").write_text("{oops")
    nbformat.write(nbformat.v4.new_notebook(), tmp / "plain.ipynb")
    nb = nbformat.v4.new_notebook()
    nb.metadata["nbagent"] = {"runs": [{"question": "q", "model": "m", "files": [{"name": "gone.csv"}]}]}
    nb.cells.append(nbformat.v4.new_markdown_cell("# q", metadata={"nbagent": {"role": "task"}}))
    nbformat.write(nb, tmp / "nodata.ipynb")
    return {
        "missing notebook": (["nope.ipynb"], "notebook 'nope.ipynb' does not exist"),
        "not a notebook": (["notjson.ipynb"], "is not a readable .ipynb file"),
        "not nbagent's": (["plain.ipynb"], "was not written by nbagent"),
        "data file gone": (["nodata.ipynb"], "data file 'gone.csv' recorded in"),
        "unknown kernel": (["nodata.ipynb", "--kernel", "nokernel"], "unknown kernel 'nokernel'"),
        "workdir missing": (["nodata.ipynb", "--workdir", "nowhere"], "--workdir 'nowhere' is not a folder"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "missing notebook",
        "not a notebook",
        "not nbagent's",
        "data file gone",
        "unknown kernel",
        "workdir missing",
    ],
)
def test_resume_bad_input_exits_2_and_changes_nothing(tmp_path: Path, case: str) -> None:
    args, expected = resume_bad_inputs(tmp_path)[case]
    (tmp_path / "s.json").write_text(json.dumps([code("final_answer(1)")]))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    proc = run_cli("resume", *args, "--model", "scripted:s.json", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert expected in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


# -- secrets ---------------------------------------------------------------------------------


def test_a_step_reading_os_environ_finds_no_secret_and_none_lands_in_the_notebook(tmp_path: Path) -> None:
    secret = "sk-nbagent-fault-test-7f3a9c2e"
    read = code("import os\nprint('key:', os.environ.get('OPENAI_API_KEY'))\nprint(sorted(os.environ)[:3])")
    answer = code("final_answer(os.environ.get('OPENAI_API_KEY', 'no key'))")
    (tmp_path / "s.json").write_text(json.dumps([read, answer]))
    env = {"OPENAI_API_KEY": secret}

    sandboxed = nbagent(
        "run", "q", "--model", "scripted:s.json", "-o", "sandboxed.ipynb", cwd=tmp_path, env=env
    )
    assert sandboxed.returncode == 0, sandboxed.stderr
    assert sandboxed.stdout.strip() == "no key"
    nb = nbformat.read(tmp_path / "sandboxed.ipynb", as_version=4)
    assert "key: None" in cells_by_role(nb, "step")[0].outputs[0].text

    # Without the sandbox the kernel has the key; it is redacted from everything written.
    plain = nbagent(
        "run",
        "q",
        "--model",
        "scripted:s.json",
        "-o",
        "plain.ipynb",
        "--kernel",
        "nbagent",
        cwd=tmp_path,
        env=env,
    )
    assert plain.returncode == 0, plain.stderr
    assert secret not in plain.stdout + plain.stderr
    assert plain.stdout.strip() == "[redacted $OPENAI_API_KEY]"
    written = (tmp_path / "plain.ipynb").read_text()
    assert secret not in written
    nb = nbformat.read(tmp_path / "plain.ipynb", as_version=4)
    step = cells_by_role(nb, "step")[0]
    assert "key: [redacted $OPENAI_API_KEY]" in step.outputs[0].text
    assert "[redacted $OPENAI_API_KEY]" in step.metadata.nbagent.observation


# -- bad model replies -----------------------------------------------------------------------


def test_bad_replies_each_get_a_clear_observation_and_the_run_goes_on(tmp_path: Path) -> None:
    model = scripted(
        "I think the answer is probably 42, but let me not write any code.",
        code("def broken(:\n    pass", "Invalid Python."),
        code("print('x' * 10_000_000)\nprint('tail marker')", "Ten megabytes."),
        code(
            "print('bell\\x07 nul\\x00 esc\\x1b[31mred\\x1b[0m')\nnul_in_code = '\x00'", "Control characters."
        ),
        code("print('lone \ud800 surrogate')", "A lone surrogate in the code."),
        code("def final_answer(x):\n    print('fake', x)", "Redefine final_answer."),
        code("final_answer = lambda x: x", "Assign it."),
        code("final_answer('real')", "Answer."),
    )
    nb_path = tmp_path / "bad.ipynb"
    with Agent(model) as agent:
        result = agent.run("q", notebook=nb_path)
    assert result.status == "answered" and result.answer == "real"
    obs = [s.observation.text for s in result.steps]
    assert result.steps[0].execution is None and "had no ```python code block" in obs[0]
    assert "SyntaxError" in obs[1]
    assert "cut] …" in obs[2] and "tail marker" in obs[2] and len(obs[2]) < 7000
    assert "\x00" not in obs[3] and "\x07" not in obs[3] and "\x1b" not in obs[3]
    assert "SyntaxError" in obs[3] and "null" in obs[3]  # a NUL in source code does not compile
    assert result.steps[4].execution is not None and result.steps[4].execution.status == "ok"
    assert "lone ? surrogate" in obs[4]
    for refused in result.steps[5:7]:
        assert refused.observation.text == RESERVED_FINAL_ANSWER
        assert refused.execution is not None and refused.execution.execution_count is None

    nb = nbformat.read(nb_path, as_version=4)
    nbformat.validate(nb)
    big = cells_by_role(nb, "step")[1].outputs[0].text
    assert len(big) == 10_000_013  # the model saw 6,000 characters; the notebook keeps it all
    refused_cells = [
        c for c in cells_by_role(nb, "step") if "final_answer" in c.source and c.execution_count is None
    ]
    assert len(refused_cells) == 2
    assert all(c.metadata.tags == ["raises-exception", "skip-execution"] for c in refused_cells)


def test_a_flood_of_output_is_capped_in_the_notebook_and_the_run_goes_on(tmp_path: Path) -> None:
    model = scripted(
        code("for _ in range(40):\n    print('x' * 10**6)\nprint('the end')", "Forty megabytes."),
        code("final_answer('survived')"),
    )
    nb_path = tmp_path / "flood.ipynb"
    with Agent(model) as agent:
        result = agent.run("q", notebook=nb_path)
    assert result.status == "answered" and result.answer == "survived"
    flood = result.steps[0]
    assert flood.execution is not None and flood.execution.status == "ok"
    assert len(flood.observation.text) < 7000 and "the end" in flood.observation.text
    nb = nbformat.read(nb_path, as_version=4)
    text = cells_by_role(nb, "step")[0].outputs[0].text
    assert 20_000_000 <= len(text) < 20_000_200  # 10 M characters of head, 10 M of tail
    assert "characters of output left out by nbagent" in text and text.endswith("the end\n")
    assert nb_path.stat().st_size < 25_000_000


def stream_msg(text: str, name: str = "stdout") -> dict[str, object]:
    return {"header": {"msg_type": "stream"}, "content": {"name": name, "text": text}}


def test_a_stream_flood_keeps_head_and_tail_and_progress_bars_still_collapse() -> None:
    collector = OutputCollector(max_stream_chars=10_000)
    outputs = collector.begin()
    for i in range(20_000):
        collector.handle(stream_msg(f"\rprogress {i}"))
    collector.finish()
    assert [o.text for o in outputs] == ["progress 19999"]

    outputs = collector.begin()
    for i in range(5_000):
        collector.handle(stream_msg(f"line {i:05d}\n"))
    collector.finish()
    text = outputs[0].text
    assert text.startswith("line 00000\n") and text.endswith("line 04999\n")
    assert "characters of output left out by nbagent" in text
    assert len(text) < 10_100

    small = OutputCollector(max_data_chars=10_000)
    outputs = small.begin()
    for _ in range(5):
        small.handle(
            {
                "header": {"msg_type": "display_data"},
                "content": {"data": {"text/plain": "x" * 4_000}, "metadata": {}},
            }
        )
    assert len(outputs) == 3  # two kept, then one note for the three left out
    assert "3 more output(s) of this cell (12,000 characters) were left out" in outputs[-1].data["text/plain"]
