"""Exports of a run's notebook: the tidy analysis without its dead ends, and an HTML report.

**Tidy** (:func:`export_tidy`): the same analysis, top to bottom, without the cells that did not
contribute. A code cell is dropped when it failed (raised, timed out, stopped the kernel) or when
nothing the answer depends on uses what it computed; this is decided by :mod:`nbagent.repro.dataflow`
from the names each cell defines and uses. A cell that shows a figure or a table is evidence a
reader wants, so it stays with what it needs (unless ``keep_displays=False``). The header, the
setup cell, the thoughts of the kept steps (as markdown) and the answer stay; a note after the
header lists what was dropped and why.
The tidy notebook is then verified (:mod:`nbagent.repro.verify`) against the source's outputs: it is
written only if it reproduces them, and then with the outputs and execution counts of that
top-to-bottom re-run.

**HTML** (:func:`export_html`): a standalone report made by nbconvert's ``lab`` template, figures
embedded as base64 ``data:`` URIs, so one file can be mailed or archived. It is inert: outputs,
thoughts and the answer are untrusted (model code made them), so their HTML is cleaned with nh3,
code-like output types are left out, and a Content-Security-Policy forbids any script. nbagent's setup cell is
left out of the report (it is in the ``.ipynb``) and a closing note states the environment, the
data files with their SHA-256, the random seed policy and the last verification.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from jupyter_core.utils import run_sync
from nbformat import NotebookNode
from nbformat.v4 import new_markdown_cell

from .._version import __version__
from ..agent.agent import check_notebook_path
from ..exceptions import NotReproducedError, UsageError
from ..execution.sandbox import Sandbox
from ..notebook import schema
from ..notebook.reader import read_notebook_file
from ..notebook.recorder import RAISES, SKIP, atomic_write_text, step_code
from ..notebook.signing import load_key, resign_answers
from .dataflow import CellNames, analyse_cell, needed_cells
from .verify import (
    VerifyReport,
    answer_payload,
    averify_notebook,
    record_verification,
    recorded_files,
)

KEEP_TAGS = frozenset({"nbagent-setup", "parameters", "injected-parameters"})
"""Code cells with one of these tags are always kept."""

_RAISED_AT = re.compile(r"Cell In\[\d+\], line (\d+)")


@dataclass
class DroppedCell:
    """A code cell the tidy export left out, and why."""

    cell: int
    """Position of the cell in the source notebook, counting from 1."""
    step: int | None
    reason: str

    def describe(self) -> str:
        """``step 2 (raised KeyError)``."""
        name = f"step {self.step}" if self.step is not None else f"cell {self.cell}"
        return f"{name} ({self.reason})"


@dataclass
class TidyResult:
    """The outcome of :func:`export_tidy` (or :func:`tidy_notebook`).

    ``notebook`` is the tidy notebook; ``kept_failed`` lists steps kept although they raised
    (a kept cell uses a name they defined before raising); ``verification`` is the report of the
    tidy notebook's re-run against the source's outputs (``None`` when not verified).
    """

    notebook: NotebookNode
    source: Path | None = None
    output: Path | None = None
    kept_steps: list[int] = field(default_factory=list)
    dropped: list[DroppedCell] = field(default_factory=list)
    kept_failed: list[int] = field(default_factory=list)
    cells_before: int = 0
    verification: VerifyReport | None = None

    @property
    def cells_after(self) -> int:
        """Number of cells in the tidy notebook."""
        return len(self.notebook.cells)


def _step(cell: NotebookNode) -> int | None:
    step = schema.cell_meta(cell).get("step")
    return int(step) if isinstance(step, int) else None


def _failure(cell: NotebookNode) -> str | None:
    """Why a code cell counts as failed, or ``None``."""
    tags = cell.metadata.get("tags", [])
    status = schema.cell_meta(cell).get("status")
    if SKIP in tags:
        return "it stopped the kernel" if status == "died" else "it timed out"
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            return f"raised {out.get('ename', 'an error')}"
    if RAISES in tags:
        return "it raised"
    return None


def _raised_at(cell: NotebookNode) -> int | None:
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            match = _RAISED_AT.search("\n".join(out.get("traceback", [])))
            if match:
                return int(match.group(1))
    return None


def shows_evidence(cell: NotebookNode) -> bool:
    """True when a code cell's outputs show a figure or a table (an image, or an HTML table)."""
    for out in cell.get("outputs", []):
        data = out.get("data", {}) if out.get("output_type") in ("display_data", "execute_result") else {}
        if any(mime.startswith("image/") for mime in data) or "<table" in str(data.get("text/html", "")):
            return True
    return False


