"""``nbagent mcp`` driven by the MCP SDK's own client, as a real subprocess with real kernels.

Each server process serves several checks, to keep kernel starts few.
"""

from __future__ import annotations

import base64
import contextlib
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import nbformat
import psutil
import pytest
from conftest import PENGUINS, code
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client

from nbagent.cli import main

CANARY = "NBAGENT_TEST_CANARY_SECRET"
TOOLS = {
    "open_session",
    "run_code",
    "read_notebook",
    "verify_notebook",
    "export_notebook",
    "close_session",
    "ask",
}


def _server(root: Path, *extra: str) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "nbagent", "mcp", "--root", str(root), *extra],
        env={CANARY: "canary-value-1234", "LITELLM_LOCAL_MODEL_COST_MAP": "True"},
        cwd=str(root),
    )


async def _call(session: ClientSession, tool: str, **arguments: Any) -> Any:
    result = await session.call_tool(tool, arguments)
    assert not result.is_error, result.content[0].text  # type: ignore[union-attr]
    assert result.content[0].type == "text"  # every result carries a text item
    return result


async def _error(session: ClientSession, tool: str, **arguments: Any) -> str:
    result = await session.call_tool(tool, arguments)
    assert result.is_error
    text: str = result.content[0].text  # type: ignore[union-attr]
    return text


