"""Which names each cell defines and uses, and so which cells an answer depends on.

This is what ``nbagent export --tidy`` decides with: a static analysis of each cell's code
(:mod:`ast`, after IPython's own transformation of magics), not a guess from its text.

For every cell, :func:`analyse_cell` finds:

- ``uses``: names it reads that it has not itself bound earlier (free names of functions,
  lambdas and comprehensions included, since they run when called);
- ``defines``: module-level names it may bind or change -- assignments, imports, ``def``,
  ``class``, loop and ``with`` targets, ``global`` names, walrus targets -- and names it
  *changes in place*: item or attribute assignment (``df["x"] = ...``), augmented assignment,
  ``del``, calls of mutating methods (``append``, ``update``, ``set_*`` but pandas' copying
  ``set_index``/``set_axis``..., any ``inplace=True``...),
  names passed to a call whose result is thrown away (``process(df)``), and draws from the global
  random generators (``random.*``, ``np.random.*``, ``.sample()`` without ``random_state``), which
  change their hidden state;
- ``kills``: the names it rebinds for certain (top-level, unconditional bindings), which hide
  every earlier definition;
- ``opaque``: the cell can do things the analysis cannot see (``exec``, ``eval``, ``globals()``,
  star imports, magics and shell escapes); such cells are kept.

:func:`needed_cells` walks back from the cells that must stay (the answer, the setup) and keeps
every cell that may define a name a kept cell uses, until an unconditional rebinding hides the
older ones.
"""

from __future__ import annotations

import ast
import builtins
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

RANDOM_STATE = "<global random state>"
"""Pseudo-name for the hidden state of ``random`` and ``numpy.random``."""

MUTATING_METHODS = frozenset(
    {
        # list, dict, set, bytearray
        "append", "extend", "insert", "remove", "pop", "clear", "sort", "reverse", "update",
        "add", "discard", "setdefault", "popitem", "difference_update", "intersection_update",
        "symmetric_difference_update",
        # numpy arrays, random generators
        "fill", "resize", "put", "itemset", "setflags", "shuffle", "seed",
        # matplotlib artists and the like
        "add_patch", "add_artist", "add_line", "add_collection", "legend", "grid", "invert_xaxis",
        "invert_yaxis", "autoscale", "tight_layout",
    }
)  # fmt: skip
"""Methods taken to change the object they are called on (plus ``set_*`` and ``inplace=True``)."""

COPYING_SETTERS = frozenset(
    {"set_index", "set_axis", "set_flags", "set_names", "set_levels", "set_codes", "set_categories"}
)
"""pandas ``set_*`` methods that return a changed copy and leave their object alone (unless
``inplace=True``). Other ``set_*`` methods (matplotlib's setters, a Styler's) change their object."""

_IMPURE_BUILTINS = {"exec", "eval", "setattr", "delattr", "next", "vars", "globals", "locals", "__import__"}
_PURE_BUILTINS = frozenset(dir(builtins)) - _IMPURE_BUILTINS - {"open", "input", "breakpoint"}
_PURE_CALLS = _PURE_BUILTINS | {"display", "final_answer"}
_OPAQUE_CALLS = frozenset({"exec", "eval", "globals", "locals", "vars", "get_ipython", "__import__"})


@dataclass
class CellNames:
    """What one cell reads and binds (see the module docstring)."""

    uses: set[str] = field(default_factory=set)
    defines: set[str] = field(default_factory=set)
    kills: set[str] = field(default_factory=set)
    opaque: bool = False
    syntax_error: bool = False


def to_python(source: str) -> str:
    """The cell's code as plain Python: IPython magics and ``!`` lines become calls."""
    try:
        from IPython.core.inputtransformer2 import TransformerManager
    except ImportError:  # IPython comes with ipykernel; without it, only plain Python parses
        return source
    try:
        return str(TransformerManager().transform_cell(source))
    except Exception:  # a cell IPython cannot transform is left for ast to reject
        return source


