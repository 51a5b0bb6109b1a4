"""The default offline tools: list and read files of the working directory, inspect data files."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest
from conftest import PENGUINS

from nbagent import Kernel
from nbagent.tools.defaults import inspect_data, list_files, read_file
from nbagent.tools.toolbox import Toolbox


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copy(PENGUINS, tmp_path / "penguins.csv")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("check the bills\n")
    (tmp_path / "notes" / "prices.data").write_text("item;price\napple;1.5\npear;2.25\nfig;\n")
    (tmp_path / "events.jsonl").write_text('{"t": 1, "kind": "a"}\n{"t": 2, "kind": "b"}\n{"t": 3}\n')
    (tmp_path / "records.json").write_text(
        '{"meta": {"v": 1}, "rows": [{"x": 1, "y": "u"}, {"x": 2, "y": "v"}]}'
    )
    (tmp_path / ".hidden").write_text("secret")
    with sqlite3.connect(tmp_path / "shop.db") as db:
        db.execute("create table orders(id integer, total real)")
        db.executemany("insert into orders values (?, ?)", [(1, 9.5), (2, 20.0)])
    db.close()
    (tmp_path / "blob.bin").write_bytes(b"\x00\x01\x02binary")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_list_files_lists_the_working_directory_and_stays_inside_it(workdir: Path) -> None:
    assert list_files() == [
        "blob.bin",
        "events.jsonl",
        "notes/",
        "penguins.csv",
        "records.json",
        "shop.db",
    ]
    assert list_files(pattern="**/*.txt") == ["notes/todo.txt"]
    assert list_files("notes") == ["notes/prices.data", "notes/todo.txt"]
    with pytest.raises(ValueError, match="outside the working directory"):
        list_files("..")


def test_read_file_reads_text_cuts_long_files_and_refuses_others(workdir: Path) -> None:
    assert read_file("notes/todo.txt") == "check the bills\n"
    long = read_file("penguins.csv", max_chars=300)
    assert long.startswith("species,island") and "characters cut" in long and len(long) < 400
    with pytest.raises(ValueError, match="binary file; use inspect_data"):
        read_file("blob.bin")
    with pytest.raises(ValueError, match="outside the working directory"):
        read_file("../../etc/passwd")
    with pytest.raises(FileNotFoundError, match=r"no file 'missing.txt'"):
        read_file("missing.txt")


def test_inspect_data_sniffs_the_format_from_the_content(workdir: Path) -> None:
    report = inspect_data("penguins.csv")
    first = report.splitlines()[0]
    assert (
        first.startswith("penguins.csv: CSV (delimiter ',', header row)") and "344 rows x 8 columns" in first
    )
    species = next(line for line in report.splitlines() if line.startswith("species"))
    assert "Adelie" in species and "(3 distinct)" in species
    mass = next(line for line in report.splitlines() if line.startswith("body_mass_g"))
    assert mass.split()[1:3] == ["float64", "2"] and "min 2700.0, max 6300.0" in mass
    assert "First 5 rows:" in report

    semicolons = inspect_data("notes/prices.data", sample_rows=0)
    assert semicolons.startswith("notes/prices.data: semicolon-separated (delimiter ';', header row)")
    assert "3 rows x 2 columns" in semicolons and "First" not in semicolons
    assert inspect_data("events.jsonl").startswith("events.jsonl: JSON Lines")
    records = inspect_data("records.json")
    assert records.startswith("records.json: JSON object; records under 'rows' (keys: meta, rows)")
    assert "2 rows x 2 columns" in records
    db = inspect_data("shop.db")
    assert db.splitlines() == [db.splitlines()[0], "- orders (2 rows): id INTEGER, total REAL"]
    assert db.startswith("shop.db: SQLite database") and "1 tables" in db
    assert inspect_data("blob.bin").startswith("blob.bin: binary file of an unknown format")
    (workdir / "fake.csv").write_bytes(b"PAR1" + b"\x00" * 20)  # the content decides, not the name
    assert inspect_data("fake.csv").startswith("fake.csv: Parquet")


def test_default_tools_are_defined_in_the_kernel_from_the_setup_cell(workdir: Path) -> None:
    workdir.chmod(0o755)  # readable by the jail's uid, as a run folder nbagent makes is
    with Kernel(cwd=workdir) as kernel:
        assert kernel.execute(Toolbox().setup_source()).ok
        execution = kernel.execute(
            "print(list_files(pattern='*.csv'))\nprint(inspect_data('penguins.csv').splitlines()[0])"
        )
    text = "".join(o.get("text", "") for o in execution.outputs)
    assert execution.ok, execution.error
    size = f"{PENGUINS.stat().st_size / 1000:.1f} kB"
    assert text.splitlines() == [
        "['penguins.csv']",
        f"penguins.csv: CSV (delimiter ',', header row), {size}, 344 rows x 8 columns",
    ]
    assert "def inspect_data(path: str, sample_rows: int = 5) -> str:" in Toolbox().setup_source()
    assert "def list_files(" in Toolbox().prompt_section()
    assert Toolbox(default_tools=False).prompt_section() == ""
