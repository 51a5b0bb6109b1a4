"""The tools every agent has unless told otherwise (all offline), and the opt-in web search.

``list_files``, ``read_file`` and ``inspect_data`` run in the kernel, on its working directory; they
are written self-contained (imports inside) because their source is what the kernel runs and what
the notebook's setup cell shows. ``WebSearchTool`` runs on the host (the kernel may have no network)
and needs network there, so it is only added when asked for: ``Agent(tools=[WebSearchTool()])``.
"""

from __future__ import annotations

import html.parser
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from .tool import Tool, tool


@tool
def list_files(path: str = ".", pattern: str = "*") -> list[str]:
    """List the files and folders in the working directory (or one of its folders).

    Args:
        path: a folder, relative to the working directory; "." is the working directory itself.
        pattern: a glob the names must match, e.g. "*.csv"; "**/*.csv" also searches subfolders.

    Returns:
        paths relative to the working directory, sorted; folders end with "/". Hidden files are left out.
    """
    from pathlib import Path

    base = Path.cwd().resolve()
    folder = (base / path).resolve()
    if folder != base and base not in folder.parents:
        raise ValueError(f"{path!r} is outside the working directory {str(base)!r}")
    if not folder.is_dir():
        raise FileNotFoundError(f"{path!r} is not a folder of the working directory")
    found = []
    for item in folder.glob(pattern):
        relative = item.relative_to(base)
        if any(part.startswith(".") or part == "__pycache__" for part in relative.parts):
            continue
        found.append(relative.as_posix() + ("/" if item.is_dir() else ""))
    return sorted(found)