def analyse_cell(source: str, *, raised: bool = False, raised_at: int | None = None) -> CellNames:
    """The names a cell uses, defines and rebinds.

    For a cell that ``raised``, ``raised_at`` is the line it raised on (1-based) when known: the
    statements before it ran, the one holding it ran part way (a simple statement bound nothing),
    the ones after did not run. Without the line, every binding is possible and none is certain.
    """
    try:
        tree = ast.parse(to_python(source))
    except SyntaxError:
        return CellNames(syntax_error=True)
    names = CellNames()
    bound_here: set[str] = set()  # names this cell has certainly bound so far
    for stmt in tree.body:
        if raised and raised_at is not None and stmt.lineno > raised_at:
            break
        partly = raised and (raised_at is None or _end_line(stmt) >= raised_at)
        walker = _Walker(bound=bound_here)
        walker.stmt(stmt)
        names.uses |= walker.uses
        names.opaque |= walker.opaque
        if partly and raised_at is not None and not isinstance(stmt, _COMPOUND):
            # A simple statement that raised bound nothing; what it changed in place it may have,
            # except an assignment's own target: the value is computed before it is stored.
            value = getattr(stmt, "value", None)
            if isinstance(stmt, (ast.Assign, ast.AnnAssign, ast.AugAssign)) and value is not None:
                value_walker = _Walker(bound=bound_here)
                value_walker._expr(value)
                names.defines |= value_walker.mutated
            else:
                names.defines |= walker.mutated
        else:
            names.defines |= walker.defines | walker.mutated
        if not partly:
            names.kills |= walker.bound - bound_here
            bound_here = walker.bound
    return names


def needed_cells(cells: Sequence[CellNames], roots: Iterable[int]) -> set[int]:
    """Indices of ``cells`` that ``roots`` depend on, the roots included."""
    keep = set(roots)
    work = sorted(keep)
    while work:
        j = work.pop()
        for name in cells[j].uses:
            for i in range(j - 1, -1, -1):
                if name in cells[i].defines:
                    if i not in keep:
                        keep.add(i)
                        work.append(i)
                    if name in cells[i].kills:
                        break
    return keep


_TRY: tuple[type[ast.stmt], ...] = (ast.Try, *([ast.TryStar] if hasattr(ast, "TryStar") else []))
_COMPOUND = (ast.If, ast.For, ast.AsyncFor, ast.While, ast.With, ast.AsyncWith, ast.Match, *_TRY)


def _end_line(node: ast.stmt) -> int:
    return node.end_lineno if node.end_lineno is not None else node.lineno


def _target_names(target: ast.expr) -> set[str]:
    if isinstance(target, ast.Name):
        return {target.id}
    if isinstance(target, (ast.Tuple, ast.List)):
        return set().union(*(_target_names(t) for t in target.elts)) if target.elts else set()
    if isinstance(target, ast.Starred):
        return _target_names(target.value)
    return set()


def _root_name(node: ast.expr) -> str | None:
    """``df`` for ``df``, ``df.a.b``, ``df["x"].y``, ``df.groupby(k).z``."""
    while True:
        if isinstance(node, ast.Name):
            return node.id
        if isinstance(node, (ast.Attribute, ast.Subscript)):
            node = node.value
        elif isinstance(node, ast.Call):
            node = node.func
        else:
            return None


def _dotted(node: ast.expr) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


