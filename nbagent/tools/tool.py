"""Tools: Python functions the agent's code calls like any other, defined inside the kernel.

``@tool`` turns a typed function with a docstring (summary, then an ``Args:`` section) into a
:class:`Tool`; subclass :class:`Tool` for a tool that needs setup or keeps state. The model sees each
tool as its Python signature and docstring. The kernel gets the tool's own source, with the imports
and constants it uses, and the same text is written into the notebook's setup cell, so the notebook
re-runs with nothing of nbagent installed.

A tool made with ``host=True`` runs in the agent's own process instead (it holds a database
connection, an API client or a secret): the kernel gets a stub of the same signature that calls it
through the host bridge (:mod:`nbagent.tools.bridge`), and each call is recorded in the notebook.
"""

from __future__ import annotations

import ast
import builtins
import importlib.util
import inspect
import keyword
import re
import symtable
import sys
import textwrap
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

from ..exceptions import ToolDefinitionError

RESERVED_NAMES = frozenset(
    {"final_answer", "Tool", "HostToolError", "MissingToolRequirements", "display", "print", "get_ipython"}
)
"""Names a tool may not take: the kernel's own definitions and what every cell relies on."""

_SECTION = re.compile(
    r"^(args|arguments|parameters|params|returns?|yields?|raises|examples?|notes?|see also|attributes)"
    r"\s*:\s*$",
    re.IGNORECASE,
)
_ARG_LINE = re.compile(r"^(\*{0,2}[A-Za-z_]\w*)\s*(?:\([^)]*\))?\s*:\s*(.*)$")
_BUILTIN_TYPES = frozenset({"str", "int", "float", "bool", "bytes", "list", "dict", "tuple", "set", "None"})


@dataclass(frozen=True)
class ToolParameter:
    """One input of a tool: its name, type and default as written in the source, and its doc."""

    name: str
    annotation: str
    description: str
    default: str | None = None
    """The default's source text (``None``: the argument is required)."""

    def render(self) -> str:
        """``name: type`` or ``name: type = default``, as in a ``def`` line."""
        text = f"{self.name}: {self.annotation}"
        return text if self.default is None else f"{text} = {self.default}"


