"""The settings on the command line: one flag per setting for run and resume (from config.py's
declarations), one-line errors, and what resume and verify take from a notebook (and never take)."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from conftest import code, run_cli
from http_helpers import SocketListener
from test_tools import great_circle_km

from nbagent.agent.config import AgentConfig, Setting, settings, settings_from_args
from nbagent.cli import _build_parser
from nbagent.execution.kernel import DEFAULT_KERNEL
from nbagent.execution.sandbox import DEFAULT_MEMORY, parse_size
from nbagent.repro.verify import DEFAULT_CELL_TIMEOUT, rerun_config, rerun_timeout

COMMANDS = {
    "run": ["run", "a question", "-m", "scripted:none.json"],
    "resume": ["resume", "none.ipynb", "-m", "scripted:none.json"],
}


def _sample(spec: Setting) -> tuple[list[str], Any]:
    """A valid value of ``spec`` on the command line, and the value the setting then holds."""
    flag = spec.option
    if spec.kind == "bool":
        if spec.optional or spec.default:  # --x / --no-x
            value = not spec.default if spec.default is not None else True
            return [flag if value else "--no-" + flag[2:]], value
        return [flag], True
    if spec.kind == "names":
        return [flag, "FIRST", flag, "SECOND"], ("FIRST", "SECOND")
    if spec.kind == "size":
        return [flag, "1G"], 2**30
    if spec.kind == "choice":
        other = next(c for c in spec.choices if c != spec.default)
        return [flag, other], other
    if spec.kind == "url":
        return [flag, "http://localhost:1/v1"], "http://localhost:1/v1"
    if spec.kind == "env_name":
        return [flag, "MY_MODEL_KEY"], "MY_MODEL_KEY"
    if spec.kind in ("int", "float"):
        number = (spec.minimum or 0) + (1 if spec.above or spec.minimum is None else 0)
        if spec.maximum is not None:
            number = min(number, spec.maximum)
        number = max(number, 1) if spec.group == "sandbox" else number  # 0 is "no limit" there
        return [flag, str(number)], float(number) if spec.kind == "float" else int(number)
    return [flag, "some text"], "some text"


def _parse(argv: list[str]) -> dict[str, Any]:
    parser, _ = _build_parser()
    return settings_from_args(parser.parse_args(argv))


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("name", [s.name for s in settings()])
def test_every_setting_has_its_flag_on_run_and_resume(command: str, name: str) -> None:
    spec = next(s for s in settings() if s.name == name)
    flag_argv, value = _sample(spec)
    assert _parse([*COMMANDS[command], *flag_argv])[name] == value
    # Left out, it is absent: the default (or, on resume, the notebook) decides.
    assert name not in _parse([COMMANDS[command][0], COMMANDS[command][1]])


def test_the_flags_that_existed_keep_their_names_and_meaning() -> None:
    given = _parse(
        [
            *("run", "q", "-m", "m", "--api-base", "http://h:1/v1", "--api-key", "k"),
            *("--request-timeout", "9", "--temperature", "0.5", "--max-tokens", "7", "--max-retries", "0"),
            *("--max-steps", "4", "--timeout", "2.5", "--kernel", "python3", "--sandbox", "limits"),
            *("--memory-limit", "1.5G", "--cpu-limit", "0", "--max-processes", "0", "--disk-limit", "2G"),
            *("--file-size-limit", "10M", "--allow-network", "--allow-env", "A_TOKEN", "--max-restarts", "1"),
            *("--tool", "some/tool", "--trust-tools", "--web-search", "--no-default-tools"),
            *("--planning-interval", "2", "--max-total-tokens", "100", "--max-cost", "0.5"),
            *("--observation-tokens", "60", "--no-vision"),
        ]
    )
    config = AgentConfig().replace(**given)
    sandbox = config.sandbox_spec()
    assert (config.model, config.api_base, config.api_key) == ("m", "http://h:1/v1", "k")
    assert (config.request_timeout, config.temperature, config.max_tokens, config.max_retries) == (
        9,
        0.5,
        7,
        0,
    )
    assert (config.max_steps, config.timeout, config.kernel, config.max_restarts) == (4, 2.5, "python3", 1)
    assert (sandbox.level, sandbox.memory, sandbox.cpu_time, sandbox.max_processes) == (
        "limits",
        3 * 2**29,
        None,
        None,
    )
    assert (sandbox.disk, sandbox.file_size, sandbox.network, sandbox.allow_env) == (
        2**31,
        10 * 2**20,
        True,
        ("A_TOKEN",),
    )
    assert (config.tool_sources, config.trust_tools, config.web_search, config.default_tools) == (
        ("some/tool",),
        True,
        True,
        False,
    )
    assert (config.planning_interval, config.max_total_tokens, config.max_cost) == (2, 100, 0.5)
    assert (config.observation_tokens, config.vision) == (60, False)


def _bad_values(spec: Setting) -> list[str]:
    bad = {"int": ["1.5", "x"], "float": ["x", "nan"], "size": ["lots", "512"]}[spec.kind]
    if spec.minimum is not None:
        below = spec.minimum if spec.above else spec.minimum - 1
        if not (spec.group == "sandbox" and below == 0):  # 0: no limit
            bad.append(f"{below:g}")
    return bad


NUMERIC = [(s.name, v) for s in settings() if s.kind in ("int", "float", "size") for v in _bad_values(s)]


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize(("name", "value"), NUMERIC)
def test_a_bad_number_is_one_line_naming_the_flag_exit_2(
    command: str, name: str, value: str, tmp_path: Path
) -> None:
    spec = next(s for s in settings() if s.name == name)
    proc = run_cli(*COMMANDS[command], f"{spec.option}={value}", cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"nbagent {command}: error: {spec.option}"), lines[0]
    assert list(tmp_path.iterdir()) == []


def test_a_mistyped_or_abbreviated_flag_is_an_error_naming_the_nearest(tmp_path: Path) -> None:
    for typo, meant in [
        ("--max-stesp", "--max-steps"),
        ("--max-step", "--max-steps"),
        ("--memory", "--memory-limit"),
    ]:
        proc = run_cli("run", "q", "-m", "scripted:none.json", typo, "3", cwd=tmp_path)
        assert proc.returncode == 2
        assert proc.stderr.strip().splitlines() == [
            f"nbagent run: error: unrecognized arguments: {typo} 3; did you mean {meant}?"
        ]
    proc = run_cli("run", "q", "--observation-chars", "400", "--observation-tokens", "100", cwd=tmp_path)
    assert proc.returncode == 2 and "not allowed with argument --observation-chars" in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_one_of_a_pair_given_now_is_not_overruled_by_the_other_recorded() -> None:
    recorded = {"observation_tokens": 100, "observation_chars": 6000, "max_steps": 3}
    config = AgentConfig(observation_chars=500).resumed(recorded, {"observation_chars"})
    assert (config.observation_chars, config.observation_tokens, config.max_steps) == (500, None, 3)
    assert AgentConfig().resumed(recorded).observation_tokens == 100


# -- with real kernels: what resume takes from the notebook, and what it never does ----------------


@pytest.fixture(scope="module")
def listener() -> Iterator[SocketListener]:
    server = SocketListener()
    yield server
    server.close()


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory: pytest.TempPathFactory, listener: SocketListener) -> Path:
    """A run made with --timeout 3 --observation-chars 400 --max-steps 2 --memory-limit 1G that
    stopped at its step limit; its script goes on with a probe, a 4 s step and an answer."""
    folder = tmp_path_factory.mktemp("stopped")
    canary = folder.parent / f"{folder.name}-canary.txt"
    canary.write_text("outside the run's folder")
    probe = (
        "import os, resource, socket\n"
        "print('AS', resource.getrlimit(resource.RLIMIT_AS)[0])\n"
        f"print('sees the host files', os.path.exists({str(canary)!r}))\n"
        "print('has the tool', 'great_circle_km' in dir())\n"
        "try:\n"
        f"    socket.create_connection(('127.0.0.1', {listener.port}), timeout=2).sendall(b'leak')\n"
        "    print('network: reached the host')\n"
        "except OSError as exc:\n"
        "    print('network: none', type(exc).__name__)\n"
        "print('x' * 3000)"
    )
    script = folder / "script.json"
    script.write_text(
        json.dumps(
            [
                code("a = 1"),
                code("b = 2"),
                code("c = 3"),  # the reply to "give your final answer now": not an answer
                code(probe),
                code("import time\ntime.sleep(4)\nprint('slept')"),
                code("final_answer(a + b + c)"),
            ]
        )
    )
    argv = ["run", "Sum?", "-m", f"scripted:{script}", "-o", str(folder / "run.ipynb"), "-q"]
    argv += ["--timeout", "3", "--observation-chars", "400", "--max-steps", "2", "--memory-limit", "1G"]
    proc = run_cli(*argv, cwd=folder)
    assert proc.returncode == 1, proc.stderr
    return folder


def _copy(stopped_run: Path, name: str) -> Path:
    target = stopped_run / f"{name}.ipynb"
    shutil.copy(stopped_run / "run.ipynb", target)
    return target


def _steps(path: Path) -> dict[str, dict[str, Any]]:
    """The resumed run's steps by the first line of their code: outputs' text, status, observation."""
    nb = nbformat.read(path, as_version=4)
    found = {}
    for cell in nb.cells:
        meta = cell.metadata.get("nbagent", {})
        if cell.cell_type == "code" and meta.get("role") == "step":
            text = "".join(o.get("text", "") for o in cell.outputs)
            found[cell.source.splitlines()[0]] = {"text": text, **meta}
    return found


def test_a_run_records_its_settings_and_resume_goes_on_with_them(stopped_run: Path) -> None:
    nb = nbformat.read(stopped_run / "run.ipynb", as_version=4)
    run = nb.metadata.nbagent.runs[-1]
    assert run["status"] == "max_steps"
    recorded = run["settings"]
    assert (recorded["timeout"], recorded["observation_chars"], recorded["max_steps"]) == (3.0, 400, 2)
    assert recorded["memory_limit"] == 2**30 and recorded["kernel"] == DEFAULT_KERNEL
    assert "api_key" not in recorded

    path = _copy(stopped_run, "resumed")
    proc = run_cli(
        "resume",
        str(path),
        "-m",
        f"scripted:{stopped_run / 'script.json'}",
        "--max-steps",
        "6",
        cwd=stopped_run,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "6"
    assert (
        "nbagent resume: the notebook's settings: timeout 3 s, observation_chars 400, memory_limit 1 GiB"
        in proc.stderr.splitlines()
    )
    assert "not taken from a notebook" not in proc.stderr  # nothing else differs
    steps = _steps(path)
    probe = steps["import os, resource, socket"]
    assert f"AS {2**30}" in probe["text"]  # the tighter limit the run had
    assert len(probe["observation"]) < 800 < len(probe["text"])  # the run's observation budget
    assert steps["import time"]["status"] == "timeout"  # the run's 3 s per step
    # A recorded 512M (too little for a kernel to start here) is kept too: shown by a resume of the
    # now answered notebook, which starts no kernel.
    nb = json.loads(path.read_text())
    nb["metadata"]["nbagent"]["runs"][-1]["settings"]["memory_limit"] = parse_size("512M")
    path.write_text(json.dumps(nb))
    proc = run_cli("resume", str(path), "-m", f"scripted:{stopped_run / 'script.json'}", cwd=stopped_run)
    assert proc.returncode == 0 and proc.stdout.strip() == "6"
    assert "timeout 3 s, observation_chars 400, memory_limit 512 MiB" in proc.stderr
    # -q: nothing but the answer
    quiet = _copy(stopped_run, "quiet")
    proc = run_cli(
        "resume",
        str(quiet),
        "-m",
        f"scripted:{stopped_run / 'script.json'}",
        "--max-steps",
        "6",
        "-q",
        cwd=stopped_run,
    )
    assert proc.returncode == 0 and proc.stderr == ""


def test_a_setting_given_to_resume_wins_over_the_notebook(stopped_run: Path) -> None:
    path = _copy(stopped_run, "longer")
    argv = ["resume", str(path), "-m", f"scripted:{stopped_run / 'script.json'}", "--max-steps", "6"]
    proc = run_cli(*argv, "--timeout", "8", cwd=stopped_run)
    assert proc.returncode == 0, proc.stderr
    assert "the notebook's settings: observation_chars 400, memory_limit 1 GiB" in proc.stderr
    slept = _steps(path)["import time"]
    assert slept["status"] == "ok" and "slept" in slept["text"]


def test_a_notebook_never_chooses_the_kernel_network_tools_or_looser_limits(
    stopped_run: Path, listener: SocketListener
) -> None:
    tool = great_circle_km.save(stopped_run / "a-tool")
    path = _copy(stopped_run, "forged")
    nb = json.loads(path.read_text())
    nb["metadata"]["nbagent"]["runs"][-1]["settings"].update(
        {
            "memory_limit": parse_size("1T"),
            "kernel": "python3",
            "allow_network": True,
            "sandbox": "limits",
            "tool_sources": [str(tool), "evil\x1b]52;c;Y3VybA==\x07"],  # shown escaped
            "trust_tools": True,
            "allow_env": ["HOME"],
        }
    )
    path.write_text(json.dumps(nb))
    # No flag at all: max_steps 2 comes back too, so the probe is the last step.
    proc = run_cli("resume", str(path), "-m", f"scripted:{stopped_run / 'script.json'}", cwd=stopped_run)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.splitlines()
    assert "nbagent resume: the notebook's settings: max_steps 2, timeout 3 s, observation_chars 400" in lines
    assert "\x1b" not in proc.stderr and "\\x1b]52" in proc.stderr
    left = next(line for line in lines if "not taken from a notebook" in line)
    for shown in [
        "kernel python3",
        "sandbox limits",
        "memory_limit 1 TiB",
        "allow_network on",
        "tool_sources",
        "trust_tools on",
    ]:
        assert shown in left
    probe = _steps(path)["import os, resource, socket"]["text"]
    assert f"AS {DEFAULT_MEMORY}" in probe  # the default limit, not the notebook's 1T
    assert "sees the host files False" in probe  # the jailed kernel, not python3
    assert "network: none" in probe and listener.received == []
    assert "has the tool False" in probe
    assert nbformat.read(path, as_version=4).metadata.nbagent.runs[-1]["status"] == "max_steps"

    # The same probe sees the host when the user asks for an unsandboxed kernel: the checks above can fail.
    path = _copy(stopped_run, "trusted")
    proc = run_cli(
        "resume",
        str(path),
        "-m",
        f"scripted:{stopped_run / 'script.json'}",
        "--kernel",
        "python3",
        cwd=stopped_run,
    )
    probe = _steps(path)["import os, resource, socket"]["text"]
    assert "sees the host files True" in probe and "network: reached the host" in probe
    deadline = time.monotonic() + 10
    while not listener.received and time.monotonic() < deadline:  # the listener's thread may lag
        time.sleep(0.05)
    assert listener.received == [b"leak"]


# -- verify: the step time and tighter limits from the notebook; never its kernel or network -------


def _notebook_with(*runs: dict[str, Any]) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["nbagent"] = {"runs": [{"question": "q", "model": "m", "files": [], **r} for r in runs]}
    return nb


def test_verify_takes_the_step_time_and_tighter_limits_from_the_runs() -> None:
    assert rerun_timeout(_notebook_with({})) == DEFAULT_CELL_TIMEOUT  # an older notebook: no record
    assert rerun_timeout(_notebook_with({"settings": {"timeout": 3}})) == 60
    assert rerun_timeout(_notebook_with({"settings": {"timeout": 60}})) == 120
    # Every run's cells must run again: the loosest of the runs' limits.
    assert rerun_timeout(_notebook_with({"settings": {"timeout": 3}}, {"settings": {"timeout": 90}})) == 180
    assert rerun_timeout(_notebook_with({"settings": {"timeout": 3}}, {"settings": {"timeout": None}})) == 600
    assert rerun_timeout(_notebook_with({"settings": {"timeout": "soon"}})) == DEFAULT_CELL_TIMEOUT

    forged = {
        "memory_limit": parse_size("1T"),
        "cpu_limit": 30,
        "kernel": "python3",
        "sandbox": "limits",
        "allow_network": True,
        "allow_env": ["HOME"],
    }
    sandbox = rerun_config(_notebook_with({"settings": forged})).sandbox_spec()
    assert (sandbox.memory, sandbox.cpu_time) == (DEFAULT_MEMORY, 30)
    assert (sandbox.level, sandbox.network, sandbox.allow_env) == ("jail", False, ())
    kept = rerun_config(_notebook_with({"settings": {"memory_limit": parse_size("512M")}})).sandbox_spec()
    assert kept.memory == 512 * 2**20
    # The user's flags win, looser ones too.
    given = rerun_config(_notebook_with({"settings": forged}), {"cpu_limit": None, "memory_limit": 2**30})
    assert (given.cpu_limit, given.memory_limit) == (None, 2**30)


def test_verify_passes_the_notebooks_limits_and_the_users_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import nbagent.repro.verify as verify

    seen: dict[str, Any] = {}

    def fake(notebook: Any, **kwargs: Any) -> Any:
        seen.update(kwargs)
        raise verify.UsageError("stop here")

    monkeypatch.setattr(verify, "verify_notebook", fake)
    path = tmp_path / "nb.ipynb"
    nbformat.write(
        _notebook_with({"settings": {"memory_limit": parse_size("512M"), "timeout": 3, "kernel": "python3"}}),
        path,
    )
    assert run_cli("verify", str(path), cwd=tmp_path).returncode == 2
    assert (
        seen["kernel"] is None and seen["timeout"] is None
    )  # the default kernel; the time from the notebook
    assert seen["sandbox"].memory == 512 * 2**20 and seen["sandbox"].level == "jail"
    assert (
        run_cli("verify", str(path), "--memory-limit", "3G", "--timeout", "5", cwd=tmp_path).returncode == 2
    )
    assert seen["sandbox"].memory == 3 * 2**30 and seen["timeout"] == 5