class _Walker:
    """Collects, for code run in one scope, the names it reads, binds and changes in place.

    ``bound`` holds the names certainly bound at the current point: a read of one of them is not
    a use of an earlier definition. Code is visited in evaluation order (the value of an
    assignment before its targets, a loop's target before its body); bindings made in a branch
    or a loop body do not count as certain after it. Nested scopes (functions, lambdas,
    comprehensions, classes) contribute their free names; names bound inside them stay there,
    except ``global`` names and walrus targets of comprehensions, which bind in the module.
    """

    def __init__(self, bound: set[str] | None = None) -> None:
        self.bound: set[str] = set(bound or ())
        self.uses: set[str] = set()
        self.defines: set[str] = set()
        self.mutated: set[str] = set()
        self.opaque = False

    # -- statements ----------------------------------------------------------------------

    def body(self, statements: Sequence[ast.stmt], certain: bool) -> None:
        """Visit a block; its bindings stay certain afterwards only if ``certain``."""
        before = set(self.bound)
        for stmt in statements:
            self.stmt(stmt)
        if not certain:
            self.bound = before

    def stmt(self, stmt: ast.stmt) -> None:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            self._definition(stmt)
        elif isinstance(stmt, (ast.Import, ast.ImportFrom)):
            for alias in stmt.names:
                if alias.name == "*":
                    self.opaque = True
                else:
                    self._bind((alias.asname or alias.name).split(".")[0])
        elif isinstance(stmt, ast.Assign):
            self._expr(stmt.value)
            for target in stmt.targets:
                self._target(target)
        elif isinstance(stmt, ast.AnnAssign):
            if stmt.value is not None:
                self._expr(stmt.value)
                self._target(stmt.target)
        elif isinstance(stmt, ast.AugAssign):
            self._expr(stmt.value)
            root = _root_name(stmt.target)
            if root:
                self._use(root)
                self.mutated.add(root)
            if not isinstance(stmt.target, ast.Name):
                self._expr_tree(stmt.target)
        elif isinstance(stmt, (ast.For, ast.AsyncFor)):
            self._expr(stmt.iter)
            before = set(self.bound)
            self._target(stmt.target)
            self.body(stmt.body, certain=False)
            self.bound = before
            self.body(stmt.orelse, certain=False)
        elif isinstance(stmt, (ast.With, ast.AsyncWith)):
            for item in stmt.items:
                self._expr(item.context_expr)
                if item.optional_vars is not None:
                    self._target(item.optional_vars)
            self.body(stmt.body, certain=True)
        elif isinstance(stmt, (ast.If, ast.While)):
            self._expr(stmt.test)
            self.body(stmt.body, certain=False)
            self.body(stmt.orelse, certain=False)
        elif isinstance(stmt, _TRY):
            self._try(stmt)
        elif isinstance(stmt, ast.Match):
            self._expr(stmt.subject)
            for case in stmt.cases:
                before = set(self.bound)
                self._expr_tree(case.pattern)
                if case.guard is not None:
                    self._expr(case.guard)
                self.body(case.body, certain=False)
                self.bound = before
        elif isinstance(stmt, ast.Delete):
            for target in stmt.targets:
                root = _root_name(target)
                if root:
                    self._use(root)
                    self.mutated.add(root)
                if not isinstance(target, ast.Name):
                    self._expr_tree(target)
        elif isinstance(stmt, (ast.Global, ast.Nonlocal)):
            self.defines.update(stmt.names)
        else:  # Expr, Return, Raise, Assert, Pass, Break, Continue
            if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call):
                # The result is thrown away: the call is made for what it does to its arguments.
                self._call_side_effects(stmt.value)
            self._expr_tree(stmt)

    def _try(self, stmt: Any) -> None:  # ast.Try, or ast.TryStar (3.11+): same fields
        self.body(stmt.body, certain=False)
        for handler in stmt.handlers:
            if handler.type is not None:
                self._expr(handler.type)
            before = set(self.bound)
            if handler.name:
                self._bind(handler.name)
            self.body(handler.body, certain=False)
            self.bound = before
        self.body(stmt.orelse, certain=False)
        self.body(stmt.finalbody, certain=False)

    def _definition(self, stmt: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> None:
        for expr in stmt.decorator_list:
            self._expr(expr)
        if isinstance(stmt, ast.ClassDef):
            for expr in [*stmt.bases, *(k.value for k in stmt.keywords)]:
                self._expr(expr)
            self._scope(None, stmt.body)
        else:
            for expr in _defaults(stmt.args):
                self._expr(expr)
            self._scope(stmt.args, stmt.body)
        self._bind(stmt.name)

    # -- expressions ---------------------------------------------------------------------

    def _use(self, name: str) -> None:
        if name not in self.bound:
            self.uses.add(name)

    def _bind(self, name: str) -> None:
        self.defines.add(name)
        self.bound.add(name)

    def _target(self, target: ast.expr) -> None:
        if isinstance(target, ast.Name):
            self._bind(target.id)
        elif isinstance(target, (ast.Tuple, ast.List)):
            for element in target.elts:
                self._target(element)
        elif isinstance(target, ast.Starred):
            self._target(target.value)
        else:  # item or attribute assignment: the object changes in place
            root = _root_name(target)
            if root:
                self._use(root)
                self.mutated.add(root)
            self._expr_tree(target)

    def _expr(self, node: ast.expr) -> None:
        if isinstance(node, ast.Name):
            if isinstance(node.ctx, ast.Load):
                self._use(node.id)
                if node.id in _OPAQUE_CALLS:
                    self.opaque = True
            else:
                self._bind(node.id)
            return
        if isinstance(node, ast.Lambda):
            for expr in _defaults(node.args):
                self._expr(expr)
            self._scope(node.args, [ast.Return(value=node.body)])
            return
        if isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
            self._comprehension(node)
            return
        if isinstance(node, ast.NamedExpr):
            self._expr(node.value)
            self._bind(node.target.id)
            return
        if isinstance(node, ast.Call):
            self._call_effects(node)
        self._expr_tree(node)

    def _expr_tree(self, node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.expr):
                self._expr(child)
            elif isinstance(child, (ast.keyword, ast.pattern)):
                self._expr_tree(child)
        if isinstance(node, (ast.MatchAs, ast.MatchStar)) and node.name:
            self._bind(node.name)
        if isinstance(node, ast.MatchMapping) and node.rest:
            self._bind(node.rest)

    def _call_effects(self, call: ast.Call) -> None:
        func = call.func
        if not isinstance(func, ast.Attribute):
            return
        root = _root_name(func.value)
        inplace = any(
            k.arg == "inplace" and isinstance(k.value, ast.Constant) and k.value.value is True
            for k in call.keywords
        )
        setter = func.attr.startswith("set_") and func.attr not in COPYING_SETTERS
        if root and (func.attr in MUTATING_METHODS or setter or inplace):
            self._use(root)
            self.mutated.add(root)
        # Drawing from the global generators changes their hidden state; making a new generator
        # (default_rng, RandomState, Random...) does not.
        draws = _dotted(func).startswith(("random.", "np.random.", "numpy.random.")) and not (
            func.attr == "default_rng" or func.attr[:1].isupper()
        )
        sample = func.attr == "sample" and not any(k.arg == "random_state" for k in call.keywords)
        if draws or sample:
            self.uses.add(RANDOM_STATE)
            self.mutated.add(RANDOM_STATE)

    def _call_side_effects(self, call: ast.Call) -> None:
        if isinstance(call.func, ast.Name) and call.func.id in _PURE_CALLS:
            return
        for arg in call.args:
            target = arg.value if isinstance(arg, ast.Starred) else arg
            if isinstance(target, ast.Name):
                self.mutated.add(target.id)

    # -- nested scopes -------------------------------------------------------------------

    def _scope(self, args: ast.arguments | None, body: Sequence[ast.stmt]) -> None:
        params = set(_params(args)) if args is not None else set()
        inner = _Walker(bound=params)
        inner.body(body, certain=True)
        declared_global = {
            name
            for stmt in body
            for node in ast.walk(stmt)
            if isinstance(node, ast.Global)
            for name in node.names
        }
        local = (inner.defines | params) - declared_global
        for name in inner.uses - local:
            self._use(name)
        self.mutated |= inner.mutated - local
        self.defines |= declared_global
        self.opaque |= inner.opaque

    def _comprehension(self, node: ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp) -> None:
        # The first iterable is evaluated outside; everything else inside the comprehension.
        self._expr(node.generators[0].iter)
        inner = _Walker(bound=self.bound)
        for i, gen in enumerate(node.generators):
            if i:
                inner._expr(gen.iter)
            inner._target(gen.target)
            for cond in gen.ifs:
                inner._expr(cond)
        if isinstance(node, ast.DictComp):
            inner._expr(node.key)
            inner._expr(node.value)
        else:
            inner._expr(node.elt)
        targets = set().union(*(_target_names(g.target) for g in node.generators))
        walrus = {n.target.id for n in ast.walk(node) if isinstance(n, ast.NamedExpr)}
        for name in inner.uses - targets:
            self._use(name)
        self.mutated |= inner.mutated - targets
        self.defines |= walrus
        self.opaque |= inner.opaque


def _defaults(args: ast.arguments) -> list[ast.expr]:
    return [*args.defaults, *(d for d in args.kw_defaults if d is not None)]


def _params(args: ast.arguments) -> list[str]:
    names = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
    if args.vararg:
        names.append(args.vararg.arg)
    if args.kwarg:
        names.append(args.kwarg.arg)
    return names
