"""The HTML report is inert: opened in real Chromium, no payload from an output, a thought or an
answer runs, while the figures and the table are there.

Each payload tries to add its name to ``window.pwned`` (a marker the test reads back). The same
notebook exported the way nbconvert does by default shows the attack working; ``export_html``
shows it stopped. Chromium is Debian's (see tests/test_browser.py); Playwright never downloads one.
"""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output
from PIL import Image
from test_browser import CHROMIUM, CHROMIUM_ARGS, _need_chromium

from nbagent import export_html
from nbagent.cli import main
from nbagent.execution.outputs import ANSWER_MIME


def mark(name: str) -> str:
    """JavaScript that records that payload ``name`` ran."""
    return f"(window.pwned=window.pwned||[]).push('{name}')"


PAYLOADS = {
    "html-script": {"text/html": f"<p>table below</p><script>{mark('html-script')}</script>"},
    "html-handler": {"text/html": f'<img src="x" onerror="{mark("html-handler")}"><b onmouseover="x">b</b>'},
    "javascript": {"application/javascript": mark("javascript")},
    "markdown": {
        "text/markdown": f"**md** <script>{mark('markdown')}</script> "
        f"[click me](javascript:{mark('markdown-link')}) "
        f'<a id="rawlink" href="javascript:{mark("markdown-rawlink")}">raw</a>'
    },
    "svg": {
        "image/svg+xml": '<svg xmlns="http://www.w3.org/2000/svg" width="40" height="40" '
        f'onload="{mark("svg-onload")}"><script>{mark("svg-script")}</script>'
        '<rect width="40" height="40" fill="red"/></svg>'
    },
}


def png_figure() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (120, 80), (30, 120, 200)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


TABLE = (
    '<table class="dataframe"><thead><tr><th>species</th><th>mass</th></tr></thead>'
    "<tbody><tr><td>Gentoo</td><td>5076</td></tr></tbody></table>"
)


def hostile_notebook(path: Path) -> Path:
    """A notebook as a hostile run could leave it: payloads in outputs, the thought and the answer."""
    nb = new_notebook()
    header = new_markdown_cell("# Which penguin is heaviest?")
    header.metadata["nbagent"] = {"role": "task"}
    thought = new_markdown_cell(
        f'**Step 1.** Let me look. <img src="x" onerror="{mark("thought")}">'
        f'<details open ontoggle="{mark("thought-toggle")}">d</details>'
    )
    thought.metadata["nbagent"] = {"role": "thought", "step": 1}
    step = new_code_cell("show()")
    step.metadata["nbagent"] = {"role": "step", "step": 1}
    step.outputs = [new_output("display_data", data=data) for data in PAYLOADS.values()]
    step.outputs.append(new_output("display_data", data={"text/html": TABLE, "text/plain": "table"}))
    step.outputs.append(
        new_output(
            "display_data",
            data={"image/png": png_figure(), "text/plain": "<Figure>"},
            metadata={"image/png": {"width": f'1" onerror="{mark("width")}'}},
        )
    )
    final = new_code_cell("final_answer(text)")
    final.metadata["nbagent"] = {"role": "step", "step": 2}
    answer_text = f"<script>{mark('answer-output')}</script>Gentoo"
    final.outputs = [
        new_output(
            "display_data",
            data={ANSWER_MIME: {"type": "str", "value": answer_text}, "text/html": answer_text},
        )
    ]
    answer = new_markdown_cell(
        f'**Answer:** Gentoo<iframe srcdoc="<script>parent.{mark("answer")}</script>"></iframe>'
    )
    answer.metadata["nbagent"] = {"role": "answer"}
    nb.cells = [header, thought, step, final, answer]
    nb.metadata["nbagent"] = {"runs": [{"question": "Which penguin is heaviest?", "model": "m", "files": []}]}
    nb.metadata["widgets"] = {
        "application/vnd.jupyter.widget-state+json": {
            "state": {"x": f"</script><script>{mark('widgets')}</script>"},
            "version_major": 2,
            "version_minor": 0,
        }
    }
    nbformat.validate(nb)
    nbformat.write(nb, path)
    return path


def open_in_chromium(report: Path) -> dict[str, Any]:
    """Load the report, hover, click every link, and read back the marker and what is visible."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(report.as_uri())
            page.wait_for_load_state("load")
            for element in page.query_selector_all("b, details, a"):
                if not element.is_visible():  # no one can hover it (now: an earlier click may open it)
                    continue
                try:
                    element.hover(timeout=2000)
                    element.click(timeout=2000, no_wait_after=True)
                except Exception:
                    pass
            page.wait_for_timeout(500)
            if page.url != report.as_uri():  # a link navigated away: come back to read the marker
                page.go_back()
            result: dict[str, Any] = page.evaluate(
                """() => ({
                    pwned: window.pwned || [],
                    figures: [...document.querySelectorAll('img[src^="data:image/png"]')]
                        .filter(i => i.complete && i.naturalWidth > 0 && i.offsetWidth > 0).length,
                    svgs: [...document.querySelectorAll('img[src^="data:image/svg+xml"]')]
                        .filter(i => i.complete && i.naturalWidth > 0).length,
                    table: [...document.querySelectorAll('table th, table td')]
                        .filter(c => c.offsetWidth > 0).map(c => c.textContent.trim()),
                    text: document.body.innerText,
                })"""
            )
            return result
        finally:
            browser.close()


def test_no_payload_runs_in_the_report_and_figures_and_table_show(tmp_path: Path) -> None:
    _need_chromium()
    notebook = hostile_notebook(tmp_path / "hostile.ipynb")

    # The attack: the same notebook through nbconvert's defaults runs the payloads.
    from nbconvert import HTMLExporter

    naive = tmp_path / "naive.html"
    naive.write_text(HTMLExporter(template_name="lab").from_filename(str(notebook))[0])
    ran = set(open_in_chromium(naive)["pwned"])
    assert {"html-script", "html-handler", "javascript", "markdown", "thought"} <= ran, ran

    # The protection, through the command line and the Python API.
    report = tmp_path / "report.html"
    assert main(["export", str(notebook), "--html", "-o", str(report)]) == 0
    seen = open_in_chromium(report)
    assert seen["pwned"] == []
    assert seen["figures"] == 1 and seen["svgs"] == 1
    assert seen["table"] == ["species", "mass", "Gentoo", "5076"]
    assert "Gentoo" in seen["text"] and "Let me look." in seen["text"]
    html = export_html(notebook, tmp_path / "api.html").read_text()
    assert '<meta http-equiv="Content-Security-Policy"' in html.split("<body", 1)[0]
    body = html.split("<body", 1)[1]
    assert not re.search(r"<[^>]*\son\w+\s*=", body, re.IGNORECASE)  # no event handler attribute
    assert not re.search(r"href\s*=\s*[\"']?\s*javascript:", body, re.IGNORECASE)


@pytest.mark.parametrize("payload", sorted(PAYLOADS))
def test_each_payload_is_cleaned_out_of_the_html(payload: str, tmp_path: Path) -> None:
    nb = new_notebook()
    cell = new_code_cell("x")
    cell.outputs = [new_output("display_data", data=PAYLOADS[payload])]
    nb.cells = [cell]
    html = export_html(nb, tmp_path / "r.html").read_text()
    body = html.split("<body", 1)[1]
    assert "window.pwned" not in body or payload == "svg"  # the SVG stays, inside a data: image
    assert not re.search(r"<[^>]*\son\w+\s*=", body, re.IGNORECASE)