@tool
def read_file(path: str, max_chars: int = 20000) -> str:
    """Read a text file of the working directory.

    Args:
        path: the file, relative to the working directory.
        max_chars: the most characters to return; a longer file is cut in the middle and the cut is marked.

    Returns:
        the file's text (UTF-8; undecodable bytes replaced).
    """
    from pathlib import Path

    base = Path.cwd().resolve()
    target = (base / path).resolve()
    if base not in target.parents:
        raise ValueError(f"{path!r} is outside the working directory {str(base)!r}")
    if not target.is_file():
        raise FileNotFoundError(f"no file {path!r} in the working directory")
    data = target.read_bytes()
    if b"\x00" in data[:8192]:
        raise ValueError(
            f"{path!r} is a binary file; use inspect_data({path!r}) or the library for its format"
        )
    text = data.decode("utf-8", errors="replace")
    if len(text) > max_chars:
        head = text[: max_chars * 2 // 3]
        tail = text[len(text) - (max_chars - len(head)) :]
        text = f"{head}\n… [{len(text) - len(head) - len(tail):,} characters cut] …\n{tail}"
    return text


@tool
def inspect_data(path: str, sample_rows: int = 5) -> str:
    """Describe a data file: its format (sniffed from the content, not the name), its size, the columns
    with their types, missing values and example values, and its first rows.

    Knows CSV/TSV and other delimited text, JSON and JSON Lines, Parquet, Feather, Excel and SQLite.

    Args:
        path: the file, relative to the working directory.
        sample_rows: how many of the first rows to show.

    Returns:
        a readable report; print it.
    """
    import csv
    import json
    import sqlite3
    from pathlib import Path

    import pandas as pd

    base = Path.cwd().resolve()
    target = (base / path).resolve()
    if base not in target.parents:
        raise ValueError(f"{path!r} is outside the working directory {str(base)!r}")
    if not target.is_file():
        raise FileNotFoundError(f"no file {path!r} in the working directory")
    size = target.stat().st_size
    with target.open("rb") as f:
        head = f.read(65536)
    limit = 100_000  # rows read from big files to find the schema

    def human(n):
        for unit in ("B", "kB", "MB", "GB"):
            if n < 1000 or unit == "GB":
                return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
            n /= 1000

    def describe(df, what, partial=False):
        rows = f"{len(df):,}{'+' if partial else ''}"
        lines = [f"{path}: {what}, {human(size)}, {rows} rows x {df.shape[1]} columns"]
        if partial:
            lines.append(f"(schema and counts from the first {limit:,} rows)")
        table = []
        for name in df.columns:
            col = df[name]
            missing = int(col.isna().sum())
            values = col.dropna()
            if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col) and len(values):
                example = f"min {values.min()}, max {values.max()}"
            else:
                distinct = values.astype(str).unique()
                shown = ", ".join(str(v)[:30] for v in distinct[:3])
                example = f"{shown}{', ...' if len(distinct) > 3 else ''} ({len(distinct):,} distinct)"
            table.append((str(name), str(col.dtype), str(missing), example))
        widths = [max(len(r[i]) for r in [("column", "type", "missing", ""), *table]) for i in range(3)]
        lines.append("")
        lines.append(f"{'column':{widths[0]}}  {'type':{widths[1]}}  {'missing':>{widths[2]}}  values")
        for row in table:
            lines.append(f"{row[0]:{widths[0]}}  {row[1]:{widths[1]}}  {row[2]:>{widths[2]}}  {row[3]}")
        if sample_rows > 0:
            with pd.option_context("display.width", 120, "display.max_columns", 20):
                lines += ["", f"First {min(sample_rows, len(df))} rows:", df.head(sample_rows).to_string()]
        return "\n".join(lines)

    if head.startswith(b"SQLite format 3\x00"):
        with sqlite3.connect(f"file:{target}?mode=ro", uri=True) as con:
            tables = [r[0] for r in con.execute("select name from sqlite_master where type='table'")]
            parts = [f"{path}: SQLite database, {human(size)}, {len(tables)} tables"]
            for table in tables:
                count = con.execute(f'select count(*) from "{table}"').fetchone()[0]
                cols = con.execute(f'pragma table_info("{table}")').fetchall()
                parts.append(f"- {table} ({count:,} rows): " + ", ".join(f"{c[1]} {c[2]}" for c in cols))
        return "\n".join(parts)
    if head.startswith(b"PAR1"):
        try:
            return describe(pd.read_parquet(target), "Parquet")
        except ImportError as exc:
            return f"{path}: Parquet file, {human(size)}; reading it needs pyarrow or fastparquet ({exc})"
        except (ValueError, OSError) as exc:  # pyarrow's ArrowInvalid is a ValueError
            return f"{path}: Parquet file, {human(size)}, that cannot be read ({exc})"
    if head.startswith(b"ARROW1"):
        return describe(pd.read_feather(target), "Feather (Arrow IPC)")
    if head.startswith(b"PK\x03\x04") and (b"xl/" in head or target.suffix.lower() in (".xlsx", ".xlsm")):
        sheets = pd.read_excel(target, sheet_name=None)
        parts = [describe(df, f"Excel workbook, sheet {name!r}") for name, df in sheets.items()]
        return "\n\n".join(parts)
    if head.startswith(b"\xd0\xcf\x11\xe0"):
        return describe(pd.read_excel(target), "Excel 97-2003 workbook")
    if head.startswith(b"\x1f\x8b"):
        return f"{path}: gzip-compressed file, {human(size)}; pandas readers take it with compression='gzip'"
    if b"\x00" in head:
        return f"{path}: binary file of an unknown format, {human(size)}; first bytes {head[:16]!r}"

    text = head.decode("utf-8", errors="replace")
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        first_lines = [line for line in text.splitlines() if line.strip()][:5]
        try:
            for line in first_lines[:2]:
                json.loads(line)
            lines_format = len(first_lines) > 1  # one document per line, at least two of them
        except ValueError:
            lines_format = False
        if lines_format and stripped.startswith("{"):
            df = pd.read_json(target, lines=True, nrows=limit if size > 100e6 else None)
            return describe(df, "JSON Lines", partial=size > 100e6 and len(df) == limit)
        data = json.loads(target.read_text(encoding="utf-8"))
        if isinstance(data, list):
            return describe(pd.json_normalize(data), "JSON list of records")
        if isinstance(data, dict):
            keys = ", ".join(list(data)[:20])
            for key, value in data.items():
                if isinstance(value, list) and value and isinstance(value[0], dict):
                    return describe(
                        pd.json_normalize(value), f"JSON object; records under {key!r} (keys: {keys})"
                    )
            return f"{path}: JSON object, {human(size)}, keys: {keys}"
    sample = "\n".join(text.splitlines()[:50])
    try:
        dialect = csv.Sniffer().sniff(sample, delimiters=",;\t|")
        delimiter = dialect.delimiter
    except csv.Error:
        delimiter = None
    if delimiter is None:
        first = text.splitlines()[0][:200] if text.strip() else ""
        return f"{path}: text without a delimited table, {human(size)}; first line: {first!r}"
    # A first row of names is a header; a first row of numbers is data (csv.Sniffer.has_header
    # guesses wrong on small files with gaps).
    first_row = next(csv.reader([sample.splitlines()[0]], delimiter=delimiter))

    def is_number(field):
        try:
            float(field)
        except ValueError:
            return False
        return True

    has_header = not all(is_number(f) for f in first_row if f.strip())
    big = size > 100e6
    df = pd.read_csv(target, sep=delimiter, header=0 if has_header else None, nrows=limit if big else None)
    names = {",": "CSV", "\t": "TSV", ";": "semicolon-separated", "|": "pipe-separated"}
    what = f"{names[delimiter]} (delimiter {delimiter!r}, {'header row' if has_header else 'no header row'})"
    return describe(df, what, partial=big and len(df) == limit)


