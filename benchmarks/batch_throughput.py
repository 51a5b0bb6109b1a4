"""Batch throughput: ``nbagent batch`` against papermill on the same 50 three-step pandas notebooks.

Run from a checkout with the ``bench`` extra installed (``pip install -e ".[test,bench]"``)::

    .venv/bin/python benchmarks/batch_throughput.py [--tasks 50]

Runs, in this order, in one process tree:

1. ``nbagent batch --jobs 1``: a scripted model replies with three pandas steps per task
   (load and filter, group and aggregate, ``final_answer``); real kernels from the warm pool.
2. ``nbagent batch --jobs 2``.
3. papermill, sequentially, on notebooks holding the very same cells (setup, parameters, the
   three steps), each executed in its own task folder with its own kernel.
4. papermill in a pool of two processes (``multiprocessing.Pool(2)``), same notebooks.

plus ``nbagent batch --jobs 2 --sandbox=limits`` (the weaker sandbox level) and ``nbagent batch
--jobs 2 --kernel nbagent``: the plain (unsandboxed) kernel spec, whose pool kernels are forked from
a pre-imported fork server. The default, the jail, starts one jail per task through its launcher
(warm, parallel kernel starts; never forked from a shared zygote).

papermill runs the plain ``nbagent`` kernel spec (made visible to it through ``JUPYTER_PATH``):
the default ``nbagent-sandbox`` spec has no network, and papermill reaches kernels over TCP.
Every run starts from copies of the same data. The host process's resident memory
(RSS) of ``nbagent batch`` is sampled when ``status.jsonl`` reaches 10 and 50 lines.
Prints a Markdown table: notebooks per minute and the ratios the issue sets as goals.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "examples" / "data" / "penguins.csv"
ISLANDS = ("Biscoe", "Dream", "Torgersen")
PAPERMILL_KERNEL = "nbagent"
"""papermill talks to its kernels over TCP, which the sandboxed default spec (no network) cuts."""


def steps() -> list[str]:
    """The three cells of one task (the scripted model's code, and the papermill notebook's)."""
    return [
        "import pandas as pd\ndf = pd.read_csv('penguins.csv')\ndf = df[df.island == island]\ndf.describe()",
        "means = df.groupby('species')[['bill_length_mm', 'body_mass_g']].mean()\nmeans",
        "final_answer(round(float(means['body_mass_g'].max()), 1))",
    ]


def make_tasks(root: Path, n: int) -> Path:
    """A JSONL task file of ``n`` tasks, each with its own scripted model file."""
    root.mkdir(parents=True)
    shutil.copy(DATA, root / DATA.name)
    lines = []
    for i in range(n):
        island = ISLANDS[i % len(ISLANDS)]
        replies = [f"Thought: step {k + 1}.\n```python\n{src}\n```" for k, src in enumerate(steps())]
        (root / f"replies-{i:03d}.json").write_text(json.dumps(replies))
        lines.append(
            json.dumps(
                {
                    "id": f"t{i:03d}",
                    "question": f"Heaviest species' mean body mass on {island}?",
                    "files": [DATA.name],
                    "parameters": {"island": island},
                    "model": f"scripted:replies-{i:03d}.json",
                }
            )
        )
    path = root / "tasks.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def rss_kib(pid: int) -> int | None:
    """Resident memory of a process, KiB (Linux)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def run_nbagent(task_file: Path, out: Path, jobs: int, n: int, *extra: str) -> dict[str, Any]:
    """Time ``nbagent batch``; sample its RSS when 10 and ``n`` tasks have finished."""
    cmd = [
        sys.executable,
        "-m",
        "nbagent",
        "batch",
        str(task_file),
        "--out",
        str(out),
        "--jobs",
        str(jobs),
        "-q",
    ]
    cmd += extra
    status = out / "status.jsonl"
    marks = {10: None, n: None}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while proc.poll() is None:
        done = len(status.read_text().splitlines()) if status.exists() else 0
        for mark in marks:
            if marks[mark] is None and done >= mark:
                marks[mark] = rss_kib(proc.pid)
        time.sleep(0.02)
    wall = time.perf_counter() - t0
    stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"nbagent batch failed ({proc.returncode}):\n{stdout}\n{stderr}")
    records = [json.loads(line) for line in status.read_text().splitlines()]
    assert len(records) == n and all(r["status"] == "ok" for r in records), stdout
    return {"wall": wall, "rss10": marks[10], "rss_end": marks[n]}


