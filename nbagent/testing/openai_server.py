"""Test helpers: a loopback OpenAI-compatible server that replies from a script.

Use it to drive the real HTTP path (litellm, huggingface_hub, any OpenAI client) without a
network or an API key::

    with OpenAICompatibleServer(["```python\\nfinal_answer(42)\\n```"]) as server:
        agent = Agent(LiteLLMModel("openai/any", api_base=server.url, api_key="test"))

Each script item is a reply string, or a dict:

- ``{"reply": "...", "prompt_tokens": 10, "completion_tokens": 5}``: a reply with given usage;
- ``{"status": 429, "retry_after": 0}``: an HTTP error (any status), optionally with Retry-After;
- ``{"reply": "...", "usage": false}``: a reply without a ``usage`` object, as some servers send.

:class:`LoopbackHTTPServer` is the scaffolding (port, thread, context manager) it shares with
:class:`nbagent.testing.openai_server.LoopbackHub`.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

_Server = TypeVar("_Server", bound="LoopbackHTTPServer")


class LoopbackHTTPServer:
    """An HTTP server on 127.0.0.1 (a free port) that serves from a background thread.

    A subclass gives the request handler (a :class:`LoopbackRequestHandler`) in ``_handler_class``;
    use it as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    thread_name = "loopback"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL to give clients (``http://127.0.0.1:PORT``)."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self: _Server) -> _Server:
        """Serve in a background thread."""
        self._thread = threading.Thread(target=self._httpd.serve_forever, name=self.thread_name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self: _Server) -> _Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _handler_class(self) -> type[LoopbackRequestHandler]:
        raise NotImplementedError


class LoopbackRequestHandler(BaseHTTPRequestHandler):
    """A quiet HTTP/1.1 handler with helpers to send a body or JSON (no body in reply to HEAD)."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # a test's output is not the place for an access log

    def _reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in {"Content-Type": "application/json", **(headers or {})}.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self._reply(status, json.dumps(payload).encode(), headers)


class OpenAICompatibleServer(LoopbackHTTPServer):
    """Serves ``POST /v1/chat/completions`` (non-streaming) on 127.0.0.1 from a script.

    ``requests`` holds the JSON bodies received, in order, so tests can check what was sent.
    """

    thread_name = "openai-loopback"

    def __init__(self, script: Sequence[str | dict[str, Any]], *, model: str = "scripted-model") -> None:
        self.script = list(script)
        self.model = model
        self.requests: list[dict[str, Any]] = []
        super().__init__()

    @property
    def url(self) -> str:
        """Base URL to give clients (``http://127.0.0.1:PORT/v1``)."""
        return f"{super().url}/v1"

    def _next(self, body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self.requests.append(body)
            if not self.script:
                return {"status": 500, "error": "the loopback server's script is exhausted"}
            item = self.script.pop(0)
        return {"reply": item} if isinstance(item, str) else dict(item)

    def _handler_class(self) -> type[LoopbackRequestHandler]:
        server = self

        class Handler(LoopbackRequestHandler):
            def do_GET(self) -> None:
                if self.path.rstrip("/").endswith("/models"):
                    self._send_json(
                        200, {"object": "list", "data": [{"id": server.model, "object": "model"}]}
                    )
                else:
                    self._send_json(404, {"error": {"message": f"no route {self.path}"}})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                except json.JSONDecodeError:
                    self._send_json(400, {"error": {"message": "invalid JSON"}})
                    return
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._send_json(404, {"error": {"message": f"no route {self.path}"}})
                    return
                item = server._next(body)
                status = int(item.get("status", 200))
                if status != 200:
                    headers = {}
                    if "retry_after" in item:
                        headers["Retry-After"] = str(item["retry_after"])
                    message = item.get("error", f"scripted HTTP {status}")
                    self._send_json(
                        status,
                        {"error": {"message": message, "type": "scripted", "code": status}},
                        headers,
                    )
                    return
                text = item["reply"]
                for s in body.get("stop") or []:
                    if s and s in text:
                        text = text[: text.index(s)]
                prompt = json.dumps(body.get("messages", []))
                usage = {
                    "prompt_tokens": int(item.get("prompt_tokens", max(1, len(prompt) // 4))),
                    "completion_tokens": int(item.get("completion_tokens", max(1, len(text) // 4))),
                }
                usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
                ident = "chatcmpl-" + uuid.uuid4().hex[:12]
                created = int(time.time())
                model = body.get("model", server.model)
                self._send_json(
                    200,
                    {
                        "id": ident,
                        "object": "chat.completion",
                        "created": created,
                        "model": model,
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": text},
                                "finish_reason": "stop",
                            }
                        ],
                        **({"usage": usage} if item.get("usage", True) is not False else {}),
                    },
                )

        return Handler
