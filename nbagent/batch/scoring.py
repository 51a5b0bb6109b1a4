"""Scoring a batch task's answer against its ``expected`` answer.

Three methods, chosen per task (``scoring``) or from the expected answer:

- ``exact``: the texts are equal once surrounding whitespace is trimmed, runs of whitespace are
  made one space and case is ignored.
- ``numeric``: the answer is a number (or text holding exactly one number) within ``tolerance``
  of the expected number, relatively or absolutely (default ``1e-6``).
- ``dabench``: InfiAgent-DABench's format, ``@name[value]`` for every sub-answer
  (``@mean_fare[34.65], @median_age[28]``). Each expected name must appear in the answer with an
  equal value (numbers within ``tolerance``); ``score`` is the share of sub-answers right and
  ``correct`` needs all of them.

When ``scoring`` is not given: ``dabench`` if the expected text holds ``@name[...]``, ``numeric``
if it is a number (or a text that is one), else ``exact``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from .tasks import Scoring

DEFAULT_TOLERANCE = 1e-6

_DABENCH = re.compile(r"@(\w+)\[(.*?)\]", re.DOTALL)
_NUMBER = re.compile(r"[-+]?(?:\d[\d,]*\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


@dataclass(frozen=True)
class Score:
    """How an answer compares with the expected one.

    ``correct``: fully right. ``score``: the share right, from 0 to 1 (sub-answers for
    ``dabench``; 0 or 1 otherwise). ``detail``: a short reason when it is not right.
    """

    method: Scoring
    correct: bool
    score: float
    detail: str = ""


def choose_method(expected: str | int | float) -> Scoring:
    """The scoring method used for ``expected`` when a task names none."""
    if isinstance(expected, int | float):
        return "numeric"
    if _DABENCH.search(expected):
        return "dabench"
    if parse_number(expected, whole=True) is not None:
        return "numeric"
    return "exact"


def score_answer(
    answer: str | None,
    expected: str | int | float,
    method: Scoring | None = None,
    tolerance: float | None = None,
) -> Score:
    """Score ``answer`` (the answer's text; ``None``: no answer) against ``expected``."""
    method = method or choose_method(expected)
    tol = DEFAULT_TOLERANCE if tolerance is None else tolerance
    if answer is None:
        return Score(method, False, 0.0, "no answer")
    if method == "dabench":
        return _score_dabench(answer, str(expected), tol)
    if method == "numeric":
        want = expected if isinstance(expected, int | float) else parse_number(expected, whole=True)
        if want is None:
            return Score(method, False, 0.0, f"expected {expected!r} is not a number")
        got = parse_number(answer)
        if got is None:
            return Score(method, False, 0.0, "the answer holds no single number")
        ok = numbers_equal(got, float(want), tol)
        return Score(method, ok, float(ok), "" if ok else f"{got:g} is not {float(want):g}")
    ok = normalise(answer) == normalise(str(expected))
    return Score(method, ok, float(ok), "" if ok else "the texts differ")


def normalise(text: str) -> str:
    """Text as ``exact`` scoring compares it: trimmed, whitespace runs made one space, case-folded."""
    return " ".join(text.split()).casefold()


def parse_number(text: str, whole: bool = False) -> float | None:
    """The number in ``text``: the whole text if it is one, else its only number (``whole``: only
    the first way). Thousands separators and a trailing ``%`` are allowed."""
    stripped = text.strip().rstrip("%").strip()
    try:
        return float(stripped.replace(",", ""))
    except ValueError:
        pass
    if whole:
        return None
    found = _NUMBER.findall(text)
    if len(found) != 1:
        return None
    try:
        return float(found[0].replace(",", ""))
    except ValueError:
        return None


def numbers_equal(a: float, b: float, tolerance: float) -> bool:
    """``a`` and ``b`` within ``tolerance``, relatively or absolutely."""
    return math.isclose(a, b, rel_tol=tolerance, abs_tol=tolerance)


def _score_dabench(answer: str, expected: str, tolerance: float) -> Score:
    wanted = _DABENCH.findall(expected)
    if not wanted:
        return Score("dabench", False, 0.0, f"expected {expected!r} holds no @name[value]")
    given = {name: value for name, value in _DABENCH.findall(answer)}
    right = 0
    wrong: list[str] = []
    for name, value in wanted:
        got = given.get(name)
        if got is not None and _values_equal(got, value, tolerance):
            right += 1
        else:
            wrong.append(f"@{name}: {'missing' if got is None else repr(got.strip())}")
    score = right / len(wanted)
    return Score("dabench", right == len(wanted), score, "; ".join(wrong))


def _values_equal(got: str, want: str, tolerance: float) -> bool:
    if normalise(got) == normalise(want):
        return True
    a, b = parse_number(got, whole=True), parse_number(want, whole=True)
    return a is not None and b is not None and numbers_equal(a, b, tolerance)
