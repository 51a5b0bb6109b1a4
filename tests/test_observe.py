"""Observations: what the model reads of tables, figures, rich outputs, errors and long outputs.

Every test runs real code in a real kernel with nbagent's setup code (final_answer and the
display formatters), and checks both the observation and the outputs the notebook keeps.
"""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import nbformat
import pytest
from conftest import code, scripted
from PIL import Image

from nbagent import Agent, Execution, HistoryLimits, Kernel, Observer, UsageError
from nbagent.agent.observe import SUMMARY_MIME
from nbagent.cli import main
from nbagent.kernel_code import agent_code, new_answer_key, setup_code
from nbagent.records import Observation


@pytest.fixture(scope="module")
def k(kernel: Kernel) -> Kernel:
    """The shared kernel with nbagent's setup code run in it."""
    execution = kernel.execute(setup_code() + agent_code(new_answer_key()))
    assert execution.ok, execution.error
    kernel.execute("import numpy as np\nimport pandas as pd\nimport matplotlib.pyplot as plt")
    return kernel


def run(kernel: Kernel, source: str, observer: Observer | None = None) -> tuple[Execution, Observation]:
    execution = kernel.execute(source, timeout=120)
    return execution, (observer or Observer()).observe(execution)


def summaries(execution: Execution) -> list[str]:
    return [o["data"][SUMMARY_MIME] for o in execution.outputs if SUMMARY_MIME in o.get("data", {})]


def test_dataframe_of_10000_rows_shows_shape_columns_ends_and_what_was_left_out(k: Kernel) -> None:
    execution, obs = run(
        k,
        "big = pd.DataFrame({'id': np.arange(10_000), 'price': np.arange(10_000) * 0.5,"
        " 'city': ['Oslo', 'Lima'] * 5_000})\nbig.loc[3, 'price'] = np.nan\nbig",
    )
    text = obs.text
    assert text.startswith("Out[")
    assert "DataFrame: 10,000 rows x 3 columns" in text
    assert "\n,id:int64,price:float64,city:str\n" in text
    assert "missing values: price 1" in text
    rows = "\n0,0,0,Oslo\n1,1,0.5,Lima\n… 9,996 more rows …\n9998,9998,4999,Oslo\n9999,9999,4999.5,Lima"
    assert rows in text
    assert len(text) < 500
    # The notebook keeps pandas' own representations as well.
    data = execution.outputs[-1]["data"]
    assert {"text/html", "text/plain", SUMMARY_MIME} <= set(data)
    assert "<table" in data["text/html"] and "10000 rows \u00d7 3 columns" in data["text/html"]


def test_wide_dataframe_lists_every_column_and_says_how_many_the_table_skips(k: Kernel) -> None:
    execution, obs = run(
        k, "wide = pd.DataFrame(np.ones((4, 50)), columns=[f'feature_{i}' for i in range(50)])\nwide"
    )
    assert "DataFrame: 4 rows x 50 columns" in obs.text
    assert all(f"feature_{i}" in obs.text for i in range(50))
    assert "all columns by dtype: float64 (50): feature_0, feature_1," in obs.text
    assert ",feature_5,… 38 more columns …,feature_44," in obs.text
    assert "\n3,1,1,1,1,1,1,…,1,1,1,1,1,1" in obs.text
    assert "feature_0:float64" not in obs.text  # dtypes are listed once, above
    # pandas' own text leaves out middle columns without naming them.
    plain = execution.outputs[-1]["data"]["text/plain"]
    assert "feature_25" not in plain


def test_series_shows_name_dtype_length_and_values(k: Kernel) -> None:
    _, obs = run(
        k,
        "mass = pd.Series([5076.0, 3733.1, 3700.7], name='body_mass_g',"
        " index=pd.Index(['Gentoo', 'Chinstrap', 'Adelie'], name='species'))\nmass",
    )
    assert "Series 'body_mass_g': 3 values, dtype float64" in obs.text
    assert "\nspecies:str,body_mass_g\nGentoo,5076\nChinstrap,3733.1\nAdelie,3700.7" in obs.text


def test_printed_dataframe_is_plain_text_within_the_budget(k: Kernel) -> None:
    execution, obs = run(k, "print(big)", Observer(max_chars=800))
    assert "[10000 rows x 3 columns]" in obs.text  # pandas' own footer survives the cut
    assert len(obs.text) <= 800
    assert execution.outputs[0]["name"] == "stdout"


