"""Reading a model's reply: the thought it wrote and the code it wants to run.

Tolerant of what real models do: ```` ```python ```` / ```` ```py ```` / bare fences, a missing
closing fence, several blocks (run in order, as one cell), a stray ``Thought:`` label, and text
after the code (a hallucinated ``Observation:`` is cut off, never run).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

_FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})[ \t]*([\w+.-]*)[^\n]*$", re.MULTILINE)
_PYTHON_TAGS = {"python", "py", "python3", "ipython", "ipython3", "pycon"}
_HALLUCINATED = re.compile(r"^\s*(Observation|Out\[\d+\])\s*:", re.MULTILINE)
_LABEL = re.compile(r"^\s*(Thought|Thoughts|Reasoning)\s*:\s*", re.IGNORECASE)


@dataclass(frozen=True)
class ParsedReply:
    """A model reply split into the thought (markdown) and the code to run (``None`` if none)."""

    thought: str
    code: str | None


def parse_reply(text: str) -> ParsedReply:
    """Split ``text`` into its thought and its code.

    Python-tagged blocks are preferred; untagged blocks count only when no block is tagged.
    Blocks tagged with another language (``text``, ``json``, ``bash``...) are never run.
    """
    cut = _HALLUCINATED.search(text)
    if cut:
        text = text[: cut.start()]
    blocks: list[tuple[str, str, int]] = []  # (tag, code, start offset)
    pos = 0
    while True:
        opening = _FENCE.search(text, pos)
        if not opening:
            break
        fence, tag = opening.group(1), opening.group(2).lower()
        body_start = opening.end() + 1
        closing = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$", re.MULTILINE)
        end = closing.search(text, body_start)
        body = text[body_start : end.start() if end else len(text)]
        blocks.append((tag, body, opening.start()))
        if not end:
            break
        pos = end.end()

    python = [b for b in blocks if b[0] in _PYTHON_TAGS]
    chosen = python or [b for b in blocks if b[0] == ""]
    thought_end = blocks[0][2] if blocks else len(text)
    thought = _LABEL.sub("", text[:thought_end].strip()).strip()
    if thought.endswith(("Code:", "code:")):
        thought = thought[: -len("Code:")].rstrip()
    code = "\n\n".join(_dedent_block(b[1]).rstrip() for b in chosen).strip("\n")
    if not code.strip():
        return ParsedReply(thought=_LABEL.sub("", text.strip()).strip(), code=None)
    return ParsedReply(thought=thought, code=code)


def _dedent_block(body: str) -> str:
    # Models sometimes indent a whole fenced block (e.g. inside a list item).
    lines = body.splitlines()
    indents = [len(line) - len(line.lstrip()) for line in lines if line.strip()]
    cut = min(indents) if indents else 0
    return "\n".join(line[cut:] for line in lines)


def assigns_name(code: str, name: str) -> bool:
    """True if ``code`` binds or deletes the global ``name``: ``def``/``class``, assignment,
    ``import ... as``, ``del``, ``for`` target, ``with ... as``, ``:=``, or any of these inside a
    function that declares it ``global``. Code that does not parse gives ``False`` (the kernel
    reports the syntax error).
    """
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return False
    return _Binder(name).binds(tree)


class _Binder(ast.NodeVisitor):
    def __init__(self, name: str) -> None:
        self.name = name
        self.found = False
        self.global_scope = True

    def binds(self, tree: ast.AST) -> bool:
        self.visit(tree)
        return self.found

    def _scope(self, node: ast.AST, own_name: str | None) -> None:
        if self.global_scope and own_name == self.name:
            self.found = True
        declared = any(isinstance(n, ast.Global) and self.name in n.names for n in ast.walk(node))
        outer, self.global_scope = self.global_scope, declared
        self.generic_visit(node)
        self.global_scope = outer

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._scope(node, node.name)

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
        self._scope(node, node.name)

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self._scope(node, node.name)

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self._scope(node, None)

    def visit_Name(self, node: ast.Name) -> None:
        if self.global_scope and node.id == self.name and isinstance(node.ctx, (ast.Store, ast.Del)):
            self.found = True

    def visit_alias(self, node: ast.alias) -> None:
        bound = node.asname or node.name.split(".")[0]
        if self.global_scope and bound == self.name:
            self.found = True
