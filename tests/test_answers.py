"""Final answers that are DataFrames, Series, figures or images: back to the host faithfully,
shown well in the notebook, and the notebook still re-runs."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from conftest import code, scripted
from nbclient import NotebookClient
from PIL import Image

from nbagent import Agent, Kernel, RunResult
from nbagent.agent.observe import SUMMARY_MIME
from nbagent.execution.outputs import ANSWER_MIME


def answer(kernel: Kernel, tmp_path: Path, *steps: str) -> RunResult:
    """Run the steps (the last calls final_answer) as an agent on the shared kernel."""
    agent = Agent(scripted(*(code(s) for s in steps)), executor=kernel)
    result = agent.run("Give the answer.", notebook=tmp_path / "run.ipynb")
    assert result.status == "answered", result.error
    return result


def answer_output(result: RunResult) -> dict:
    assert result.notebook_path is not None
    nb = nbformat.read(result.notebook_path, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    found = [o for o in outputs if ANSWER_MIME in o.get("data", {})]
    assert len(found) == 1
    return found[0]


def test_dataframe_answer_keeps_values_dtypes_and_index(kernel: Kernel, tmp_path: Path) -> None:
    result = answer(
        kernel,
        tmp_path,
        "import numpy as np, pandas as pd\n"
        "table = pd.DataFrame({\n"
        "    'count': [3, 1, 2], 'share': [0.123456789012, np.nan, 1e-12],\n"
        "    'name': ['a', 'b', 'c'], 'when': pd.date_range('2024-01-01', periods=3, freq='h'),\n"
        "    'kind': pd.Categorical(['x', 'y', 'x']), 'flag': [True, False, True],\n"
        "}, index=pd.Index(['r1', 'r2', 'r3'], name='row'))\n"
        "final_answer(table)",
    )
    got = result.answer
    expected = pd.DataFrame(
        {
            "count": [3, 1, 2],
            "share": [0.123456789012, float("nan"), 1e-12],
            "name": ["a", "b", "c"],
            "when": pd.date_range("2024-01-01", periods=3, freq="h"),
            "kind": pd.Categorical(["x", "y", "x"]),
            "flag": [True, False, True],
        },
        index=pd.Index(["r1", "r2", "r3"], name="row"),
    )
    pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=1e-12)
    out = answer_output(result)
    assert out["data"][ANSWER_MIME]["kind"] == "tagged" and out["data"][ANSWER_MIME]["value"]["$"] == "arrow"
    assert SUMMARY_MIME in out["data"] and "text/html" in out["data"]
    observation = result.steps[-1].observation.text
    assert observation.startswith("[final_answer received:") and "count" in observation


@pytest.mark.parametrize(
    "make, expected",
    [
        (
            "pd.Series([5076.0, 3733.1], name='mass', index=pd.Index(['Gentoo', 'Adelie'], name='species'))",
            pd.Series([5076.0, 3733.1], name="mass", index=pd.Index(["Gentoo", "Adelie"], name="species")),
        ),
        ("pd.Series([1, 2, 3])", pd.Series([1, 2, 3])),
    ],
    ids=["named", "unnamed"],
)
def test_series_answer_round_trips(kernel: Kernel, tmp_path: Path, make: str, expected: pd.Series) -> None:
    result = answer(kernel, tmp_path, f"import pandas as pd\nfinal_answer({make})")
    assert isinstance(result.answer, pd.Series)
    pd.testing.assert_series_equal(result.answer, expected, check_index_type=False)


def test_large_dataframe_answer_is_fetched_whole_but_not_stored_twice(kernel: Kernel, tmp_path: Path) -> None:
    result = answer(
        kernel,
        tmp_path,
        "import numpy as np, pandas as pd\n"
        "rows = pd.DataFrame({'i': np.arange(60_000), 'x': np.arange(60_000) / 7, 'tag': 'abc'})\n"
        "final_answer(rows)",
    )
    assert isinstance(result.answer, pd.DataFrame) and result.answer.shape == (60_000, 3)
    assert result.answer["x"].iloc[-1] == pytest.approx(59_999 / 7, rel=1e-14)
    payload = answer_output(result)["data"][ANSWER_MIME]
    assert payload["deferred"] is True and payload["value"] is None
    assert result.notebook_path is not None
    assert result.notebook_path.stat().st_size < 500_000  # the 4 MB of JSON stayed out


def test_figure_answer_comes_back_as_an_image_and_shows_once(kernel: Kernel, tmp_path: Path) -> None:
    result = answer(
        kernel,
        tmp_path,
        "import matplotlib.pyplot as plt\nfig, ax = plt.subplots(figsize=(4, 3))\n"
        "ax.bar(['a', 'b'], [3, 5])\nax.set_title('Votes')\nfinal_answer(fig)",
    )
    assert isinstance(result.answer, Image.Image)
    assert result.answer.size[0] > 200 and result.answer.size[1] > 150
    assert result.notebook_path is not None
    nb = nbformat.read(result.notebook_path, as_version=4)
    answer_cell = next(c for c in nb.cells if "final_answer(fig)" in c.source)
    assert [("image/png" in o.get("data", {})) for o in answer_cell.outputs] == [True]
    payload = answer_cell.outputs[0]["data"][ANSWER_MIME]
    assert payload["value"] is None and payload["value_in"] == "image/png"  # the PNG is stored once
    assert "Votes" in (result.answer_text or "") and "<Figure" not in (result.answer_text or "")
    # The answer cell computes what it shows: the figure again, and on a re-run the new one.
    assert nb.cells[-1].cell_type == "code" and "final_answer.value" in nb.cells[-1].source
    assert any("image/png" in o.get("data", {}) for o in nb.cells[-1].outputs)


def test_pil_image_answer_keeps_its_pixels(kernel: Kernel, tmp_path: Path) -> None:
    result = answer(
        kernel,
        tmp_path,
        "from PIL import Image\npicture = Image.new('RGB', (40, 30), (200, 10, 20))\n"
        "picture.putpixel((0, 0), (0, 255, 0))\nfinal_answer(picture)",
    )
    image = result.answer
    assert isinstance(image, Image.Image)
    assert image.size == (40, 30)
    assert image.convert("RGB").getpixel((0, 0)) == (0, 255, 0)
    assert image.convert("RGB").getpixel((39, 29)) == (200, 10, 20)


def test_notebook_with_tables_figures_errors_and_answer_reruns_without_nbagent(
    kernel: Kernel, tmp_path: Path
) -> None:
    result = answer(
        kernel,
        tmp_path,
        "import pandas as pd, matplotlib.pyplot as plt\n"
        "frame = pd.DataFrame({'v': range(100)})\nframe.plot(title='Values')\nframe",
        "frame['missing']",
        "final_answer(frame.describe())",
    )
    assert result.notebook_path is not None
    nb = nbformat.read(result.notebook_path, as_version=4)
    setup = next(c for c in nb.cells if "nbagent-setup" in c.metadata.get("tags", []))
    assert "import nbagent" not in setup.source and "from nbagent" not in setup.source
    assert len(setup.source.splitlines()) <= 40  # a setup cell a person reads
    NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": tmp_path}}
    ).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the figure
    # The agent's part (summaries for the model, the answer's hand-over) is not in the notebook.
    assert not any(SUMMARY_MIME in o.get("data", {}) or ANSWER_MIME in o.get("data", {}) for o in outputs)
    assert "count" in nb.cells[-1].outputs[0]["data"]["text/html"]  # the answer cell: the new table
    assert not any(o.get("output_type") == "error" for o in outputs)  # the failed step printed its error
    nbformat.validate(nb)
    json.dumps(nb)  # still plain JSON
