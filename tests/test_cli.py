"""The `nbagent run` command as a user runs it: a real process, real files, real exit codes."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from conftest import PENGUINS, REPO, code, run_cli

QUESTION = "Which penguin species has the highest mean body mass?"


def nbagent(
    *args: str, cwd: Path, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    for key in [k for k, v in full_env.items() if v == "<unset>"]:
        del full_env[key]
    return subprocess.run(
        [sys.executable, "-m", "nbagent", *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=150,
        env=full_env,
    )


def readme_example_command() -> list[str]:
    """The `nbagent run ...` part of the README's first command."""
    readme = (REPO / "README.md").read_text()
    first_block = re.search(r"```bash\n(.*?)```", readme, re.S)
    assert first_block, "README has no bash block"
    line = first_block.group(1).strip()
    part = line.split("&& ")[-1]
    argv = shlex.split(part)
    assert argv[0].endswith("nbagent") and argv[1] == "run"
    return argv[1:]


def test_the_readme_example_runs_end_to_end(tmp_path: Path) -> None:
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    proc = nbagent(*readme_example_command(), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "Gentoo"
    assert "── step 1" in proc.stderr and "KeyError" in proc.stderr
    nb = nbformat.read(tmp_path / "runs" / "penguins.ipynb", as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.nbagent.runs[0]["status"] == "answered"
    assert (tmp_path / "runs" / "penguins.csv").exists()
    figures = [
        o for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})
    ]
    assert len(figures) == 1


def write_script(path: Path, replies: list[str]) -> str:
    path.write_text(json.dumps(replies))
    return f"scripted:{path}"


def test_question_from_stdin_and_no_answer_exits_1(tmp_path: Path) -> None:
    model = write_script(tmp_path / "s.json", [code("x = 1"), code("y = 2")])
    proc = run_cli(
        "run",
        "-",
        "--model",
        model,
        "-o",
        "q.ipynb",
        "--max-steps",
        "1",
        "-q",
        cwd=tmp_path,
        stdin="What is x?\n",
    )
    assert proc.returncode == 1
    assert proc.stdout == ""
    nb = nbformat.read(tmp_path / "q.ipynb", as_version=4)
    assert nb.cells[0].source.startswith("# What is x?")
    assert nb.metadata.nbagent.runs[0]["status"] == "max_steps"


def test_model_from_the_environment_variable(tmp_path: Path) -> None:
    model = write_script(tmp_path / "s.json", [code("final_answer('from env')")])
    proc = run_cli("run", "q", "-o", "env.ipynb", "-q", cwd=tmp_path, env={"NBAGENT_MODEL": model})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "from env"


BAD_INPUTS = {
    "missing data file": (["--data", "nope.csv"], "data file 'nope.csv' does not exist"),
    "directory as data": (["--data", "adir"], "data file 'adir' is not a regular file"),
    "directory as output": (["-o", "adir"], "output 'adir' is a directory"),
    "existing output": (
        ["-o", "existing.ipynb"],
        "output 'existing.ipynb' already exists; choose another name or pass --overwrite",
    ),
    "unknown kernel": (["--kernel", "nokernel"], "unknown kernel 'nokernel'; available kernels:"),
    "script not JSON": (["--model", "scripted:notjson.json"], "is not valid JSON"),
    "script not a list": (["--model", "scripted:object.json"], "holds a JSON dict; it must be a JSON list"),
    "script bad item": (["--model", "scripted:baditem.json"], "reply #2 is a int"),
    "script missing": (
        ["--model", "scripted:missing.json"],
        "scripted model file 'missing.json' does not exist",
    ),
    "unknown model": (["--model", "no-such-provider-model"], "unknown model 'no-such-provider-model'"),
    "missing API key": (["--model", "openai/gpt-4o-mini"], "needs OPENAI_API_KEY"),
    "bad max steps": (["--max-steps", "0"], "--max-steps must be a whole number of at least 1"),
    "bad timeout": (["--timeout", "-3"], "--timeout must be a positive number of seconds"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_clear_line_exit_2_and_nothing_written(tmp_path: Path, case: str) -> None:
    (tmp_path / "adir").mkdir()
    (tmp_path / "existing.ipynb").write_text("keep me")
    (tmp_path / "notjson.json").write_text("[not json")
    (tmp_path / "object.json").write_text('{"replies": []}')
    (tmp_path / "baditem.json").write_text('["ok", 3]')
    good = write_script(tmp_path / "good.json", [code("final_answer(1)")])
    extra, expected = BAD_INPUTS[case]
    args = ["run", "a question", "--model", good, "-o", "out.ipynb", *extra]
    before = sorted(p.name for p in tmp_path.iterdir())
    proc = run_cli(*args, cwd=tmp_path, env={"OPENAI_API_KEY": None})
    assert proc.returncode == 2, proc.stderr
    assert expected in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert (tmp_path / "existing.ipynb").read_text() == "keep me"


def test_empty_question_and_no_model_are_usage_errors(tmp_path: Path) -> None:
    proc = run_cli("run", "  ", "--model", "scripted:x.json", cwd=tmp_path)
    assert proc.returncode == 2 and "the question is empty" in proc.stderr
    proc = run_cli("run", "q", cwd=tmp_path, env={"NBAGENT_MODEL": None})
    assert proc.returncode == 2 and "no model given" in proc.stderr


def test_help_and_kernels_list(tmp_path: Path) -> None:
    proc = run_cli("run", "--help", cwd=tmp_path)
    assert proc.returncode == 0 and "--max-steps" in proc.stdout
    proc = run_cli("kernels", cwd=tmp_path)
    assert proc.returncode == 0 and re.search(r"^nbagent\s", proc.stdout, re.M)
    assert run_cli(cwd=tmp_path).returncode == 2


def test_a_data_file_copied_beside_the_notebook_never_replaces_a_different_one(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "penguins.csv").write_text("different content\n")
    model = write_script(tmp_path / "s.json", [code("final_answer(1)")])
    proc = run_cli("run", "q", "--data", str(PENGUINS), "--model", model, "-o", "out/run.ipynb", cwd=tmp_path)
    assert proc.returncode == 2
    assert "would replace a different 'penguins.csv'" in proc.stderr
    assert (tmp_path / "out" / "penguins.csv").read_text() == "different content\n"
    assert not (tmp_path / "out" / "run.ipynb").exists()


def test_ctrl_c_stops_the_run_keeps_a_valid_notebook_and_exits_130(tmp_path: Path) -> None:
    model = write_script(
        tmp_path / "s.json",
        [
            code("import time\nprint('started', flush=True)\ntime.sleep(60)"),
            code("final_answer(1)"),
        ],
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "nbagent", "run", "sleepy", "--model", model, "-o", "s.ipynb"],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    for line in proc.stderr:  # the step log shows the code just before it runs
        if "time.sleep(60)" in line:
            break
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    nb = nbformat.read(tmp_path / "s.ipynb", as_version=4)
    nbformat.validate(nb)
    run = nb.metadata.nbagent.runs[0]
    assert run["status"] == "interrupted"
    stopped = [c for c in nb.cells if c.cell_type == "code" and "time.sleep(60)" in c.source]
    assert stopped and stopped[0].metadata.tags == ["raises-exception", "skip-execution"]
    # What the cell printed before the interrupt is kept, and marked as Jupyter does.
    outputs = stopped[0].outputs
    assert "started" in "".join(o.get("text", "") for o in outputs if o.get("name") == "stdout")
    assert [o["ename"] for o in outputs if o["output_type"] == "error"] == ["KeyboardInterrupt"]
    assert "interrupted" in nb.cells[-1].source