def test_bar_chart_gives_an_image_and_a_summary_with_title_labels_and_values(k: Kernel) -> None:
    execution, obs = run(
        k,
        "ax = pd.Series([5076.0, 3733.1, 3700.7], index=['Gentoo', 'Chinstrap', 'Adelie']).plot.bar()\n"
        "ax.set_title('Mean body mass by species')\nax.set_xlabel('species')\nax.set_ylabel('mass (g)')\n"
        "plt.show()",
    )
    assert "Figure 640x480 px, 1 axes" in obs.text
    assert "'Mean body mass by species': bar chart" in obs.text
    assert "x 'species' categories: Gentoo, Chinstrap, Adelie" in obs.text
    assert "y 'mass (g)' 0 to" in obs.text
    assert "3 bars: Gentoo 5076, Chinstrap 3733.1, Adelie 3700.7" in obs.text
    assert len(obs.images) == 1
    picture = Image.open(io.BytesIO(base64.b64decode(obs.images[0])))
    assert picture.format == "PNG" and picture.size[0] > 300
    pngs = [o for o in execution.outputs if "image/png" in o.get("data", {})]
    assert len(pngs) == 1 and pngs[0]["data"]["image/png"].strip() == obs.images[0]


def test_line_plot_with_two_series_and_a_legend(k: Kernel) -> None:
    _, obs = run(
        k,
        "x = np.linspace(0, 10, 200)\nfig, ax = plt.subplots()\n"
        "ax.plot(x, np.sin(x), label='sin')\nax.plot(x, 2 * np.cos(x), label='2 cos')\n"
        "ax.set_title('Waves')\nax.set_xlabel('time (s)')\nax.legend()\nplt.show()",
    )
    assert "Axes 1 'Waves': line plot (2 lines)" in obs.text
    assert "x 'time (s)'" in obs.text
    assert "line 'sin': 200 points, x from 0 to 10, y from -0.9999 to 0.9999" in obs.text
    assert "line '2 cos': 200 points, x from 0 to 10, y from -1.999 to 2" in obs.text
    assert "legend: sin, 2 cos" in obs.text
    assert len(obs.images) == 1


def test_two_figures_in_one_step_give_two_images_and_two_summaries_in_order(k: Kernel) -> None:
    execution, obs = run(
        k,
        "fig1, ax1 = plt.subplots()\nax1.hist(np.random.default_rng(0).normal(size=500), bins=10)\n"
        "ax1.set_title('Spread')\nfig2, ax2 = plt.subplots()\n"
        "ax2.scatter([1, 2, 3], [4, 5, 6])\nax2.set_title('Dots')",
    )
    assert len(obs.images) == 2
    assert obs.text.index("'Spread': histogram") < obs.text.index("'Dots': scatter (3 points)")
    assert "10 bins" in obs.text and "total 500" in obs.text
    assert len([o for o in execution.outputs if "image/png" in o.get("data", {})]) == 2


def test_print_display_and_result_keep_their_order(k: Kernel) -> None:
    _, obs = run(
        k,
        "print('first print')\ndisplay(pd.DataFrame({'a': [1, 2]}))\nprint('second print')\n"
        "import sys\nprint('a warning', file=sys.stderr)\n'the result'",
    )
    order = ["first print", "DataFrame: 2 rows x 1 columns", "second print", "[stderr]\na warning"]
    positions = [obs.text.index(part) for part in [*order, "Out["]]
    assert positions == sorted(positions)
    assert obs.text.endswith("'the result'")


def test_5_mb_print_keeps_head_and_tail_marks_the_cut_and_the_notebook_keeps_all(k: Kernel) -> None:
    execution, obs = run(k, "print('HEAD' + 'x' * 5_000_000 + 'TAIL')\nprint('after')")
    assert len(execution.outputs[0]["text"]) == 5_000_015  # the notebook gets everything
    text = obs.text
    assert len(text) <= 6000
    assert text.startswith("HEAD") and "TAIL\nafter" in text
    cut = re.search(r"… \[([\d,]+) characters cut\] …", text)
    assert cut is not None
    shown = len(text) - len(cut.group(0))
    assert int(cut.group(1).replace(",", "")) + shown >= 5_000_000


