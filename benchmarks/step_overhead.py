"""Framework overhead per trivial step, next to the raw jupyter_client round trip (issue 2).

Both sides use the same kernel spec (``nbagent``) on the same machine in the same run:

- raw: ``client.execute("x = 1")`` and wait for the reply and the idle status, nothing else;
- nbagent: one agent step with a scripted model — messages built, reply parsed, code run in the
  kernel, outputs collected, observation made, notebook validated and saved atomically to disk.

Usage: python benchmarks/step_overhead.py [--steps 200]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from nbagent import Agent, Kernel, RunListener, ScriptedModel, Step
from nbagent.execution.kernel import DEFAULT_KERNEL

CODE = "x = 1"


async def raw_round_trips(n: int, workdir: Path) -> list[float]:
    # The same kernel the agent gets (the jail by default), started by Kernel so its jail folders
    # exist; the round trips then go through the bare jupyter_client client.
    kernel = Kernel(DEFAULT_KERNEL, cwd=workdir)
    await kernel.astart()
    kc = kernel.client
    times = []
    try:
        for i in range(n + 10):
            t0 = time.perf_counter()
            msg_id = kc.execute(CODE)
            while True:
                msg = await kc.get_iopub_msg(timeout=30)
                if (
                    msg["parent_header"].get("msg_id") == msg_id
                    and msg["msg_type"] == "status"
                    and msg["content"]["execution_state"] == "idle"
                ):
                    break
            while (await kc.get_shell_msg(timeout=30))["parent_header"].get("msg_id") != msg_id:
                pass
            if i >= 10:  # warm-up excluded
                times.append(time.perf_counter() - t0)
    finally:
        await kernel.ashutdown()
    return times


class StepClock(RunListener):
    def __init__(self) -> None:
        self.marks: list[float] = []

    def reply_received(self, number: int, thought: str, code: str | None) -> None:
        if not self.marks:
            self.marks.append(time.perf_counter())

    def step_finished(self, step: Step) -> None:
        self.marks.append(time.perf_counter())


async def agent_steps(n: int, workdir: Path) -> list[float]:
    replies = [f"Thought: step {i}.\n```python\n{CODE}\n```" for i in range(n + 10)]
    replies.append("```python\nfinal_answer(x)\n```")
    clock = StepClock()
    agent = Agent(ScriptedModel(replies), max_steps=n + 11, listeners=[clock])
    try:
        result = await agent.arun("benchmark", notebook=workdir / "bench.ipynb")
    finally:
        await agent.aclose()
    assert result.answer == 1, result.status
    # Step k's time runs from the end of step k-1 to the end of step k: the model call, parsing,
    # execution, observation and the notebook save all fall inside it.
    durations = [b - a for a, b in zip(clock.marks, clock.marks[1:], strict=False)]
    return durations[10 : 10 + n]


def summary(times: list[float]) -> tuple[float, float]:
    ordered = sorted(times)
    return statistics.median(ordered) * 1000, ordered[int(len(ordered) * 0.9)] * 1000


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        raw = await raw_round_trips(args.steps, Path(tmp))
        steps = await agent_steps(args.steps, Path(tmp))
    raw_med, raw_p90 = summary(raw)
    step_med, step_p90 = summary(steps)
    print(f"trivial step ({CODE!r}), {args.steps} samples each, kernel spec {DEFAULT_KERNEL!r}")
    print()
    print("| measure | median (ms) | p90 (ms) |")
    print("|---|---:|---:|")
    print(f"| raw jupyter_client round trip | {raw_med:.2f} | {raw_p90:.2f} |")
    print(
        f"| nbagent step (model → kernel → observation → notebook saved) | {step_med:.2f} | {step_p90:.2f} |"
    )
    print(f"| framework overhead (step − raw) | {step_med - raw_med:.2f} | |")
    print()
    print(f"ratio step / raw: {step_med / raw_med:.2f}×  (goal: median ≤ 10 ms and ≤ 3× raw)")


if __name__ == "__main__":
    asyncio.run(main())
