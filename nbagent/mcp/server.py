"""The MCP server of ``nbagent mcp``: nbagent's sessions offered as tools to another agent.

Built on the official MCP Python SDK (``mcp``). Every tool returns structured content (a JSON
object, described by the tool's output schema) and a text item a model reads; ``run_code`` also
returns the step's figures as image items. Bad arguments come back as tool errors of one sentence.

Threats this module answers for: a client (or a web page reaching a loopback port) is not the
server's user. So kernel, jail and limits come only from the server's flags; paths stay inside the
server's folder (:mod:`nbagent.mcp.sessions`); over HTTP the SDK's DNS-rebinding protection checks
Host and Origin, and off loopback every request needs the bearer token.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Annotated, Any

import anyio
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import CallToolResult, ContentBlock, ImageContent, TextContent, ToolAnnotations
from typing_extensions import TypedDict

from .._version import __version__
from ..exceptions import NbagentError
from ..models import Model
from .sessions import SessionManager, SessionSettings, step_record, step_status

INSTRUCTIONS = """\
nbagent runs Python for you in a sandboxed IPython kernel and records every call as cells of a
Jupyter notebook that re-runs. open_session starts a kernel (data files are copied beside the
notebook); run_code runs code there and returns what came of it: printed text, compact summaries
of DataFrames and figures (figures also as images), short tracebacks. Call final_answer(value) in
your code to record the answer. verify_notebook re-runs the notebook in a fresh kernel;
export_notebook writes a tidy copy (dead ends dropped) or an HTML report; close_session shuts the
kernel down. ask runs a whole nbagent agent on a question with the server's own model."""


class SessionOpened(TypedDict):
    session_id: str
    notebook: str


class CodeRun(TypedDict):
    session_id: str
    step: int
    status: str
    observation: str
    images: int
    answer: str | None


class StepRecord(TypedDict):
    step: int
    thought: str
    code: str | None
    status: str
    observation: str


class NotebookRead(TypedDict):
    session_id: str
    notebook: str
    question: str
    steps: list[StepRecord]
    answer: str | None


class Verification(TypedDict):
    session_id: str
    notebook: str
    reproduced: bool
    summary: str


class Exported(TypedDict):
    session_id: str
    path: str


class SessionClosed(TypedDict):
    notebook: str


class Answer(TypedDict):
    status: str
    answer: str | None
    notebook: str | None
    error: str | None


def _result(data: dict[str, Any], text: str | None = None, images: Sequence[str] = ()) -> CallToolResult:
    content: list[ContentBlock] = [
        TextContent(type="text", text=text if text is not None else json.dumps(data))
    ]
    content += [ImageContent(type="image", data=png, mime_type="image/png") for png in images]
    return CallToolResult(content=content, structured_content=data)


@contextlib.contextmanager
def _tool_errors() -> Iterator[None]:
    # nbagent's own errors already say what is wrong and what to do: the client gets that sentence.
    try:
        yield
    except NbagentError as exc:
        raise ToolError(str(exc)) from None


class StaticTokenVerifier:
    """Accepts the one bearer token the server was started with (compared in constant time)."""

    def __init__(self, token: str) -> None:
        self.token = token

    async def verify_token(self, token: str) -> AccessToken | None:
        if hmac.compare_digest(token.encode(), self.token.encode()):
            return AccessToken(token=token, client_id="nbagent-mcp-client", scopes=[])
        return None


