"""Test helpers: a loopback OpenAI-compatible server that replies from a script.

Use it to drive the real HTTP path (litellm, huggingface_hub, any OpenAI client) without a
network or an API key::

    with OpenAICompatibleServer(["```python\\nfinal_answer(42)\\n```"]) as server:
        agent = Agent(LiteLLMModel("openai/any", api_base=server.url, api_key="test"))

Each script item is a reply string, or a dict:

- ``{"reply": "...", "prompt_tokens": 10, "completion_tokens": 5}``: a reply with given usage;
- ``{"reply": "...", "delay": 2.0}``: a slow server, silent for 2 s before it answers;
- ``{"reply": "...", "finish_reason": "length"}``: a reply cut off at the token limit;
- ``{"reply": None}``: a reply whose ``content`` is ``null``;
- ``{"choices": []}``: a reply without any choice;
- ``{"reply": "...", "usage": false}``: a reply without a ``usage`` object, as some servers send;
- ``{"status": 429, "retry_after": 1}``: an HTTP error (any status), optionally with Retry-After.

A request with ``"stream": true`` gets the reply as server-sent events, a few characters a chunk
(``"chunk_delay"`` seconds apart, default 0), ending with a usage chunk when the request asked
for one (``stream_options.include_usage``), as OpenAI does.

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
    """Serves ``POST /v1/chat/completions`` (plain or streamed) and ``GET /v1/models`` on 127.0.0.1.

    ``requests`` holds the JSON bodies received, in order, and ``headers`` their HTTP headers (to
    check which key was sent); ``models_requests`` counts the ``GET /v1/models`` calls.
    """

    thread_name = "openai-loopback"

    def __init__(self, script: Sequence[str | dict[str, Any]], *, model: str = "scripted-model") -> None:
        self.script = list(script)
        self.model = model
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.models_requests = 0
        super().__init__()

    @property
    def url(self) -> str:
        """Base URL to give clients (``http://127.0.0.1:PORT/v1``)."""
        return f"{super().url}/v1"

    def _next(self, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
        with self._lock:
            self.requests.append(body)
            self.headers.append(headers)
            if not self.script:
                return {"status": 500, "error": "the loopback server's script is exhausted"}
            item = self.script.pop(0)
        return {"reply": item} if isinstance(item, str) else dict(item)

    def _handler_class(self) -> type[LoopbackRequestHandler]:
        server = self

        class Handler(LoopbackRequestHandler):
            def do_GET(self) -> None:
                if self.path.rstrip("/").endswith("/models"):
                    with server._lock:
                        server.models_requests += 1
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
                item = server._next(body, {k.lower(): v for k, v in self.headers.items()})
                time.sleep(float(item.get("delay", 0)))
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
                text = item.get("reply")
                for s in body.get("stop") or []:
                    if text is not None and s and s in text:
                        text = text[: text.index(s)]
                prompt = json.dumps(body.get("messages", []))
                usage = {
                    "prompt_tokens": int(item.get("prompt_tokens", max(1, len(prompt) // 4))),
                    "completion_tokens": int(item.get("completion_tokens", max(1, len(text or "") // 4))),
                }
                usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
                head = {
                    "id": "chatcmpl-" + uuid.uuid4().hex[:12],
                    "created": int(time.time()),
                    "model": body.get("model", server.model),
                }
                finish = item.get("finish_reason", "stop")
                if body.get("stream"):
                    try:
                        self._stream(head, item, text, finish, usage, body)
                    except (BrokenPipeError, ConnectionResetError):
                        pass  # the client stopped listening (its timeout): nothing to tell it
                    return
                reported = {"usage": usage} if item.get("usage", True) is not False else {}
                choices = item.get("choices")
                if choices is None:
                    choices = [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "finish_reason": finish,
                        }
                    ]
                self._send_json(200, {**head, "object": "chat.completion", "choices": choices, **reported})

            def _stream(
                self,
                head: dict[str, Any],
                item: dict[str, Any],
                text: str | None,
                finish: str,
                usage: dict[str, int],
                body: dict[str, Any],
            ) -> None:
                # Server-sent events, as OpenAI streams: one JSON chunk per "data:" line, then [DONE].
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True
                delay = float(item.get("chunk_delay", 0))
                size = int(item.get("chunk_chars", 4))

                def send(choices: list[dict[str, Any]], **extra: Any) -> None:
                    chunk = {**head, "object": "chat.completion.chunk", "choices": choices, **extra}
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                    self.wfile.flush()

                if item.get("choices") is None:
                    send([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
                    pieces = [text[i : i + size] for i in range(0, len(text), size)] if text else []
                    for piece in pieces:
                        time.sleep(delay)
                        send([{"index": 0, "delta": {"content": piece}, "finish_reason": None}])
                    send([{"index": 0, "delta": {}, "finish_reason": finish}])
                asked = (body.get("stream_options") or {}).get("include_usage")
                if asked and item.get("usage", True) is not False:
                    send([], usage=usage)
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()

        return Handler
