"""nbagent export: the tidy notebook of a run with dead ends, and the HTML report."""

from __future__ import annotations

import base64
import html.parser
import io
import shutil
from pathlib import Path

import nbformat
import pytest
from conftest import PENGUINS, code, scripted
from PIL import Image

from nbagent import Agent, NotReproducedError, export_html, export_tidy, verify_notebook
from nbagent.cli import main
from nbagent.repro.verify import answer_payload

QUESTION = "Which penguin species has the highest mean body mass?"

THREE_FAILURES = [
    code(
        'import pandas as pd\npenguins = pd.read_csv("penguins.csv")\npenguins.shape',
        "Load the data and look at its size.",
    ),
    code('penguins.groupby("species")["body_mass"].mean()', "Mean mass per species."),
    code('penguins["mass_kg"] = penguins["body mass"] / 1000', "Maybe the column has a space."),
    code('means = penguins.groupby("specie")["body_mass_g"].mean()', "The column is body_mass_g."),
    code("penguins.describe()", "Look at the numeric columns first."),
    code(
        "import matplotlib.pyplot as plt\n"
        'means = penguins.groupby("species")["body_mass_g"].mean().sort_values()\n'
        "print(means.round(1))\nax = means.plot.barh(color='tab:green')\nplt.show()",
        "Group by the right column, and plot.",
    ),
    code("final_answer(means.idxmax())", "Gentoo is heaviest."),
]


def run_agent(replies: list[str], folder: Path, max_steps: int = 10) -> Path:
    """Run the real agent with a scripted model on the penguins data; returns the notebook."""
    folder.mkdir(parents=True, exist_ok=True)
    notebook = folder / "run.ipynb"
    with Agent(scripted(*replies), max_steps=max_steps) as agent:
        agent.run(QUESTION, files=[PENGUINS], notebook=notebook)
    return notebook


@pytest.fixture(scope="module")
def failures_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run_agent(THREE_FAILURES, tmp_path_factory.mktemp("failures"))


