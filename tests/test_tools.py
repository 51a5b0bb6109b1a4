"""Tools written as typed functions or Tool classes: described in the prompt, defined in the kernel."""

from __future__ import annotations

import math
from pathlib import Path

import nbformat
import pytest
from conftest import code, scripted
from nbclient import NotebookClient

from nbagent import Agent, Tool, ToolDefinitionError, ToolRequirementError, tool
from nbagent.tools.toolbox import Toolbox

EARTH_RADIUS_KM = 6371.0


@tool
def great_circle_km(lat1: float, lon1: float, lat2: float, lon2: float, digits: int = 1) -> float:
    """Distance between two points on Earth, along its surface.

    Args:
        lat1: latitude of the first point, in degrees.
        lon1: longitude of the first point, in degrees.
        lat2: latitude of the second point, in degrees.
        lon2: longitude of the second point, in degrees.
        digits: decimals to round the result to.

    Returns:
        the distance in kilometres.
    """
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return round(2 * EARTH_RADIUS_KM * math.asin(math.sqrt(a)), digits)


class WordCounter(Tool):
    """Count the words of a text file; remembers how many files it has counted."""

    name = "count_words"

    def __init__(self, lowercase: bool = True, stopwords: tuple[str, ...] = ()) -> None:
        self.lowercase = lowercase
        self.stopwords = set(stopwords)

    def setup(self) -> None:
        self.files_counted = 0

    def forward(self, path: str) -> dict:
        """Args:
        path: the text file, relative to the working directory.

        Returns:
            {"words": number of words kept, "files_counted": files counted so far}.
        """
        text = Path(path).read_text()
        words = [w.lower() if self.lowercase else w for w in text.split()]
        self.files_counted += 1
        return {
            "words": len([w for w in words if w not in self.stopwords]),
            "files_counted": self.files_counted,
        }


def test_tool_decorator_reads_types_defaults_and_docstring() -> None:
    spec = great_circle_km.spec
    assert spec.name == "great_circle_km"
    assert spec.description == "Distance between two points on Earth, along its surface."
    assert [p.name for p in spec.parameters] == ["lat1", "lon1", "lat2", "lon2", "digits"]
    assert spec.parameters[-1].annotation == "int" and spec.parameters[-1].default == "1"
    assert spec.parameters[0].default is None
    assert spec.returns == "float" and spec.returns_description == "the distance in kilometres."
    # The host can call the tool too: it is still the function.
    assert great_circle_km(48.8566, 2.3522, 45.764, 4.8357) == pytest.approx(391.5, abs=0.5)
    signature = spec.signature()
    assert signature.startswith(
        "def great_circle_km(lat1: float, lon1: float, lat2: float, lon2: float, digits: int = 1) -> float:"
    )
    assert "        digits: decimals to round the result to." in signature
    compile(signature + "\n    ...", "<signature>", "exec")  # the listing is valid Python


def test_tool_kernel_code_carries_the_imports_and_constants_it_uses() -> None:
    definition = great_circle_km.kernel_definition()
    assert definition.imports == ["EARTH_RADIUS_KM = 6371.0", "import math"]
    assert definition.code.startswith("def great_circle_km(")
    assert "@tool" not in definition.code
    namespace: dict[str, object] = {}
    exec("\n".join([*definition.imports, definition.code]), namespace)  # runs with nothing else
    assert namespace["great_circle_km"](0, 0, 0, 1) == pytest.approx(111.2, abs=0.1)  # type: ignore[operator]


def test_tool_definitions_that_cannot_work_are_refused_with_what_to_fix() -> None:
    with pytest.raises(ToolDefinitionError, match="has no docstring"):

        @tool
        def no_doc(x: int) -> int:
            return x

    with pytest.raises(ToolDefinitionError, match="parameter 'x' has no type hint"):

        @tool
        def untyped(x) -> int:  # type: ignore[no-untyped-def]
            """Double.

            Args:
                x: a number.
            """
            return 2 * x

    with pytest.raises(ToolDefinitionError, match="parameter 'y' is not described"):

        @tool
        def undocumented(x: int, y: int) -> int:
            """Add.

            Args:
                x: a number.
            """
            return x + y

    with pytest.raises(ToolDefinitionError, match="no return type"):

        @tool
        def no_return(x: int):  # type: ignore[no-untyped-def]
            """Echo.

            Args:
                x: a number.
            """
            return x

    with pytest.raises(ToolDefinitionError, match="taken by nbagent"):
        tool(name="final_answer")(great_circle_km.function)

    with open(__file__) as handle:  # an object the kernel cannot re-create

        @tool
        def uses_handle(n: int) -> str:
            """Read from a handle.

            Args:
                n: characters to read.
            """
            return handle.read(n)

        with pytest.raises(ToolDefinitionError, match=r"it uses 'handle'.*cannot be re-created"):
            uses_handle.kernel_definition()

    with pytest.raises(ToolDefinitionError, match="two tools or managed agents are named"):
        Toolbox([great_circle_km, tool(name="great_circle_km")(great_circle_km.function)])


