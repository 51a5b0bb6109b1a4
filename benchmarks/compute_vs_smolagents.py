"""Compute-bound step: nbagent's kernel (CPython) against smolagents' LocalPythonExecutor.

The same code runs through both, in this one process run:

1. a pure-Python loop of 200,000 iterations;
2. a pandas groupby over 1,000,000 rows (the frame is built beforehand, untimed).

nbagent's time is what the agent waits for: ``Kernel.execute`` from the host, messaging included.
smolagents' time is ``LocalPythonExecutor(code)``, which interprets the code's AST in Python.
Each figure is the median of ``--repeat`` runs. Needs the ``bench`` extra (``pip install -e
'.[bench]'``) for smolagents. Prints a markdown table (the one in README.md).

    python benchmarks/compute_vs_smolagents.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

LOOP = """
total = 0
for i in range(200_000):
    if i % 3 == 0:
        total += i % 7
    else:
        total += 1
result = total
"""

FRAME = """
import numpy as np
import pandas as pd
rng = np.random.default_rng(0)
frame = pd.DataFrame({"key": rng.integers(0, 1_000, 1_000_000), "value": rng.random(1_000_000)})
"""

GROUPBY = """
means = frame.groupby("key")["value"].mean()
result = round(float(means.sum()), 6)
"""

CHECK = "print(repr(result))"


def median_time(run: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    times, value = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        value = run()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per figure (median is reported)")
    args = parser.parse_args()
    try:
        import smolagents
        from smolagents.local_python_executor import LocalPythonExecutor
    except ImportError:
        print("smolagents is not installed: pip install -e '.[bench]'", file=sys.stderr)
        return 2

    from nbagent import Kernel

    figures: dict[str, dict[str, float]] = {}
    answers: dict[str, dict[str, Any]] = {"nbagent": {}, "smolagents": {}}

    with Kernel() as kernel:
        assert kernel.execute(FRAME).ok
        for name, code in (("loop", LOOP), ("groupby", GROUPBY)):

            def run_kernel(code: str = code) -> str:
                execution = kernel.execute(code)
                assert execution.ok, execution.error
                check = kernel.execute(CHECK)
                return "".join(o.get("text", "") for o in check.outputs).strip()

            seconds, _ = median_time(lambda c=code: kernel.execute(c), args.repeat)
            figures.setdefault(name, {})["nbagent"] = seconds
            answers["nbagent"][name] = run_kernel()

    executor = LocalPythonExecutor(additional_authorized_imports=["numpy", "pandas", "numpy.*", "pandas.*"])
    executor.send_tools({})
    executor(FRAME)
    for name, code in (("loop", LOOP), ("groupby", GROUPBY)):
        seconds, _ = median_time(lambda c=code: executor(c), args.repeat)
        figures[name]["smolagents"] = seconds
        answers["smolagents"][name] = repr(executor.state["result"])

    if answers["nbagent"] != answers["smolagents"]:
        print(f"results differ: {answers}", file=sys.stderr)
        return 1

    labels = {"loop": "pure-Python loop, 200,000 iterations", "groupby": "pandas groupby, 1,000,000 rows"}
    print(
        f"Python {platform.python_version()}, smolagents {smolagents.__version__}, "
        f"{os.cpu_count()} CPUs, median of {args.repeat} runs; both give the same results "
        f"({answers['nbagent']['loop']}, {answers['nbagent']['groupby']})."
    )
    print()
    print("| step | nbagent kernel | smolagents `LocalPythonExecutor` | nbagent faster by |")
    print("|---|---:|---:|---:|")
    for name, label in labels.items():
        ours, theirs = figures[name]["nbagent"], figures[name]["smolagents"]
        print(f"| {label} | {ours * 1000:,.1f} ms | {theirs * 1000:,.1f} ms | {theirs / ours:,.1f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
