"""Host-side tools: called from kernel code through the host bridge, recorded, replayed on re-runs."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import nbformat
import pandas as pd
import pytest
from conftest import code, scripted
from nbclient import NotebookClient
from nbformat import NotebookNode

from nbagent import Agent, ErrorInfo, Execution, WebSearchTool, tool
from nbagent.tools.toolbox import REPLAY_TAG


def _role(cell: Any) -> str | None:
    return cell.metadata.get("nbagent", {}).get("role")


def test_host_tool_called_from_the_kernel_returns_its_result_and_the_call_is_in_the_notebook(
    tmp_path: Path,
) -> None:
    # A client made in the test's own thread: host tools run in the agent's thread, so it works.
    db = sqlite3.connect(":memory:")
    db.executescript(
        "create table city(name text, country text, population int);"
        "insert into city values ('Lyon', 'FR', 522250), ('Nice', 'FR', 342669), ('Turin', 'IT', 848885);"
    )

    @tool(host=True)
    def query(sql: str, limit: int = 100) -> pd.DataFrame:
        """Run a read-only SQL query on the city database.

        Args:
            sql: a SELECT statement over the table city(name, country, population).
            limit: the most rows to return.
        """
        return pd.read_sql_query(f"select * from ({sql}) limit {int(limit)}", db)

    model = scripted(
        code(
            "big = query('select name, population from city where country = \\'FR\\' order by name')\n"
            "print(type(big).__name__, big.population.sum())\n"
            "try:\n"
            "    query('select nope from city')\n"
            "except HostToolError as e:\n"
            "    print('failed:', e)",
            "Ask the database.",
        ),
        code("final_answer(big.set_index('name').population.to_dict())"),
    )
    notebook = tmp_path / "cities.ipynb"
    agent = Agent(model, tools=[query])
    try:
        result = agent.run("French city populations?", notebook=notebook)
        bridge = agent.toolbox.bridge
        assert bridge is not None and bridge.address is not None
        address = bridge.address
        # The bridge is a unix socket in a folder only this user can enter, not a TCP port.
        assert stat.S_ISSOCK(os.stat(address).st_mode)
        assert stat.S_IMODE(os.stat(Path(address).parent).st_mode) == 0o700
    finally:
        agent.close()
    assert not Path(address).exists()  # closing the agent removes the socket

    assert result.answer == {"Lyon": 522250, "Nice": 342669}
    observation = result.steps[0].observation.text
    assert observation.startswith("DataFrame 864919")
    assert "failed: query() failed on the host: DatabaseError" in observation
    assert "no such column: nope" in observation

    nb = nbformat.read(notebook, as_version=4)
    roles = [_role(c) for c in nb.cells]
    assert roles == [
        "task",
        "setup",
        "tools",
        "host-replay",
        "thought",
        "step",
        "host-calls",
        "thought",
        "step",
        "answer",
    ]
    setup = nb.cells[2].source  # the tools' cell, after the setup cell
    assert "def query(sql: str, limit: int = 100):" in setup  # a stub: the body calls the host
    assert "_nbagent_host.call('query'" in setup
    assert "read_sql_query" not in setup  # the body stays on the host
    assert "_nbagent_host.connect" not in setup  # the live address is not recorded
    step = nb.cells[5]
    calls = step.metadata["nbagent"]["host_calls"]
    assert [c["tool"] for c in calls] == ["query", "query"]
    assert [c["status"] for c in calls] == ["ok", "error"]
    assert calls[0]["args"]["sql"]["value"].startswith("select name, population")
    note = nb.cells[6].source
    assert "`query(sql=" in note and "<DataFrame, 2 rows>" in note and "error: DatabaseError" in note
    replay = nb.cells[3]
    assert REPLAY_TAG in replay.metadata["tags"] and replay.execution_count is None
    assert "'Lyon'" in replay.source and "no such column: nope" in replay.source

    # Re-run on its own (no host): the calls are answered from the recorded results, and say so.
    rerun = nbformat.read(notebook, as_version=4)
    NotebookClient(rerun, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = rerun.cells[5].outputs
    stdout = "".join(o.get("text", "") for o in outputs if o.get("name") == "stdout")
    stderr = "".join(o.get("text", "") for o in outputs if o.get("name") == "stderr")
    assert stdout.splitlines()[0] == "DataFrame 864919"
    assert "failed: query() failed on the host: DatabaseError" in stdout
    assert stderr.count("no host connected: replayed the recorded result of query()") == 2
    answer = rerun.cells[8].outputs[0]["data"]["text/plain"]
    assert "522250" in answer


def test_a_host_call_from_an_interrupted_step_is_cancelled(tmp_path: Path) -> None:
    started, cancelled = threading.Event(), threading.Event()

    @tool(host=True)
    async def slow_lookup(key: str) -> str:
        """A lookup that takes far longer than a step may.

        Args:
            key: what to look up.
        """
        started.set()
        try:
            await asyncio.sleep(120)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return key

    model = scripted(code("slow_lookup('x')"), code("final_answer('gave up')"))
    with Agent(model, tools=[slow_lookup], timeout=3) as agent:
        result = agent.run("look up x", notebook=tmp_path / "slow.ipynb")
        calls = agent.toolbox.bridge.calls if agent.toolbox.bridge else []
    assert started.is_set() and cancelled.is_set()
    assert result.steps[0].execution is not None and result.steps[0].execution.status == "timeout"
    assert result.answer == "gave up"
    assert [c.error for c in calls] == ["cancelled: the step calling it was interrupted"]


class _SearchPage(BaseHTTPRequestHandler):
    """Serves a results page in the layout of DuckDuckGo's HTML endpoint."""

    queries: ClassVar[list[str]] = []

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
        type(self).queries.append(body)
        page = """<html><body>
        <div class="result results_links"><h2 class="result__title">
          <a rel="nofollow" class="result__a"
             href="//duckduckgo.com/l/?uddg=https%3A%2F%2Fexample.org%2Fpenguins&amp;rut=abc">Penguin
             <b>facts</b></a></h2>
          <a class="result__snippet" href="#">Gentoo penguins are the <b>third largest</b> species.</a></div>
        <div class="result"><h2><a class="result__a" href="https://example.com/ice">Sea ice</a></h2>
          <div class="result__snippet">Antarctic sea ice, explained.</div></div>
        </body></html>"""
        data = page.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def search_server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _SearchPage)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/html/"
    httpd.shutdown()
    httpd.server_close()