def test_many_outputs_share_the_budget_and_a_flood_cannot_hide_the_others(k: Kernel) -> None:
    _, obs = run(
        k,
        "print('\\n'.join(f'log line {i}' for i in range(100_000)))\n"
        "display(pd.DataFrame({'answer': [42]}))\nraise ValueError('the important error')",
    )
    assert len(obs.text) <= 6000
    assert "log line 0\n" in obs.text and "log line 99999" in obs.text
    assert "lines (" in obs.text and "characters) cut" in obs.text
    assert "DataFrame: 1 rows x 1 columns" in obs.text and "42" in obs.text
    assert "ValueError: the important error" in obs.text


def test_deep_traceback_from_inside_pandas_keeps_the_error_the_line_and_the_last_frames(k: Kernel) -> None:
    code = (
        "frame = pd.DataFrame({'a': [1, 2]})\ndef pick(row):\n    return row['missing']\n"
        "frame.apply(pick, axis=1)"
    )
    execution, obs = run(k, code)
    assert execution.status == "error"
    full = "\n".join(execution.outputs[-1]["traceback"])
    text = obs.text
    assert text.startswith("KeyError: 'missing'")
    assert "\n  this step, line 4: frame.apply(pick, axis=1)\n" in text  # the step's own frames stay
    assert "\n  this step, line 3 in pick: return row['missing']\n" in text
    assert re.search(r"… \d+ library frames not shown …", text)
    assert "  pandas/core/" in text and "site-packages" not in text  # short library paths
    assert "raised while handling KeyError" in text  # the chained cause, in one line
    assert len(text) < len(full) / 2


def test_syntax_error_keeps_its_caret(k: Kernel) -> None:
    _, obs = run(k, "x = (1,\n")
    assert "SyntaxError" in obs.text and "^" in obs.text and "x = (1," in obs.text


def test_deep_recursion_is_cut_to_its_first_and_last_frames(k: Kernel) -> None:
    _, obs = run(k, "def down(n):\n    return down(n + 1)\ndown(0)")
    assert obs.text.startswith("RecursionError: maximum recursion depth exceeded")
    assert "  this step, line 2 in down: return down(n + 1)\n  … the frame above repeats" in obs.text
    assert len(obs.text) < 500


def test_markdown_html_json_and_images_give_their_best_text(k: Kernel) -> None:
    _, obs = run(
        k,
        "from IPython.display import HTML, JSON, Image as IPImage, Markdown\n"
        "display(Markdown('**bold** claim'))\n"
        "display(HTML('<style>td {color: red}</style><table><tr><th>name</th><th>score</th></tr>"
        "<tr><td>ada</td><td>9</td></tr></table><p>Total: <b>9</b></p>'))\n"
        "display(JSON({'key': [1, 2]}))\n"
        "from PIL import Image as PILImage\n"
        "buf = io.BytesIO() if 'io' in dir() else __import__('io').BytesIO()\n"
        "PILImage.new('RGB', (30, 20), 'red').save(buf, format='JPEG')\n"
        "display(IPImage(buf.getvalue()))\n"
        "PILImage.new('L', (8, 6))",
    )
    text = obs.text
    assert "**bold** claim" in text
    assert "name | score\nada | 9\nTotal: 9" in text and "color" not in text
    assert '{"key": [1, 2]}' in text
    assert "[image: JPEG 30x20 px]" in text
    assert "Image 8x6 px, mode L" in text
    assert "object>" not in text  # no "<IPython.core.display.HTML object>"
    assert len(obs.images) == 2
    converted = Image.open(io.BytesIO(base64.b64decode(obs.images[0])))
    assert converted.format == "PNG" and converted.size == (30, 20)  # JPEG sent as PNG


def test_a_failing_summary_falls_back_to_the_plain_text_without_an_error(k: Kernel) -> None:
    execution, obs = run(
        k,
        "class Odd(pd.DataFrame):\n    def isna(self):\n        raise RuntimeError('no')\nOdd({'v': [7]})",
    )
    assert execution.ok
    assert [o["output_type"] for o in execution.outputs] == ["execute_result"]
    assert SUMMARY_MIME not in execution.outputs[0]["data"]
    assert "v" in obs.text and "7" in obs.text


def test_token_budget_is_respected(k: Kernel) -> None:
    observer = Observer(max_tokens=300)
    _, obs = run(k, "for i in range(5000):\n    print(i, i * 0.25, 'row')")
    assert observer.count_tokens(obs.text) > 300  # the default budget lets more through
    _, small = run(k, "for i in range(5000):\n    print(i, i * 0.25, 'row')", observer)
    assert observer.count_tokens(small.text) <= 300
    assert small.text.startswith("0 0.0 row") and small.text.endswith("4999 1249.75 row")


