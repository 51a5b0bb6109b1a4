"""%%agent as a person sees it: JupyterLab on 127.0.0.1, the notebook in headless Chromium.

Chromium is Debian's (``apt-get install -y chromium``, done by ``.ci/run``); Playwright drives it
through ``executable_path`` and never downloads a browser.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest
from conftest import code, scripted
from nbformat.v4 import new_code_cell, new_notebook

from nbagent import Agent, Kernel

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
WAIT_MS = 120_000  # generous: two shared cores may be busy with other tests


def _need_chromium() -> None:
    if CHROMIUM.exists():
        return
    message = f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium)"
    if os.environ.get("CI"):
        pytest.fail(message)  # CI installs it (.ci/run), so the browser test always runs there
    pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Lab:
    url: str
    token: str
    root: Path
    log: Path


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    """A JupyterLab server on 127.0.0.1 serving ``tmp_path/root``, with its own settings."""
    root = tmp_path / "root"
    root.mkdir()
    port, token = _free_port(), secrets.token_hex(16)
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
        "JUPYTER_DATA_DIR": str(tmp_path / "data"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces"),
    }
    env.pop("NBAGENT_MODEL", None)
    log = tmp_path / "lab.log"
    with open(log, "wb") as log_file:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jupyterlab",
                "--no-browser",
                "--allow-root",  # CI runs as root
                "--ServerApp.ip=127.0.0.1",
                f"--ServerApp.port={port}",
                "--ServerApp.port_retries=0",
                f"--IdentityProvider.token={token}",
                f"--ServerApp.root_dir={root}",
                "--LabApp.extension_manager=readonly",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=root,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if server.poll() is not None:
                pytest.fail(f"jupyter lab exited with {server.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=5) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"jupyter lab did not answer within 120 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.25)
        yield Lab(url, token, root, log)
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _wait_for_kernel(lab: Lab, notebook: str) -> None:
    """Until the server has a session for ``notebook`` whose kernel is idle (started and ready)."""
    deadline = time.monotonic() + WAIT_MS / 1000
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{lab.url}/api/sessions?token={lab.token}", timeout=10) as response:
            sessions = json.load(response)
        for session in sessions:
            kernel = session.get("kernel") or {}
            if session.get("path") == notebook and kernel.get("execution_state") == "idle":
                return
        time.sleep(0.25)
    pytest.fail(f"no idle kernel for {notebook}:\n{lab.log.read_text()[-3000:]}")


@pytest.mark.timeout(400)
def test_agent_cell_shows_steps_outputs_and_answer_in_jupyterlab(lab: Lab, tmp_path: Path) -> None:
    _need_chromium()
    from playwright.sync_api import expect, sync_playwright

    (lab.root / "replies.json").write_text(
        json.dumps(
            [
                code(
                    "change = sales.set_index('month').revenue.diff()\n"
                    "print('biggest drop:', change.min())\n"
                    "worst_month = change.idxmin()",
                    "Compare each month with the one before.",
                ),
                code("final_answer(worst_month)", "March fell the most."),
            ]
        ),
        encoding="utf-8",
    )
    nb = new_notebook(
        cells=[
            new_code_cell("%load_ext nbagent"),
            new_code_cell(
                "import pandas as pd\n"
                "sales = pd.DataFrame({'month': ['Jan', 'Feb', 'Mar', 'Apr'], 'revenue': [120, 135, 90, 95]})"
            ),
            new_code_cell(
                "%%agent --model scripted:replies.json --insert\nWhich month's revenue dropped most?"
            ),
        ],
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
    )
    nbformat.write(nb, lab.root / "sales.ipynb")

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1400})
        try:
            page.goto(f"{lab.url}/lab/tree/sales.ipynb?token={lab.token}", timeout=WAIT_MS)
            page.wait_for_selector(".jp-Notebook .jp-CodeCell", timeout=WAIT_MS)
            _wait_for_kernel(lab, "sales.ipynb")
            expect(page.locator(".jp-StatusBar-Widget").first).to_contain_text(
                "Python 3 (ipykernel) | Idle", timeout=WAIT_MS
            )

            page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
            page.get_by_role("menuitem", name="Run All Cells", exact=True).click()

            agent_cell = page.locator(".jp-Notebook .jp-CodeCell").nth(2)
            outputs = agent_cell.locator(".jp-OutputArea")
            expect(outputs).to_contain_text("Step 1.", timeout=WAIT_MS)
            expect(outputs).to_contain_text("Compare each month with the one before.", timeout=WAIT_MS)
            expect(outputs).to_contain_text("worst_month = change.idxmin()", timeout=WAIT_MS)  # the code
            expect(outputs).to_contain_text("biggest drop: -45.0", timeout=WAIT_MS)  # its output
            expect(outputs).to_contain_text("final_answer(worst_month)", timeout=WAIT_MS)
            expect(outputs.locator(".jp-OutputArea-executeResult")).to_contain_text("'Mar'", timeout=WAIT_MS)
            expect(outputs).to_contain_text("answered · 2 steps", timeout=WAIT_MS)

            # --insert: the code that worked is offered as the next cell.
            inserted = page.locator(".jp-Notebook .jp-CodeCell").nth(3)
            expect(inserted.locator(".jp-InputArea")).to_contain_text("# Step 1", timeout=WAIT_MS)
            expect(inserted.locator(".jp-InputArea")).to_contain_text("final_answer(worst_month)")
        finally:
            page.screenshot(path=str(tmp_path / "jupyterlab.png"), full_page=True)
            browser.close()

    audit = nbformat.read(lab.root / "sales.agent.ipynb", as_version=4)  # beside the notebook
    nbformat.validate(audit)
    assert audit.cells[0].source.startswith("# Which month's revenue dropped most?")


@pytest.mark.timeout(400)
def test_run_all_in_jupyterlab_goes_past_a_failed_step_to_the_answer(lab: Lab, tmp_path: Path) -> None:
    _need_chromium()
    from playwright.sync_api import expect, sync_playwright

    with Kernel("python3", cwd=lab.root) as kernel:
        agent = Agent(
            scripted(
                code("total = 3 * 2\nprint('counted')"),
                code("{'a': 1}['missing']", "This will fail."),
                code("final_answer(f'The total is {total}.')"),
            ),
            executor=kernel,
        )
        assert agent.run("Count.", notebook=lab.root / "run.ipynb").answered
    # The stored outputs are cleared, so what the page shows comes from JupyterLab's Run All.
    nb = nbformat.read(lab.root / "run.ipynb", as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nbformat.write(nb, lab.root / "run.ipynb")

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1400})
        try:
            page.goto(f"{lab.url}/lab/tree/run.ipynb?token={lab.token}", timeout=WAIT_MS)
            page.wait_for_selector(".jp-Notebook .jp-CodeCell", timeout=WAIT_MS)
            _wait_for_kernel(lab, "run.ipynb")
            page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
            page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
            cells = page.locator(".jp-Notebook .jp-CodeCell")
            # The failed step shows its error (printed), and Run All goes on to the answer cell.
            expect(cells.nth(3).locator(".jp-OutputArea")).to_contain_text("KeyError", timeout=WAIT_MS)
            expect(cells.last.locator(".jp-OutputArea")).to_contain_text(
                "Answer: The total is 6.", timeout=WAIT_MS
            )
        finally:
            page.screenshot(path=str(tmp_path / "run-all.png"), full_page=True)
            browser.close()
