"""``nbagent batch --cluster``: tasks run on a Dask LocalCluster of two worker processes."""

from __future__ import annotations

import importlib
import os
import re
from pathlib import Path

from batch_helpers import answering_task, processes_in, read_notebook, read_status, stream_text, write_batch
from conftest import run_cli
from distributed import Client, LocalCluster


def test_cluster_runs_tasks_on_two_dask_workers_with_their_own_kernels(tmp_path: Path) -> None:
    tasks = [answering_task(f"c{i}", f"{i} * 10", expected=i * 10) for i in range(4)]
    tasks[0]["parameters"] = {"region": "Torgersen"}
    task_file = write_batch(tmp_path, tasks)
    out = tmp_path / "runs"
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        worker_pids = set(client.run(os.getpid).values())
        # --sandbox=limits: the test finds which worker ran a kernel from the kernel's parent
        # pids, which a jailed kernel (own pid namespace) cannot see, by design.
        done = run_cli(
            *("batch", str(task_file), "--out", str(out), "--sandbox=limits"),
            "--observation-chars=500",  # any setting travels to the workers with the batch's config
            *("--cluster", cluster.scheduler_address),
            cwd=tmp_path,
        )
        assert done.returncode == 0, done.stderr
        assert processes_in(out) == []  # the workers stopped their kernels at the end
        leftover = client.run(lambda: list(importlib.import_module("nbagent.batch.cluster")._POOLS))
        assert all(not pools for pools in leftover.values())
    records = read_status(out)
    assert sorted(r["id"] for r in records) == ["c0", "c1", "c2", "c3"]
    assert all(r["status"] == "ok" and r["correct"] for r in records)
    kernel_parents = set()
    for record in records:
        nb = read_notebook(out / record["notebook"])
        settings = nb.metadata.nbagent.runs[-1]["settings"]
        assert (settings["sandbox"], settings["observation_chars"]) == ("limits", 500)
        text = stream_text(nb)
        assert f"cwd {(out / record['id']).resolve()}" in text
        parent = int(re.search(r"\bppid (\d+)", text).group(1))  # type: ignore[union-attr]
        grandparent = int(re.search(r"\bgppid (\d+)", text).group(1))  # type: ignore[union-attr]
        # A kernel is the worker's child, or the child of its pool's fork server (the worker's).
        kernel_parents.add(parent if parent in worker_pids else grandparent)
    assert kernel_parents == worker_pids  # both workers ran tasks, each with its own kernels
    first = read_notebook(out / "c0" / "c0.ipynb")
    assert [c.metadata.get("tags") for c in first.cells if c.cell_type == "code"][:3] == [
        ["nbagent-setup"],
        ["nbagent-setup"],  # the tools' cell
        ["parameters"],
    ]
    assert not (out / ".pool").exists()
