"""``nbagent batch``: run many tasks from a task file, one notebook each, and summarise."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from ..agent.config import AgentConfig, add_setting_arguments, settings_from_args
from ..agent.observe import escape_controls
from ..exceptions import UsageError
from .arguments import check_kernel, check_sandbox
from .exit_codes import EXIT_INTERRUPTED, EXIT_NO_ANSWER, EXIT_OK


def add_batch_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``batch`` command."""
    batch = sub.add_parser(
        "batch",
        help="run many tasks from a JSONL/YAML file, one notebook each",
        description="Run every task of TASKS (a .jsonl or .yaml file), each in its own kernel, "
        "writing OUT/<id>/<id>.ipynb and one line per finished task to OUT/status.jsonl. "
        "Every setting of nbagent run is taken (but --approve): those of the model, loop and budget "
        "groups are each task's default, which a task may change with a field of the same name "
        "(max_steps, temperature...); the kernel, sandbox and tools are the same for every task. "
        "Exit codes: 0 every task ok, 1 some task not ok, 2 bad input, 130 interrupted.",
    )
    batch.add_argument("tasks", metavar="TASKS", help="task file: .jsonl (one JSON object a line) or .yaml")
    batch.add_argument(
        "-o", "--out", default="runs", metavar="DIR", help="folder for notebooks and status.jsonl"
    )
    batch.add_argument(
        "-j", "--jobs", type=int, metavar="N", help="tasks run at once, and kernels kept warm (default 1)"
    )
    batch.add_argument(
        "--task-timeout", type=float, metavar="SECONDS", help="time limit of a whole task (default: none)"
    )
    batch.add_argument(
        "--max-same-errors",
        type=int,
        default=3,
        metavar="N",
        help="stop the batch when N tasks in a row fail with the same error, e.g. a wrong key "
        "(default 3; 0: never); --resume goes on once it is fixed",
    )
    batch.add_argument(
        "--no-model-check",
        action="store_true",
        help="do not ask each model one tiny question before the first task",
    )
    batch.add_argument(
        "--no-fork",
        action="store_true",
        help="start every kernel as a fresh process instead of forking it from a pre-imported one",
    )
    batch.add_argument(
        "--resume",
        action="store_true",
        help="finish an earlier batch in OUT: run only tasks without a status",
    )
    batch.add_argument(
        "--cluster",
        metavar="ADDRESS",
        help="Dask scheduler address (tcp://host:8786); needs nbagent-ai[dask]",
    )
    batch.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr, only the summary")
    total = batch.add_argument_group("batch budget", "what the whole batch may spend on the model")
    total.add_argument(
        "--total-tokens",
        type=int,
        metavar="N",
        help="tokens the whole batch may use: no task starts after that (--resume with more runs the rest)",
    )
    total.add_argument("--total-cost", type=float, metavar="USD", help="the same in US dollars")
    # Every setting of a run, as for nbagent run; those of the model, loop and budget groups are
    # each task's default (a task file may set them per task), the others hold for every task.
    add_setting_arguments(batch, help=SETTING_HELP)
    batch.add_argument("--approve", action="store_true", help=argparse.SUPPRESS)


SETTING_HELP = {
    "model": "model for tasks that name none (default: $NBAGENT_MODEL)",
    "max_steps": "step limit of a task",
    "max_total_tokens": "stop a task (status 'budget') before a model call once it has used N tokens, "
    "estimated where the model reports none",
}
"""Help sentences of ``nbagent batch`` that differ from ``nbagent run``'s."""


def batch_command(args: argparse.Namespace) -> int:
    """``nbagent batch``: run the tasks, print the summary; exit 1 unless every task is ok."""
    from ..batch.report import progress_for, summary
    from ..batch.runner import BatchOutcome, BatchSettings, run_batch
    from ..batch.tasks import load_tasks
    from ..models.litellm_model import close_http_clients

    if args.approve:
        raise UsageError(
            "batch runs its tasks unattended, so --approve cannot ask anyone; "
            "use nbagent run --approve for one question, and budgets (--max-total-tokens, --max-cost) here"
        )
    config = AgentConfig.from_mapping(settings_from_args(args))
    if args.cluster is not None:
        if args.jobs is not None:
            raise UsageError(
                "--jobs sets local concurrency; with --cluster each worker runs as many tasks as it has "
                "threads (dask worker --nthreads N)"
            )
        from ..batch.cluster import DaskCluster, import_distributed

        import_distributed()
        cluster: DaskCluster | None = DaskCluster(args.cluster)
    else:
        check_kernel(config.kernel)
        cluster = None
    check_sandbox(config.kernel, config.sandbox_spec())  # fail closed before anything is created
    tasks = load_tasks(args.tasks)
    settings = BatchSettings(
        out=Path(args.out),
        config=config,
        max_same_errors=args.max_same_errors,
        check_models=not args.no_model_check,
        task_timeout=args.task_timeout,
        jobs=args.jobs if args.jobs is not None else 1,
        fork=not args.no_fork,
        total_tokens=args.total_tokens,
        total_cost=args.total_cost,
    )

    async def go() -> BatchOutcome:
        try:
            return await run_batch(
                tasks,
                settings,
                resume=args.resume,
                cluster=cluster,
                listener=progress_for(sys.stderr, quiet=args.quiet),
            )
        finally:
            await close_http_clients()

    outcome = asyncio.run(go())
    print(escape_controls(summary(outcome, tasks, args.out)))
    if outcome.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_OK if outcome.all_ok else EXIT_NO_ANSWER