def test_every_tool_over_stdio_with_two_concurrent_sessions(tmp_path: Path) -> None:
    root = tmp_path / "work"
    root.mkdir()
    (root / "penguins.csv").write_bytes(PENGUINS.read_bytes())
    (root / "taken.ipynb").write_text("{}")
    script = tmp_path / "replies.json"
    script.write_text(json.dumps([code("final_answer(6 * 7)")]))

    server = _server(root, "--model", f"scripted:{script}", "--max-total-tokens", "5000")

    async def scenario() -> None:
        async with (
            stdio_client(server) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            listed = await session.list_tools()
            assert {t.name for t in listed.tools} == TOOLS
            assert all(t.output_schema for t in listed.tools)
            read_only = {t.name for t in listed.tools if t.annotations and t.annotations.read_only_hint}
            assert read_only == {"read_notebook"}

            # Two sessions open and run at the same time, each in its own kernel.
            opened: dict[str, Any] = {}

            async def open_one(name: str, arguments: dict[str, Any]) -> None:
                opened[name] = (await _call(session, "open_session", **arguments)).structured_content

            first = {"files": ["penguins.csv"], "notebook": "a.ipynb", "question": "Penguins"}
            async with anyio.create_task_group() as group:
                group.start_soon(open_one, "a", first)
                group.start_soon(open_one, "b", {})
            a, b = opened["a"]["session_id"], opened["b"]["session_id"]
            assert a != b and Path(opened["a"]["notebook"]) == root / "a.ipynb"
            ran: dict[str, Any] = {}

            async def run(name: str, sid: str, source: str, thought: str = "") -> None:
                ran[name] = await _call(session, "run_code", session_id=sid, code=source, thought=thought)

            def timed(name: str) -> str:
                # Prints its name; when it started and ended goes to a file (outputs must reproduce).
                return (
                    f"import time\nstarted = time.time()\ntime.sleep(1.5)\nx = {name!r}\nprint(x)\n"
                    f"with open('{name}.span', 'w') as f:\n    f.write(f'{{started}} {{time.time()}}')"
                )

            async with anyio.create_task_group() as group:
                group.start_soon(run, "a", a, timed("a"))
                group.start_soon(run, "b", b, timed("b"))
            assert ran["a"].structured_content["observation"] == "a"
            assert ran["b"].content[0].text == "b"
            # Each session works in a folder of its own under the root; the kernels share the clock.
            (a_start, a_end), (b_start, b_end) = (
                map(float, next(root.rglob(f"{name}.span")).read_text().split()) for name in "ab"
            )
            assert max(a_start, b_start) < min(a_end, b_end)  # they overlapped: not one after the other

            # The observation is what nbagent's model would see: a table summary, not the HTML.
            df = await _call(
                session, "run_code", session_id=a, code="import pandas as pd\npd.read_csv('penguins.csv')"
            )
            assert "rows" in df.content[0].text and "<table" not in df.content[0].text

            # The host's secrets are not in the kernel.
            leak = await _call(
                session,
                "run_code",
                session_id=a,
                code=f"import os\nprint(os.environ.get({CANARY!r}, 'absent'))",
            )
            assert leak.structured_content["observation"] == "absent"

            # Figures come back as images too.
            figure = await _call(
                session,
                "run_code",
                session_id=a,
                code="import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.title('rise')",
                thought="Plot it.",
            )
            images = [c for c in figure.content if c.type == "image"]
            assert len(images) == 1 and images[0].mime_type == "image/png"
            assert base64.b64decode(images[0].data).startswith(b"\x89PNG")
            assert "line plot" in figure.content[0].text and figure.structured_content["images"] == 1

            # A kernel that dies is restarted and its state restored, as in nbagent run.
            died = await _call(session, "run_code", session_id=b, code="import os\nos._exit(1)")
            assert died.structured_content["status"] == "died"
            assert (await _call(session, "run_code", session_id=b, code="print(x)")).content[0].text == "b"

            answered = await _call(session, "run_code", session_id=a, code="final_answer(x * 2)")
            assert answered.structured_content["answer"] == "aa"

            read = (await _call(session, "read_notebook", session_id=a)).structured_content
            assert read["question"] == "Penguins" and read["answer"] == "aa"
            assert [s["status"] for s in read["steps"]] == ["ok"] * 5
            assert read["steps"][3]["thought"] == "Plot it."

            verified = await _call(session, "verify_notebook", session_id=a)
            assert verified.structured_content["reproduced"] is True, verified.content[0].text
            exported = await _call(session, "export_notebook", session_id=a, tidy=True, html=True)
            report = Path(exported.structured_content["path"])
            assert report == root / "a.tidy.html" and "Answer" in report.read_text()

            # Bad arguments: one clear sentence each.
            assert "no open session 'nope'" in await _error(session, "run_code", session_id="nope", code="1")
            assert "outside the server's folder" in await _error(
                session, "open_session", notebook="../x.ipynb"
            )
            assert "already exists" in await _error(session, "open_session", notebook="taken.ipynb")
            assert "does not exist" in await _error(session, "open_session", files=["missing.csv"])
            assert "code is empty" in await _error(session, "run_code", session_id=a, code="  ")
            assert "say what to export" in await _error(
                session, "export_notebook", session_id=a, tidy=False, html=False
            )
            assert "code" in await _error(session, "run_code", session_id=a)  # a missing argument

            closed = await _call(session, "close_session", session_id=a)
            assert closed.structured_content == {"notebook": str(root / "a.ipynb")}
            assert "no open session" in await _error(session, "read_notebook", session_id=a)

            asked = await _call(session, "ask", question="What is 6 * 7?")
            assert (
                asked.structured_content["answer"] == "42"
                and asked.structured_content["status"] == "answered"
            )
            assert Path(asked.structured_content["notebook"]).parent == root

    anyio.run(scenario)
    nb = nbformat.read(root / "a.ipynb", as_version=4)
    roles = [c.metadata["nbagent"]["role"] for c in nb.cells]
    assert roles.count("thought") == 5 and roles.count("step") == 5 and roles[-1] == "answer"
    assert nb.metadata.nbagent.runs[-1]["status"] == "answered"
    assert nb.metadata.nbagent.runs[-1]["files"][0]["name"] == "penguins.csv"
    assert nb.metadata.nbagent.runs[-1]["model"].startswith("mcp:")  # the client that wrote the steps


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


@pytest.mark.parametrize("leaving", ["closes-stdin", "sigterm"])
def test_a_client_that_leaves_takes_its_kernels_down_and_stdout_holds_only_mcp(
    tmp_path: Path, leaving: str
) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "nbagent", "mcp", "--root", str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=tmp_path,
    )
    assert proc.stdin is not None and proc.stdout is not None

    def send(message: dict[str, Any]) -> None:
        assert proc.stdin is not None
        proc.stdin.write((json.dumps({"jsonrpc": "2.0", **message}) + "\n").encode())
        proc.stdin.flush()

    def reply(ident: int) -> dict[str, Any]:
        assert proc.stdout is not None
        while True:
            line = proc.stdout.readline()
            assert line, "the server closed its stdout"
            message = json.loads(line)  # nothing but JSON-RPC on stdout
            if message.get("id") == ident:
                return message

    try:
        send(
            {
                "id": 1,
                "method": "initialize",
                "params": {
                    "protocolVersion": "2025-06-18",
                    "capabilities": {},
                    "clientInfo": {"name": "raw-test", "version": "0"},
                },
            }
        )
        assert "result" in reply(1)
        send({"method": "notifications/initialized"})
        send({"id": 2, "method": "tools/call", "params": {"name": "open_session", "arguments": {}}})
        sid = reply(2)["result"]["structuredContent"]["session_id"]
        # Code writing straight to file descriptor 1 must not reach the protocol stream.
        source = "import os, sys\nos.write(1, b'junk on fd 1\\n')\n"
        source += "sys.__stdout__.write('more junk\\n')\nprint('ok')"
        send(
            {
                "id": 3,
                "method": "tools/call",
                "params": {"name": "run_code", "arguments": {"session_id": sid, "code": source}},
            }
        )
        assert reply(3)["result"]["structuredContent"]["status"] == "ok"
        kernels = _descendants(proc.pid)
        assert kernels, "the session's kernel should be running"
        if leaving == "sigterm":  # as clients and service managers stop a server
            proc.send_signal(signal.SIGTERM)
        else:
            proc.stdin.close()  # the client just goes away
        rest = proc.stdout.read().decode()
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        if not proc.stdin.closed:
            proc.stdin.close()
    for line in filter(None, rest.splitlines()):
        json.loads(line)
    deadline = time.monotonic() + 10
    while any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in kernels):
        assert time.monotonic() < deadline, f"left behind: {[p.cmdline() for p in kernels if p.is_running()]}"
        time.sleep(0.2)
    nb = nbformat.read(next(tmp_path.glob("nbagent-session-*.ipynb")), as_version=4)
    assert nb.metadata.nbagent.runs[-1]["status"] == "closed"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _http_server(root: Path, host: str, *extra: str) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "nbagent", "mcp", "--http", f"{host}:{port}", "--root", str(root), *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=root,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, "the HTTP server did not come up"
            time.sleep(0.2)
    try:
        yield port, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