@dataclass(frozen=True)
class ToolSpec:
    """What the model is told about a tool: name, description, parameters and return value."""

    name: str
    description: str
    parameters: tuple[ToolParameter, ...]
    returns: str
    returns_description: str = ""

    def signature(self) -> str:
        """The tool as a Python ``def`` with its docstring: how the prompt lists it."""
        params = ", ".join(p.render() for p in self.parameters)
        head = f"def {self.name}({params}) -> {self.returns}:"
        if len(head) > 100 and self.parameters:
            inner = "".join(f"    {p.render()},\n" for p in self.parameters)
            head = f"def {self.name}(\n{inner}) -> {self.returns}:"
        doc = [*self.description.strip().splitlines()]
        if self.parameters:
            doc += ["", "Args:"]
            for p in self.parameters:
                first, *rest = p.description.strip().splitlines() or [""]
                doc.append(f"    {p.name}: {first}")
                doc += [f"        {line.strip()}" for line in rest]
        if self.returns_description:
            doc += [
                "",
                "Returns:",
                *(f"    {line.strip()}" for line in self.returns_description.splitlines()),
            ]
        body = "\n".join(f"    {line}".rstrip() for line in doc)
        return f'{head}\n    """{body.lstrip()}\n    """'

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (kept in a saved tool's ``tool.json``)."""
        return {
            "name": self.name,
            "description": self.description,
            "parameters": [
                {"name": p.name, "type": p.annotation, "description": p.description, "default": p.default}
                for p in self.parameters
            ],
            "returns": self.returns,
            "returns_description": self.returns_description,
        }


@dataclass
class KernelDefinition:
    """What a tool puts into the kernel's setup cell."""

    code: str
    imports: list[str] = field(default_factory=list)
    """Statements the code needs before it (imports and constants), one per item."""
    needs_tool_base: bool = False
    needs_host_bridge: bool = False


def parse_docstring(doc: str) -> tuple[str, dict[str, str], str]:
    """Split a Google-style docstring into (description, {argument: description}, returns)."""
    lines = inspect.cleandoc(doc).splitlines()
    description: list[str] = []
    args: dict[str, str] = {}
    returns: list[str] = []
    section: str | None = None
    entry_indent: int | None = None
    current: str | None = None
    for line in lines:
        header = _SECTION.match(line.strip()) if not line.startswith((" ", "\t")) else None
        if header:
            word = header.group(1).lower()
            section = "args" if word in ("args", "arguments", "parameters", "params") else word
            entry_indent, current = None, None
            continue
        if section is None:
            description.append(line)
        elif section == "args":
            if not line.strip():
                continue
            indent = len(line) - len(line.lstrip())
            match = _ARG_LINE.match(line.strip())
            if match and (entry_indent is None or indent <= entry_indent):
                entry_indent = indent
                current = match.group(1).lstrip("*")
                args[current] = match.group(2).strip()
            elif current is not None:
                args[current] = (args[current] + "\n" + line.strip()).strip()
        elif section in ("returns", "return", "yields", "yield"):
            returns.append(line.strip())
    return "\n".join(description).strip(), args, "\n".join(returns).strip()


# -- reading a tool's source ---------------------------------------------------------------------


def _parse(source: str, what: str) -> ast.Module:
    try:
        return ast.parse(source)
    except SyntaxError as exc:
        raise ToolDefinitionError(f"{what}: its source does not parse ({exc})") from None


def _parameters(
    node: ast.FunctionDef | ast.AsyncFunctionDef, source: str, docs: dict[str, str], what: str, method: bool
) -> tuple[ToolParameter, ...]:
    a = node.args
    if a.vararg or a.kwarg:
        raise ToolDefinitionError(f"{what}: *args and **kwargs are not supported; name every parameter")
    positional = [*a.posonlyargs, *a.args]
    if method:
        positional = positional[1:]  # self
    given: list[ast.expr | None] = list(a.defaults)
    defaults = [None] * (len(positional) - len(given)) + given
    if len(given) > len(positional):  # a method whose `self` has a default (odd, but legal)
        defaults = given[len(given) - len(positional) :]
    pairs = [*zip(positional, defaults, strict=True), *zip(a.kwonlyargs, a.kw_defaults, strict=True)]
    params = []
    for arg, default in pairs:
        if arg.annotation is None:
            raise ToolDefinitionError(
                f"{what}: parameter {arg.arg!r} has no type hint; write it as `{arg.arg}: str` (or its type)"
            )
        if arg.arg not in docs or not docs[arg.arg]:
            raise ToolDefinitionError(
                f"{what}: parameter {arg.arg!r} is not described in the docstring; add it under "
                f"'Args:' as a line '    {arg.arg}: what it is'"
            )
        params.append(
            ToolParameter(
                name=arg.arg,
                annotation=ast.get_source_segment(source, arg.annotation) or ast.unparse(arg.annotation),
                description=docs[arg.arg],
                default=None if default is None else ast.get_source_segment(source, default),
            )
        )
    unknown = set(docs) - {p.name for p in params}
    if unknown:
        raise ToolDefinitionError(
            f"{what}: the docstring describes {', '.join(sorted(unknown))}, which the signature does not have"
        )
    return tuple(params)


def _returns(node: ast.FunctionDef | ast.AsyncFunctionDef, source: str, what: str) -> str:
    if node.returns is None:
        raise ToolDefinitionError(f"{what}: it has no return type; add one, e.g. `-> str` or `-> dict`")
    return ast.get_source_segment(source, node.returns) or ast.unparse(node.returns)


def _free_names(source: str) -> set[str]:
    """Names ``source`` reads from its module (not defined in it, not builtins)."""
    top = symtable.symtable(source, "<tool>", "exec")
    defined = {s.get_name() for s in top.get_symbols() if s.is_assigned() or s.is_imported()}
    names = {s.get_name() for s in top.get_symbols() if s.is_referenced()}
    stack = list(top.get_children())
    while stack:
        table = stack.pop()
        stack.extend(table.get_children())
        names.update(s.get_name() for s in table.get_symbols() if s.is_global() and s.is_referenced())
    return {n for n in names - defined if not hasattr(builtins, n)}


def _module_imports(module: types.ModuleType | None) -> dict[str, str]:
    """name -> the import statement that binds it at the top level of ``module``'s source."""
    if module is None:
        return {}
    try:
        tree = ast.parse(inspect.getsource(module))
    except (OSError, TypeError, SyntaxError):
        return {}
    found: dict[str, str] = {}
    nodes: list[ast.stmt] = []
    for stmt in tree.body:
        nodes.append(stmt)
        if isinstance(stmt, ast.Try):
            nodes.extend(stmt.body)
    for stmt in nodes:
        if isinstance(stmt, ast.Import):
            for alias in stmt.names:
                if alias.asname:
                    found[alias.asname] = f"import {alias.name} as {alias.asname}"
                else:
                    found[alias.name.split(".")[0]] = f"import {alias.name}"
        elif isinstance(stmt, ast.ImportFrom) and stmt.module != "__future__":
            base = stmt.module or ""
            if stmt.level:
                try:
                    base = importlib.util.resolve_name("." * stmt.level + base, module.__package__ or "")
                except (ImportError, ValueError):
                    continue
            for alias in stmt.names:
                bound = alias.asname or alias.name
                tail = f" as {alias.asname}" if alias.asname and alias.asname != alias.name else ""
                found[bound] = f"from {base} import {alias.name}{tail}"
    return found


def _literal(value: Any) -> str | None:
    if not isinstance(value, (int, float, str, bytes, bool, type(None), tuple, list, dict, set)):
        return None
    text = repr(value)
    if len(text) > 20_000:
        return None
    try:
        return text if ast.literal_eval(text) == value else None
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None


def _statement_for(name: str, value: Any, imports: dict[str, str], home: str | None) -> str | None:
    """A statement that binds ``name`` to ``value`` in a fresh kernel, or None if there is none."""
    if name in imports:
        return imports[name]
    if isinstance(value, types.ModuleType):
        return f"import {value.__name__}" if name == value.__name__ else f"import {value.__name__} as {name}"
    literal = _literal(value)
    if literal is not None:
        return f"{name} = {literal}"
    module_name = getattr(value, "__module__", None)
    if module_name and module_name not in ("__main__", home) and module_name in sys.modules:
        module = sys.modules[module_name]
        if getattr(module, name, None) is value:
            return f"from {module_name} import {name}"
        qualname = getattr(value, "__qualname__", "")
        if qualname and "." not in qualname and getattr(module, qualname, None) is value:
            return f"from {module_name} import {qualname} as {name}"
    return None


def resolve_imports(
    source: str,
    what: str,
    namespace: dict[str, Any],
    module: types.ModuleType | None,
    closure: dict[str, Any] | None = None,
    provided: frozenset[str] = frozenset(),
) -> list[str]:
    """The statements (imports, constants) that ``source`` needs to run alone in a kernel."""
    imports = _module_imports(module)
    home = module.__name__ if module is not None else None
    statements = []
    for name in sorted(_free_names(source) - provided):
        if closure and name in closure:
            value = closure[name]
        elif name in namespace:
            value = namespace[name]
        else:
            raise ToolDefinitionError(f"{what}: it uses {name!r}, which is not defined where the tool is")
        if isinstance(value, Tool):
            continue  # another tool: defined in the kernel when the agent has it
        statement = _statement_for(name, value, imports, home)
        if statement is None:
            raise ToolDefinitionError(
                f"{what}: it uses {name!r} ({type(value).__name__}), which cannot be re-created in the "
                "kernel; define or import it inside the tool, or make it a plain constant or an import"
            )
        statements.append(statement)
    return statements


# -- tools ------------------------------------------------------------------------------------------


class Tool:
    """A tool the agent's code can call. Subclass it for a tool with setup or state::

        class CityLookup(Tool):
            '''Look up a city in the bundled table.'''

            name = "lookup_city"
            requirements = ["pandas"]

            def setup(self):
                import pandas as pd
                self.table = pd.read_csv("cities.csv")

            def forward(self, city: str) -> dict:
                '''Args:
                    city: the city's name, e.g. "Lyon".
                '''
                return self.table.set_index("city").loc[city].to_dict()

    ``name`` defaults to the class name in snake_case and ``description`` to the class docstring.
    ``forward``'s type hints and ``Args:`` docstring give the parameters. ``setup()`` runs once,
    before the first call. Constructor arguments must be plain literals (they are written into the
    notebook). ``host = True`` runs the tool in the agent's process instead of the kernel.
    """

    name: str = ""
    description: str = ""
    requirements: Sequence[str] = ()
    """Packages the tool needs (``"pandas>=2"``, ``"sqlite3"``), checked when an agent starts."""
    host: bool = False
    """Run in the agent's process (the kernel calls it through the host bridge)."""

    _init_args: tuple[tuple[Any, ...], dict[str, Any]]

    def __new__(cls, *args: Any, **kwargs: Any) -> Tool:
        self = super().__new__(cls)
        self._init_args = (args, kwargs)
        return self

    def setup(self) -> None:
        """Prepare the tool (open a file, build an index); runs once, before the first call."""

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Do the tool's work; subclasses define it with typed, documented parameters."""
        raise NotImplementedError(f"{type(self).__name__} defines no forward()")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not self.__dict__.get("_set_up"):
            self.setup()
            self._set_up = True
        return self.forward(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.spec.name!r}{' (host)' if self.host else ''}>"

    # -- what the agent needs -------------------------------------------------------------------

    @property
    def spec(self) -> ToolSpec:
        """Name, description, parameters and return value, read from the source."""
        cached = self.__dict__.get("_spec")
        if cached is None:
            cached = self._build_spec()
            _check_name(cached.name, f"tool class {type(self).__name__}")
            self._spec = cached
        return cached

    def kernel_definition(self) -> KernelDefinition:
        """The code that defines this tool in the kernel (a stub calling the host for host tools)."""
        return host_stub(self.spec) if self.host else self.implementation()

    def implementation(self) -> KernelDefinition:
        """The tool's own code, with the imports and constants it needs to run alone."""
        source, module = self.source()
        what = f"tool {self.spec.name!r}"
        node = _parse(source, what).body[0]
        assert isinstance(node, ast.ClassDef)
        if node.decorator_list:
            raise ToolDefinitionError(f"{what}: a tool class cannot have decorators")
        parts: list[ast.expr | ast.keyword] = [*node.bases, *node.keywords]
        header_end = max([node.lineno, *(n.end_lineno or 0 for n in parts)])
        if node.body[0].lineno <= header_end:
            raise ToolDefinitionError(f"{what}: write the class body on the lines below `class ...:`")
        body = "\n".join(source.splitlines()[header_end:])  # comments and docstring included
        code = f"class {node.name}(Tool):\n{body}\n\n\n{self.spec.name} = {node.name}({self._init_source()})"
        imports = resolve_imports(
            code, what, vars(module) if module else {}, module, provided=frozenset({"Tool"})
        )
        return KernelDefinition(code=code, imports=imports, needs_tool_base=True)

    def source(self) -> tuple[str, types.ModuleType | None]:
        """The class's source (dedented) and the module it comes from."""
        cls = type(self)
        module = sys.modules.get(cls.__module__)
        given = cls.__dict__.get("__nbagent_source__")
        if given is not None:
            return given, module
        try:
            return textwrap.dedent(inspect.getsource(cls)), module
        except (OSError, TypeError):
            raise ToolDefinitionError(
                f"tool class {cls.__name__}: its source cannot be read (defined in an interactive prompt?); "
                "define it in a .py file or a notebook cell"
            ) from None

    def save(self, folder: str | Path, *, overwrite: bool = False) -> Path:
        """Save the tool (source + ``tool.json``) to ``folder``; load it with :func:`load_tool`."""
        from .saving import save_tool

        return save_tool(self, folder, overwrite=overwrite)

    def push_to_hub(
        self,
        repo_id: str,
        *,
        token: str | None = None,
        private: bool | None = None,
        endpoint: str | None = None,
        repo_type: str = "space",
        commit_message: str | None = None,
    ) -> str:
        """Upload the saved tool to a Hugging Face Hub repo; returns the repo's URL."""
        from .saving import push_tool_to_hub

        return push_tool_to_hub(
            self,
            repo_id,
            token=token,
            private=private,
            endpoint=endpoint,
            repo_type=repo_type,
            commit_message=commit_message,
        )

    # -- internals -------------------------------------------------------------------------------

    def _build_spec(self) -> ToolSpec:
        source, _ = self.source()
        cls = type(self)
        what = f"tool class {cls.__name__}"
        node = _parse(source, what).body[0]
        if not isinstance(node, ast.ClassDef):
            raise ToolDefinitionError(f"{what}: its source is not a class definition")
        forward = next((n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "forward"), None)
        if forward is None:
            raise ToolDefinitionError(f"{what}: define forward(self, ...) with typed parameters")
        class_doc = ast.get_docstring(node) or ""
        summary, class_args, class_returns = parse_docstring(class_doc)
        _, forward_args, forward_returns = parse_docstring(ast.get_docstring(forward) or "")
        description = (self.description or cls.__dict__.get("description") or summary).strip()
        if not description:
            raise ToolDefinitionError(f"{what}: give it a docstring or a `description` saying what it does")
        name = self.name or cls.__dict__.get("name") or _snake(cls.__name__)
        return ToolSpec(
            name=name,
            description=description,
            parameters=_parameters(forward, source, {**class_args, **forward_args}, what, method=True),
            returns=_returns(forward, source, what),
            returns_description=forward_returns or class_returns,
        )

    def _init_source(self) -> str:
        args, kwargs = self.__dict__.get("_init_args", ((), {}))
        parts = []
        for value in args:
            parts.append(_init_literal(value, self))
        for key, value in kwargs.items():
            parts.append(f"{key}={_init_literal(value, self)}")
        return ", ".join(parts)


class FunctionTool(Tool):
    """A tool made from a plain function by :func:`tool`."""

    def __init__(
        self,
        function: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        requirements: Sequence[str] = (),
        host: bool = False,
        source: str | None = None,
    ) -> None:
        self.function = function
        self.name = name or function.__name__
        self.description = description or ""
        self.requirements = list(requirements)
        self.host = host
        self._source = source
        self.__doc__ = function.__doc__
        self.__wrapped__ = function
        _ = self.spec  # check the definition now, where the user wrote it

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.function(*args, **kwargs)

    def source(self) -> tuple[str, types.ModuleType | None]:
        module = inspect.getmodule(self.function) or sys.modules.get(self.function.__module__)
        if self._source is not None:
            return self._source, module
        try:
            return textwrap.dedent(inspect.getsource(self.function)), module
        except (OSError, TypeError):
            raise ToolDefinitionError(
                f"tool {self.name!r}: the source of {self.function!r} cannot be read; "
                "define it with `def` in a .py file or a notebook cell"
            ) from None

    def _function_node(self) -> tuple[ast.FunctionDef | ast.AsyncFunctionDef, str]:
        source, _ = self.source()
        what = f"tool {self.name!r}"
        tree = _parse(source, what)
        node = next((n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))), None)
        if node is None:
            raise ToolDefinitionError(f"{what}: its source holds no function definition")
        return node, source

    def _build_spec(self) -> ToolSpec:
        what = f"tool {self.name!r}"
        node, source = self._function_node()
        if isinstance(node, ast.AsyncFunctionDef) and not self.host:
            raise ToolDefinitionError(f"{what}: only host tools (host=True) may be async")
        summary, docs, returns = parse_docstring(ast.get_docstring(node) or "")
        description = (self.description or summary).strip()
        if not description:
            raise ToolDefinitionError(
                f"{what}: it has no docstring; start one with a sentence saying what the tool does, "
                "then an 'Args:' section describing each parameter"
            )
        return ToolSpec(
            name=self.name,
            description=description,
            parameters=_parameters(node, source, docs, what, method=False),
            returns=_returns(node, source, what),
            returns_description=returns,
        )

    def implementation(self) -> KernelDefinition:
        node, source = self._function_node()
        what = f"tool {self.name!r}"
        lines = source.splitlines()
        code_lines = lines[node.lineno - 1 :]  # without decorators
        if node.name != self.name:
            code_lines[0] = re.sub(
                rf"\bdef\s+{re.escape(node.name)}\b", f"def {self.name}", code_lines[0], count=1
            )
        code = "\n".join(code_lines)
        _, module = self.source()
        closure = inspect.getclosurevars(self.function).nonlocals if self._source is None else {}
        imports = resolve_imports(code, what, self.function.__globals__, module, closure=dict(closure))
        return KernelDefinition(code=code, imports=imports)