def build_server(
    settings: SessionSettings,
    model: Callable[[], Model] | None = None,
    *,
    token: str | None = None,
    base_url: str = "http://127.0.0.1",
    sweep_every: float = 5.0,
    after_close: Callable[[], None] | None = None,
) -> tuple[MCPServer[Any], SessionManager]:
    """The MCP server and its session manager. ``token``: require it as a bearer token (HTTP);
    ``after_close``: called once every session is closed, as the server stops."""
    manager = SessionManager(settings, model)
    server: MCPServer[Any]

    def client_alive(owner: str) -> bool:
        # Over streamable HTTP a session belongs to an MCP session: gone once the client deleted
        # it or the SDK expired it. (Over stdio a client that leaves ends the whole process.)
        try:
            instances = server.session_manager._server_instances
        except (AttributeError, RuntimeError):
            return True
        return owner in instances

    @contextlib.asynccontextmanager
    async def lifespan(_: MCPServer[Any]) -> AsyncIterator[None]:
        async def sweep() -> None:
            while True:
                await asyncio.sleep(sweep_every)
                await manager.close_idle(client_alive)

        sweeper = asyncio.create_task(sweep())
        try:
            yield
        finally:
            sweeper.cancel()
            # Shielded: when the server is being cancelled (SIGTERM, Ctrl-C), the kernels must
            # still be shut down and the notebooks closed, not abandoned halfway.
            with anyio.CancelScope(shield=True):
                await manager.close_all()
            if after_close is not None:
                after_close()

    auth: dict[str, Any] = {}
    if token:
        auth = {
            "auth": AuthSettings(issuer_url=base_url, resource_server_url=None),  # type: ignore[arg-type]
            "token_verifier": StaticTokenVerifier(token),
        }
    server = MCPServer(
        "nbagent",
        instructions=INSTRUCTIONS,
        version=__version__,
        lifespan=lifespan,
        log_level="WARNING",
        **auth,
    )

    def owner_of(ctx: Context[Any, Any]) -> str | None:
        headers = ctx.headers
        return headers.get("mcp-session-id") if headers else None

    def client_name(ctx: Context[Any, Any]) -> str:
        # The notebook names who wrote the steps, as it names the model in nbagent run.
        try:
            name = str(ctx.session.client_params.client_info.name)
        except AttributeError:
            return "mcp-client"
        return f"mcp:{name}"[:80] if name else "mcp-client"

    @server.tool()
    async def open_session(
        ctx: Context[Any, Any],
        files: list[str] | None = None,
        notebook: str | None = None,
        question: str | None = None,
        overwrite: bool = False,
    ) -> Annotated[CallToolResult, SessionOpened]:
        """Start a sandboxed Python kernel and the notebook that records it.

        files: data files (paths inside the server's folder) copied beside the notebook, where the
        code reads them by name. notebook: where to write it (default: a new name in the server's
        folder); an existing file is refused unless overwrite is true. question: the notebook's title.
        """
        with _tool_errors():
            session = await manager.open(
                files or [], notebook, question, overwrite, owner_of(ctx), client_name(ctx)
            )
        data = {"session_id": session.id, "notebook": str(session.notebook)}
        return _result(data, f"Session {session.id} is open; its notebook is {session.notebook}.")

    @server.tool()
    async def run_code(session_id: str, code: str, thought: str = "") -> Annotated[CallToolResult, CodeRun]:
        """Run Python code in the session's kernel; state persists between calls.

        Returns the observation: printed output, compact summaries of DataFrames and figures
        (figures also as images), short tracebacks. thought: one line saying why, recorded as a
        markdown cell above the code. Call final_answer(value) to record the answer.
        """
        with _tool_errors():
            session, step = await manager.run_code(session_id, code, thought)
        answer = session.answer if step.execution is not None and step.execution.answer_bundle() else None
        data = {
            "session_id": session.id,
            "step": step.number,
            "status": step_status(step),
            "observation": step.observation.text,
            "images": len(step.observation.images),
            "answer": answer,
        }
        return _result(data, step.observation.text, step.observation.images)

    @server.tool(annotations=ToolAnnotations(read_only_hint=True))
    async def read_notebook(session_id: str) -> Annotated[CallToolResult, NotebookRead]:
        """The session's steps so far: thought, code, status and observation of each, and the answer."""
        with _tool_errors():
            session = manager.get(session_id)
        memory = session.agent.memory
        steps = [step_record(s) for s in memory.steps] if memory is not None else []
        runs = session.agent.recorder.runs if session.agent.recorder is not None else []
        data = {
            "session_id": session.id,
            "notebook": str(session.notebook),
            "question": runs[-1]["question"] if runs else "",
            "steps": steps,
            "answer": session.answer,
        }
        return _result(data)

    @server.tool()
    async def verify_notebook(session_id: str) -> Annotated[CallToolResult, Verification]:
        """Re-run the session's notebook in a fresh kernel and say whether it reproduces its outputs."""
        from ..repro.verify import averify_notebook, cell_timeout

        with _tool_errors():
            session = manager.get(session_id)
            async with session.lock:
                # The server's own kernel and sandbox flags, never the notebook's or the client's.
                report = await averify_notebook(
                    session.notebook,
                    kernel=settings.kernel,
                    timeout=cell_timeout(settings.timeout),
                    sandbox=settings.sandbox,
                )
        summary = report.summary()
        data = {
            "session_id": session.id,
            "notebook": str(session.notebook),
            "reproduced": report.ok,
            "summary": summary,
        }
        return _result(data, summary)

    @server.tool()
    async def export_notebook(
        session_id: str, tidy: bool = True, html: bool = False
    ) -> Annotated[CallToolResult, Exported]:
        """Write a copy of the session's notebook beside it: tidy (failed cells and dead ends dropped,
        verified before it is written), an HTML report, or both (the report of the tidy notebook)."""
        from ..repro.export import aexport_tidy, export_html
        from ..repro.verify import cell_timeout

        with _tool_errors():
            session = manager.get(session_id)
            if not tidy and not html:
                raise ToolError("say what to export: tidy=true (a notebook), html=true (a report), or both")
            source = session.notebook
            suffix = ".tidy.html" if tidy and html else ".tidy.ipynb" if tidy else ".html"
            target = source.with_name(source.stem + suffix)
            async with session.lock:
                if tidy:
                    result = await aexport_tidy(
                        source,
                        None if html else target,
                        kernel=settings.kernel,
                        overwrite=True,
                        timeout=cell_timeout(settings.timeout),
                        sandbox=settings.sandbox,
                    )
                    if html:
                        export_html(result.notebook, target, overwrite=True)
                else:
                    export_html(source, target, overwrite=True)
        data = {"session_id": session.id, "path": str(target)}
        return _result(data, f"Wrote {target}.")

    @server.tool(annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False))
    async def close_session(session_id: str) -> Annotated[CallToolResult, SessionClosed]:
        """Shut the session's kernel down; the notebook stays where it is."""
        with _tool_errors():
            session = await manager.close(session_id)
        data = {"notebook": str(session.notebook)}
        return _result(data, f"Session {session.id} is closed; its notebook is {session.notebook}.")

    @server.tool()
    async def ask(question: str, files: list[str] | None = None) -> Annotated[CallToolResult, Answer]:
        """Answer a question with a whole nbagent run (the server's own model writes and runs the
        code in a sandboxed kernel); returns the answer and the notebook that records the run."""
        with _tool_errors():
            result = await manager.ask(question, files or [])
        notebook = str(result.notebook_path) if result.notebook_path else None
        data = {
            "status": result.status,
            "answer": result.answer_text,
            "notebook": notebook,
            "error": result.error,
        }
        text = result.answer_text if result.answered else f"No answer ({result.status}): {result.error or ''}"
        return _result(data, f"{text}\n\nNotebook: {notebook}")

    return server, manager


def transport_security(host: str, allowed_hosts: list[str]) -> TransportSecuritySettings:
    """DNS-rebinding protection: only these Host (and matching Origin) headers are served."""
    hosts = allowed_hosts or [host]
    names = [f"[{h}]" if ":" in h and not h.startswith("[") else h for h in hosts]
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[f"{n}:*" for n in names],
        allowed_origins=[f"{scheme}://{n}:*" for n in names for scheme in ("http", "https")],
    )
