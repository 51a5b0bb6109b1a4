"""Batch runs: task files, the runner and status.jsonl, progress and summary, scoring, Dask."""