HELLO = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "t", "version": "0"},
    },
}
POST_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    with _http_server(tmp_path, "127.0.0.1", "--token", "sesame", "--idle-timeout", "6") as (port, proc):
        yield f"http://127.0.0.1:{port}/mcp", proc


def test_off_loopback_every_request_needs_the_token_and_an_allowed_host_name(tmp_path: Path) -> None:
    with _http_server(tmp_path, "0.0.0.0", "--token", "sesame", "--allowed-host", "nbagent.test") as (
        port,
        _,
    ):
        url = f"http://127.0.0.1:{port}/mcp"
        named = {**POST_HEADERS, "Host": f"nbagent.test:{port}"}
        assert httpx2.post(url, json=HELLO, headers=named).status_code == 401
        wrong = {**named, "Authorization": "Bearer open-sesame"}
        assert httpx2.post(url, json=HELLO, headers=wrong).status_code == 401
        token = {**POST_HEADERS, "Authorization": "Bearer sesame"}
        assert httpx2.post(url, json=HELLO, headers=token).status_code == 421  # Host 127.0.0.1: not allowed
        assert httpx2.post(
            url, json=HELLO, headers={**named, **token, "Host": f"nbagent.test:{port}"}
        ).is_success


def test_streamable_http_needs_the_token_checks_the_host_and_closes_sessions_of_clients_gone_or_idle(
    http_server: tuple[str, subprocess.Popen[bytes]],
) -> None:
    url, proc = http_server
    assert httpx2.post(url, json=HELLO, headers=POST_HEADERS).status_code == 401
    bad_host = {**POST_HEADERS, "Authorization": "Bearer sesame", "Host": "attacker.example:80"}
    assert httpx2.post(url, json=HELLO, headers=bad_host).status_code == 421  # DNS rebinding refused

    def alive(processes: list[psutil.Process]) -> bool:
        return any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in processes)

    async def session_kernels(session: ClientSession) -> tuple[str, list[psutil.Process]]:
        before = set(_descendants(proc.pid))
        sid = (await _call(session, "open_session")).structured_content["session_id"]
        ran = await _call(session, "run_code", session_id=sid, code="print(6 * 7)")
        assert ran.structured_content["observation"] == "42"
        kernels = [p for p in _descendants(proc.pid) if p not in before]
        assert kernels
        return sid, kernels

    async def scenario() -> None:
        client = httpx2.AsyncClient(headers={"Authorization": "Bearer sesame"}, timeout=60)
        async with client:
            # A client that leaves (ends its MCP session) takes its kernel down before the idle timeout.
            async with (
                streamable_http_client(url, http_client=client) as (read, write, *_),
                ClientSession(read, write) as session,
            ):
                await session.initialize()
                _, left = await session_kernels(session)
            left_at = time.monotonic()
            while alive(left):
                assert time.monotonic() - left_at < 5.5, "the kernel outlived its client"
                await anyio.sleep(0.2)

            # A client that stays but stops using its session: closed after the idle timeout.
            async with (
                streamable_http_client(url, http_client=client) as (read, write, *_),
                ClientSession(read, write) as session,
            ):
                await session.initialize()
                sid, idle = await session_kernels(session)
                idle_since = time.monotonic()
                while alive(idle):  # until the idle timeout (6 s) closes it; no call in between
                    assert time.monotonic() - idle_since < 60, "the idle session's kernel lives on"
                    await anyio.sleep(0.2)
                assert "no open session" in await _error(session, "run_code", session_id=sid, code="1")

    anyio.run(scenario)


def test_mcp_flags_that_cannot_work_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NBAGENT_MCP_TOKEN", raising=False)
    assert main(["mcp", "--http", "0.0.0.0:8765", "--root", str(tmp_path)]) == 2
    assert "give a bearer token" in capsys.readouterr().err
    assert main(["mcp", "--http", "nonsense", "--root", str(tmp_path)]) == 2
    assert "is not HOST:PORT" in capsys.readouterr().err
    assert main(["mcp", "--root", str(tmp_path / "missing")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert main(["mcp", "--token", "x", "--root", str(tmp_path)]) == 2
    assert "apply to --http only" in capsys.readouterr().err
    assert main(["mcp", "--max-total-tokens", "0", "--root", str(tmp_path)]) == 2
    assert "--max-total-tokens must be a whole number of at least 1" in capsys.readouterr().err


def test_without_the_mcp_extra_the_command_says_how_to_install_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "mcp", None)  # as if the SDK were not installed
    assert main(["mcp", "--root", str(tmp_path)]) == 2
    assert "pip install 'nbagent-ai[mcp]'" in capsys.readouterr().err
