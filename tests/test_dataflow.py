"""The name analysis tidy export decides with: what each cell defines, uses and rebinds."""

from __future__ import annotations

from nbagent.repro.dataflow import RANDOM_STATE, analyse_cell, needed_cells


def needed(*sources: str, roots: tuple[int, ...] = ()) -> set[int]:
    """Cells needed by the last cell (and ``roots``) of a notebook made of ``sources``."""
    cells = [analyse_cell(s) for s in sources]
    return needed_cells(cells, {len(sources) - 1, *roots})


def test_assignments_imports_and_defs_are_definitions() -> None:
    names = analyse_cell(
        "import pandas as pd\nimport os.path\nfrom math import sqrt as root\n"
        "df = pd.read_csv('a.csv')\na, (b, *c) = 1, (2, 3)\ndef f(x):\n    return x\nclass K:\n    pass"
    )
    assert names.defines == {"pd", "os", "root", "df", "a", "b", "c", "f", "K"}
    assert names.kills == names.defines
    assert names.uses == set()


def test_names_read_before_the_cell_binds_them_are_uses() -> None:
    names = analyse_cell("y = x + 1\nx = 2\nprint(x, y, z)")
    assert names.uses == {"x", "z", "print"}
    assert names.defines == {"x", "y"}


def test_free_names_of_functions_lambdas_and_comprehensions_are_uses() -> None:
    names = analyse_cell(
        "def f(a, *rest, k=default):\n    local = a + outer\n    return [local * i for i in rest]\n"
        "g = lambda q: q + other\nsquares = {n: n * n for n in items if n > limit}"
    )
    assert names.uses == {"default", "outer", "other", "items", "limit"}
    assert names.defines == {"f", "g", "squares"}


def test_in_place_changes_define_the_changed_name_without_hiding_it() -> None:
    names = analyse_cell(
        "df['x'] = 1\nobj.attr = 2\ntotal += 3\nlst.append(4)\nframe.dropna(inplace=True)\n"
        "ax.set_title('t')\ndel cache['k']\nprocess(data)\nprint(shown)"
    )
    changed = {"df", "obj", "total", "lst", "frame", "ax", "cache", "data"}
    assert names.defines == changed
    assert names.kills == set()
    assert changed <= names.uses  # changing a thing needs the thing
    assert "shown" not in names.defines  # print() does not change its arguments


def test_pandas_setters_that_return_a_copy_change_nothing() -> None:
    names = analyse_cell("shown = df.set_index('k')\ncols.set_axis(['a'], axis=1)\nidx.set_names('n')")
    assert names.defines == {"shown"}  # set_index, set_axis, set_names: new objects
    assert analyse_cell("df.set_index('k', inplace=True)").defines == {"df"}
    assert analyse_cell("ax.set_xlabel('mass')").defines == {"ax"}  # matplotlib setters change the Axes


def test_bindings_in_branches_loops_and_try_are_not_certain() -> None:
    names = analyse_cell(
        "if c:\n    a = 1\nfor i in r:\n    b = i\ntry:\n    d = f()\nexcept E as e:\n    pass\n"
        "with open(p) as fh:\n    w = fh.read()\nprint(a, b, i, w)"
    )
    assert {"a", "b", "d", "e", "i", "fh", "w"} <= names.defines
    assert names.kills == {"fh", "w"}
    assert {"a", "b", "i"} <= names.uses and "w" not in names.uses and "fh" not in names.uses


def test_global_random_draws_read_and_change_the_hidden_state() -> None:
    draw = analyse_cell("x = np.random.rand(3)")
    assert RANDOM_STATE in draw.uses and RANDOM_STATE in draw.defines
    assert RANDOM_STATE in analyse_cell("s = df.sample(5)").defines
    assert RANDOM_STATE not in analyse_cell("s = df.sample(5, random_state=1)").defines
    assert RANDOM_STATE not in analyse_cell("rng = np.random.default_rng(3)").defines


def test_magics_star_imports_and_exec_are_opaque() -> None:
    assert analyse_cell("%matplotlib inline\nx = 1").opaque
    assert analyse_cell("!ls").opaque
    assert analyse_cell("from os import *").opaque
    assert analyse_cell("exec('y = 1')").opaque
    assert not analyse_cell("x = 1").opaque


def test_a_cell_that_raised_defines_only_what_ran_before_the_error() -> None:
    names = analyse_cell("a = 1\nb = missing()\nc = 3", raised=True, raised_at=2)
    assert names.defines == {"a"} and names.kills == {"a"}
    assert "c" not in names.defines
    # The value of an assignment is computed before it is stored: a failed one changed nothing.
    assert analyse_cell("df['kg'] = df['no such column'] / 1000", raised=True, raised_at=1).defines == set()
    # Without the line, anything may have been bound and nothing for certain.
    unknown = analyse_cell("a = 1\nb = missing()\nc = 3", raised=True)
    assert unknown.defines == {"a", "b", "c"} and unknown.kills == set()
    assert analyse_cell("x = (", raised=True).syntax_error


def test_needed_cells_follow_definitions_back_until_a_rebinding() -> None:
    assert needed("x = 1", "x = 2", "y = 5", "print(x)") == {1, 3}
    assert needed("x = 1", "if c:\n    x = 2", "print(x)") == {0, 1, 2}
    assert needed("df = load()", "df['k'] = 1", "df.describe()", "answer(df)") == {0, 1, 3}
    draws = ("import numpy as np", "a = np.random.rand()", "b = np.random.rand()", "answer(b)")
    assert needed(*draws) == {0, 1, 2, 3}  # the first draw moved the generator the second reads


def test_needed_cells_include_what_the_roots_need() -> None:
    cells = ("import pandas as pd", "setup = pd.options", "unused = 1", "done()")
    assert needed(*cells, roots=(1,)) == {0, 1, 3}
