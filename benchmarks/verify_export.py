"""Verify and export: what checking a notebook costs on top of merely re-running it.

papermill and ``jupyter nbconvert --execute`` re-run a notebook but never compare; ``nbagent
verify`` re-runs it with nbclient in the same way and then compares every output. This script
makes a notebook with the real agent (scripted model, penguins data: a load, three failed
attempts, an unused exploration, a grouped mean with a figure, the answer), then times, side by
side on the same machine:

- a plain nbclient re-run (what the re-running tools do),
- ``verify_notebook`` (re-run plus comparison),
- the comparison alone (normalisation, texts, images),
- the tidy analysis alone, and ``export_tidy`` with its verification,
- the HTML export.

Run: ``.venv/bin/python benchmarks/verify_export.py [--repeat N]``; medians are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import nbformat

from nbagent import Agent, ScriptedModel, export_html, export_tidy, tidy_notebook, verify_notebook
from nbagent.execution.kernel import kernel_spec_manager
from nbagent.repro.compare import compare_outputs

REPO = Path(__file__).resolve().parents[1]
PENGUINS = REPO / "examples" / "data" / "penguins.csv"


def reply(source: str) -> str:
    return f"Thought: next.\n```python\n{source}\n```"


REPLIES = [
    reply('import pandas as pd\npenguins = pd.read_csv("penguins.csv")\npenguins.shape'),
    reply('penguins.groupby("species")["body_mass"].mean()'),
    reply('penguins["mass_kg"] = penguins["body mass"] / 1000'),
    reply('means = penguins.groupby("specie")["body_mass_g"].mean()'),
    reply("penguins.describe()"),
    reply(
        "import matplotlib.pyplot as plt\n"
        'means = penguins.groupby("species")["body_mass_g"].mean().sort_values()\n'
        "print(means.round(1))\nax = means.plot.barh()\nplt.show()"
    ),
    reply("final_answer(means.idxmax())"),
]


def median_times(fns: list[Callable[[], object]], repeat: int) -> list[float]:
    """Median seconds of each function, the functions taking turns so load affects all alike."""
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeat):
        for fn, record in zip(fns, times, strict=True):
            t0 = time.perf_counter()
            fn()
            record.append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


def plain_rerun(notebook: Path) -> None:
    """Re-run with nbclient and nothing else, in the same kernel spec verify uses."""
    from jupyter_client.manager import AsyncKernelManager
    from nbclient import NotebookClient

    nb = nbformat.read(notebook, as_version=4)
    with tempfile.TemporaryDirectory() as runtime:
        # The same transport as verify (ipc), so only the comparison separates the two.
        km = AsyncKernelManager(
            kernel_name="nbagent",
            kernel_spec_manager=kernel_spec_manager(),
            transport="ipc",
            ip=os.path.join(runtime, "k"),
            connection_file=os.path.join(runtime, "connection.json"),
        )
        client = NotebookClient(
            nb, km=km, allow_errors=True, resources={"metadata": {"path": str(notebook.parent)}}
        )

        async def go() -> None:
            async with client.async_setup_kernel(cleanup_kc=True):
                for index, cell in enumerate(nb.cells):
                    await client.async_execute_cell(cell, index)

        asyncio.run(go())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per measurement (median reported)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        notebook = folder / "run.ipynb"
        with Agent(ScriptedModel(REPLIES)) as agent:
            agent.run("Which penguin species is heaviest?", files=[PENGUINS], notebook=notebook)
        nb = nbformat.read(notebook, as_version=4)
        report = verify_notebook(notebook)
        assert report.ok and report.executed is not None, report.summary()
        executed = report.executed
        code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]

        def compare_all() -> None:
            for i in code:
                compare_outputs(nb.cells[i].outputs, executed.cells[i].outputs)

        tidy = tidy_notebook(copy.deepcopy(nb), notebook.name)
        rerun, verify, tidy_export, html = median_times(
            [
                lambda: plain_rerun(notebook),
                lambda: verify_notebook(notebook),
                lambda: export_tidy(notebook, folder / "tidy.ipynb", overwrite=True),
                lambda: export_html(notebook, folder / "run.html", overwrite=True),
            ],
            args.repeat,
        )
        compare, analysis = median_times(
            [compare_all, lambda: tidy_notebook(copy.deepcopy(nb))], args.repeat * 20
        )
        rows = [
            ("nbclient re-run only (papermill / nbconvert --execute)", rerun),
            ("nbagent verify (re-run + compare)", verify),
            ("  of which: comparing all outputs", compare),
            ("tidy analysis (ast, no kernel)", analysis),
            ("export --tidy (analysis + verification)", tidy_export),
            ("export --html", html),
        ]
        print(f"notebook: {len(nb.cells)} cells, {len(code)} code cells; tidy: {tidy.cells_after} cells")
        print(f"median of {args.repeat} runs (comparisons and analysis: of {args.repeat * 20})\n")
        print(f"| {'measurement':<56} | {'time':>9} |")
        print(f"|{'-' * 58}|{'-' * 10}:|")
        for name, seconds in rows:
            shown = f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"
            print(f"| {name:<56} | {shown:>9} |")


if __name__ == "__main__":
    main()