def code_cells(nb: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [c for c in nb.cells if c.cell_type == "code"]


def test_tidy_export_drops_dead_ends_and_still_verifies(failures_run: Path, tmp_path: Path) -> None:
    source = nbformat.read(failures_run, as_version=4)
    assert sum("raises-exception" in c.metadata.get("tags", []) for c in source.cells) == 3
    output = tmp_path / "tidy.ipynb"
    result = export_tidy(failures_run, output, keep_displays=False)  # step 5's table goes too

    assert result.output == output and output.exists()
    assert result.kept_steps == [1, 6, 7]
    assert {d.step: d.reason for d in result.dropped} == {
        2: "raised KeyError",
        3: "raised KeyError",
        4: "raised KeyError",
        5: "nothing the answer needs uses its results",
    }
    tidy = nbformat.read(output, as_version=4)
    nbformat.validate(tidy)
    assert len(tidy.cells) < len(source.cells) and result.cells_after == len(tidy.cells)
    assert [c.metadata["nbagent"].get("role") for c in tidy.cells] == [
        "task", "tidy-note", "setup", "tools", "thought", "step", "thought", "step", "thought", "step",
        "answer",
    ]  # fmt: skip
    # Thoughts are kept as markdown, next to their code; no failed cell is left.
    thoughts = [c.source for c in tidy.cells if c.metadata["nbagent"].get("role") == "thought"]
    assert thoughts == [
        "**Step 1.** Load the data and look at its size.",
        "**Step 6.** Group by the right column, and plot.",
        "**Step 7.** Gentoo is heaviest.",
    ]
    assert not any(o.output_type == "error" for c in code_cells(tidy) for o in c.outputs)
    assert not any("raises-exception" in c.metadata.get("tags", []) for c in tidy.cells)
    assert "Left out: step 2 (raised KeyError)" in tidy.cells[1].source
    # The outputs are those of the verified top-to-bottom re-run.
    assert [c.execution_count for c in code_cells(tidy)] == [1, 2, 3, 4, 5, 6]
    assert tidy.metadata["nbagent"]["tidy"]["verified"] is True
    assert tidy.metadata["nbagent"]["verification"]["ok"] is True

    # Same answer, and the written tidy notebook passes verify on its own.
    answers = [answer_payload(c) for c in code_cells(tidy) + code_cells(source)]
    tidy_answer, source_answer = (a for a in answers if a is not None)
    assert tidy_answer["value"] == source_answer["value"] == "Gentoo"
    report = verify_notebook(output, data=[PENGUINS])
    assert report.ok, report.summary()


def test_tidy_export_from_the_command_line(
    failures_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "tidy.ipynb"
    args = ["export", str(failures_run), "--tidy", "-o", str(output), "--no-verify", "--drop-displays"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "steps kept: 1, 6, 7" in out and "not verified" in out
    tidy = nbformat.read(output, as_version=4)
    assert tidy.metadata["nbagent"]["tidy"]["verified"] is False
    # Unverified, the tidy notebook keeps the run's own outputs.
    source_counts = {
        c.source: c.execution_count for c in code_cells(nbformat.read(failures_run, as_version=4))
    }
    assert all(c.execution_count == source_counts[c.source] for c in code_cells(tidy))

    before = output.read_bytes()
    assert main(["export", str(failures_run), "--tidy", "-o", str(output)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert output.read_bytes() == before


def test_tidy_keeps_a_figure_nothing_uses_and_judges_set_index_as_a_copy(tmp_path: Path) -> None:
    notebook = run_agent(
        [
            code('import pandas as pd\npenguins = pd.read_csv("penguins.csv")', "Load."),
            code('ax = penguins["body_mass_g"].plot.hist(title="Body mass")', "The distribution."),
            code('penguins.set_index("species").loc["nope"]', "Look one species up."),
            code('final_answer(float(penguins["body_mass_g"].mean().round(1)))', "The mean."),
        ],
        tmp_path / "run",
    )
    # The figure is evidence: kept by default (and the tidy notebook still reproduces it).
    result = export_tidy(notebook, tmp_path / "tidy.ipynb")
    assert result.kept_steps == [1, 2, 4] and result.verification is not None and result.verification.ok
    # set_index returned a copy: the failed step changed nothing later steps need, so it goes.
    assert {d.step: d.reason for d in result.dropped} == {3: "raised KeyError"}
    figures = [o for c in code_cells(result.notebook) for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(figures) == 1
    # --drop-displays leaves the figure out too.
    dropped = export_tidy(notebook, None, verify=False, keep_displays=False)
    assert dropped.kept_steps == [1, 4]
    assert {d.step: d.reason for d in dropped.dropped}[2] == "nothing the answer needs uses its results"


def test_a_tidy_notebook_that_does_not_reproduce_is_not_written(tmp_path: Path) -> None:
    notebook = run_agent(
        [
            code("import numpy as np\nnoise = np.random.default_rng().random(3)\nprint(noise)"),
            code("final_answer(float(noise.sum()))"),
        ],
        tmp_path / "run",
    )
    output = tmp_path / "tidy.ipynb"
    with pytest.raises(NotReproducedError) as caught:
        export_tidy(notebook, output)
    assert not output.exists()
    assert "--no-verify" in str(caught.value)
    assert caught.value.report.answer_reproduced is False


def test_a_notebook_without_an_answer_has_nothing_to_tidy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    notebook = run_agent([code("x = 1"), code("y = 2")], tmp_path / "run", max_steps=1)
    assert main(["export", str(notebook), "--tidy", "-o", str(tmp_path / "tidy.ipynb")]) == 2
    assert "has no answer cell" in capsys.readouterr().err
    assert not (tmp_path / "tidy.ipynb").exists()


class _Images(html.parser.HTMLParser):
    """Collects the ``src`` of every ``<img>`` and the page's text."""

    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []
        self.text: list[str] = []
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.sources.append(dict(attrs).get("src") or "")
        self._in_title = tag == "title"

    def handle_endtag(self, tag: str) -> None:
        self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        self.text.append(data)


def parse_html(path: Path) -> _Images:
    parser = _Images()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def stored_pngs(nb: nbformat.NotebookNode) -> list[bytes]:
    return [
        base64.b64decode(o.data["image/png"])
        for c in code_cells(nb)
        for o in c.outputs
        if "image/png" in o.get("data", {})
    ]


def test_html_report_embeds_the_figures(failures_run: Path, tmp_path: Path) -> None:
    output = export_html(failures_run, tmp_path / "report.html")
    page = parse_html(output)
    embedded = [
        base64.b64decode(src.split(",", 1)[1])
        for src in page.sources
        if src.startswith("data:image/png;base64,")
    ]
    [figure] = stored_pngs(nbformat.read(failures_run, as_version=4))
    assert embedded == [figure]
    image = Image.open(io.BytesIO(embedded[0]))
    assert image.format == "PNG" and image.size[0] > 100
    text = " ".join(page.text)
    assert page.title == QUESTION
    assert "Gentoo" in text and "Reproducibility." in text and "penguins.csv" in text
    assert "def final_answer" not in text  # nbagent's setup code is not part of the report
    assert "Traceback" in text  # the run as it happened, failed attempts included
    assert not any(src.startswith(("http:", "https:")) for src in page.sources)


def test_html_report_of_the_tidy_notebook(
    failures_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "copy"
    folder.mkdir()
    for item in failures_run.parent.iterdir():
        if item.is_file():  # not the jail's run folder (<stem>.work/)
            shutil.copy2(item, folder / item.name)
    assert main(["export", str(folder / "run.ipynb"), "--tidy", "--html"]) == 0
    output = folder / "run.tidy.html"
    assert f"{output}: HTML report" in capsys.readouterr().out
    page = parse_html(output)
    text = " ".join(page.text)
    assert "Tidy version of" in text and "Traceback" not in text  # the failed cells are gone
    assert sum(src.startswith("data:image/png;base64,") for src in page.sources) == 1
    assert "reproduced" in text