def test_oversized_images_are_scaled_down_for_the_model_only(k: Kernel) -> None:
    execution, obs = run(
        k,
        "fig, ax = plt.subplots(figsize=(30, 10))\nax.plot([1, 2])\nplt.show()",
        Observer(max_image_side=500),
    )
    sent = Image.open(io.BytesIO(base64.b64decode(obs.images[0])))
    kept = Image.open(io.BytesIO(base64.b64decode(execution.outputs[0]["data"]["image/png"])))
    assert max(sent.size) == 500 and max(kept.size) > 2000


def test_the_notebook_keeps_every_output_in_full_and_records_what_the_model_saw(
    kernel: Kernel, tmp_path: Path
) -> None:
    steps = [
        "import numpy as np, pandas as pd, matplotlib.pyplot as plt\n"
        "rows = pd.DataFrame({'n': np.arange(10_000)})\nrows",
        "for title in ('one', 'two'):\n    fig, ax = plt.subplots()\n    ax.set_title(title)",
        "print('z' * 5_000_000)",
        "rows.merge(rows, on='missing')",
        "final_answer(len(rows))",
    ]
    agent = Agent(scripted(*(code(s) for s in steps)), executor=kernel)
    result = agent.run("Keep everything.", notebook=tmp_path / "full.ipynb")
    assert result.answer == 10_000
    nb = nbformat.read(tmp_path / "full.ipynb", as_version=4)
    cells = [c for c in nb.cells if c.metadata.get("nbagent", {}).get("role") == "step"]
    table, figures, flood, error, _ = cells
    assert "<table" in table.outputs[0]["data"]["text/html"]
    assert [o["data"]["text/plain"][:7] for o in figures.outputs] == ["<Figure", "<Figure"]
    assert all(len(o["data"]["image/png"]) > 1000 for o in figures.outputs)
    assert len(flood.outputs[0]["text"]) == 5_000_001
    assert "site-packages" in "\n".join(error.outputs[0]["traceback"])  # the whole traceback
    for cell, step in zip(cells, result.steps, strict=True):
        assert cell.metadata["nbagent"]["observation"] == step.observation.text
        assert len(step.observation.text) <= 6000
    assert cells[1].metadata["nbagent"]["observation_images"] == 2
    assert "site-packages" not in result.steps[3].observation.text


def test_cli_observation_budget(tmp_path: Path) -> None:
    script = tmp_path / "replies.json"
    script.write_text(
        json.dumps([code("for i in range(5000):\n    print('line', i)"), code("final_answer('done')")])
    )
    notebook = tmp_path / "cli.ipynb"
    args = ["run", "Print a lot.", "--model", f"scripted:{script}", "-o", str(notebook), "-q"]
    assert main([*args, "--observation-chars", "10"]) == 2
    assert not notebook.exists()
    assert main([*args, "--observation-chars", "400"]) == 0
    nb = nbformat.read(notebook, as_version=4)
    steps = [c.metadata["nbagent"] for c in nb.cells if c.metadata.get("nbagent", {}).get("role") == "step"]
    seen = [step["observation"] for step in steps]
    assert 300 < len(seen[0]) <= 400 and "line 0\n" in seen[0] and "line 4999" in seen[0]


def test_hundreds_of_outputs_keep_the_first_and_last_and_count_the_rest(k: Kernel) -> None:
    execution, obs = run(k, "for i in range(500):\n    display(f'item {i}')", Observer(max_chars=2000))
    assert len(execution.outputs) == 500
    assert len(obs.text) <= 2000
    assert obs.text.startswith("'item 0'") and obs.text.endswith("'item 499'")
    dropped = re.search(r"… \[(\d+) outputs not shown\] …", obs.text)
    assert dropped is not None
    assert int(dropped.group(1)) + obs.text.count("'item ") == 500


def test_bad_budgets_are_refused_with_a_clear_error() -> None:
    with pytest.raises(UsageError, match="max_chars must be at least 200"):
        Observer(max_chars=10)
    with pytest.raises(UsageError, match="max_tokens must be at least 50"):
        Observer(max_tokens=5)
    with pytest.raises(UsageError, match="max_chars must be at least 1000"):
        HistoryLimits(max_chars=10)