def test_typed_tool_is_in_the_prompt_and_called_from_generated_code_in_the_kernel(tmp_path: Path) -> None:
    (tmp_path / "poem.txt").write_text("The sea the sea the endless sea")
    model = scripted(
        code(
            "d = great_circle_km(48.8566, 2.3522, 45.764, 4.8357)\n"
            "print(d)\n"
            "print(count_words('poem.txt'))\n"
            "print(count_words('poem.txt'))",
            "Use the tools.",
        ),
        code("final_answer(d)"),
    )
    notebook = tmp_path / "distance.ipynb"
    with Agent(model, tools=[great_circle_km, WordCounter(stopwords=("the",))]) as agent:
        result = agent.run("How far is Lyon from Paris?", files=[tmp_path / "poem.txt"], notebook=notebook)

    system = model.calls[0][0]["content"]
    assert great_circle_km.spec.signature() in system
    assert "def count_words(path: str) -> dict:" in system
    assert "def inspect_data(path: str, sample_rows: int = 5) -> str:" in system  # a default tool
    assert result.status == "answered"
    assert result.answer == pytest.approx(391.5, abs=0.5)
    lines = result.steps[0].observation.text.splitlines()
    assert lines[1:] == ["{'words': 4, 'files_counted': 1}", "{'words': 4, 'files_counted': 2}"]

    nb = nbformat.read(notebook, as_version=4)
    setup = next(c for c in nb.cells if c.metadata.get("nbagent", {}).get("role") == "tools")
    assert "def great_circle_km(" in setup.source and "EARTH_RADIUS_KM = 6371.0" in setup.source
    assert "class WordCounter(Tool):" in setup.source
    assert "count_words = WordCounter(stopwords=('the',))" in setup.source
    assert "_nbagent_host" not in setup.source  # no host tools: no bridge code

    # The notebook re-runs on its own, tools included, in a plain python3 kernel.
    rerun = nbformat.read(notebook, as_version=4)
    NotebookClient(rerun, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    step = next(
        c for c in rerun.cells if c.metadata.get("nbagent", {}).get("step") == 1 and c.cell_type == "code"
    )
    text = "".join(o.get("text", "") for o in step.outputs)
    assert text.splitlines()[1:] == ["{'words': 4, 'files_counted': 1}", "{'words': 4, 'files_counted': 2}"]


def test_missing_requirement_is_reported_at_start_before_any_step(tmp_path: Path) -> None:
    @tool(requirements=["numpy", "nbagent-surely-not-a-package>=1"])
    def needs_rare(x: int) -> int:
        """Needs a package nobody has.

        Args:
            x: a number.
        """
        return x

    model = scripted(code("final_answer(1)"))
    notebook = tmp_path / "never.ipynb"
    with Agent(model, tools=[needs_rare]) as agent, pytest.raises(ToolRequirementError) as caught:
        agent.run("anything", notebook=notebook)
    message = str(caught.value)
    assert "'nbagent-surely-not-a-package>=1' for tool 'needs_rare' is not installed" in message
    assert "pip install 'nbagent-surely-not-a-package>=1'" in message
    assert "numpy" not in message.split("Install")[0]  # installed requirements are not blamed
    assert model.calls == []  # nothing was asked of the model
    assert not notebook.exists()  # and no notebook was written


def test_host_tool_requirement_is_checked_when_the_agent_is_made() -> None:
    @tool(host=True, requirements=["nbagent-surely-not-a-package"])
    def host_only(x: int) -> int:
        """Needs a package nobody has, on the host.

        Args:
            x: a number.
        """
        return x

    with pytest.raises(ToolRequirementError, match="host tool's requirement is missing in this Python"):
        Agent(scripted(), tools=[host_only])


def test_the_tool_listing_reaches_custom_system_prompts() -> None:
    listing = great_circle_km.spec.signature()
    placed = Agent(scripted(), tools=[great_circle_km], system_prompt="Be brief.\n{tools}\nEnd.")
    assert placed.system_prompt.startswith("Be brief.\n## Tools") and placed.system_prompt.endswith("End.\n")
    appended = Agent(scripted(), tools=[great_circle_km], system_prompt="Be brief.")
    assert appended.system_prompt.startswith("Be brief.\n\n## Tools") and listing in appended.system_prompt
    default = Agent(scripted(), tools=[great_circle_km], instructions="Answer in French.")
    assert listing in default.system_prompt
    assert default.system_prompt.index("## Tools") < default.system_prompt.index("Answer in French.")
    bare = Agent(scripted(), default_tools=False, system_prompt="Only this.")
    assert bare.system_prompt == "Only this.\n"
