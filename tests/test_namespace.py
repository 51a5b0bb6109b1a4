"""What the model is told about the user's variables: bounded, cheap, and side-effect free."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from nbagent.magic.namespace import describe_namespace, describe_value


def test_dataframes_arrays_and_plain_values_are_described() -> None:
    sales = pd.DataFrame({"month": ["Jan", "Feb"], "revenue": [10, 12]})

    def growth(frame, periods=1):  # type: ignore[no-untyped-def]
        return frame.revenue.pct_change(periods)

    namespace = {
        "sales": sales,
        "revenue": sales.revenue,
        "grid": np.zeros((2, 3)),
        "threshold": 5,
        "title": "Q1",
        "regions": {"north": 1, "south": 2},
        "months": ["Jan"],
        "growth": growth,
        "math": math,
        "pd": pd,
    }
    lines = describe_namespace(namespace).splitlines()
    assert lines[0].startswith("- sales: pandas DataFrame, 2 rows × 2 columns: month (")
    assert lines[0].endswith("revenue (int64)")
    assert lines[1:] == [
        "- revenue: pandas Series 'revenue', 2 values, dtype int64",
        "- grid: numpy array, shape (2, 3), dtype float64",
        "- threshold: int = 5",
        "- title: str, 2 characters: 'Q1'",
        "- regions: dict, 2 items; keys: 'north', 'south'",
        "- months: list, 1 item",
        "- growth: function(frame, periods=1)",
        "Imported modules: math, pd (pandas)",
    ]


def test_private_hidden_and_ipython_names_are_left_out() -> None:
    namespace = {"_": 1, "_i3": "x", "In": [], "Out": {}, "exit": None, "final_answer": print, "mine": 1}
    assert describe_namespace(namespace, hidden={"mine"}) == ""
    assert describe_namespace({**namespace, "data": [1, 2]}, hidden={"mine"}) == "- data: list, 2 items"


def test_many_variables_keep_data_first_and_name_the_rest() -> None:
    namespace: dict[str, object] = {f"v{i}": i for i in range(10)}
    namespace["table"] = pd.DataFrame({"a": [1]})
    lines = describe_namespace(namespace, limit=3).splitlines()
    assert [line.split(":")[0] for line in lines[:3]] == ["- v8", "- v9", "- table"]
    assert lines[3] == "- … and 8 more: v0, v1, v2, v3, v4, v5, v6, v7"


def test_wide_frames_and_long_values_are_bounded() -> None:
    wide = pd.DataFrame({f"c{i}": [i] for i in range(40)})
    text = describe_value(wide, max_columns=3)
    assert text == "pandas DataFrame, 1 rows × 40 columns: c0 (int64), c1 (int64), c2 (int64), … 37 more"
    line = describe_namespace({"essay": "word " * 1000}, width=80)
    assert len(line) == 80 and line.endswith("…")


def test_objects_are_described_without_running_their_code() -> None:
    called: list[str] = []

    class Watched:
        def __len__(self) -> int:
            called.append("len")
            return 0

        def __repr__(self) -> str:
            called.append("repr")
            return "Watched()"

    assert describe_namespace({"thing": Watched()}).endswith(".Watched")
    assert called == []
