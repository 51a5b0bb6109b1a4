"""Scoring answers: exact text, numbers within a tolerance, and InfiAgent-DABench's @name[value]."""

from __future__ import annotations

import pytest

from nbagent.batch.scoring import choose_method, score_answer


@pytest.mark.parametrize(
    ("expected", "method"),
    [(3, "numeric"), (2.5, "numeric"), ("1,234.5", "numeric"), ("@a[1]", "dabench"), ("Gentoo", "exact")],
)
def test_method_is_chosen_from_the_expected_answer(expected: str | float, method: str) -> None:
    assert choose_method(expected) == method


@pytest.mark.parametrize(
    ("answer", "expected", "tolerance", "correct"),
    [
        ("344", 344, None, True),
        ("344.0000001", 344, None, True),
        ("344.1", 344, None, False),
        ("344.1", 344, 0.01, True),
        ("The mean is 4,201.75 g", "4201.75", None, True),
        ("between 3 and 4", 3, None, False),  # two numbers: no single answer
        ("12.5%", 12.5, None, True),
        ("no number", 1, None, False),
    ],
)
def test_numeric_scoring(answer: str, expected: float | str, tolerance: float | None, correct: bool) -> None:
    assert score_answer(answer, expected, "numeric", tolerance).correct is correct


def test_exact_scoring_ignores_case_and_spacing_only() -> None:
    assert score_answer("  Gentoo\n", "gentoo").correct
    assert score_answer("New  York", "new york").correct
    assert not score_answer("Gentoo penguin", "Gentoo").correct


def test_dabench_scoring_counts_sub_answers() -> None:
    expected = "@mean_fare[34.65], @median_age[28], @sex[male]"
    full = score_answer("@median_age[28.0] and @mean_fare[34.650000001], @sex[Male]", expected)
    assert full.correct and full.score == 1.0 and full.method == "dabench"
    part = score_answer("@mean_fare[34.65], @median_age[29]", expected)
    assert not part.correct and part.score == pytest.approx(1 / 3)
    assert "@median_age: '29'" in part.detail and "@sex: missing" in part.detail


def test_no_answer_scores_zero() -> None:
    result = score_answer(None, 3)
    assert not result.correct and result.score == 0.0 and result.detail == "no answer"
