"""``nbagent batch``: many tasks, real kernels from a warm pool, scripted models, real notebooks."""

from __future__ import annotations

import os
import pty
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from batch_helpers import (
    answering_task,
    processes_in,
    read_notebook,
    read_status,
    stream_text,
    write_batch,
)
from conftest import PENGUINS, code, run_cli

from nbagent.agent.config import AgentConfig, Setting, settings
from nbagent.batch.runner import BatchOutcome, BatchSettings
from nbagent.cli import main
from nbagent.testing.openai_server import OpenAICompatibleServer

ROWS = len(pd.read_csv(PENGUINS))


def test_a_dozen_mixed_tasks_with_two_jobs_give_valid_notebooks_statuses_and_scores(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Four plain tasks show what twelve would (own kernel and folder each), and every other kind once.
    tasks = [answering_task(f"ok{i:02d}", f"len(df) + {i}", expected=ROWS + i) for i in range(4)]
    tasks += [
        # a wrong answer: the run is ok, the score is not
        answering_task("wrong", "len(df) - 1", expected=ROWS),
        # InfiAgent-DABench format, one of two sub-answers right
        answering_task(
            "dabench",
            "f'@rows[{len(df)}], @columns[{df.shape[1] + 1}]'",
            expected=f"@rows[{ROWS}], @columns[8]",
        ),
        answering_task("text", "df.species.value_counts().idxmax()", expected="adelie"),
        answering_task(
            "params",
            "f'{region}-{year}'",
            parameters={"region": "Biscoe", "year": 2008},
            expected="Biscoe-2008",
        ),
        {
            "id": "crash",
            "question": "Crash the kernel, then answer",
            "parameters": {"region": "Dream"},
            "replies": [
                code("import os\nos._exit(1)", "Exit the kernel process."),
                code("final_answer(region)", "The parameters are back after the restart."),
            ],
            "expected": "Dream",
        },
        {
            "id": "slow",
            "question": "Sleep too long",
            "task_timeout": 3,
            "replies": [code("import time\ntime.sleep(60)")],
            "expected": 1,
        },
        {
            "id": "nostop",
            "question": "Never answer",
            "max_steps": 1,
            "replies": [code("x = 1"), code("y = 2")],
        },
        {"id": "silent", "question": "The model runs out of replies", "replies": []},
    ]
    assert len(tasks) == 12
    task_file = write_batch(tmp_path, tasks)
    out = tmp_path / "runs"

    code_ = main(["batch", str(task_file), "--out", str(out), "--jobs", "2"])
    captured = capsys.readouterr()

    assert code_ == 1, captured.err  # some tasks did not end ok
    status = read_status(out)
    assert sorted(r["id"] for r in status) == sorted(t["id"] for t in tasks)
    by_id = {r["id"]: r for r in status}

    for i in range(4):
        record = by_id[f"ok{i:02d}"]
        assert record["status"] == "ok" and record["answer"] == str(ROWS + i)
        assert record["correct"] is True and record["scoring"] == "numeric"
        assert record["steps"] == 2 and record["tokens"] > 0 and record["error"] is None
        assert record["notebook"] == f"ok{i:02d}/ok{i:02d}.ipynb"
    assert by_id["wrong"]["status"] == "ok" and by_id["wrong"]["correct"] is False
    assert by_id["dabench"]["scoring"] == "dabench" and by_id["dabench"]["score"] == 0.5
    assert by_id["dabench"]["correct"] is False
    assert by_id["text"]["scoring"] == "exact" and by_id["text"]["correct"] is True  # "Adelie"
    assert by_id["params"]["answer"] == "Biscoe-2008" and by_id["params"]["correct"] is True
    assert by_id["crash"]["status"] == "ok" and by_id["crash"]["answer"] == "Dream"
    assert by_id["slow"]["status"] == "timeout" and by_id["slow"]["correct"] is False
    assert "time limit of 3 s" in by_id["slow"]["error"]
    assert by_id["slow"]["duration"] < 30
    assert by_id["nostop"]["status"] == "failed" and "within 1 steps" in by_id["nostop"]["error"]
    assert by_id["silent"]["status"] == "error" and "no reply left" in by_id["silent"]["error"]

    # Every notebook is valid; each task had its own kernel, working in the task's own folder.
    pids = set()
    for i in range(4):
        folder = out / f"ok{i:02d}"
        nb = read_notebook(folder / f"ok{i:02d}.ipynb")
        text = stream_text(nb)
        pids.add(int(re.search(r"pid (\d+)", text).group(1)))  # type: ignore[union-attr]
        assert f"cwd {folder.resolve()}" in text
        assert (folder / "penguins.csv").is_file()
        # setup, tools, the two steps, the answer cell
        assert [c.execution_count for c in nb.cells if c.cell_type == "code"] == [1, 2, 3, 4, 5]
    # Each kernel is pid 2 (after bwrap's init) of a pid namespace of its own; the execution
    # counts above show that no kernel served two tasks.
    assert pids == {2}

    crash = read_notebook(out / "crash" / "crash.ipynb")
    crashed = [c for c in crash.cells if "os._exit" in c.source]
    assert crashed and "skip-execution" in crashed[0].metadata.tags
    slow = read_notebook(out / "slow" / "slow.ipynb")
    assert "time limit of 3 s" in slow.cells[-1].source
    assert slow.metadata.nbagent.runs[-1]["status"] == "timeout"

    # The summary reports counts and accuracy; progress went to stderr, one line per task.
    assert "ok 9 · failed 1 · timeout 1 · error 1" in captured.out
    assert "accuracy 7/10" in captured.out  # 4 + text + params + crash; wrong, dabench, slow
    assert len(re.findall(r"^\[\s*\d+/12\] ", captured.err, re.MULTILINE)) == 12
    assert not (out / ".pool").exists()
    assert processes_in(out) == []


def test_parameters_cell_is_tagged_and_its_variables_exist_for_the_model(tmp_path: Path) -> None:
    task = answering_task(
        "p1",
        "region * 2",
        parameters={"region": "Biscoe", "limits": {"low": 1.5, "high": None}, "years": [2007, 2008]},
    )
    task_file = write_batch(tmp_path, [task])
    out = tmp_path / "runs"
    assert main(["batch", str(task_file), "--out", str(out), "-q", "--no-fork"]) == 0
    nb = read_notebook(out / "p1" / "p1.ipynb")
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    setup, params = code_cells[0], code_cells[2]  # the tools' cell is between them
    assert setup.metadata.tags == ["nbagent-setup"]
    assert params.metadata.tags == ["parameters"]
    assert params.source == (
        "# Parameters\nregion = 'Biscoe'\nlimits = {'low': 1.5, 'high': None}\nyears = [2007, 2008]\n"
    )
    assert read_status(out)[0]["answer"] == "BiscoeBiscoe"
    assert nb.metadata.nbagent.runs[0]["parameters"]["years"] == [2007, 2008]


def test_sigint_stops_the_batch_and_resume_runs_exactly_the_missing_tasks(tmp_path: Path) -> None:
    tasks = [
        {
            "id": f"s{i}",
            "question": f"Slow task {i}",
            "replies": [code("import time\ntime.sleep(1)"), code(f"final_answer({i})")],
            "expected": i,
        }
        for i in range(5)
    ]
    task_file = write_batch(tmp_path, tasks)
    out = tmp_path / "runs"
    cmd = [sys.executable, "-m", "nbagent", "batch", str(task_file), "--out", str(out), "--jobs", "2"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    status = out / "status.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        # Stop it once two tasks are done and another is mid-run (its notebook begun).
        finished = {r["id"] for r in read_status(out)} if status.exists() else set()
        running = [
            t["id"]
            for t in tasks
            if t["id"] not in finished and (out / t["id"] / f"{t['id']}.ipynb").exists()
        ]
        if len(finished) >= 2 and running:
            break
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "run again with --resume" in stdout
    first = [r["id"] for r in read_status(out)]
    assert 2 <= len(first) < 5, first
    assert processes_in(out) == []  # every kernel was stopped
    interrupted = [
        t["id"] for t in tasks if t["id"] not in first and (out / t["id"] / f"{t['id']}.ipynb").exists()
    ]
    assert interrupted, "a task should have been cut short mid-run"
    cut = read_notebook(out / interrupted[0] / f"{interrupted[0]}.ipynb")
    assert "interrupted" in cut.cells[-1].source

    # Without --resume the folder is refused: nothing is overwritten. (In-process from here on: the
    # real process above was needed for its SIGINT.)
    again = run_cli(*cmd[3:], cwd=tmp_path)
    assert again.returncode == 2 and "--resume" in again.stderr

    resumed = run_cli(*cmd[3:], "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    records = read_status(out)
    ids = [r["id"] for r in records]
    assert ids[: len(first)] == first
    assert sorted(ids[len(first) :]) == sorted(set(t["id"] for t in tasks) - set(first))
    assert len(ids) == len(set(ids)) == 5
    assert all(r["status"] == "ok" and r["correct"] for r in records)
    redone = read_notebook(out / interrupted[0] / f"{interrupted[0]}.ipynb")
    assert not any("interrupted" in c.source for c in redone.cells)  # replaced, not merged
    assert redone.cells[-1].metadata["nbagent"]["role"] == "answer"
    assert f"{len(first)} in earlier runs" in resumed.stdout


def test_bad_task_file_is_one_clear_error_and_nothing_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    task_file = tmp_path / "tasks.jsonl"
    task_file.write_text(
        '{"id": "a", "question": "fine"}\n{"id": "b", "question": "bad", "max_steps": "ten"}\n'
    )
    out = tmp_path / "runs"
    assert main(["batch", str(task_file), "--out", str(out), "--model", "scripted:none.json"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"{task_file}, line 2, field 'max_steps'" in err and "'ten'" in err
    assert not out.exists()


def test_missing_model_file_and_unknown_kernel_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    task_file = write_batch(tmp_path, [{"id": "a", "question": "q"}])
    out = tmp_path / "runs"
    assert main(["batch", str(task_file), "--out", str(out), "--model", "scripted:nope.json"]) == 2
    assert "nope.json" in capsys.readouterr().err
    assert main(["batch", str(task_file), "--out", str(out), "--kernel", "no-such-kernel"]) == 2
    assert "unknown kernel" in capsys.readouterr().err
    assert not out.exists()


def test_batch_reaches_a_real_http_model_with_api_base(tmp_path: Path) -> None:
    tasks = [{"id": f"h{i}", "question": "What is 6 times 7?", "expected": 42} for i in range(2)]
    task_file = write_batch(tmp_path, tasks)
    out = tmp_path / "runs"
    # A real process: litellm's HTTP clients live and die with it, as they do for a user.
    env = {**os.environ, "OPENAI_API_KEY": "test-key", "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    # The first reply answers the check made before the first task (a one-token question).
    with OpenAICompatibleServer(["OK"] + [code("final_answer(6 * 7)")] * 2) as server:
        done = subprocess.run(
            [
                *(sys.executable, "-m", "nbagent", "batch", str(task_file), "--out", str(out), "--jobs", "2"),
                *("--model", "openai/scripted-model", "--api-base", server.url, "-q"),
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=170,
        )
        assert len(server.requests) == 3
        assert server.requests[0]["max_tokens"] == 1
    assert done.returncode == 0, done.stderr
    assert [r["correct"] for r in read_status(out)] == [True, True]


def test_cluster_without_dask_installed_says_how_to_install_it(tmp_path: Path) -> None:
    task_file = write_batch(tmp_path, [{"id": "a", "question": "q", "replies": []}])
    script = (
        "import sys\nsys.modules['distributed'] = None\nfrom nbagent.cli import main\n"
        f"sys.exit(main(['batch', {str(task_file)!r}, '--cluster', 'tcp://127.0.0.1:1']))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "pip install 'nbagent-ai[dask]'" in done.stderr
    assert "Traceback" not in done.stderr


def test_progress_is_a_rich_bar_on_a_terminal(tmp_path: Path) -> None:
    tasks = [answering_task(f"p{i}", str(i), expected=i) for i in range(2)]
    tasks.append({"id": "bad", "question": "No replies", "replies": []})
    task_file = write_batch(tmp_path, tasks)
    out = tmp_path / "runs"
    leader, follower = pty.openpty()
    os.set_inheritable(follower, True)
    env = {**os.environ, "COLUMNS": "100", "TERM": "xterm"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "nbagent", "batch", str(task_file), "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=follower,
        env=env,
        text=True,
    )
    os.close(follower)
    screen = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed: the batch has exited
            break
        if not chunk:
            break
        screen += chunk
    stdout = proc.communicate(timeout=120)[0]
    os.close(leader)
    text = screen.decode("utf-8", "replace")
    assert proc.returncode == 1
    assert "nbagent batch" in text and "3/3" in text and "━" in text  # rich's bar and M/N count
    assert "bad: error: scripted model" in re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)
    assert "[1/3]" not in text  # no plain log lines on a terminal
    assert "ok 2 · failed 0 · timeout 0 · error 1" in stdout


PLAN = "## Facts known\nA file.\n\n## Facts to find\nIts size.\n\n## Plan\n1. Look.\n2. Answer."


def test_run_settings_take_effect_in_batch_and_a_task_may_change_its_own(tmp_path: Path) -> None:
    probe = code(
        "import resource\nprint('AS', resource.getrlimit(resource.RLIMIT_AS)[0])\n"
        "print('tools', 'list_files' in globals())\nprint('x' * 3000)"
    )
    replies = [PLAN, probe, code("final_answer(1)")]
    tasks = [
        {"id": "wide", "question": "q", "replies": replies, "expected": 1},
        {
            "id": "own",
            "question": "q",
            "replies": replies,
            "expected": 1,
            "observation_chars": 1000,
            "seed": 7,
        },
    ]
    task_file = write_batch(tmp_path, tasks)
    out = tmp_path / "runs"
    flags = ["--observation-chars", "300", "--planning-interval", "5", "--no-default-tools"]
    flags += ["--sandbox", "limits", "--memory-limit", "3G", "-q", "--no-fork"]
    assert main(["batch", str(task_file), "--out", str(out), *flags]) == 0
    assert [r["correct"] for r in read_status(out)] == [True, True]

    observed = {}
    for task_id, chars, seed in (("wide", 300, 0), ("own", 1000, 7)):
        nb = read_notebook(out / task_id / f"{task_id}.ipynb")
        meta = nb.metadata.nbagent
        recorded = meta.runs[-1]["settings"]
        assert (recorded["observation_chars"], recorded["seed"]) == (chars, seed)
        assert (recorded["planning_interval"], recorded["default_tools"]) == (5, False)
        assert (recorded["sandbox"], recorded["memory_limit"]) == ("limits", 3 * 2**30)
        assert meta.environment["kernel"] == "nbagent-sandbox"
        # ...and they took effect: a plan, no default tools, the kernel's memory limit, the cut.
        roles = [c.metadata.get("nbagent", {}).get("role") for c in nb.cells]
        assert "plan" in roles and "tools" not in roles
        text = stream_text(nb)
        assert f"AS {3 * 2**30}" in text and "tools False" in text
        [step] = [
            c for c in nb.cells if c.metadata.get("nbagent", {}).get("role") == "step" and "AS" in c.source
        ]
        observed[task_id] = len(step.metadata.nbagent["observation"])
    assert observed["wide"] <= 400 < observed["own"] <= 1100, observed


def _flag_values(spec: Setting) -> tuple[list[str], Any]:
    """Command-line words giving ``spec`` a value other than its default, and that value."""
    if spec.kind == "bool":
        if spec.default is True:
            return ["--no-" + spec.option[2:]], False
        return [spec.option], True
    choices = [c for c in spec.choices if c != spec.default]
    text = {
        "int": str(int(spec.minimum or 0) + 1),
        "float": "1.5",
        "size": "512M",
        "names": "SOME_NAME",
        "choice": choices[0] if choices else "",
        "url": "http://localhost:1/v1",
        "env_name": "SOME_KEY_VARIABLE",
        "str": "python3" if spec.name == "kernel" else "some text",
    }[spec.kind]
    return [spec.option, text], spec.parse(text)


@pytest.mark.parametrize("spec", settings(), ids=lambda s: s.name)
def test_batch_takes_every_setting_of_run_as_a_flag(
    spec: Setting, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import nbagent.batch.runner

    given: list[BatchSettings] = []

    async def run_batch(tasks: Any, settings: BatchSettings, **_: Any) -> BatchOutcome:
        given.append(settings)
        return BatchOutcome(records={})

    monkeypatch.setattr(nbagent.batch.runner, "run_batch", run_batch)
    task_file = write_batch(tmp_path, [{"id": "a", "question": "q"}])
    words, value = _flag_values(spec)
    done = run_cli("batch", str(task_file), *words, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    [settings_] = given
    assert getattr(settings_.config, spec.name) == value
    assert settings_.config == AgentConfig().replace(**{spec.name: value})  # nothing else changed


def test_batch_flags_are_checked_like_run_s_and_approve_is_refused(tmp_path: Path) -> None:
    task_file = write_batch(tmp_path, [{"id": "a", "question": "q", "replies": []}])
    out = tmp_path / "runs"
    for words, says in (
        (["--memory-limit", "512"], "below the smallest limit"),
        (["--observation-chars", "10"], "at least 200"),
        (["--max-stepz", "3"], "unrecognized arguments: --max-stepz"),
        (["--approve"], "unattended"),
        (["--tool", str(tmp_path)], "--trust-tools"),
        (["--total-cost", "0"], "--total-cost must be a positive"),
    ):
        done = run_cli("batch", str(task_file), "--out", str(out), *words, cwd=tmp_path)
        assert done.returncode == 2, (words, done.stderr)
        assert says in done.stderr.strip().splitlines()[-1], (words, done.stderr)  # after argparse's usage
    assert not out.exists()


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"max_step": 3}, "field 'max_step': unknown field 'max_step'; did you mean 'max_steps'?"),
        ({"memory_limit": "2G"}, "field 'memory_limit': memory_limit is batch-wide"),
        ({"api_key": "sk-in-a-file"}, "field 'api_key': not allowed in a task file"),
    ],
)
def test_a_wrong_task_field_is_one_line_naming_file_line_and_field(
    tmp_path: Path, fields: dict[str, Any], says: str
) -> None:
    task_file = write_batch(tmp_path, [{"id": "a", "question": "q"}, {"id": "b", "question": "q", **fields}])
    done = run_cli("batch", str(task_file), "--out", "runs", "-m", "scripted:none.json", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith(f"nbagent batch: error: {task_file}, line 2, {says}"), done.stderr
    assert len(done.stderr.splitlines()) == 1 and "sk-in-a-file" not in done.stderr
    assert not (tmp_path / "runs").exists()