def test_web_search_is_an_opt_in_host_tool_that_reads_result_pages(search_server: str) -> None:
    search = WebSearchTool(endpoint=search_server)
    assert search.host and search.spec.name == "web_search"
    assert "web_search" not in Agent(scripted()).system_prompt  # opt-in only
    results = search(query="gentoo penguin size", max_results=5)
    assert results == [
        {
            "title": "Penguin facts",
            "url": "https://example.org/penguins",
            "snippet": "Gentoo penguins are the third largest species.",
        },
        {"title": "Sea ice", "url": "https://example.com/ice", "snippet": "Antarctic sea ice, explained."},
    ]
    assert _SearchPage.queries[-1] == "q=gentoo+penguin+size"
    assert search(query="gentoo", max_results=1) == results[:1]

    closed = WebSearchTool(endpoint="http://127.0.0.1:9/html/", timeout=5)
    with pytest.raises(RuntimeError, match=r"cannot reach 127.0.0.1:9.*web_search needs network"):
        closed(query="anything")


def test_values_cross_the_bridge_with_their_types() -> None:
    import numpy as np
    from PIL import Image

    from nbagent.agent.answers import decode_answer
    from nbagent.tools.bridge import decode_value, encode_value

    frame = pd.DataFrame({"city": ["Lyon", "Nice"], "pop": [522250, 342669]}).set_index("city")
    series = frame["pop"]
    assert decode_value(encode_value(frame)).equals(frame)
    back = decode_value(encode_value(series))
    assert isinstance(back, pd.Series) and back.equals(series) and back.name == "pop"
    # final_answer's payloads decode the same way
    assert decode_answer(encode_value(series)).value.equals(series)
    assert decode_value(encode_value(b"\x00\x01")) == b"\x00\x01"
    assert decode_value(encode_value({"n": np.int64(3), "xs": (1.5, None)})) == {"n": 3, "xs": [1.5, None]}
    image = decode_value(encode_value(Image.new("RGB", (3, 2), "red")))
    assert image.size == (3, 2) and image.getpixel((0, 0)) == (255, 0, 0)
    with pytest.raises(TypeError, match=r"NaN or infinite float.*cannot pass between the kernel"):
        encode_value({"x": float("nan")})
    with pytest.raises(TypeError, match=r"a builtins.object cannot pass"):
        encode_value(object())