def tidy_notebook(nb: NotebookNode, source_name: str = "", *, keep_displays: bool = True) -> TidyResult:
    """Make the tidy version of a notebook (no kernel involved; see the module docstring).

    ``keep_displays``: keep the cells that show a figure or a table (and what they need), though
    the answer does not use them.

    Raises :class:`UsageError` if the notebook has no answer cell: the tidy notebook is what
    the answer needs, so without an answer there is nothing to keep.
    """
    code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    failures = {i: _failure(nb.cells[i]) for i in code}
    names: list[CellNames] = []
    roots: list[int] = []
    for position, i in enumerate(code):
        cell = nb.cells[i]
        failed = failures[i] is not None
        skipped = SKIP in cell.metadata.get("tags", [])
        # A skipped cell does not run again, so it can define nothing a re-run could use.
        names.append(
            CellNames()
            if skipped
            else analyse_cell(
                step_code(cell.source), raised=failed, raised_at=_raised_at(cell) if failed else None
            )
        )
        if failed:
            continue
        tags = set(cell.metadata.get("tags", []))
        if (
            answer_payload(cell) is not None
            or schema.role(cell) in ("setup", "answer")
            or tags & KEEP_TAGS
            or names[-1].opaque
            or (keep_displays and shows_evidence(cell))
        ):
            roots.append(position)
    if not any(answer_payload(nb.cells[i]) is not None and failures[i] is None for i in code):
        where = f" {source_name!r}" if source_name else ""
        raise UsageError(
            f"notebook{where} has no answer cell (final_answer was never called, or its cell failed); "
            "a tidy export keeps what the answer needs, so there is nothing to keep"
        )
    keep = {code[p] for p in needed_cells(names, roots)}

    result = TidyResult(notebook=copy.deepcopy(nb), cells_before=len(nb.cells))
    cells: list[NotebookNode] = []
    for i, cell in enumerate(nb.cells):
        role = schema.role(cell)
        if cell.cell_type == "code":
            if i in keep and cell.source.strip():
                cells.append(copy.deepcopy(cell))
                step = _step(cell)
                if step is not None:
                    result.kept_steps.append(step)
                    if failures[i] is not None:
                        result.kept_failed.append(step)
            else:
                reason = failures[i] or (
                    "it has no code"
                    if not cell.source.strip()
                    else "nothing the answer needs uses its results"
                )
                result.dropped.append(DroppedCell(cell=i + 1, step=_step(cell), reason=reason))
        elif role == "thought":
            paired = i + 1 < len(nb.cells) and nb.cells[i + 1].cell_type == "code"
            if paired and i + 1 in keep and _step(nb.cells[i + 1]) == _step(cell):
                cells.append(copy.deepcopy(cell))
            elif not paired:
                result.dropped.append(
                    DroppedCell(cell=i + 1, step=_step(cell), reason="its reply had no code")
                )
        elif role != "marker":
            cells.append(copy.deepcopy(cell))

    note = _tidy_note(result, source_name)
    header = next((n for n, c in enumerate(cells) if schema.role(c) == "task"), -1)
    cells.insert(header + 1, note)
    result.notebook.cells = cells
    schema.notebook_meta(result.notebook).pop("verification", None)
    schema.set_notebook_key(
        result.notebook,
        "tidy",
        {
            "source": source_name or None,
            "kept_steps": result.kept_steps,
            "kept_failed": result.kept_failed,
            "dropped": [{"cell": d.cell, "step": d.step, "reason": d.reason} for d in result.dropped],
            "verified": False,
        },
    )
    return result


