"""nbagent verify: notebooks written by real runs re-run in a fresh kernel and are compared."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nbformat
import pytest
from conftest import PENGUINS, REPO, code, run_cli, scripted

from nbagent import Agent, UsageError, verify_notebook
from nbagent.cli import main
from nbagent.execution.kernel import DEFAULT_KERNEL
from nbagent.execution.outputs import ANSWER_MIME
from nbagent.notebook.recorder import file_digest

PENGUIN_REPLIES = json.loads((REPO / "examples" / "penguins" / "replies.json").read_text())

UNSEEDED = [
    code(
        "import numpy as np\nseeded = np.random.rand(3)\nprint(seeded.round(6))",
        "The global generator is seeded by the setup cell.",
    ),
    code(
        "import matplotlib.pyplot as plt\nrng = np.random.default_rng()\nnoise = rng.random(3)\n"
        "print(noise)\nplt.scatter(noise, noise[::-1], s=400)\nplt.show()",
        "A generator made without a seed: different numbers on every run.",
    ),
    code("final_answer(float(noise.sum()))", "Report the sum."),
]


def run_agent(
    replies: list[str], folder: Path, files: tuple[Path, ...] = (PENGUINS,), timeout: float = 60
) -> Path:
    """Run the real agent with a scripted model; returns the notebook it wrote."""
    folder.mkdir(parents=True, exist_ok=True)
    notebook = folder / "run.ipynb"
    with Agent(scripted(*replies), timeout=timeout) as agent:
        result = agent.run("Which penguin species is heaviest?", files=list(files), notebook=notebook)
    assert result.notebook_path == notebook
    return notebook


@pytest.fixture(scope="module")
def penguins_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run_agent(PENGUIN_REPLIES, tmp_path_factory.mktemp("penguins"))


@pytest.fixture(scope="module")
def unseeded_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run_agent(UNSEEDED, tmp_path_factory.mktemp("unseeded"), files=())


def copy_run(notebook: Path, folder: Path) -> Path:
    """The notebook and its data files, copied to ``folder``."""
    for item in notebook.parent.iterdir():
        if item.is_file():  # the notebook and its data; not the jail's run folder (<stem>.work/)
            shutil.copy2(item, folder / item.name)
    return folder / notebook.name


def step_cell(nb: nbformat.NotebookNode, step: int) -> nbformat.NotebookNode:
    return next(c for c in nb.cells if c.cell_type == "code" and c.metadata["nbagent"].get("step") == step)


def test_run_records_what_a_rerun_needs(penguins_run: Path) -> None:
    nb = nbformat.read(penguins_run, as_version=4)
    meta = nb.metadata["nbagent"]
    env = meta["environment"]
    assert env["python"].count(".") == 2
    assert {"pandas", "numpy", "matplotlib"} <= set(env["packages"])
    assert env["random_seed"] == {"seed": 0, "seeded": ["random", "numpy.random"]}
    assert env["python_hash_seed"] == "0"
    assert env["kernel"] == DEFAULT_KERNEL
    assert meta["runs"][0]["files"] == [{"name": "penguins.csv", "sha256": file_digest(PENGUINS)}]
    # The environment was asked for silently: execution counts run on without a gap.
    counts = [c.execution_count for c in nb.cells if c.cell_type == "code"]
    assert counts == list(range(1, len(counts) + 1))


def test_notebook_of_a_scripted_run_reproduces(penguins_run: Path) -> None:
    report = verify_notebook(penguins_run)
    assert report.ok, report.summary()
    assert report.kernel == DEFAULT_KERNEL
    # setup, tools, steps 1-4, the answer cell
    assert [c.status for c in report.cells] == ["same"] * 7
    assert report.answer_reproduced and [c.label for c in report.answer_cells] == ["step 4 · answer"]
    # Step 2 raised KeyError in the run, is tagged raises-exception, and raises it again.
    assert step_cell(nbformat.read(penguins_run, as_version=4), 2).metadata["tags"] == ["raises-exception"]
    assert report.cells[3].label == "step 2" and report.cells[3].status == "same"
    # The figure of step 3 was compared by content.
    assert report.executed is not None
    assert any("image/png" in o.get("data", {}) for o in step_cell(report.executed, 3).outputs)
    assert report.environment["packages"]["pandas"] and report.version_changes == {}


def test_a_tampered_output_fails_and_the_report_names_the_cell(
    penguins_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    notebook = copy_run(penguins_run, tmp_path)
    nb = nbformat.read(notebook, as_version=4)
    stream = step_cell(nb, 3).outputs[0]
    assert "5076.0" in stream.text
    stream.text = stream.text.replace("5076.0", "5067.0")
    nbformat.write(nb, notebook)

    report = verify_notebook(notebook)
    assert not report.ok and report.answer_reproduced
    [bad] = report.failures
    assert (bad.label, bad.status, bad.number) == ("step 3", "differs", nb.cells.index(step_cell(nb, 3)) + 1)
    assert any(line.startswith("-") and "5067.0" in line for line in bad.diff)
    assert any(line.startswith("+") and "5076.0" in line for line in bad.diff)

    assert main(["verify", str(notebook), "--quiet"]) == 1
    out = capsys.readouterr().out
    assert f"cell {bad.number:>3}  step 3" in out and "differs" in out and "NOT REPRODUCED" in out
    assert "step 1" not in out  # --quiet lists only what did not reproduce


def test_a_tampered_answer_is_not_reproduced(penguins_run: Path, tmp_path: Path) -> None:
    notebook = copy_run(penguins_run, tmp_path)
    nb = nbformat.read(notebook, as_version=4)
    answer = step_cell(nb, 4).outputs[0]
    answer.data[ANSWER_MIME]["value"] = "Adelie"
    nbformat.write(nb, notebook)
    report = verify_notebook(notebook)
    assert not report.ok and not report.answer_reproduced
    assert report.failures[0].label == "step 4 · answer"
    assert "ANSWER DIFFERS" in report.summary()


def test_unseeded_randomness_is_reported_as_differing(unseeded_run: Path) -> None:
    report = verify_notebook(unseeded_run)
    assert not report.ok and not report.answer_reproduced
    by_label = {c.label: c for c in report.cells}
    assert by_label["step 1"].status == "same"  # the seeded global generator reproduces
    assert by_label["step 2"].status == "differs"
    assert any(line.startswith(("-[stdout]", "+[stdout]")) for line in by_label["step 2"].diff)
    assert any("the image changed" in line for line in by_label["step 2"].diff)
    assert by_label["step 3 · answer"].answer_reproduced is False


def test_a_step_that_timed_out_is_skipped_not_rerun(tmp_path: Path) -> None:
    notebook = run_agent(
        [
            code("import time\nstarted = time.time()\ntime.sleep(600)", "This takes too long."),
            code("final_answer('done')", "Give up waiting."),
        ],
        tmp_path,
        files=(),
        timeout=5,  # generous: the answer step must finish within it on a loaded machine
    )
    assert step_cell(nbformat.read(notebook, as_version=4), 1).metadata["tags"] == [
        "raises-exception",
        "skip-execution",
    ]
    report = verify_notebook(notebook, timeout=60)
    assert [(c.label, c.status) for c in report.cells] == [
        ("setup", "same"),
        ("tools", "same"),
        ("step 1", "skipped"),
        ("step 2 · answer", "same"),
        ("answer cell", "same"),
    ]
    assert report.ok, report.summary()


def test_record_stores_the_result_in_the_notebook(unseeded_run: Path, tmp_path: Path) -> None:
    notebook = copy_run(unseeded_run, tmp_path)
    before = nbformat.read(notebook, as_version=4)
    assert main(["verify", str(notebook), "--record", "-q"]) == 1
    after = nbformat.read(notebook, as_version=4)
    nbformat.validate(after)
    record = after.metadata["nbagent"]["verification"]
    assert record["ok"] is False and record["answer_reproduced"] is False
    assert record["kernel"] == DEFAULT_KERNEL and record["counts"]["differs"] == 3
    differs = {c["label"] for c in record["cells"] if c["status"] == "differs"}
    assert differs == {"step 2", "step 3 · answer", "answer cell"}
    assert after.cells == before.cells  # only the metadata changed


def test_data_is_looked_up_beside_the_notebook_or_given(
    penguins_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    alone = tmp_path / "alone.ipynb"
    shutil.copy2(penguins_run, alone)
    assert main(["verify", str(alone)]) == 2
    err = capsys.readouterr().err
    assert "'penguins.csv'" in err and "--data" in err
    assert main(["verify", str(alone), "--data", str(PENGUINS), "-q"]) == 0


def test_changed_data_is_reported_with_the_new_errors_it_causes(penguins_run: Path, tmp_path: Path) -> None:
    changed = tmp_path / "data" / "penguins.csv"
    changed.parent.mkdir()
    changed.write_text(PENGUINS.read_text().replace("body_mass_g", "mass"))
    report = verify_notebook(penguins_run, data=[changed])
    assert not report.ok
    assert any("'penguins.csv' is not the one the notebook was made with" in p for p in report.problems)
    step3 = next(c for c in report.cells if c.label == "step 3")
    assert step3.status == "new-error" and step3.error is not None and step3.error.startswith("KeyError")


def test_a_cell_that_now_kills_the_kernel_is_a_new_error(penguins_run: Path, tmp_path: Path) -> None:
    notebook = copy_run(penguins_run, tmp_path)
    nb = nbformat.read(notebook, as_version=4)
    step_cell(nb, 3).source = "import os\nos._exit(3)"
    for cell in nb.cells:  # unsigned, as from another machine: the verdict rests on the re-run alone
        cell.metadata.get("nbagent", {}).pop("digest", None)
    nbformat.write(nb, notebook)
    report = verify_notebook(notebook)
    assert not report.ok
    statuses = {c.label: (c.status, c.error) for c in report.cells}
    assert statuses["step 3"][0] == "new-error" and "DeadKernelError" in str(statuses["step 3"][1])
    assert statuses["step 4 · answer"] == ("not-run", None)
    assert any("the kernel died in cell" in p for p in report.problems)


def test_data_file_names_must_be_plain_names(penguins_run: Path, tmp_path: Path) -> None:
    notebook = copy_run(penguins_run, tmp_path)
    nb = nbformat.read(notebook, as_version=4)
    nb.metadata["nbagent"]["runs"][0]["files"][0]["name"] = "../outside.csv"
    nbformat.write(nb, notebook)
    with pytest.raises(UsageError, match="not a plain file name"):
        verify_notebook(notebook)


def test_verify_runs_in_the_kernel_it_is_told(penguins_run: Path) -> None:
    report = verify_notebook(penguins_run, kernel="python3")
    assert report.kernel == "python3"
    assert report.ok, report.summary()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["verify", "no-such.ipynb"], "does not exist"),
        (["verify", "{notjson}"], "is not a valid notebook"),
        (["verify", "{ok}", "--kernel", "no-such-kernel"], "unknown kernel 'no-such-kernel'"),
        (["verify", "{ok}", "--timeout", "0"], "timeout must be a positive number"),
    ],
)
def test_bad_input_is_one_clear_error(
    args: list[str], message: str, penguins_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken.ipynb"
    broken.write_text("{ not json")
    args = [a.format(notjson=broken, ok=penguins_run) for a in args]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("nbagent verify: error:") and message in err
    assert len(err.strip().splitlines()) == 1


def test_run_with_verify_records_the_result(tmp_path: Path) -> None:
    script = tmp_path / "replies.json"
    script.write_text(json.dumps(PENGUIN_REPLIES))
    notebook = tmp_path / "out" / "penguins.ipynb"
    done = run_cli(
        "run", "Which species is heaviest?", "--data", str(PENGUINS),
        "--model", f"scripted:{script}", "-o", str(notebook), "--verify", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "Gentoo"
    assert "REPRODUCED: 7 same" in done.stderr
    record = nbformat.read(notebook, as_version=4).metadata["nbagent"]["verification"]
    assert record["ok"] is True and record["answer_reproduced"] is True
