"""parse_reply: code extraction tolerant of what real models write."""

from __future__ import annotations

from nbagent.agent.parsing import parse_reply


def test_thought_and_python_block() -> None:
    r = parse_reply("Thought: load it.\n```python\nx = 1\nprint(x)\n```")
    assert r.thought == "load it."
    assert r.code == "x = 1\nprint(x)"


def test_py_tag_bare_fence_and_tilde_fence() -> None:
    assert parse_reply("```py\na = 1\n```").code == "a = 1"
    assert parse_reply("look\n```\nb = 2\n```").code == "b = 2"
    assert parse_reply("~~~python\nc = 3\n~~~").code == "c = 3"


def test_missing_closing_fence_takes_the_rest() -> None:
    r = parse_reply("I will compute.\n```python\ny = 2\nprint(y)\n")
    assert r.code == "y = 2\nprint(y)"


def test_several_python_blocks_run_in_order_and_other_languages_never_run() -> None:
    reply = (
        "First this:\n```python\na = 1\n```\nthen the output will look like\n```text\n1\n```\n"
        "and then\n```python\nprint(a)\n```"
    )
    r = parse_reply(reply)
    assert r.code == "a = 1\n\nprint(a)"
    assert r.thought == "First this:"


def test_untagged_blocks_count_only_when_no_block_is_tagged_python() -> None:
    r = parse_reply("```\nnot = 'run'\n```\n```python\nrun = True\n```")
    assert r.code == "run = True"


def test_no_code_block_keeps_the_whole_reply_as_thought() -> None:
    r = parse_reply("Thought: The answer is 42.")
    assert r.code is None
    assert r.thought == "The answer is 42."
    assert parse_reply("```json\n{}\n```").code is None


def test_hallucinated_observation_is_cut_off_and_never_run() -> None:
    r = parse_reply("```python\nprint(1)\n```\nObservation: 1\n```python\nprint('invented')\n```")
    assert r.code == "print(1)"


def test_indented_block_is_dedented() -> None:
    r = parse_reply("1. Do this:\n   ```python\n   for i in range(2):\n       print(i)\n   ```")
    assert r.code == "for i in range(2):\n    print(i)"


def test_empty_block_counts_as_no_code() -> None:
    assert parse_reply("```python\n\n```").code is None