class _InProcessExecutor:
    """Runs code in this very process and thread, blocking it, as an in-process shell executor does."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        self.namespace: dict[str, Any] = {}

    async def astart(self) -> None:
        pass

    async def ashutdown(self) -> None:
        pass

    async def ainterrupt(self) -> None:
        pass

    async def aexecute(
        self, code: str, timeout: float | None = None, *, silent: bool = False, setup: bool = False
    ) -> Execution:
        out = io.StringIO()
        error = None
        with contextlib.redirect_stdout(out):
            try:
                exec(compile(code, "<cell>", "exec"), self.namespace)
            except Exception as exc:
                error = ErrorInfo(type(exc).__name__, str(exc), "")
        outputs = [NotebookNode(output_type="stream", name="stdout", text=out.getvalue())]
        return Execution(code=code, outputs=outputs, status="ok" if error is None else "error", error=error)


@pytest.mark.timeout(60)
def test_host_tools_work_when_the_code_runs_in_the_agents_own_process(tmp_path: Path) -> None:
    @tool(host=True)
    def add_one(n: int) -> int:
        """Add one, on the host.

        Args:
            n: a number.
        """
        return n + 1

    model = scripted(code("print(add_one(41))"), code("print('no answer')"))
    with Agent(model, tools=[add_one], executor=_InProcessExecutor(tmp_path), max_steps=1) as agent:
        result = agent.run("41 + 1?")
        calls = agent.toolbox.bridge.calls if agent.toolbox.bridge else []
    assert result.steps[0].observation.text == "42"
    assert [(c.tool, c.result) for c in calls] == [("add_one", {"kind": "json", "value": 42})]


def _can_unshare_network() -> bool:
    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _can_unshare_network(), reason="needs `unshare -n` (root or user namespaces)")
def test_the_bridge_reaches_a_kernel_side_process_that_has_no_network() -> None:
    import nbagent.kernel_code.host_bridge as kernel_side
    from nbagent.tools.bridge import HostBridge

    async def scenario() -> str:
        bridge = HostBridge({"double": lambda n: n * 2})
        address = bridge.start()
        bridge.attach(asyncio.get_running_loop())
        code = (
            "import socket\n"
            f"exec(open({kernel_side.__file__!r}).read())\n"
            "try:\n"
            "    socket.create_connection(('192.0.2.1', 80), timeout=5)\n"
            "except OSError as exc:\n"
            "    print('network:', exc.strerror)\n"
            f"_nbagent_host.connect({address!r}, {bridge.token!r})\n"
            "print('double:', _nbagent_host.call('double', {'n': 21}))\n"
        )
        proc = await asyncio.create_subprocess_exec(
            "unshare", "-n", sys.executable, "-c", code, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        out, _ = await proc.communicate()
        bridge.close()
        return out.decode()

    assert asyncio.run(scenario()).splitlines() == ["network: Network is unreachable", "double: 42"]
