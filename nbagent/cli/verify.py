"""``nbagent verify``: re-run a notebook in a fresh kernel and report whether it reproduces."""

from __future__ import annotations

import argparse
import sys

from ..agent.observe import escape_controls
from .arguments import add_rerun_arguments, rerun_sandbox
from .exit_codes import EXIT_NO_ANSWER, EXIT_OK


def add_verify_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``verify`` command."""
    verify = sub.add_parser(
        "verify",
        help="re-run a notebook in a fresh kernel and check it gives the same results",
        description="Re-run NOTEBOOK in a fresh kernel and compare every cell's outputs with the stored "
        "ones (after normalising addresses, timings, ids; images by content). Exit 0 when the answer and "
        "every cell reproduce, 1 otherwise. The kernel runs in the jail, without network, with the "
        "default limits or the notebook's where tighter, unless these flags say otherwise.",
    )
    verify.add_argument("notebook", metavar="NOTEBOOK", help="the notebook to verify")
    verify.add_argument(
        "-d",
        "--data",
        action="append",
        default=[],
        metavar="FILE",
        help="a data file to use instead of the one beside the notebook (repeatable; matched by name)",
    )
    add_rerun_arguments(verify)
    verify.add_argument(
        "--record",
        action="store_true",
        help="store the result in the notebook's metadata (nbagent.verification)",
    )
    verify.add_argument(
        "-q", "--quiet", action="store_true", help="list only the cells that did not reproduce"
    )


def verify_command(args: argparse.Namespace) -> int:
    """``nbagent verify``: print the comparison; exit 1 if the notebook does not reproduce."""
    from ..repro.verify import verify_notebook

    report = verify_notebook(
        args.notebook,
        data=args.data,
        kernel=getattr(args, "kernel", None),
        timeout=args.cell_timeout,
        record=args.record,
        sandbox=rerun_sandbox(args.notebook, args),
    )
    print(escape_controls(report.summary(all_cells=not args.quiet)))
    if args.record:
        print(f"recorded in {args.notebook} (metadata.nbagent.verification)", file=sys.stderr)
    return EXIT_OK if report.ok else EXIT_NO_ANSWER