def papermill_notebooks(root: Path, n: int) -> list[tuple[str, str, str, dict[str, Any]]]:
    """Write the papermill input notebooks; returns (input, output, cwd, parameters) per task."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    from nbagent.kernel_code import setup_code

    root.mkdir(parents=True)
    jobs = []
    for i in range(n):
        island = ISLANDS[i % len(ISLANDS)]
        folder = root / f"t{i:03d}"
        folder.mkdir()
        shutil.copy(DATA, folder / DATA.name)
        nb = new_notebook(
            metadata={
                "kernelspec": {"name": PAPERMILL_KERNEL, "display_name": "nbagent", "language": "python"}
            }
        )
        nb.cells = [
            new_code_cell(setup_code()),
            new_code_cell("island = ''", metadata={"tags": ["parameters"]}),
            *(new_code_cell(src) for src in steps()),
        ]
        path = folder / "input.ipynb"
        nbformat.write(nb, path)
        jobs.append((str(path), str(folder / "output.ipynb"), str(folder), {"island": island}))
    return jobs


def papermill_one(job: tuple[str, str, str, dict[str, Any]]) -> int:
    """Execute one notebook with papermill (also the worker function of the pool).

    Returns how many times the kernel failed to start and the notebook was run again: two
    papermill processes can pick the same free TCP ports for their kernels at the same moment.
    """
    import papermill

    src, dst, cwd, params = job
    for attempt in range(3):
        try:
            papermill.execute_notebook(
                src, dst, parameters=params, cwd=cwd, progress_bar=False, log_output=False
            )
            return attempt
        except RuntimeError as exc:
            if "kernel" not in str(exc).lower() or attempt == 2:
                raise
    return 3


def run_papermill(jobs: list[tuple[str, str, str, dict[str, Any]]], processes: int) -> dict[str, Any]:
    """Time papermill over ``jobs``: in this process, or in a pool of ``processes``."""
    t0 = time.perf_counter()
    if processes == 1:
        retries = [papermill_one(job) for job in jobs]
    else:
        with multiprocessing.get_context("spawn").Pool(processes) as pool:
            retries = pool.map(papermill_one, jobs, chunksize=1)
    return {"wall": time.perf_counter() - t0, "retries": sum(retries)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--tasks", type=int, default=50)
    args = parser.parse_args()
    n = args.tasks
    try:
        import papermill  # noqa: F401
    except ImportError:
        raise SystemExit("papermill is needed: pip install -e '.[bench]'") from None

    from nbagent.execution.kernel import bundled_kernels_dir

    with tempfile.TemporaryDirectory(prefix="nbagent-bench-") as tmp:
        root = Path(tmp)
        # papermill finds nbagent's kernel spec through JUPYTER_PATH/kernels.
        (root / "jupyter").mkdir()
        (root / "jupyter" / "kernels").symlink_to(bundled_kernels_dir())
        os.environ["JUPYTER_PATH"] = str(root / "jupyter") + os.pathsep + os.environ.get("JUPYTER_PATH", "")
        os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")

        task_file = make_tasks(root / "tasks", n)
        results: dict[str, dict[str, Any]] = {}
        print(f"{n} tasks x 3 pandas steps; {os.cpu_count()} CPUs", flush=True)
        results["nbagent batch --jobs 1"] = run_nbagent(task_file, root / "runs-j1", 1, n)
        print("nbagent --jobs 1 done", flush=True)
        results["nbagent batch --jobs 2"] = run_nbagent(task_file, root / "runs-j2", 2, n)
        print("nbagent --jobs 2 done", flush=True)
        results["nbagent batch --jobs 2 --sandbox=limits"] = run_nbagent(
            task_file, root / "runs-limits", 2, n, "--sandbox=limits"
        )
        print("nbagent --jobs 2 --sandbox=limits done", flush=True)
        results["nbagent batch --jobs 2 --kernel nbagent (forked kernels)"] = run_nbagent(
            task_file, root / "runs-fork", 2, n, "--kernel", "nbagent"
        )
        print("nbagent --jobs 2 --kernel nbagent done", flush=True)
        jobs = papermill_notebooks(root / "pm-seq", n)
        results["papermill, sequential"] = run_papermill(jobs, 1)
        print("papermill sequential done", flush=True)
        jobs = papermill_notebooks(root / "pm-pool", n)
        results["papermill, 2-process pool"] = run_papermill(jobs, 2)
        print("papermill pool done", flush=True)

    rate = {name: n / r["wall"] * 60 for name, r in results.items()}
    print()
    print("| runner | wall (s) | notebooks/min | host RSS at task 10 | at task 50 |")
    print("|---|---:|---:|---:|---:|")
    for name, r in results.items():
        rss10 = f"{r['rss10'] / 1024:.0f} MiB" if r.get("rss10") else "-"
        rss_end = f"{r['rss_end'] / 1024:.0f} MiB" if r.get("rss_end") else "-"
        print(f"| {name} | {r['wall']:.1f} | {rate[name]:.1f} | {rss10} | {rss_end} |")
    j2, j1 = rate["nbagent batch --jobs 2"], rate["nbagent batch --jobs 1"]
    forked = rate["nbagent batch --jobs 2 --kernel nbagent (forked kernels)"]
    seq, pool = rate["papermill, sequential"], rate["papermill, 2-process pool"]
    print()
    limits = rate["nbagent batch --jobs 2 --sandbox=limits"]
    print(f"- nbagent --jobs 2 (jail, the default) / papermill sequential: **{j2 / seq:.2f}x** (goal >= 2x)")
    print(f"- nbagent --jobs 2 --sandbox=limits / papermill sequential: {limits / seq:.2f}x")
    print(f"- nbagent --jobs 2 (sandboxed) / papermill 2-process pool: **{j2 / pool:.2f}x** (goal >= 1.2x)")
    print(f"- nbagent --jobs 2 --kernel nbagent (forked) / papermill sequential: **{forked / seq:.2f}x**")
    print(
        f"- nbagent --jobs 2 --kernel nbagent (forked) / papermill 2-process pool: **{forked / pool:.2f}x**"
    )
    print(f"- nbagent --jobs 1 (sandboxed) / papermill sequential: {j1 / seq:.2f}x")
    retried = {name: r["retries"] for name, r in results.items() if r.get("retries")}
    if retried:
        print(f"- papermill notebooks re-run after a kernel failed to start (counted in the time): {retried}")


if __name__ == "__main__":
    main()
