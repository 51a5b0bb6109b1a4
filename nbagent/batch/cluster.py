"""``nbagent batch --cluster ADDRESS``: the tasks of a batch run on a Dask distributed cluster.

Each task is one Dask task running :func:`run_task_on_worker`, a coroutine run on the worker's
event loop. A worker keeps its own warm :class:`~nbagent.execution.pool.KernelPool` per batch, sized by
its thread count (``dask worker --nthreads N``), and runs the very same :func:`run_task` as a
local batch. Results come back to this process, which appends ``status.jsonl`` as each task
finishes, so a crash of the client loses nothing that finished.

Paths are shared by name: data files and ``--out`` are used at the same absolute paths on the
workers (a shared filesystem, as with papermill's remote paths). Each task's notebook is also
sent back and written here when this machine does not already see it.
Dask is optional: ``pip install 'nbagent-ai[dask]'``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..exceptions import KernelError, UsageError
from ..execution.pool import KernelPool
from ..notebook.recorder import atomic_write_text
from .runner import POOL_FOLDER, BatchSettings, TaskRecord, run_task
from .tasks import BatchTask

_POOLS: dict[tuple[str, str], KernelPool] = {}
_CLOSED: set[str] = set()


def import_distributed() -> Any:
    """The ``distributed`` module, or a :class:`UsageError` saying how to install it."""
    try:
        import distributed
    except ImportError:
        raise UsageError(
            "--cluster needs Dask, which is not installed; install it with: pip install 'nbagent-ai[dask]'"
        ) from None
    return distributed


async def run_task_on_worker(
    task: BatchTask, settings: BatchSettings, batch_id: str
) -> tuple[TaskRecord, str | None]:
    """Run on a Dask worker: one task from the worker's pool; returns its record and notebook."""
    pool = await _worker_pool(settings, batch_id)
    record = await run_task(task, pool, settings)
    text = None
    if record.notebook:
        text = (settings.out / record.notebook).read_text(encoding="utf-8")
    return record, text


async def close_worker_pools(batch_id: str) -> int:
    """Run on every worker at the end of a batch: stop its kernels. Returns how many pools closed."""
    _CLOSED.add(batch_id)
    closed = 0
    for key in [k for k in _POOLS if k[0] == batch_id]:
        await _POOLS.pop(key).aclose()
        closed += 1
    return closed


async def _worker_pool(settings: BatchSettings, batch_id: str) -> KernelPool:
    from distributed import get_worker

    if batch_id in _CLOSED:
        raise KernelError("the batch was stopped")
    worker = get_worker()
    key = (batch_id, str(worker.address))
    pool = _POOLS.get(key)
    if pool is None:
        pool = KernelPool(
            max(1, worker.state.nthreads),
            settings.out / POOL_FOLDER,
            kernel=settings.config.kernel,
            fork=None if settings.fork else False,
            sandbox=settings.config.sandbox_spec(),
        )
        _POOLS[key] = pool
        await pool.astart()
    return pool


class DaskCluster:
    """The Dask scheduler at ``address``, as :func:`~nbagent.batch.runner.run_batch`'s ``cluster``."""

    def __init__(self, address: str) -> None:
        self.address = address

    async def __call__(
        self, tasks: Sequence[BatchTask], settings: BatchSettings, on_record: Callable[[TaskRecord], None]
    ) -> None:
        await run_on_cluster(tasks, settings, self.address, on_record)


async def run_on_cluster(
    tasks: Sequence[BatchTask],
    settings: BatchSettings,
    address: str,
    on_record: Callable[[TaskRecord], None],
) -> None:
    """Send ``tasks`` to the Dask scheduler at ``address``; ``on_record`` gets each result."""
    distributed = import_distributed()
    try:
        client = await distributed.Client(address, asynchronous=True, timeout="15s")
    except (OSError, TimeoutError) as exc:
        raise UsageError(f"could not reach the Dask scheduler at {address!r}: {exc}") from None
    batch_id = uuid.uuid4().hex
    futures: list[Any] = []
    try:
        by_key: dict[str, BatchTask] = {}
        for task in tasks:
            key = f"nbagent-{task.id}-{batch_id[:8]}"
            by_key[key] = task
            futures.append(client.submit(run_task_on_worker, task, settings, batch_id, key=key, pure=False))
        async for future in distributed.as_completed(futures):
            task = by_key[future.key]
            try:
                record, text = await future
            except Exception as exc:  # the worker died or the task could not start there
                record, text = TaskRecord(id=task.id, status="error", error=f"on the cluster: {exc}"), None
            _land_notebook(settings.out, record, text)
            on_record(record)
    finally:
        if futures:
            await client.cancel(futures)
        try:
            await client.run(close_worker_pools, batch_id)
        finally:
            await client.close()


def _land_notebook(out: Path, record: TaskRecord, text: str | None) -> None:
    # On a shared filesystem the worker already wrote it; elsewhere the copy sent back lands here.
    if not record.notebook or text is None:
        return
    path = out / record.notebook
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)
