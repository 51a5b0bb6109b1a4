"""What a failed %%agent step leaves behind: bindings undone, in-place changes reported."""

from __future__ import annotations

import numpy as np
import pandas as pd

from nbagent.execution.containment import FULL_HASH_CELLS, NamespaceGuard


def test_bindings_are_undone_and_in_place_changes_named() -> None:
    frame, values, rows, kept = pd.DataFrame({"a": [1, 2]}), np.zeros(3), [1, 2], {"k": 1}
    namespace = {"frame": frame, "values": values, "rows": rows, "kept": kept, "old": "x", "_": 5}
    guard = NamespaceGuard(namespace)
    # What a step might do before raising:
    namespace["new"] = 1
    namespace["old"] = "rebound"
    del namespace["kept"]
    frame.loc[1, "a"] = 20
    values[0] = 1.0
    rows.append(3)
    namespace["_"] = 6  # IPython's own history name: not the step's
    undone = guard.undo()
    assert namespace == {"frame": frame, "values": values, "rows": rows, "kept": kept, "old": "x", "_": 6}
    assert undone.removed == ["new"] and sorted(undone.restored) == ["kept", "old"]
    assert sorted(undone.changed_in_place) == ["frame", "rows", "values"]
    assert "cannot be undone" in undone.describe()


def test_a_step_that_changed_nothing_reports_nothing() -> None:
    big = pd.DataFrame(np.arange(FULL_HASH_CELLS * 2).reshape(-1, 2))  # sampled, not hashed whole
    namespace = {"big": big, "copy": big.set_index(0)}
    guard = NamespaceGuard(namespace)
    big.set_index(1)  # returns a copy
    assert guard.undo().describe() == ""