def _tidy_note(result: TidyResult, source_name: str) -> NotebookNode:
    of = f" of `{source_name}`" if source_name else ""
    steps = sorted(set(result.kept_steps))
    lines = [f"*Tidy version{of}, made by nbagent {__version__}: the steps the answer needs"]
    lines[0] += f" ({', '.join(map(str, steps))})." if steps else "."
    if result.dropped:
        lines[0] += " Left out: " + "; ".join(d.describe() for d in result.dropped) + "."
    if result.kept_failed:
        lines[0] += (
            f" Kept although they raised: step {', '.join(map(str, result.kept_failed))} "
            "(a later step uses what they defined first)."
        )
    lines[0] += "*"
    cell = new_markdown_cell("\n".join(lines))
    schema.mark_cell(cell, "tidy-note")
    return cell


def _adopt_rerun(result: TidyResult, report: VerifyReport) -> None:
    """Give the tidy notebook the outputs and counts of its verified top-to-bottom re-run."""
    assert report.executed is not None
    for cell, rerun in zip(result.notebook.cells, report.executed.cells, strict=True):
        if cell.cell_type == "code" and SKIP not in cell.metadata.get("tags", []):
            cell.outputs = rerun.outputs
            cell.execution_count = rerun.execution_count
    schema.notebook_meta(result.notebook)["tidy"]["verified"] = True
    if report.signature == "signed here":
        # The re-run's answers may be serialised a little differently: sign what is now stored.
        try:
            resign_answers(result.notebook.cells, load_key(create=False), answer_payload)
        except OSError:
            pass  # a damaged key: the tidy notebook then reads as changed answers, and says so
    record_verification(result.notebook, report)


async def aexport_tidy(
    notebook: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    *,
    data: Iterable[str | os.PathLike[str]] = (),
    kernel: str | None = None,
    verify: bool = True,
    overwrite: bool = False,
    timeout: float | None = None,
    sandbox: Sandbox | None = None,
    keep_displays: bool = True,
) -> TidyResult:
    """Make, verify and write the tidy notebook; see :func:`export_tidy`."""
    source = Path(notebook).expanduser().resolve()
    nb = read_notebook_file(source)
    target = check_output_path(output, source, overwrite)
    result = tidy_notebook(nb, source.name, keep_displays=keep_displays)
    result.source, result.output = source, target
    if verify:
        report = await averify_notebook(
            result.notebook,
            data=data,
            kernel=kernel,
            timeout=timeout,
            base_dir=source.parent,
            sandbox=sandbox,
        )
        result.verification = report
        if not report.ok:
            raise NotReproducedError(
                f"the tidy version of {source.name!r} does not reproduce its outputs, so it was not "
                "written (export with --no-verify, verify=False, to write it anyway)",
                report,
            )
        _adopt_rerun(result, report)
    if target is not None:
        nbformat.validate(result.notebook)
        atomic_write_text(target, nbformat.v4.writes_json(result.notebook) + "\n")
    return result


def export_tidy(
    notebook: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    *,
    data: Iterable[str | os.PathLike[str]] = (),
    kernel: str | None = None,
    verify: bool = True,
    overwrite: bool = False,
    timeout: float | None = None,
    sandbox: Sandbox | None = None,
    keep_displays: bool = True,
) -> TidyResult:
    """Write the tidy version of a run's notebook: the same analysis without the dead ends.

    Args:
        notebook: the notebook a run wrote.
        output: where to write the tidy notebook (``None``: do not write; the result holds it).
        data: data files to verify with instead of those beside ``notebook`` (by name).
        kernel: kernel spec to verify in (default: nbagent's sandboxed kernel, never the one the
            notebook records).
        verify: re-run the tidy notebook in a fresh kernel and write it only if it reproduces
            the source's outputs and answer (:class:`~nbagent.NotReproducedError` otherwise).
        overwrite: allow replacing an existing ``output``.
        timeout: seconds one cell may run while verifying (default: from the notebook's step
            time limit, as :func:`~nbagent.verify_notebook` does).
        sandbox: the sandbox to verify in (default: the jail, with the default limits or the
            notebook's where tighter; the level, network and environment never from the notebook).
        keep_displays: keep the cells that show a figure or a table although the answer does not
            use them (``False``: leave them out too).
    """
    return run_sync(aexport_tidy)(
        notebook,
        output,
        data=data,
        kernel=kernel,
        verify=verify,
        overwrite=overwrite,
        timeout=timeout,
        sandbox=sandbox,
        keep_displays=keep_displays,
    )


