"""``nbagent batch``: run many tasks from a task file, one notebook each, and summarise."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from ..agent.observe import escape_controls
from ..exceptions import UsageError
from ..execution.kernel import DEFAULT_KERNEL
from .arguments import (
    add_budget_arguments,
    add_model_arguments,
    add_sandbox_arguments,
    check_kernel,
    check_sandbox,
    model_options,
    sandbox_from_args,
)
from .exit_codes import EXIT_INTERRUPTED, EXIT_NO_ANSWER, EXIT_OK


def add_batch_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``batch`` command."""
    batch = sub.add_parser(
        "batch",
        help="run many tasks from a JSONL/YAML file, one notebook each",
        description="Run every task of TASKS (a .jsonl or .yaml file), each in its own kernel, "
        "writing OUT/<id>/<id>.ipynb and one line per finished task to OUT/status.jsonl. "
        "Exit codes: 0 every task ok, 1 some task not ok, 2 bad input, 130 interrupted.",
    )
    batch.add_argument("tasks", metavar="TASKS", help="task file: .jsonl (one JSON object a line) or .yaml")
    batch.add_argument(
        "-o", "--out", default="runs", metavar="DIR", help="folder for notebooks and status.jsonl"
    )
    batch.add_argument(
        "-j", "--jobs", type=int, metavar="N", help="tasks run at once, and kernels kept warm (default 1)"
    )
    add_model_arguments(batch, model_help="model for tasks that name none (default: $NBAGENT_MODEL)")
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
        "--max-steps", type=int, default=10, metavar="N", help="step limit of a task (default 10)"
    )
    batch.add_argument(
        "--timeout", type=float, default=60.0, metavar="SECONDS", help="time limit of one step (default 60)"
    )
    batch.add_argument(
        "--task-timeout", type=float, metavar="SECONDS", help="time limit of a whole task (default: none)"
    )
    batch.add_argument("--kernel", default=DEFAULT_KERNEL, metavar="NAME", help="kernel spec to run code in")
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
    add_sandbox_arguments(batch)
    batch.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr, only the summary")
    budget = batch.add_argument_group("budgets", "what the model may cost, per task and in total")
    add_budget_arguments(budget)
    budget.add_argument(
        "--total-tokens",
        type=int,
        metavar="N",
        help="tokens the whole batch may use: no task starts after that (--resume with more runs the rest)",
    )
    budget.add_argument("--total-cost", type=float, metavar="USD", help="the same in US dollars")
    batch.add_argument("--approve", action="store_true", help=argparse.SUPPRESS)


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
        check_kernel(args.kernel)
        cluster = None
    options = model_options(args)
    sandbox = sandbox_from_args(args)
    check_sandbox(args.kernel, sandbox)  # fail closed before anything is created
    tasks = load_tasks(args.tasks)
    settings = BatchSettings(
        out=Path(args.out),
        model=args.model,
        api_base=options.api_base,
        model_options=options,
        max_same_errors=args.max_same_errors,
        check_models=not args.no_model_check,
        max_steps=args.max_steps,
        timeout=args.timeout,
        task_timeout=args.task_timeout,
        kernel=args.kernel,
        jobs=args.jobs if args.jobs is not None else 1,
        fork=not args.no_fork,
        max_total_tokens=args.max_total_tokens,
        max_cost=args.max_cost,
        total_tokens=args.total_tokens,
        total_cost=args.total_cost,
        sandbox=sandbox,
        max_restarts=args.max_restarts,
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
