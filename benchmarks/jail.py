"""What the jail costs (issue 11): kernel start-up and a trivial execute, jailed and not, side by side.

Three ways to run the same ipykernel, started alternately in one run so machine load falls on all:

- ``nbagent`` kernel spec: no sandbox at all;
- ``nbagent-sandbox`` at ``--sandbox=limits``: rlimits + a network namespace (the old default);
- ``nbagent-sandbox`` in the jail (the default): bubblewrap, cgroup, seccomp, dropped uid.

Start-up is ``Kernel.start()`` until the kernel answers ``kernel_info`` (what a run waits for);
execute is one ``x = 1`` round trip through :meth:`nbagent.Kernel.execute`.

Usage: python benchmarks/jail.py [--starts 8] [--executes 200]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import tempfile
import time
from pathlib import Path

from nbagent import Kernel, Sandbox

VARIANTS = {
    "no sandbox (--kernel nbagent)": ("nbagent", None),
    "limits (--sandbox=limits)": ("nbagent-sandbox", Sandbox(level="limits")),
    "jail (default)": ("nbagent-sandbox", Sandbox()),
}


async def one_start(
    name: str, sandbox: Sandbox | None, folder: Path, executes: int
) -> tuple[float, list[float]]:
    kernel = Kernel(name, cwd=folder, sandbox=sandbox)
    t0 = time.perf_counter()
    await kernel.astart()
    started = time.perf_counter() - t0
    times = []
    try:
        for i in range(executes + 5):
            t = time.perf_counter()
            execution = await kernel.aexecute("x = 1")
            assert execution.ok, execution
            if i >= 5:
                times.append(time.perf_counter() - t)
    finally:
        await kernel.ashutdown()
    return started, times


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--starts", type=int, default=8)
    parser.add_argument("--executes", type=int, default=200)
    args = parser.parse_args()
    logging.getLogger("nbagent").setLevel(logging.ERROR)
    starts: dict[str, list[float]] = {v: [] for v in VARIANTS}
    executes: dict[str, list[float]] = {v: [] for v in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.starts + 1):
            for label, (name, sandbox) in VARIANTS.items():
                started, times = await one_start(
                    name, sandbox, Path(tmp), args.executes if round_ == 1 else 0
                )
                if round_ > 0:  # the first round warms the page cache
                    starts[label].append(started)
                    executes[label] += times
    print(f"{args.starts} starts each (alternating), {args.executes} executes of 'x = 1' each")
    print()
    print("| kernel | start-up median (ms) | start-up max (ms) | execute median (ms) | execute p90 (ms) |")
    print("|---|---:|---:|---:|---:|")
    for label in VARIANTS:
        s = sorted(starts[label])
        e = sorted(executes[label])
        print(
            f"| {label} | {statistics.median(s) * 1000:.0f} | {s[-1] * 1000:.0f} | "
            f"{statistics.median(e) * 1000:.2f} | {e[int(len(e) * 0.9)] * 1000:.2f} |"
        )
    jail = statistics.median(starts["jail (default)"])
    limits = statistics.median(starts["limits (--sandbox=limits)"])
    print()
    print(f"jail start-up − limits start-up: {(jail - limits) * 1000:+.0f} ms (goal: ≤ +150 ms)")


if __name__ == "__main__":
    asyncio.run(main())