def check_output_path(
    output: str | os.PathLike[str] | None, source: Path | None, overwrite: bool
) -> Path | None:
    """The export's target as an absolute path; :class:`UsageError` if it cannot be written."""
    if output is None:
        return None
    # Absolute, but a symlink at the name is not followed: it is replaced, never written through.
    target = Path(os.path.abspath(Path(output).expanduser()))
    if source is not None and target.resolve() == source:
        raise UsageError(f"output {str(output)!r} is the notebook being exported; choose another name")
    return check_notebook_path(target, overwrite)


# -- HTML ------------------------------------------------------------------------------------


def _environment_note(nb: NotebookNode) -> NotebookNode | None:
    if not schema.notebook_meta(nb):
        return None
    parts: list[str] = []
    env = schema.environment(nb)
    if env.get("python"):
        packages = ", ".join(f"{k} {v}" for k, v in (env.get("packages") or {}).items())
        parts.append(f"Python {env['python']}" + (f" ({packages})" if packages else ""))
    seed = env.get("random_seed")
    if isinstance(seed, dict):
        seeded = ", ".join(map(str, seed.get("seeded", [])))
        parts.append(f"random generators seeded with {seed.get('seed')} ({seeded})")
    elif env:
        parts.append("random generators not seeded")
    if env.get("python_hash_seed") is not None:
        parts.append(f"PYTHONHASHSEED={env['python_hash_seed']}")
    files = recorded_files(nb)
    if files:
        parts.append("data: " + ", ".join(f"`{n}` (sha256 `{d[:12]}…`)" for n, d in files.items()))
    check = schema.notebook_meta(nb).get("verification")
    if isinstance(check, dict):
        verdict = "reproduced" if check.get("ok") else "did not reproduce"
        counts = check.get("counts", {})
        parts.append(
            f"verified {check.get('verified_at', '')}: {verdict} "
            f"({counts.get('same', 0)} code cells the same, {counts.get('differs', 0)} different, "
            f"{counts.get('new-error', 0)} new errors)"
        )
    else:
        parts.append("not verified (`nbagent verify`)")
    text = (
        "---\n\n**Reproducibility.** " + "; ".join(parts) + ". The setup cell (nbagent's `final_answer` "
        "and the seeding) is in the notebook file, not shown here."
    )
    cell = new_markdown_cell(text)
    schema.mark_cell(cell, "report-note")
    return cell


REPORT_CSP = (
    "default-src 'none'; img-src data:; style-src 'unsafe-inline'; font-src data:; "
    "base-uri 'none'; form-action 'none'"
)
"""The report's Content-Security-Policy: no script of any kind, images only from ``data:`` URIs
(nothing is fetched when the report is opened), styles only from the page itself."""

REPORT_MIMES = (
    "text/plain",
    "text/html",
    "text/markdown",
    "text/latex",
    "image/png",
    "image/jpeg",
    "image/svg+xml",
)
"""The output types a report shows; others (JavaScript, widgets, Mermaid...) are left out."""

