"""What a batch shows a person: progress while it runs, a summary table at the end.

On a terminal the progress is a rich progress bar (failures printed above it); anywhere else
(CI logs, files, pipes) it is one plain line per finished task.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Sequence
from typing import Any, TextIO

from rich.markup import escape as markup_escape

from ..agent.observe import escape_controls
from .runner import STATUS_FILE, BatchListener, BatchOutcome, TaskRecord
from .tasks import BatchTask

STATUS_ORDER = ("ok", "failed", "timeout", "error", "budget")


def _clip(text: str | None, width: int) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _mark(record: TaskRecord) -> str:
    if record.correct is None:
        return ""
    return " ✓" if record.correct else " ✗"


def task_line(record: TaskRecord, done: int, total: int) -> str:
    """One plain log line for a finished task."""
    width = len(str(total))
    what = (
        f"answer: {_clip(record.answer, 60)}"
        if record.status == "ok"
        else f"error: {_clip(record.error, 80)}"
    )
    return (
        f"[{done:>{width}}/{total}] {record.id:<12} {record.status:<7} {record.steps:>2} steps "
        f"{record.duration:6.1f} s  {what}{_mark(record)}"
    )


class PlainProgress(BatchListener):
    """One line per finished task on a text stream (stderr by default)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.total = 0
        self.done = 0

    def batch_started(self, total: int, skipped: int) -> None:
        self.total = total
        extra = f" ({skipped} already finished)" if skipped else ""
        print(f"nbagent batch: {total} tasks to run{extra}", file=self.stream, flush=True)

    def task_finished(self, record: TaskRecord) -> None:
        self.done += 1
        print(escape_controls(task_line(record, self.done, self.total)), file=self.stream, flush=True)

    def message(self, text: str) -> None:
        print(escape_controls(text), file=self.stream, flush=True)


class RichProgress(BatchListener):
    """A rich progress bar on the terminal; tasks that did not end ``ok`` are printed above it."""

    def __init__(self, stream: TextIO | None = None) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.console = Console(file=stream or sys.stderr)
        self.progress = Progress(
            TextColumn("[bold]nbagent batch"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[counts]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
        )
        self.counts: Counter[str] = Counter()
        self.bar: Any = None
        self.total = 0

    def _counts(self) -> str:
        return " ".join(f"{s} {self.counts[s]}" for s in STATUS_ORDER if self.counts[s])

    def batch_started(self, total: int, skipped: int) -> None:
        self.total = total
        if skipped:
            self.console.print(f"{skipped} tasks already finished; running the other {total}")
        self.progress.start()
        self.bar = self.progress.add_task("batch", total=total, counts="")

    def task_finished(self, record: TaskRecord) -> None:
        self.counts[record.status] += 1
        if record.status != "ok":
            self.console.print(
                f"[yellow]{markup_escape(escape_controls(record.id))}[/]: {record.status}: "
                + markup_escape(escape_controls(_clip(record.error, 100))),
                markup=True,
                highlight=False,
            )
        self.progress.update(self.bar, advance=1, counts=self._counts())

    def message(self, text: str) -> None:
        self.console.print(escape_controls(text), markup=False, highlight=False)

    def batch_finished(self) -> None:
        self.progress.stop()


def progress_for(stream: TextIO | None = None, quiet: bool = False) -> BatchListener:
    """The progress display suited to ``stream``: a bar on a terminal, plain lines elsewhere."""
    stream = stream or sys.stderr
    if quiet:
        return BatchListener()
    if stream.isatty():
        return RichProgress(stream)
    return PlainProgress(stream)


def summary(outcome: BatchOutcome, tasks: Sequence[BatchTask], out: str) -> str:
    """The end-of-batch report: counts, accuracy, usage, throughput and the tasks not ``ok``."""
    records = [outcome.records[t.id] for t in tasks if t.id in outcome.records]
    counts: Counter[str] = Counter(r.status for r in records)
    lines = []
    ran = len(outcome.ran)
    per_minute = ran / outcome.duration * 60 if outcome.duration > 0 and ran else 0.0
    head = f"{len(records)} of {len(tasks)} tasks finished"
    if outcome.skipped:
        head += f" ({outcome.skipped} in earlier runs, {ran} now)"
    lines.append(f"{head}; this run: {outcome.duration:.1f} s, {per_minute:.1f} notebooks/min")
    shown = [s for s in STATUS_ORDER if counts[s] or s != "budget"]  # budget only where budgets bit
    lines.append("  " + " · ".join(f"{s} {counts[s]}" for s in shown))
    scored = [r for r in records if r.correct is not None]
    if scored:
        right = sum(1 for r in scored if r.correct)
        mean_score = sum(r.score or 0.0 for r in scored) / len(scored)
        lines.append(
            f"  accuracy {right}/{len(scored)} = {right / len(scored):.1%} "
            f"(mean score {mean_score:.3f}, over tasks with an expected answer)"
        )
    tokens = sum(r.tokens for r in records)
    costs = [r.cost for r in records if r.cost is not None]
    cost = f", cost ${sum(costs):.4f}" if costs else ""
    lines.append(f"  tokens {tokens:,}{cost}")
    if outcome.stopped:
        lines.append(f"  stopped: {outcome.stopped}")
        lines.append(
            f"  {len(outcome.missing)} tasks were not run; fix the cause, then run again with --resume "
            "(it also runs again the tasks that failed before their first step)"
        )
    elif outcome.interrupted:
        lines.append(
            f"  interrupted: {len(outcome.missing)} tasks left; run again with --resume to finish them"
        )
    elif outcome.budget_used and outcome.missing:
        lines.append(
            f"  not started: {len(outcome.missing)} tasks, as {outcome.budget_used}; "
            "run again with --resume and a larger --total-tokens / --total-cost"
        )
    elif outcome.missing:
        lines.append(f"  not finished: {len(outcome.missing)} tasks")
    lines.append(f"  status: {out.rstrip('/')}/{STATUS_FILE}")
    bad = [r for r in records if r.status != "ok" or r.correct is False]
    if bad:
        lines.append("")
        lines.append(_table(bad))
        # The table clips errors to its column; each distinct one is given whole, once.
        errors = Counter(r.error for r in bad if r.error and len(" ".join(r.error.split())) > 70)
        if errors:
            lines.append("")
            lines.append("errors in full:")
            for error, count in errors.most_common():
                lines.append(f"  ({count} {'task' if count == 1 else 'tasks'}) {error}")
    return "\n".join(lines)


def _table(records: Sequence[TaskRecord]) -> str:
    rows = [("id", "status", "steps", "seconds", "correct", "error / answer")]
    for r in records:
        correct = "" if r.correct is None else ("yes" if r.correct else "no")
        what = r.error if r.status != "ok" else f"answer: {r.answer}"
        rows.append((r.id, r.status, str(r.steps), f"{r.duration:.1f}", correct, _clip(what, 70)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    out = []
    for row in rows:
        cells = [row[i].ljust(widths[i]) for i in range(len(widths))]
        out.append("  ".join(cells) + "  " + row[-1])
    return "\n".join(out)