DEFAULT_TOOLS: tuple[Tool, ...] = (list_files, read_file, inspect_data)
"""The offline tools an agent gets unless ``default_tools=False``."""


class _ResultParser(html.parser.HTMLParser):
    # DuckDuckGo's HTML results: <a class="result__a" href=...>title</a> ... class="result__snippet".
    def __init__(self) -> None:
        super().__init__()
        self.results: list[dict[str, str]] = []
        self._field: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        classes = (dict(attrs).get("class") or "").split()
        if tag == "a" and "result__a" in classes:
            href = dict(attrs).get("href") or ""
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(href).query)
            url = query.get("uddg", [href])[0]
            if url.startswith("//"):
                url = "https:" + url
            self.results.append({"title": "", "url": url, "snippet": ""})
            self._field = "title"
        elif "result__snippet" in classes and self.results:
            self._field = "snippet"

    def handle_endtag(self, tag: str) -> None:
        if tag in ("a", "div", "td"):
            self._field = None

    def handle_data(self, data: str) -> None:
        if self._field and self.results:
            self.results[-1][self._field] += data


class WebSearchTool(Tool):
    """Search the web and return the top results (title, URL, snippet). Needs network on the host."""

    name = "web_search"
    host = True

    def __init__(self, *, endpoint: str = "https://html.duckduckgo.com/html/", timeout: float = 20.0) -> None:
        self.endpoint = endpoint
        self.timeout = timeout

    def forward(self, query: str, max_results: int = 5) -> list:
        """Args:
        query: what to search for, as you would type it in a search engine.
        max_results: how many results to return (1 to 20).

        Returns:
            a list of {"title", "url", "snippet"} dicts, best first.
        """
        if not query.strip():
            raise ValueError("the query is empty")
        data = urllib.parse.urlencode({"q": query}).encode()
        request = urllib.request.Request(
            self.endpoint,
            data=data,
            headers={"User-Agent": "Mozilla/5.0 (nbagent web_search)", "Accept": "text/html"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                page = response.read().decode("utf-8", errors="replace")
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            host = urllib.parse.urlsplit(self.endpoint).netloc
            raise RuntimeError(
                f"web search failed: cannot reach {host} ({exc}); web_search needs network"
            ) from None
        parser = _ResultParser()
        parser.feed(page)
        results: list[dict[str, Any]] = []
        for r in parser.results:
            r = {k: " ".join(v.split()) for k, v in r.items()}
            if r["url"] and r["title"]:
                results.append(r)
        return results[: max(1, min(int(max_results), 20))]