_REPORT_TAGS = {
    *("a", "abbr", "b", "blockquote", "br", "caption", "code", "col", "colgroup", "dd", "del", "details"),
    *("div", "dl", "dt", "em", "figcaption", "figure", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i"),
    *("img", "ins", "kbd", "li", "ol", "p", "pre", "q", "s", "samp", "small", "span", "strong", "sub"),
    *("summary", "sup", "table", "tbody", "td", "tfoot", "th", "thead", "tr", "tt", "u", "ul", "var"),
}
_REPORT_ATTRIBUTES = {
    "*": {"class", "id", "title", "align"},
    "a": {"href"},
    "img": {"src", "alt", "width", "height"},
    "td": {"colspan", "rowspan"},
    "th": {"colspan", "rowspan", "scope"},
    "ol": {"start"},
}
_SAFE_TAG = re.compile(r"^[\w-]{1,64}$")


def _keep_attribute(tag: str, name: str, value: str) -> str | None:
    # Images only as data: URIs (a remote image would tell a server the report was opened);
    # links never to data: (a page of the attacker's own making).
    if tag == "img" and name == "src":
        return value if value.strip().lower().startswith("data:image/") else None
    if name == "href" and value.strip().lower().startswith("data:"):
        return None
    return value


def clean_html(html: str | bytes) -> str:
    """HTML from an output or a Markdown cell with everything that could run removed (nh3).

    Script and style elements go with their content; event handlers, ``javascript:`` links and
    unknown tags go; tables, headings, lists, links and ``data:`` images stay.
    """
    import nh3

    text = html.decode("utf-8", "replace") if isinstance(html, bytes) else str(html)
    return nh3.clean(
        text,
        tags=_REPORT_TAGS,
        attributes=_REPORT_ATTRIBUTES,
        url_schemes={"http", "https", "mailto", "data"},
        attribute_filter=_keep_attribute,
        clean_content_tags={"script", "style"},
        link_rel="noopener noreferrer",
    )


def _inert_copy(nb: NotebookNode) -> NotebookNode:
    """The notebook as the report shows it: only known output types, no metadata a template trusts."""
    report = copy.deepcopy(nb)
    # Widget state, attachments and output metadata reach nbconvert's templates unsanitised
    # (an image's "width" is written into the tag unquoted): none of it is kept.
    report.metadata = NotebookNode(
        kernelspec={"name": "python3", "display_name": "Python 3", "language": "python"},
        language_info={"name": "python"},
    )
    cells = []
    for cell in report.cells:
        if "nbagent-setup" in cell.metadata.get("tags", []):
            continue
        tags = [t for t in cell.metadata.get("tags", []) if isinstance(t, str) and _SAFE_TAG.match(t)]
        cell.metadata = NotebookNode(tags=tags) if tags else NotebookNode()
        cell.pop("attachments", None)
        for out in cell.get("outputs", []):
            if out.get("output_type") in ("display_data", "execute_result"):
                kept = {k: v for k, v in out.data.items() if k in REPORT_MIMES}
                if not kept:
                    left_out = ", ".join(sorted(out.data)) or "nothing"
                    kept = {"text/plain": f"[output of type {left_out}: not shown in the report]"}
                out.data = NotebookNode(kept)
                out.metadata = NotebookNode()
        cells.append(cell)
    report.cells = cells
    return report


def notebook_to_html(nb: NotebookNode) -> str:
    """A standalone HTML report of a notebook that runs nothing when opened (see the module docstring).

    What the kernel printed, the model's thoughts and the answer are untrusted: every HTML and
    Markdown piece is cleaned (:func:`clean_html`), output types that are code are left out,
    and the page carries a Content-Security-Policy (:data:`REPORT_CSP`) that forbids any script,
    should something slip through.
    """
    from nbconvert import HTMLExporter

    report = _inert_copy(nb)
    note = _environment_note(nb)
    if note is not None:
        report.cells.append(note)
    runs = schema.runs(nb)
    title = str(runs[0].get("question", "")) if runs else ""
    exporter = HTMLExporter(template_name="lab", sanitize_html=True, embed_images=False)
    # nbconvert's own clean_html filter keeps too little (no headings or table heads) and lets
    # script text through as visible text; ours is the stricter and more faithful one.
    exporter.register_filter("clean_html", clean_html)
    body, _ = exporter.from_notebook_node(report, resources={"metadata": {"name": title or "nbagent report"}})
    html = str(body)
    meta = f'<meta http-equiv="Content-Security-Policy" content="{REPORT_CSP}">'
    # The policy applies to what follows it, so it goes first in <head>, before anything else.
    head = re.search(r"<head[^>]*>", html, re.IGNORECASE)
    if head is None:
        return f"<!DOCTYPE html>\n<html><head>{meta}</head><body>{html}</body></html>\n"
    return html[: head.end()] + "\n" + meta + html[head.end() :]


def export_html(
    notebook: str | os.PathLike[str] | NotebookNode,
    output: str | os.PathLike[str],
    *,
    overwrite: bool = False,
) -> Path:
    """Write an HTML report of a notebook (figures embedded); returns the written path."""
    if isinstance(notebook, NotebookNode):
        nb, source = notebook, None
    else:
        source = Path(notebook).expanduser().resolve()
        nb = read_notebook_file(source)
    target = check_output_path(output, source, overwrite)
    assert target is not None
    atomic_write_text(target, notebook_to_html(nb))
    return target
