"""%%agent's in-process steps vs the kernel executor, side by side in one run.

Measures, on this machine:
- one trivial step (``x = 1``): a round trip to a kernel process (``Kernel.execute``, what
  ``nbagent run`` does) vs ``ShellExecutor.execute`` inside the user's kernel (what ``%%agent`` does);
- a 200,000-iteration Python loop as a step, both ways (both run natively in CPython);
- a whole 20-step scripted run: ``Agent.run`` with its own kernel vs ``%%agent`` in a live kernel.

Run: ``.venv/bin/python benchmarks/magic_steps.py``
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path

from nbagent import Agent, Kernel, ScriptedModel

REPEAT = 200
LOOP = "total = 0\nfor i in range(200_000):\n    total += i"
STEPS = 20


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def kernel_step_ms(kernel: Kernel, code: str, repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        assert kernel.execute(code).ok
        samples.append(time.perf_counter() - t0)
    return median_ms(samples)


def shell_step_ms(kernel: Kernel, code: str, repeat: int) -> float:
    # Timed inside the kernel: the step never leaves the user's process.
    probe = (
        "import statistics as _st, time as _t\n"
        "from nbagent import ShellExecutor as _SE\n"
        "_ex = _SE(get_ipython())\n"
        "_samples = []\n"
        f"for _ in range({repeat}):\n"
        "    _t0 = _t.perf_counter()\n"
        f"    assert _ex.execute({code!r}).ok\n"
        "    _samples.append(_t.perf_counter() - _t0)\n"
        "print(_st.median(_samples) * 1000)"
    )
    execution = kernel.execute(probe, timeout=600)
    assert execution.ok, execution.error
    text = "".join(o["text"] for o in execution.outputs if o["output_type"] == "stream")
    return float(text.strip().splitlines()[-1])


def replies() -> list[str]:
    steps = [f"```python\nstep_{i} = {i}\nprint(step_{i})\n```" for i in range(STEPS - 1)]
    return [*steps, "```python\nfinal_answer(step_0)\n```"]


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="nbagent-bench-"))
    script = work / "replies.json"
    script.write_text(json.dumps(replies()), encoding="utf-8")

    with Kernel("python3", cwd=work) as kernel:
        kernel.execute("x = 0")
        trivial = (kernel_step_ms(kernel, "x = 1", REPEAT), shell_step_ms(kernel, "x = 1", REPEAT))
        loop = (kernel_step_ms(kernel, LOOP, 20), shell_step_ms(kernel, LOOP, 20))

        assert kernel.execute("%load_ext nbagent").ok
        t0 = time.perf_counter()
        cell = f"%%agent --model scripted:{script} --max-steps {STEPS} --notebook {work / 'magic.ipynb'}"
        magic = kernel.execute(cell + "\nCount.", timeout=600)
        magic_s = time.perf_counter() - t0
        assert magic.ok and magic.outputs[-1]["data"]["text/plain"] == "0", magic.outputs[-3:]

    t0 = time.perf_counter()
    with Agent(ScriptedModel(replies()), max_steps=STEPS, kernel="python3") as agent:
        result = agent.run("Count.", notebook=work / "agent.ipynb")
    agent_s = time.perf_counter() - t0
    assert result.answered

    rows = [
        ("one trivial step (x = 1), median", f"{trivial[0]:.2f} ms", f"{trivial[1]:.2f} ms"),
        ("a 200,000-iteration loop step, median", f"{loop[0]:.1f} ms", f"{loop[1]:.1f} ms"),
        (
            f"a {STEPS}-step scripted run (incl. kernel start for Agent)",
            f"{agent_s:.2f} s",
            f"{magic_s:.2f} s",
        ),
    ]
    print("| measure | Kernel executor (`nbagent run`) | ShellExecutor (`%%agent`) |")
    print("|---|---|---|")
    for row in rows:
        print(f"| {row[0]} | {row[1]} | {row[2]} |")


if __name__ == "__main__":
    main()
