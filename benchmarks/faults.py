"""Faults: how fast each one is noticed and how fast the run is whole again (issue 6).

Every fault is injected for real into a sandboxed kernel (``nbagent-sandbox``), next to the goal
the issue sets for it:

- a timeout the interrupt stops (``while True: pass``): handled within timeout + 1 s;
- a timeout the interrupt cannot stop (a C loop): interrupt, grace period, restart, restore;
- deaths (``os._exit``, a segfault, SIGKILL from outside, the CPU-time limit): detected within 2 s;
- the memory limit: a ``MemoryError`` inside the kernel, nothing to recover;
- restoring the state after a restart or a host crash: time proportional to the replayed cells.

"Detect" runs from the fault (the deadline, or the moment the process died, as the kernel
recorded it) to nbagent noticing; "recover" from there until the kernel is back with its state
(restart + replay of the run's cells). Usage: python benchmarks/faults.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from nbagent import Kernel, Sandbox
from nbagent.agent.restore import replay_steps
from nbagent.execution.outputs import Execution
from nbagent.kernel_code import setup_code
from nbagent.models import Usage
from nbagent.records import Observation, Step

PENGUINS = Path(__file__).resolve().parents[1] / "examples" / "data" / "penguins.csv"
TIMEOUT = 2.0
GRACE = 2.0


class TimedKernel(Kernel):
    """A kernel that notes when a restart begins: the moment a fault was noticed."""

    restart_called: float = 0.0

    async def arestart(self) -> None:
        self.restart_called = time.time()
        await super().arestart()


def recipe(n: int, trivial: bool = False) -> list[Step]:
    """A run of ``n`` successful steps: load the data, then small analyses on it (or ``v_i = i``)."""
    if trivial:
        codes = [f"v{i} = {i}" for i in range(n)]
    else:
        codes = ["import pandas as pd\npenguins = pd.read_csv('penguins.csv')"]
        codes += [
            f"r{i} = penguins.groupby('species').body_mass_g.agg(['mean', 'std']).round({i % 3})"
            for i in range(1, n)
        ]
    return [
        Step(
            number=i + 1,
            reply="",
            thought="",
            code=c,
            execution=Execution(code=c, status="ok"),
            observation=Observation(""),
            usage=Usage(),
            model_duration=0.0,
        )
        for i, c in enumerate(codes[:n])
    ]


@dataclass
class Row:
    fault: str
    detect: list[float]
    recover: list[float]
    goal: str
    ok: Callable[[float, float], bool]


async def fresh(workdir: Path, sandbox: Sandbox | None = None) -> TimedKernel:
    k = TimedKernel(cwd=workdir, interrupt_grace=GRACE, sandbox=sandbox)
    await k.astart()
    await k.aexecute(setup_code())
    return k


async def timeout_kept(workdir: Path) -> tuple[float, float]:
    k = await fresh(workdir)
    try:
        t0 = time.perf_counter()
        e = await k.aexecute("while True:\n    pass", timeout=TIMEOUT)
        assert e.status == "timeout" and not e.restarted, e.note
        return time.perf_counter() - t0 - TIMEOUT, 0.0
    finally:
        await k.ashutdown()


async def death(
    workdir: Path, code: str, *, cells: int = 5, sandbox: Sandbox | None = None
) -> tuple[float, float]:
    """Run ``cells`` cells, then ``code``, which kills the kernel and records when, then restore."""
    k = await fresh(workdir, sandbox)
    try:
        steps = recipe(cells)
        for s in steps:
            assert s.code is not None
            await k.aexecute(s.code)
        stamp = workdir / "died_at"
        stamp.unlink(missing_ok=True)
        e = await k.aexecute(code, timeout=120)
        assert e.status == "died" and e.restarted, (e.status, e.note)
        await replay_steps(k, steps, timeout=60)
        recovered = time.time()
        died_at = float(stamp.read_text().strip())
        return k.restart_called - died_at, recovered - k.restart_called
    finally:
        await k.ashutdown()


async def timeout_restarted(workdir: Path) -> tuple[float, float]:
    """A C loop the interrupt cannot stop: detect = deadline to restart; recover = restart + restore."""
    k = await fresh(workdir)
    try:
        steps = recipe(5)
        for s in steps:
            assert s.code is not None
            await k.aexecute(s.code)
        t0 = time.time()
        e = await k.aexecute(
            "import collections, itertools\ncollections.deque(itertools.count(), maxlen=0)", timeout=TIMEOUT
        )
        assert e.status == "timeout" and e.restarted, e.note
        await replay_steps(k, steps, timeout=60)
        return k.restart_called - (t0 + TIMEOUT), time.time() - k.restart_called
    finally:
        await k.ashutdown()


async def killed_from_outside(workdir: Path) -> tuple[float, float]:
    k = await fresh(workdir)
    try:
        steps = recipe(5)
        for s in steps:
            assert s.code is not None
            await k.aexecute(s.code)
        pid = k.pid
        assert pid is not None
        loop = asyncio.get_running_loop()
        killed_at: list[float] = []

        def kill() -> None:
            killed_at.append(time.time())
            os.kill(pid, signal.SIGKILL)

        loop.call_later(0.5, kill)
        e = await k.aexecute("import time\ntime.sleep(60)", timeout=120)
        assert e.status == "died", e.note
        await replay_steps(k, steps, timeout=60)
        return k.restart_called - killed_at[0], time.time() - k.restart_called
    finally:
        await k.ashutdown()


async def memory_error(workdir: Path) -> tuple[float, float]:
    k = await fresh(workdir, Sandbox(memory=2**30))
    try:
        t0 = time.perf_counter()
        e = await k.aexecute("hog = [bytearray(100 * 2**20) for _ in range(100)]", timeout=60)
        assert e.error is not None and e.error.name == "MemoryError" and not e.restarted
        return time.perf_counter() - t0, 0.0
    finally:
        await k.ashutdown()


async def restore_times(
    workdir: Path, sizes: list[int], repeat: int, trivial: bool
) -> list[tuple[int, float]]:
    k = await fresh(workdir)
    rows = []
    try:
        for n in sizes:
            samples = []
            for _ in range(repeat):
                await k.arestart()
                t0 = time.perf_counter()
                restoration = await replay_steps(k, recipe(n, trivial), timeout=60)
                samples.append(time.perf_counter() - t0)
                assert restoration.complete and restoration.cells == n
            rows.append((n, min(samples)))  # best of: the machine's other load only adds
    finally:
        await k.ashutdown()
    return rows


async def kernel_starts(workdir: Path, repeat: int) -> dict[str, float]:
    out = {}
    for name in ("nbagent", "nbagent-sandbox"):
        samples = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            k = Kernel(name, cwd=workdir)
            await k.astart()
            samples.append(time.perf_counter() - t0)
            await k.ashutdown()
        out[name] = statistics.median(samples)
    return out


def linear_fit(points: list[tuple[int, float]]) -> tuple[float, float]:
    """Slope and R² of the least-squares line through ``points``."""
    xs, ys = [float(p[0]) for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    ss_res = sum((y - (my + slope * (x - mx))) ** 2 for x, y in zip(xs, ys, strict=True))
    ss_tot = sum((y - my) ** 2 for y in ys) or 1.0
    return slope, 1 - ss_res / ss_tot


STAMP = "import time, pathlib\npathlib.Path('died_at').write_text(repr(time.time()))\n"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        (workdir / "penguins.csv").write_bytes(PENGUINS.read_bytes())
        faults: list[
            tuple[str, Callable[[], Awaitable[tuple[float, float]]], str, Callable[[float, float], bool]]
        ] = [
            (
                f"`while True: pass` over a {TIMEOUT:g} s timeout (interrupt works)",
                lambda: timeout_kept(workdir),
                "handled ≤ timeout + 1 s",
                lambda d, r: d <= 1.0,
            ),
            (
                f"C loop ignoring SIGINT (timeout {TIMEOUT:g} s + grace {GRACE:g} s), 5 cells restored",
                lambda: timeout_restarted(workdir),
                f"restarted at timeout + grace ({GRACE:g} s)",
                lambda d, r: d <= GRACE + 1.0,
            ),
            (
                "`os._exit(1)`, 5 cells restored",
                lambda: death(workdir, STAMP + "import os\nos._exit(1)"),
                "detected ≤ 2 s",
                lambda d, r: d <= 2.0,
            ),
            (
                "segfault (`ctypes.string_at(0)`), 5 cells restored",
                lambda: death(workdir, STAMP + "import ctypes\nctypes.string_at(0)"),
                "detected ≤ 2 s",
                lambda d, r: d <= 2.0,
            ),
            (
                "SIGKILL from outside (as the OOM killer does), 5 cells restored",
                lambda: killed_from_outside(workdir),
                "detected ≤ 2 s",
                lambda d, r: d <= 2.0,
            ),
            (
                "CPU-time limit (8 s) reached: SIGXCPU, 5 cells restored",
                lambda: death(
                    workdir,
                    # Spin, stamping the time as it goes: the last stamp is the moment of death.
                    "import os, time\n"
                    "fd = os.open('died_at', os.O_WRONLY | os.O_CREAT)\n"
                    "while True:\n"
                    "    os.pwrite(fd, repr(time.time()).encode().ljust(32), 0)\n",
                    sandbox=Sandbox(cpu_time=8),
                ),
                "detected ≤ 2 s",
                lambda d, r: d <= 2.0,
            ),
            (
                "10 GB allocated under a 1 GiB memory limit",
                lambda: memory_error(workdir),
                "MemoryError, state kept",
                lambda d, r: True,
            ),
        ]
        rows: list[tuple[str, float, float, str, bool]] = []
        for name, run, goal, ok in faults:
            samples = [await run() for _ in range(args.repeat)]
            detect = statistics.median(s[0] for s in samples)
            recover = statistics.median(s[1] for s in samples)
            rows.append((name, detect, recover, goal, ok(detect, recover)))
            print(f"  measured: {name}", file=sys.stderr)
        sizes = [0, 20, 40, 80, 160]
        analysis = await restore_times(workdir, sizes, args.repeat, trivial=False)
        trivial = await restore_times(workdir, sizes, args.repeat, trivial=True)
        starts = await kernel_starts(workdir, args.repeat)

    print(f"median of {args.repeat} runs each; sandboxed kernel (nbagent-sandbox) unless said otherwise")
    print()
    print("| fault | detect (s) | recover (s) | goal | met |")
    print("|---|---:|---:|---|:-:|")
    for name, detect, recover, goal, met in rows:
        rec = f"{recover:.2f}" if recover else "—"
        print(f"| {name} | {detect:.2f} | {rec} | {goal} | {'yes' if met else 'NO'} |")
    print()
    print(f"Restore time against the number of cells replayed (best of {args.repeat}):")
    print()
    print("| cells replayed | restore, analysis cells (s) | restore, trivial cells (s) |")
    print("|---:|---:|---:|")
    for (n, a), (_, t) in zip(analysis, trivial, strict=True):
        print(f"| {n} | {a:.3f} | {t:.3f} |")
    fits = []
    for rows_ in (analysis, trivial):
        slope, r2 = linear_fit(rows_[1:])  # from 20 cells on: the first analysis cell imports pandas
        fits.append(f"{slope * 1000:.1f} ms (R² {r2:.3f})")
    print(f"| each added cell (linear fit, {sizes[1]}–{sizes[-1]} cells) | {fits[0]} | {fits[1]} |")
    print()
    print("Restore = setup code + the cells, in a restarted kernel. Analysis cells: the first imports")
    print("pandas and reads the CSV, the others are small groupbys; trivial cells: `v_i = i`.")
    print()
    print("| kernel start (to ready) | seconds |")
    print("|---|---:|")
    for name, seconds in starts.items():
        print(f"| {name} | {seconds:.2f} |")


if __name__ == "__main__":
    asyncio.run(main())
