"""The kernel executor against a real ipykernel."""

from __future__ import annotations

import base64
import time

import pytest

from nbagent import Kernel, NoSuchKernelError


def test_state_persists_across_executes(kernel: Kernel) -> None:
    kernel.execute("persisted_value = 41")
    e = kernel.execute("persisted_value + 1")
    assert e.status == "ok"
    assert e.outputs[0].output_type == "execute_result"
    assert e.outputs[0].data["text/plain"] == "42"
    assert e.outputs[0].execution_count == e.execution_count


def test_stdout_stderr_display_and_result_are_captured_in_order(kernel: Kernel) -> None:
    e = kernel.execute(
        "import sys\n"
        "from IPython.display import display, Markdown\n"
        "print('one', flush=True)\n"
        "display(Markdown('**two**'))\n"
        "print('three', file=sys.stderr, flush=True)\n"
        "'four'"
    )
    assert e.status == "ok"
    kinds = [(o.output_type, o.get("name")) for o in e.outputs]
    assert kinds == [
        ("stream", "stdout"),
        ("display_data", None),
        ("stream", "stderr"),
        ("execute_result", None),
    ]
    assert e.outputs[0].text == "one\n"
    assert e.outputs[1].data["text/markdown"] == "**two**"
    assert e.outputs[2].text == "three\n"
    assert e.outputs[3].data["text/plain"] == "'four'"


def test_clear_output_keeps_only_what_follows(kernel: Kernel) -> None:
    e = kernel.execute(
        "from IPython.display import clear_output\n"
        "for i in range(5):\n"
        "    clear_output(wait=True)\n"
        "    print(f'progress {i}', flush=True)\n"
    )
    assert [o.get("text") for o in e.outputs] == ["progress 4\n"]


def test_update_display_data_updates_the_displayed_output(kernel: Kernel) -> None:
    e = kernel.execute(
        "from IPython.display import display\n"
        "handle = display('step 1', display_id=True)\n"
        "handle.update('step 2')\n"
    )
    assert [o.data["text/plain"] for o in e.outputs] == ["'step 2'"]
    # An update from a later cell reaches the output recorded for the earlier one.
    later = kernel.execute("handle.update('step 3')")
    assert later.outputs == []
    assert e.outputs[0].data["text/plain"] == "'step 3'"


def test_error_has_a_plain_traceback(kernel: Kernel) -> None:
    e = kernel.execute("def f():\n    return 1 / 0\nf()")
    assert e.status == "error"
    assert e.error is not None
    assert e.error.name == "ZeroDivisionError"
    assert e.error.value == "division by zero"
    assert "\x1b[" not in e.error.traceback
    assert "return 1 / 0" in e.error.traceback
    assert e.outputs[-1].output_type == "error"


def test_matplotlib_figures_are_inline_pngs(kernel: Kernel) -> None:
    e = kernel.execute("import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.title('t')\nplt.show()")
    pngs = [
        o.data["image/png"] for o in e.outputs if o.output_type == "display_data" and "image/png" in o.data
    ]
    assert len(pngs) == 1
    assert base64.b64decode(pngs[0]).startswith(b"\x89PNG")


def test_timeout_interrupts_and_the_kernel_keeps_its_state(kernel: Kernel) -> None:
    kernel.execute("kept_before_timeout = 'yes'")
    t0 = time.perf_counter()
    e = kernel.execute("import time\nwhile True:\n    time.sleep(0.01)", timeout=1.0)
    took = time.perf_counter() - t0
    assert e.status == "timeout"
    assert not e.restarted
    assert "kept its state" in e.note
    assert any(o.get("ename") == "KeyboardInterrupt" for o in e.outputs)
    assert took < 1.0 + kernel.interrupt_grace
    assert kernel.execute("kept_before_timeout").outputs[0].data["text/plain"] == "'yes'"


def test_a_kernel_that_exits_is_reported_as_died_and_comes_back() -> None:
    with Kernel(poll_interval=0.1) as k:
        k.execute("lost = 1")
        t0 = time.perf_counter()
        e = k.execute("import os\nos._exit(1)", timeout=30)
        assert e.status == "died"
        assert e.restarted
        assert time.perf_counter() - t0 < 10  # detected, not waited on until the timeout
        after = k.execute("print('alive again')\n'lost' in dir()")
        assert after.status == "ok"
        assert after.outputs[0].text == "alive again\n"
        assert after.outputs[1].data["text/plain"] == "False"


def test_an_unknown_kernel_name_is_a_clear_error() -> None:
    with pytest.raises(NoSuchKernelError, match=r"unknown kernel 'no-such-kernel'.*nbagent"):
        Kernel("no-such-kernel").start()


def test_expressions_are_evaluated_after_code_that_succeeded_in_the_same_request(kernel: Kernel) -> None:
    done = kernel.execute("base = 41", expressions={"next": "base + 1", "kind": "type(base).__name__"})
    assert done.ok and done.expressions == {"next": "42", "kind": "'int'"}
    assert done.outputs == []  # nothing shows in the cell: the values come back in the reply
    failed = kernel.execute("base = 0\nraise ValueError('no')", expressions={"next": "base + 1"})
    assert failed.status == "error" and failed.expressions == {}  # skipped after an error
