"""Test helper: a loopback stand-in for the Hugging Face Hub, serving the calls nbagent makes.

huggingface_hub talks to it through its ordinary HTTP code when given ``endpoint=server.url``::

    with LoopbackHub(token="hf_test") as hub:
        tool.push_to_hub("me/weather", endpoint=hub.url, token="hf_test")
        load_tool("me/weather", endpoint=hub.url, trust_remote_code=True, cache_dir=tmp)

Only the subset of the Hub's HTTP API those calls use is served, with repos kept in memory:

- ``POST /api/repos/create``                          create a repo (409 if it exists)
- ``POST /api/validate-yaml``                         accept a README's metadata
- ``POST /api/{type}s/{owner}/{name}/preupload/{rev}`` every file goes as a regular (non-LFS) blob
- ``POST /api/{type}s/{owner}/{name}/commit/{rev}``    an NDJSON commit of base64 files
- ``HEAD|GET /[{type}s/]{owner}/{name}/resolve/{rev}/{path}``   file metadata and content

Writes need ``Authorization: Bearer <token>`` when the server has a token; ``requests`` records
every request as ``(method, path)``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from .openai_server import LoopbackHTTPServer, LoopbackRequestHandler

_API = re.compile(r"^/api/(models|datasets|spaces)/([^/]+/[^/]+)/(preupload|commit)/([^/?]+)$")
_RESOLVE = re.compile(r"^/(?:(datasets|spaces)/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")


@dataclass
class HubRepo:
    """A repo held in memory: its type, files and latest commit id."""

    repo_type: str
    files: dict[str, bytes] = field(default_factory=dict)
    commit: str = "0" * 40
    private: bool = False
    sdk: str | None = None


class LoopbackHub(LoopbackHTTPServer):
    """An in-memory Hub on 127.0.0.1 (see the module docstring for what it serves).

    ``url`` is the endpoint to give huggingface_hub (``http://127.0.0.1:PORT``).
    """

    thread_name = "hub-loopback"

    def __init__(self, *, token: str | None = "hf_test") -> None:
        self.token = token
        self.repos: dict[tuple[str, str], HubRepo] = {}
        self.requests: list[tuple[str, str]] = []
        super().__init__()

    def _handler_class(self) -> type[LoopbackRequestHandler]:
        hub = self

        class Handler(LoopbackRequestHandler):
            def _error(self, status: int, message: str) -> None:
                self._send_json(status, {"error": message}, {"X-Error-Message": message})

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _authorized(self) -> bool:
                if hub.token is None or self.headers.get("Authorization") == f"Bearer {hub.token}":
                    return True
                self._error(401, "Invalid credentials in Authorization header")
                return False

            def do_HEAD(self) -> None:
                self._resolve()

            def do_GET(self) -> None:
                self._resolve()

            def _resolve(self) -> None:
                path = urllib.parse.urlsplit(self.path).path
                hub.requests.append((self.command, path))
                match = _RESOLVE.match(path)
                if not match:
                    self._error(404, f"no route {path}")
                    return
                kind, repo_id, _revision, filename = match.groups()
                repo = hub.repos.get((kind[:-1] if kind else "model", repo_id))
                if repo is None:
                    self._reply(404, b"{}", {"X-Error-Code": "RepoNotFound", "X-Error-Message": "no repo"})
                    return
                data = repo.files.get(urllib.parse.unquote(filename))
                if data is None:
                    self._reply(404, b"{}", {"X-Error-Code": "EntryNotFound", "X-Error-Message": "no file"})
                    return
                etag = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
                self._reply(
                    200,
                    data,
                    {
                        "Content-Type": "application/octet-stream",
                        "X-Repo-Commit": repo.commit,
                        "ETag": f'"{etag}"',
                    },
                )

            def do_POST(self) -> None:
                path = urllib.parse.urlsplit(self.path).path
                hub.requests.append(("POST", path))
                body = self._body()
                if path == "/api/validate-yaml":
                    self._send_json(200, {"errors": [], "warnings": []})
                    return
                if not self._authorized():
                    return
                if path == "/api/repos/create":
                    self._create(json.loads(body or b"{}"))
                    return
                match = _API.match(path)
                if not match:
                    self._error(404, f"no route {path}")
                    return
                kind, repo_id, action, _revision = match.groups()
                repo = hub.repos.get((kind[:-1], repo_id))
                if repo is None:
                    self._reply(404, b"{}", {"X-Error-Code": "RepoNotFound", "X-Error-Message": "no repo"})
                    return
                if action == "preupload":
                    files = json.loads(body)["files"]
                    self._send_json(
                        200,
                        {
                            "files": [
                                {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                for f in files
                            ]
                        },
                    )
                else:
                    self._commit(repo, kind, repo_id, body)

            def _create(self, payload: dict[str, Any]) -> None:
                repo_type = payload.get("type") or "model"
                repo_id = f"{payload.get('organization')}/{payload.get('name')}"
                prefix = "" if repo_type == "model" else f"{repo_type}s/"
                url = f"{hub.url}/{prefix}{repo_id}"
                with hub._lock:
                    if (repo_type, repo_id) in hub.repos:  # the Hub names the repo in its 409 too
                        message = "You already created this repo"
                        self._send_json(409, {"error": message, "url": url}, {"X-Error-Message": message})
                        return
                    hub.repos[(repo_type, repo_id)] = HubRepo(
                        repo_type=repo_type,
                        private=payload.get("visibility") == "private",
                        sdk=payload.get("sdk"),
                    )
                self._send_json(200, {"url": url, "name": repo_id})

            def _commit(self, repo: HubRepo, kind: str, repo_id: str, body: bytes) -> None:
                with hub._lock:
                    for line in body.splitlines():
                        item = json.loads(line)
                        if item["key"] == "file":
                            value = item["value"]
                            repo.files[value["path"]] = base64.b64decode(value["content"])
                        elif item["key"] in ("deletedFile", "deletedFolder"):
                            repo.files.pop(item["value"]["path"], None)
                        elif item["key"] != "header":
                            self._error(400, f"unsupported commit operation {item['key']!r}")
                            return
                    digest = hashlib.sha1(repo.commit.encode() + body).hexdigest()
                    repo.commit = digest
                self._send_json(
                    200,
                    {
                        "commitUrl": f"{hub.url}/{kind}/{repo_id}/commit/{digest}",
                        "commitOid": digest,
                        "pullRequestUrl": None,
                    },
                )

        return Handler
