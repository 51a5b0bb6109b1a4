"""``nbagent export``: write a tidy notebook (--tidy) or an HTML report (--html) of a run."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..agent.config import settings_from_args
from ..agent.observe import escape_controls
from ..exceptions import NotReproducedError, UsageError
from .arguments import add_rerun_arguments, rerun_sandbox
from .exit_codes import EXIT_OK

if TYPE_CHECKING:
    from nbformat import NotebookNode

    from ..repro.export import TidyResult


def add_export_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``export`` command."""
    export = sub.add_parser(
        "export",
        help="write a tidy notebook (--tidy) or an HTML report (--html) of a run",
        description="--tidy: the same analysis without failed cells and cells whose results nothing later "
        "uses; it is verified before it is written. --html: a standalone HTML report, figures embedded. "
        "Both: an HTML report of the tidy notebook.",
    )
    export.add_argument("notebook", metavar="NOTEBOOK", help="the notebook a run wrote")
    export.add_argument("--tidy", action="store_true", help="drop the dead ends (writes a notebook)")
    export.add_argument("--html", action="store_true", help="write an HTML report")
    export.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="where to write (default: NOTEBOOK's name with .tidy.ipynb, .html or .tidy.html)",
    )
    export.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")
    export.add_argument(
        "-d",
        "--data",
        action="append",
        default=[],
        metavar="FILE",
        help="with --tidy: a data file to verify with instead of the one beside the notebook (repeatable)",
    )
    add_rerun_arguments(export, only="with --tidy")
    export.add_argument(
        "--no-verify", action="store_true", help="with --tidy: write the tidy notebook without verifying it"
    )
    export.add_argument(
        "--drop-displays",
        action="store_true",
        help="with --tidy: also leave out cells that show a figure or a table the answer does not use",
    )


def export_command(args: argparse.Namespace) -> int:
    """``nbagent export``: write the tidy notebook, the HTML report, or the report of the tidy notebook."""
    from ..repro.export import export_html

    if not args.tidy and not args.html:
        raise UsageError("say what to export: --tidy (a notebook), --html (a report), or both")
    rerun = bool(settings_from_args(args)) or args.cell_timeout is not None
    if not args.tidy and (args.data or rerun or args.no_verify or args.drop_displays):
        raise UsageError(
            "--data, --kernel, --timeout, the sandbox flags, --no-verify and --drop-displays "
            "apply to --tidy only"
        )
    source = Path(args.notebook)
    suffix = {(True, False): ".tidy.ipynb", (False, True): ".html", (True, True): ".tidy.html"}
    output = (
        Path(args.output) if args.output else source.with_name(source.stem + suffix[args.tidy, args.html])
    )
    if not args.html:
        result = _tidy(args, source, output)
        kept = ", ".join(map(str, sorted(set(result.kept_steps)))) or "none"
        print(
            escape_controls(
                f"{output}: {result.cells_after} cells (was {result.cells_before}); steps kept: {kept}; "
                f"left out: {'; '.join(d.describe() for d in result.dropped) or 'nothing'}"
                + ("; verified" if result.verification else "; not verified")
            )
        )
        return EXIT_OK
    notebook: Path | NotebookNode = source
    if args.tidy:
        from ..repro.export import check_output_path

        check_output_path(output, source, args.overwrite)  # fail before the slow verification
        notebook = _tidy(args, source, None).notebook
    written = export_html(notebook, output, overwrite=args.overwrite)
    print(escape_controls(f"{written}: HTML report"))
    return EXIT_OK


def _tidy(args: argparse.Namespace, source: Path, output: Path | None) -> TidyResult:
    """Make (and, unless --no-verify, verify) the tidy notebook; written only when ``output`` is given."""
    from ..repro.export import export_tidy

    # The kernel is chosen from the notebook: a jail that cannot be built is reported (exit 2)
    # when the verification starts, before anything is written.
    try:
        return export_tidy(
            source,
            output,
            data=args.data,
            kernel=getattr(args, "kernel", None),
            verify=not args.no_verify,
            overwrite=args.overwrite,
            timeout=args.cell_timeout,
            keep_displays=not args.drop_displays,
            sandbox=rerun_sandbox(source, args),
        )
    except NotReproducedError as exc:
        print(escape_controls(exc.report.summary(all_cells=False)), file=sys.stderr)
        raise
