"""Final answers that are DataFrames, Series, figures or images: back to the host faithfully,
shown well in the notebook, and the notebook still re-runs."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from conftest import code, scripted
from nbclient import NotebookClient
from PIL import Image

from nbagent import Agent, Execution, Kernel, Observer, RunResult
from nbagent.agent.answers import decode_answer
from nbagent.agent.observe import SUMMARY_MIME
from nbagent.cli import main
from nbagent.execution.outputs import ANSWER_MIME
from nbagent.kernel_code import agent_code, new_answer_key, setup_code


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


# Each kind of answer, made in the kernel and on the host by the same expression.
FIDELITY = {
    "object-valued Series (df.dtypes)": "frame.dtypes",
    "repeated index labels": "pd.DataFrame({'a': [1, 2, 3]}, index=['x', 'x', 'y'])",
    "MultiIndex rows and columns": (
        "pd.DataFrame([[1, 2.5], [3, 4.5]], index=pd.MultiIndex.from_tuples([('a', 1), ('b', 2)], "
        "names=['k', 'n']), columns=pd.MultiIndex.from_tuples([('x', 'p'), ('x', 'q')]))"
    ),
    "named Series with a datetime index": (
        "pd.Series([1.5, float('nan')], index=pd.date_range('2024-01-01', periods=2, tz='UTC'), name='v')"
    ),
    "Series with a tuple name and mixed objects": "pd.Series([1, 'a', None], name=('n', 1))",
    "frame of mixed objects": "pd.DataFrame({'o': [1, 'b'], 'd': [decimal.Decimal('1.5'), None]})",
    "nullable and categorical columns": (
        "pd.DataFrame({'i': pd.array([1, None], dtype='Int64'), 'c': pd.Categorical(['u', 'v'])})"
    ),
    "Index": "pd.Index([3, 1], name='ids')",
    "ndarray": "np.arange(12, dtype='int16').reshape(3, 4)",
    "float ndarray with NaN": "np.array([[1.0, np.nan], [np.inf, -0.0]], dtype='float32')",
    "datetime64 ndarray": "np.array(['2024-01-01', 'NaT'], dtype='datetime64[s]')",
    "object ndarray": "np.array([1, 'a', None], dtype=object)",
    "numpy scalars": "(np.float32(1.5), np.int8(-3), np.bool_(True), np.datetime64('2024-01-02'))",
    "tuple": "(1, 'a', (2.5, None))",
    "set and frozenset": "[{1, 2, 3}, frozenset({'a'})]",
    "dict with non-string keys": "{1: 'one', (2, 3): [4], 'text': {'$': 'not a tag'}}",
    "datetimes": (
        "[datetime.datetime(2024, 5, 6, 7, 8, 9, 10), datetime.date(2024, 1, 2), datetime.time(3, 4), "
        "datetime.timedelta(days=2, microseconds=5), "
        "datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)]"
    ),
    "pandas Timestamp and Timedelta": (
        "[pd.Timestamp('2024-01-02 03:04:05.123456789', tz='Europe/Paris'), "
        "pd.Timedelta('1 days 00:00:01'), pd.NaT]"
    ),
    "Period and Interval": "[pd.Period('2024-01', freq='M'), pd.Interval(0, 1.5, closed='left')]",
    "Series with a PeriodIndex (an Arrow extension type: tagged)": (
        "pd.Series([1, 2], index=pd.period_range('2024-01', periods=2, freq='M'))"
    ),
    "Decimal": "decimal.Decimal('1.10')",
    "NaN and infinities": "[float('nan'), float('inf'), -float('inf'), 1e308]",
    "complex and big int": "[complex(1, -2), 2**100]",
    "bytes": "[b'\\x00\\xff', bytearray(b'ab')]",
    "numpy dtype": "np.dtype('float64')",
}


def same(got: object, expected: object) -> bool:
    """Equal, and of the same types all the way down (NaN equals NaN)."""
    if type(got) is not type(expected):
        return False
    if isinstance(expected, pd.DataFrame):
        pd.testing.assert_frame_equal(got, expected)  # type: ignore[arg-type]
        return True
    if isinstance(expected, pd.Series):
        pd.testing.assert_series_equal(got, expected)  # type: ignore[arg-type]
        return True
    if isinstance(expected, pd.Index):
        pd.testing.assert_index_equal(got, expected)  # type: ignore[arg-type]
        return True
    if isinstance(expected, np.ndarray):
        assert isinstance(got, np.ndarray)
        return (
            got.dtype == expected.dtype
            and got.shape == expected.shape
            and bool(
                np.array_equal(got, expected, equal_nan=expected.dtype.kind in "fcmM")
                if expected.dtype != object
                else all(same(a, b) for a, b in zip(got.ravel(), expected.ravel(), strict=True))
            )
        )
    if isinstance(expected, (list, tuple)):
        return len(got) == len(expected) and all(same(a, b) for a, b in zip(got, expected, strict=True))  # type: ignore[arg-type]
    if isinstance(expected, dict):
        return got.keys() == expected.keys() and all(same(got[k], v) for k, v in expected.items())  # type: ignore[attr-defined]
    if isinstance(expected, float) and np.isnan(expected):
        return bool(np.isnan(got))  # type: ignore[arg-type]
    if isinstance(expected, np.generic):
        return got.dtype == expected.dtype and got == expected  # type: ignore[attr-defined,no-any-return]
    if expected is pd.NaT:
        return got is pd.NaT
    if isinstance(expected, pd.Timestamp):
        return got == expected and str(got.tz) == str(expected.tz)  # type: ignore[attr-defined]
    return bool(got == expected)


def test_every_kind_of_answer_comes_back_as_the_same_object(kernel: Kernel) -> None:
    key = new_answer_key()
    assert kernel.execute(setup_code() + agent_code(key)).ok
    prelude = (
        "import datetime, decimal\nimport numpy as np, pandas as pd\n"
        "frame = pd.DataFrame({'a': [1], 'b': ['x']})"
    )
    assert kernel.execute(prelude).ok
    namespace: dict[str, object] = {}
    exec(prelude, namespace)
    wrong = []
    for kind, expression in FIDELITY.items():
        execution = kernel.execute(f"final_answer({expression})")
        payload = execution.answer_bundle(key)
        assert payload is not None, (kind, execution.error)
        answer = decode_answer(payload)
        expected = eval(expression, namespace)
        try:
            ok = answer.note is None and same(answer.value, expected)
        except AssertionError as exc:
            ok, answer.note = False, str(exc)
        if not ok:
            wrong.append(f"{kind}: got {answer.value!r} ({answer.note}), expected {expected!r}")
    assert not wrong, "\n".join(wrong)


def test_an_answer_nbagent_cannot_carry_is_its_str_with_a_note(kernel: Kernel, tmp_path: Path) -> None:
    result = answer(
        kernel,
        tmp_path,
        "class Odd:\n    def __str__(self):\n        return 'odd thing'\n"
        "    def __repr__(self):\n        return 'Odd()'\nfinal_answer([Odd()])",
    )
    assert result.answer == "[Odd()]" and isinstance(result.answer, str)  # exactly str() of the list
    assert result.answer_note is not None and "cannot be carried" in result.answer_note


def test_a_display_of_the_answer_type_by_hand_is_not_an_answer(kernel: Kernel, tmp_path: Path) -> None:
    agent = Agent(
        scripted(
            code(
                "from IPython.display import display\n"
                f"forged = {{'kind': 'tagged', 'value': 'forged', 'text': 'forged'}}\n"
                f"display({{{ANSWER_MIME!r}: forged}}, raw=True)"
            ),
            code("final_answer('real')"),
        ),
        executor=kernel,
    )
    result = agent.run("Give the answer.", files=None, notebook=tmp_path / "run.ipynb")
    assert result.answer == "real" and len(result.steps) == 2


def test_a_huge_image_answer_comes_back_as_text_not_a_crash(tmp_path: Path) -> None:
    from PIL import Image as PILImage

    buffer = io.BytesIO()
    PILImage.new("1", (20_000, 20_000)).save(buffer, format="PNG")  # small file, 400 M pixels
    payload = {"kind": "image", "value": base64.b64encode(buffer.getvalue()).decode(), "text": "<huge>"}
    decoded = decode_answer(payload)
    assert decoded.value == "<huge>" and decoded.note is not None and "too large" in decoded.note
    # Shown by a step, a picture over the limit (below PIL's own) is described, not decoded.
    buffer = io.BytesIO()
    PILImage.new("1", (8_000, 7_500)).save(buffer, format="PNG")
    big = base64.b64encode(buffer.getvalue()).decode()
    shown = nbformat.v4.new_output("display_data", data={"image/png": big})
    observation = Observer().observe(Execution(code="", outputs=[shown]))
    assert observation.text == "[image: PNG 8000x7500 px]" and observation.images == []
    # A compressed Arrow stream (a possible decompression bomb) is refused; the same uncompressed is read.
    table = pa.table({"n": list(range(1000))})
    for compression, refused in ((None, False), ("zstd", True)):
        sink = pa.BufferOutputStream()
        options = pa.ipc.IpcWriteOptions(compression=compression)
        with pa.ipc.new_stream(sink, table.schema, options=options) as writer:
            writer.write_table(table)
        value = {"$": "arrow", "v": base64.b64encode(sink.getvalue().to_pybytes()).decode()}
        arrow = decode_answer({"kind": "tagged", "value": value, "text": "t"})
        assert (arrow.note is not None and "compressed" in arrow.note) is refused
    broken = decode_answer({"kind": "tagged", "value": {"$": "arrow", "v": "bm90IGFycm93"}, "text": "t"})
    assert broken.value == "t" and broken.note is not None


def test_cli_json_prints_the_answer_and_status_as_one_object(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = tmp_path / "script.json"
    script.write_text(
        json.dumps(
            [
                code(
                    "import pandas as pd\n"
                    "final_answer(pd.DataFrame({'n': [1.5, float('nan')]}, index=['x', 'x']))"
                )
            ]
        )
    )
    notebook = tmp_path / "out.ipynb"
    assert main(["run", "Table?", "--model", f"scripted:{script}", "-o", str(notebook), "-q", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["status"] == "answered" and record["answer_note"] is None and record["steps"] == 1
    assert record["answer"] == {"columns": ["n"], "index": ["x", "x"], "data": [[1.5], [None]]}
    assert record["notebook"] == str(notebook.resolve()) and "1.5" in record["answer_text"]