@overload
def tool(function: Callable[..., Any], /) -> FunctionTool: ...


@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    requirements: Sequence[str] = (),
    host: bool = False,
) -> Callable[[Callable[..., Any]], FunctionTool]: ...


def tool(
    function: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    requirements: Sequence[str] = (),
    host: bool = False,
) -> FunctionTool | Callable[[Callable[..., Any]], FunctionTool]:
    """Make a :class:`Tool` of a typed function whose docstring describes it and its arguments::

        @tool
        def get_weather(city: str, unit: str = "celsius") -> str:
            '''Current weather in a city.

            Args:
                city: the city's name.
                unit: "celsius" or "fahrenheit".
            '''

    Args:
        name: the tool's name (default: the function's).
        description: replaces the docstring's summary in the prompt.
        requirements: packages it needs where it runs, e.g. ``["pandas>=2"]``; checked at start.
        host: run in the agent's process, not the kernel (for tools holding a client or a secret);
            the kernel calls it through the host bridge and the calls are recorded in the notebook.

    A kernel tool is re-created in the kernel from its source: it may use imports and plain
    constants of its module (they are copied), and nothing else defined outside it.
    """

    def make(fn: Callable[..., Any]) -> FunctionTool:
        return FunctionTool(fn, name=name, description=description, requirements=requirements, host=host)

    return make(function) if function is not None else make


