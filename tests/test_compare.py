"""Output comparison for verify: normalisation of run-specific text, images by content."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

import matplotlib
import pytest
from nbformat import NotebookNode
from nbformat.v4 import new_output

from nbagent.repro.compare import (
    DEFAULT_IMAGE_TOLERANCE,
    answers_match,
    compare_outputs,
    image_difference,
    normalize_text,
    texts_match,
)

matplotlib.use("Agg")


def bar_chart(heights: Sequence[float], size: tuple[float, float] = (6.4, 4.8), software: str = "a") -> str:
    """A PNG bar chart as base64, the way an inline figure is stored."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=size)
    ax.bar(["Adelie", "Chinstrap", "Gentoo"], heights, color="tab:blue")
    ax.set_title("Mean body mass by species")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": software})
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def stdout(text: str) -> NotebookNode:
    return new_output("stream", name="stdout", text=text)


def test_normalisation_removes_addresses_timings_ids_ansi_and_paths() -> None:
    text = (
        "\x1b[31m<Figure at 0x7f3a2b1c9d90>\x1b[0m took 1.25 ms, Wall time: 3 s\n"
        "id 1b4e28ba-2fa1-11d2-883f-0016d3cca427, widget 6f1c0a8e9b2d4c3e8f7a6b5c4d3e2f1a\n"
        "File /tmp/ipykernel_4242/1234567.py:3, Cell In[17], line 3\n"
        "1.2 µs ± 3 ns per loop (mean ± std. dev. of 7 runs, 1,000,000 loops each)\n"
        "SeedSequence(entropy=123456789) in /home/me/project/data.csv   "
    )
    assert normalize_text(text, workdirs=["/home/me/project"]) == (
        "<Figure at 0x#> took <time>, Wall time: <time>\n"
        "id <uuid>, widget <id>\n"
        "File <cell>:3, Cell In[#], line 3\n"
        "<time> ± <time> per loop (mean ± std. dev. <loops>, <loops>)\n"
        "SeedSequence(entropy=<seed>) in <workdir>/data.csv"
    )


def test_normalisation_keeps_data_that_looks_like_units() -> None:
    assert normalize_text("3 species, 344 rows, 5076.0 g") == "3 species, 344 rows, 5076.0 g"


def test_numbers_match_to_nine_significant_digits_only() -> None:
    assert texts_match("total: 0.30000000000000004", "total: 0.3")
    assert not texts_match("Gentoo 5076.0", "Gentoo 5067.0")
    assert not texts_match("Gentoo 5076.0", "Adelie 5076.0")


def test_the_same_figure_saved_with_other_bytes_is_the_same_image() -> None:
    a, b = bar_chart([3700, 3733, 5076], software="x"), bar_chart([3700, 3733, 5076], software="y")
    assert a != b  # the bytes differ ...
    assert image_difference(a, b) == 0.0  # ... the picture does not


def test_changed_bars_make_a_different_image() -> None:
    a = bar_chart([3700, 3733, 5076])
    assert image_difference(a, bar_chart([3700, 3733, 5076 * 1.05])) > DEFAULT_IMAGE_TOLERANCE
    assert image_difference(a, bar_chart([5076, 3733, 3700])) > DEFAULT_IMAGE_TOLERANCE
    assert image_difference(a, bar_chart([3700, 3733, 5076], size=(4, 4))) == 1.0  # other shape


def test_outputs_differing_only_in_addresses_are_the_same() -> None:
    stored = [stdout("<object at 0x7f00aa11bb22>\n"), new_output("error", ename="KeyError", evalue="'x'")]
    new = [stdout("<object at 0x7fffcc33dd44>\n"), new_output("error", ename="KeyError", evalue="'x'")]
    assert compare_outputs(stored, new).same


def test_a_changed_output_gives_a_short_diff() -> None:
    diff = compare_outputs([stdout("species\nGentoo 5067.0\n")], [stdout("species\nGentoo 5076.0\n")])
    assert not diff.same
    assert "-[stdout]: Gentoo 5067.0" in diff.lines
    assert "+[stdout]: Gentoo 5076.0" in diff.lines


def test_a_changed_image_is_named_in_the_diff() -> None:
    def figure(heights: Sequence[float]) -> NotebookNode:
        return new_output("display_data", data={"image/png": bar_chart(heights), "text/plain": "<Figure>"})

    diff = compare_outputs([figure([1, 2, 3])], [figure([3, 2, 1])])
    assert not diff.same
    assert any("the image changed" in line for line in diff.lines)
    assert compare_outputs([figure([1, 2, 3])], [figure([1, 2, 3])]).same


@pytest.mark.parametrize(
    ("stored", "new", "same"),
    [
        ({"kind": "json", "type": "builtins.str", "value": "Gentoo"}, "Gentoo", True),
        ({"kind": "json", "type": "builtins.str", "value": "Gentoo"}, "Adelie", False),
        ({"kind": "json", "type": "builtins.float", "value": 0.1 + 0.2}, 0.3, True),
    ],
)
def test_answers_compare_by_value(stored: dict[str, object], new: object, same: bool) -> None:
    assert answers_match(stored, {**stored, "value": new}) is same


def test_image_answers_compare_by_picture() -> None:
    def answer(png: str) -> dict[str, object]:
        return {"kind": "image", "type": "matplotlib.figure.Figure", "value": png, "text": "<Figure>"}

    same_picture = answer(bar_chart([1, 2, 3], software="y"))
    assert answers_match(answer(bar_chart([1, 2, 3])), same_picture)
    assert not answers_match(answer(bar_chart([1, 2, 3])), answer(bar_chart([3, 2, 1])))
