"""OutputCollector: kernel messages become notebook outputs as JupyterLab/nbclient store them.

Pure message-level cases with hand-made messages (the real-kernel cases are in test_kernel.py).
"""

from __future__ import annotations

from typing import Any

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

from nbagent.execution.outputs import OutputCollector, apply_terminal_controls


def msg(msg_type: str, **content: Any) -> dict[str, Any]:
    return {"header": {"msg_type": msg_type}, "parent_header": {}, "metadata": {}, "content": content}


def stream(text: str, name: str = "stdout") -> dict[str, Any]:
    return msg("stream", name=name, text=text)


def display(text: str, display_id: str | None = None) -> dict[str, Any]:
    transient = {"display_id": display_id} if display_id else {}
    return msg("display_data", data={"text/plain": text}, metadata={}, transient=transient)


def test_consecutive_streams_of_one_name_are_merged_and_order_is_kept() -> None:
    c = OutputCollector()
    outs = c.begin()
    for m in [stream("a\n"), stream("b\n"), stream("err\n", "stderr"), stream("c\n"), display("D")]:
        c.handle(m)
    assert [(o.output_type, o.get("name"), o.get("text")) for o in outs] == [
        ("stream", "stdout", "a\nb\n"),
        ("stream", "stderr", "err\n"),
        ("stream", "stdout", "c\n"),
        ("display_data", None, None),
    ]


def test_carriage_return_and_backspace_are_applied_like_a_terminal() -> None:
    assert apply_terminal_controls("10%\r50%\r100%\n") == "100%\n"
    assert apply_terminal_controls("abc\x08d") == "abd"
    c = OutputCollector()
    outs = c.begin()
    for part in ["1/3\r", "2/3\r", "3/3\n", "done\n"]:
        c.handle(stream(part))
    assert outs[0].text == "3/3\ndone\n"


def test_clear_output_wait_clears_just_before_the_next_output() -> None:
    c = OutputCollector()
    outs = c.begin()
    c.handle(stream("old\n"))
    c.handle(msg("clear_output", wait=True))
    assert [o.text for o in outs] == ["old\n"]  # nothing cleared yet
    c.handle(stream("new\n"))
    assert [o.text for o in outs] == ["new\n"]


def test_clear_output_without_wait_clears_at_once() -> None:
    c = OutputCollector()
    outs = c.begin()
    c.handle(display("x"))
    c.handle(msg("clear_output", wait=False))
    assert outs == []


def test_update_display_data_rewrites_the_output_in_an_earlier_cell() -> None:
    c = OutputCollector()
    first = c.begin()
    c.handle(display("loading…", display_id="progress"))
    second = c.begin()
    c.handle(
        msg(
            "update_display_data",
            data={"text/plain": "done"},
            metadata={},
            transient={"display_id": "progress"},
        )
    )
    assert first[0].data == {"text/plain": "done"}
    assert second == []  # an update adds no output of its own


def test_outputs_form_a_valid_notebook() -> None:
    c = OutputCollector()
    outs = c.begin()
    c.handle(stream("hi\n"))
    c.handle(msg("execute_result", data={"text/plain": "1"}, metadata={}, execution_count=3))
    c.handle(msg("error", ename="ValueError", evalue="bad", traceback=["\x1b[31mValueError\x1b[0m: bad"]))
    assert outs[-1].traceback == ["ValueError: bad"]  # ANSI stripped
    cell = new_code_cell("x", outputs=outs, execution_count=3)
    nbformat.validate(new_notebook(cells=[cell]))