def as_tool(item: Tool | Callable[..., Any]) -> Tool:
    """``item`` as a Tool: tools as they are, plain functions through :func:`tool`."""
    if isinstance(item, Tool):
        return item
    if callable(item) and not isinstance(item, type):
        return tool(item)
    raise ToolDefinitionError(f"{item!r} is not a tool: pass a Tool, or a function (made one with @tool)")


def host_stub(spec: ToolSpec) -> KernelDefinition:
    """A kernel function with ``spec``'s signature that calls the host-side tool through the bridge."""
    params = []
    for p in spec.parameters:
        annotation = f": {p.annotation}" if p.annotation in _BUILTIN_TYPES else ""
        default = ""
        if p.default is not None:
            value = p.default if _is_literal_source(p.default) else "_nbagent_host.UNSET"
            default = f" = {value}" if annotation else f"={value}"
        params.append(f"{p.name}{annotation}{default}")
    returns = f" -> {spec.returns}" if spec.returns in _BUILTIN_TYPES else ""
    doc = spec.signature().split('"""', 1)[1].rsplit('"""', 1)[0]
    call_args = ", ".join(f"{p.name!r}: {p.name}" for p in spec.parameters)
    code = (
        f"def {spec.name}({', '.join(params)}){returns}:\n"
        f'    """{doc.rstrip()}\n\n'
        "    (Runs on the nbagent host, outside this kernel.)\n"
        '    """\n'
        f"    return _nbagent_host.call({spec.name!r}, {{{call_args}}})"
    )
    return KernelDefinition(code=code, needs_host_bridge=True)


def _is_literal_source(text: str) -> bool:
    try:
        ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return False
    return True


def _init_literal(value: Any, tool_obj: Tool) -> str:
    literal = _literal(value)
    if literal is None:
        raise ToolDefinitionError(
            f"tool class {type(tool_obj).__name__}: constructor argument {value!r} is not a plain literal "
            "(str, number, bool, None, list, dict...), so the kernel cannot re-create the tool"
        )
    return literal


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


def _check_name(name: str, what: str) -> None:
    if not name.isidentifier() or keyword.iskeyword(name):
        raise ToolDefinitionError(f"{what}: its name {name!r} is not a Python identifier")
    if name in RESERVED_NAMES or name.startswith("_nbagent"):
        raise ToolDefinitionError(f"{what}: the name {name!r} is taken by nbagent's kernel code; rename it")
