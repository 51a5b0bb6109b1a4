"""Sharing tools: a folder round trip, the Hub through a loopback endpoint, and explicit trust."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import code, scripted
from test_tools import WordCounter, great_circle_km

from nbagent import Agent, Tool, UntrustedToolError, UsageError, load_tool, tool
from nbagent.testing.hub import LoopbackHub


def test_a_function_tool_saved_to_a_folder_loads_back_and_runs_in_the_kernel(tmp_path: Path) -> None:
    folder = great_circle_km.save(tmp_path / "gc")
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md",
        "index.html",
        "requirements.txt",
        "tool.json",
        "tool.py",
    ]
    meta = json.loads((folder / "tool.json").read_text())
    assert meta["format"] == "nbagent-tool/1" and meta["kind"] == "function" and meta["host"] is False
    assert meta["spec"]["parameters"][-1] == {
        "name": "digits",
        "type": "int",
        "description": "decimals to round the result to.",
        "default": "1",
    }
    source = (folder / "tool.py").read_text()
    assert "import math" in source and "EARTH_RADIUS_KM = 6371.0" in source and "@tool" not in source

    loaded = load_tool(folder, trust_remote_code=True)
    assert loaded.spec == great_circle_km.spec
    assert loaded(48.8566, 2.3522, 45.764, 4.8357) == great_circle_km(48.8566, 2.3522, 45.764, 4.8357)
    assert loaded.kernel_definition().code == great_circle_km.kernel_definition().code

    model = scripted(code("final_answer(great_circle_km(0, 0, 0, 90, digits=0))"))
    with Agent(model, tools=[loaded], default_tools=False) as agent:
        result = agent.run("Quarter of the equator?")
    assert result.answer == 10008.0

    with pytest.raises(UsageError, match="already holds a saved tool"):
        great_circle_km.save(folder)
    great_circle_km.save(folder, overwrite=True)


def test_a_tool_class_with_constructor_arguments_round_trips(tmp_path: Path) -> None:
    counter = WordCounter(lowercase=False, stopwords=("a",))
    folder = counter.save(tmp_path / "counter")
    source = (folder / "tool.py").read_text()
    assert "from nbagent import Tool" in source
    assert "count_words = WordCounter(lowercase=False, stopwords=('a',))" in source
    loaded = load_tool(folder, trust_remote_code=True)
    assert isinstance(loaded, Tool) and loaded.spec == counter.spec
    (tmp_path / "words.txt").write_text("a A b")
    assert loaded(path=str(tmp_path / "words.txt")) == {"words": 2, "files_counted": 1}
    assert "count_words = WordCounter(lowercase=False, stopwords=('a',))" in loaded.kernel_definition().code


def _booby_trapped_tool(folder: Path, marker: Path) -> Path:
    @tool
    def shout(text: str) -> str:
        """Upper-case a text.

        Args:
            text: what to shout.
        """
        return text.upper()

    shout.save(folder)
    tool_py = folder / "tool.py"
    tool_py.write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n" + tool_py.read_text()
    )
    return folder


def test_loading_an_untrusted_tool_refuses_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    folder = _booby_trapped_tool(tmp_path / "shout", marker)
    with pytest.raises(UntrustedToolError, match=r"runs its code.*trust_remote_code=True"):
        load_tool(folder)
    assert not marker.exists()
    loaded = load_tool(folder, trust_remote_code=True)  # with trust it runs (and so does the trap)
    assert marker.read_text() == "ran" and loaded(text="hi") == "HI"


def test_push_to_a_hub_and_load_back_through_a_loopback_endpoint(tmp_path: Path) -> None:
    with LoopbackHub(token="hf_test") as hub:
        url = great_circle_km.push_to_hub("alice/great-circle", endpoint=hub.url, token="hf_test")
        assert url == f"{hub.url}/spaces/alice/great-circle"
        repo = hub.repos[("space", "alice/great-circle")]
        assert repo.sdk == "static"
        assert sorted(repo.files) == ["README.md", "index.html", "requirements.txt", "tool.json", "tool.py"]
        assert repo.files["tool.py"] == (great_circle_km.save(tmp_path / "local") / "tool.py").read_bytes()
        assert b"sdk: static" in repo.files["README.md"]

        # Untrusted: refused before any request is made.
        before = len(hub.requests)
        with pytest.raises(UntrustedToolError, match="Hub repo 'alice/great-circle'"):
            load_tool("alice/great-circle", endpoint=hub.url)
        assert len(hub.requests) == before

        loaded = load_tool(
            "alice/great-circle",
            endpoint=hub.url,
            token="hf_test",
            trust_remote_code=True,
            cache_dir=tmp_path / "cache",
        )
        assert loaded.spec == great_circle_km.spec
        assert loaded(0, 0, 0, 1) == great_circle_km(0, 0, 0, 1)
        assert ("GET", "/spaces/alice/great-circle/resolve/main/tool.py") in hub.requests

        # A second push updates the same repo; a bad token is refused with a clear error.
        great_circle_km.push_to_hub("alice/great-circle", endpoint=hub.url, token="hf_test")
        with pytest.raises(UsageError, match="pushing tool 'great_circle_km' to 'alice/other' failed"):
            great_circle_km.push_to_hub("alice/other", endpoint=hub.url, token="wrong")
        with pytest.raises(UsageError, match=r"cannot download tool.json of tool repo 'alice/missing'"):
            load_tool("alice/missing", endpoint=hub.url, trust_remote_code=True, cache_dir=tmp_path / "cache")


def test_bad_sources_get_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="neither a folder nor a Hub repo id"):
        load_tool(tmp_path / "nope", trust_remote_code=True)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match=r"not a saved nbagent tool: tool.json is missing"):
        load_tool(tmp_path / "empty", trust_remote_code=True)
