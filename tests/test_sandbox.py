"""The sandboxed kernel: real limits, a scrubbed environment and no network, on real processes."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from conftest import code, run_cli
from http_helpers import SocketListener

from nbagent import Kernel, NotebookRecorder, Sandbox
from nbagent.execution.kernel import DEFAULT_KERNEL
from nbagent.execution.sandbox import (
    DEFAULT_CPU_TIME,
    DEFAULT_FILE_SIZE,
    DEFAULT_MEMORY,
    is_secret_name,
    parse_size,
    scrub_environment,
)
from nbagent.notebook.redact import Redactor

HOST_SECRETS = {
    "OPENAI_API_KEY": "sk-nbagent-test-0123456789abcdef",
    "HF_TOKEN": "hf_nbagentTestToken123456",
    "AWS_SECRET_ACCESS_KEY": "aws/secret+test/987654321",
    "DB_PASSWORD": "correct horse battery staple",
    "ALLOWED_TOKEN": "allowed-on-purpose-42",
}


def run_in(kernel: Kernel, source: str, timeout: float = 60) -> str:
    """Run ``source`` and return its stdout; the step must succeed."""
    e = kernel.execute(source, timeout=timeout)
    assert e.status == "ok", (e.status, e.error, e.outputs)
    return "".join(o.get("text", "") for o in e.outputs if o.output_type == "stream")


@pytest.fixture
def listener() -> Iterator[SocketListener]:
    server = SocketListener()
    yield server
    server.close()


def connect_code(port: int) -> str:
    return (
        "import socket\n"
        "try:\n"
        f"    s = socket.create_connection(('127.0.0.1', {port}), timeout=5)\n"
        "    s.sendall(b'hello from the kernel'); s.close(); print('connected')\n"
        "except OSError as exc:\n"
        "    print('refused:', type(exc).__name__, exc)\n"
    )


# -- the default kernel ----------------------------------------------------------------------


LIMITS = Sandbox(level="limits")
"""This file tests the ``limits`` level (rlimits + network namespace); the jail is tests/test_jail.py's."""


@pytest.fixture(scope="module")
def kernel() -> Iterator[Kernel]:
    with Kernel(sandbox=LIMITS) as k:
        yield k


def test_the_sandbox_is_the_default_kernel_with_its_limits_and_the_kernel_pid(kernel: Kernel) -> None:
    assert DEFAULT_KERNEL == "nbagent-sandbox" and kernel.name == DEFAULT_KERNEL
    assert Sandbox().level == "jail" and kernel.sandbox.level == "limits"
    report = kernel.sandbox_report
    assert report is not None and report["network_isolated"]
    # The launcher exec'd the kernel: the pid jupyter_client signals is the kernel's own.
    assert report["pid"] == kernel.pid
    out = run_in(
        kernel,
        "import os, resource\n"
        "print(os.getpid())\n"
        "for r in ('RLIMIT_AS', 'RLIMIT_CPU', 'RLIMIT_FSIZE', 'RLIMIT_CORE'):\n"
        "    print(*resource.getrlimit(getattr(resource, r)))\n"
        "print(open('/proc/self/status').read().split('CapBnd:')[1].split()[0])\n",
    )
    pid, mem, cpu, fsize, core, capbnd = out.splitlines()
    assert int(pid) == kernel.pid
    assert mem == f"{DEFAULT_MEMORY} {DEFAULT_MEMORY}"
    assert cpu == f"{DEFAULT_CPU_TIME} {DEFAULT_CPU_TIME + 5}"
    assert fsize == f"{DEFAULT_FILE_SIZE} {DEFAULT_FILE_SIZE}"
    assert core == "0 0"
    caps = int(capbnd, 16)
    for cap in (19, 21, 24):  # SYS_PTRACE, SYS_ADMIN (setns back out), SYS_RESOURCE (lift limits)
        assert not caps & (1 << cap)


def test_secrets_stay_out_and_the_network_is_unreachable(
    monkeypatch: pytest.MonkeyPatch, listener: SocketListener
) -> None:
    for name, value in HOST_SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PLAIN_SETTING", "visible")
    sandbox = Sandbox(allow_env=("ALLOWED_TOKEN",), level="limits")
    with Kernel(sandbox=sandbox, env={"GIVEN_API_KEY": "given-on-purpose"}) as k:
        out = run_in(
            k,
            "import os, json\n"
            "print(json.dumps({k: os.environ.get(k) for k in "
            f"{[*HOST_SECRETS, 'PLAIN_SETTING', 'GIVEN_API_KEY']!r}}}))\n",
        )
        seen = json.loads(out)
        assert seen == {
            "OPENAI_API_KEY": None,
            "HF_TOKEN": None,
            "AWS_SECRET_ACCESS_KEY": None,
            "DB_PASSWORD": None,
            "ALLOWED_TOKEN": "allowed-on-purpose-42",  # --allow-env
            "PLAIN_SETTING": "visible",
            "GIVEN_API_KEY": "given-on-purpose",  # passed explicitly through env=
        }
        assert k.sandbox_report is not None
        assert {"OPENAI_API_KEY", "HF_TOKEN", "DB_PASSWORD"} <= set(k.sandbox_report["removed_env"])

        # The host listens on 127.0.0.1; the kernel's 127.0.0.1 is another machine's.
        out = run_in(k, connect_code(listener.port))
        assert out.startswith("refused: ConnectionRefusedError"), out
        out = run_in(
            k,
            "import socket\ntry:\n    socket.getaddrinfo('example.com', 80)\n"
            "except OSError:\n    print('no dns')",
        )
        assert out.startswith("no dns")
    assert listener.received == []


def test_allow_network_lets_the_kernel_reach_the_host(listener: SocketListener) -> None:
    with Kernel(sandbox=Sandbox(network=True, level="limits")) as k:
        assert run_in(k, connect_code(listener.port)).strip() == "connected"
        assert k.sandbox_report is not None and not k.sandbox_report["network_isolated"]
    assert listener.received == [b"hello from the kernel"]


def test_memory_and_file_size_limits_raise_inside_the_kernel_and_cannot_be_lifted(tmp_path: Path) -> None:
    with Kernel(
        cwd=tmp_path, sandbox=Sandbox(memory=parse_size("1G"), file_size=parse_size("1M"), level="limits")
    ) as k:
        run_in(k, "kept = 'still here'")
        e = k.execute("blocks = []\nwhile True:\n    blocks.append(bytearray(64 * 2**20))", timeout=60)
        assert e.status == "error" and e.error is not None and e.error.name == "MemoryError"
        assert not e.restarted
        assert run_in(k, "del blocks\nprint(kept)").strip() == "still here"

        e = k.execute("with open('big.bin', 'wb') as f:\n    f.write(b'x' * 2**21)", timeout=60)
        assert e.error is not None and e.error.name == "OSError" and "File too large" in e.error.value
        assert (tmp_path / "big.bin").stat().st_size <= 2**20

        out = run_in(
            k,
            "import resource\n"
            "for r in (resource.RLIMIT_AS, resource.RLIMIT_FSIZE, resource.RLIMIT_CPU):\n"
            "    try:\n"
            "        resource.setrlimit(r, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))\n"
            "        print('lifted')\n"
            "    except (ValueError, PermissionError) as exc:\n"
            "        print('refused')\n",
        )
        assert out.split() == ["refused"] * 3


def test_the_cpu_limit_kills_the_kernel_and_it_comes_back() -> None:
    with Kernel(sandbox=Sandbox(cpu_time=3, level="limits")) as k:
        e = k.execute("while True:\n    pass", timeout=120)
        assert e.status == "died" and e.restarted
        assert "SIGXCPU" in e.note and "CPU-time limit of 3 s" in e.note
        assert e.duration < 60  # killed by the limit, not by the step timeout
        assert run_in(k, "print('back')").strip() == "back"


# -- where namespaces are not permitted --------------------------------------------------------

_SYSCALL_UNSHARE = {"x86_64": 272, "aarch64": 97}
SECCOMP_PRELUDE = """
import ctypes, struct, sys
# Deny unshare(2) with EPERM, as container runtimes' default seccomp profiles do.
nr = {nr}
prog = [
    struct.pack("HBBI", 0x20, 0, 0, 0),                 # load the syscall number
    struct.pack("HBBI", 0x15, 0, 1, nr),                # unshare?
    struct.pack("HBBI", 0x06, 0, 0, 0x00050000 | 1),    # -> errno EPERM
    struct.pack("HBBI", 0x06, 0, 0, 0x7FFF0000),        # everything else: allow
]
buf = ctypes.create_string_buffer(b"".join(prog))
class Prog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
fprog = Prog(len(prog), ctypes.addressof(buf))
libc = ctypes.CDLL(None, use_errno=True)
assert libc.prctl(38, 1, 0, 0, 0) == 0
assert libc.prctl(22, 2, ctypes.byref(fprog), 0, 0) == 0, ctypes.get_errno()
from nbagent.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.machine() not in _SYSCALL_UNSHARE,
    reason="needs Linux seccomp on x86_64 or aarch64",
)
def test_without_namespaces_the_run_says_so_once_and_keeps_the_other_limits(
    tmp_path: Path, listener: SocketListener
) -> None:
    replies = [
        code(
            "import resource\nprint('AS', resource.getrlimit(resource.RLIMIT_AS)[0])\n"
            + connect_code(listener.port)
        ),
        code("import os\nos._exit(1)", "A restart starts a second kernel: no second warning."),
        code("final_answer('done')"),
    ]
    (tmp_path / "s.json").write_text(json.dumps(replies))
    prelude = SECCOMP_PRELUDE.format(nr=_SYSCALL_UNSHARE[platform.machine()])
    argv = [
        "run",
        "q",
        "--model",
        "scripted:s.json",
        "-o",
        "out.ipynb",
        "--memory-limit",
        "2G",
        "--sandbox=limits",
    ]
    proc = subprocess.run(
        [sys.executable, "-c", prelude, *argv], cwd=tmp_path, capture_output=True, text=True, timeout=150
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "done"
    assert proc.stderr.count("network namespaces are not permitted here") == 1, proc.stderr
    assert "Operation not permitted" in proc.stderr and "WITH network access" in proc.stderr
    nb = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    first = next(c for c in nb.cells if c.cell_type == "code" and "getrlimit" in c.source)
    text = "".join(o.get("text", "") for o in first.outputs)
    assert f"AS {2 * 2**30}" in text  # the other limits still hold
    assert "connected" in text
    # Once by the step, once more when the restart after os._exit replayed it: the notebook is
    # the recipe of the state, side effects included.
    assert listener.received == [b"hello from the kernel"] * 2


# -- the CLI flags -------------------------------------------------------------------------------


def test_sandbox_flags_reach_the_kernel(tmp_path: Path, listener: SocketListener) -> None:
    probe = (
        "import os, resource\n"
        "print('limits', *(resource.getrlimit(getattr(resource, 'RLIMIT_' + r))[0] "
        "for r in ('AS', 'CPU', 'FSIZE')))\n"
        "print('env', os.environ.get('MY_SERVICE_TOKEN'), os.environ.get('OTHER_TOKEN'))\n"
        + connect_code(listener.port)
    )
    (tmp_path / "s.json").write_text(json.dumps([code(probe), code("final_answer('ok')")]))
    env = {"MY_SERVICE_TOKEN": "let-me-in-123", "OTHER_TOKEN": "keep-me-out-456"}
    argv = [
        *("run", "q", "--model", "scripted:s.json", "-o", "flags.ipynb", "-q"),
        *("--memory-limit", "1.5G", "--cpu-limit", "100", "--file-size-limit", "10M"),
        *("--allow-network", "--allow-env", "MY_SERVICE_TOKEN", "--sandbox=limits"),
    ]
    proc = run_cli(*argv, cwd=tmp_path, env=env)  # in-process: the host's environment is os.environ
    assert proc.returncode == 0, proc.stderr
    nb = nbformat.read(tmp_path / "flags.ipynb", as_version=4)
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert f"limits {3 * 2**29} 100 {10 * 2**20}" in text
    # The allowed token reached the kernel; its value is still redacted from the notebook.
    assert "env [redacted $MY_SERVICE_TOKEN] None" in text
    assert "let-me-in-123" not in (tmp_path / "flags.ipynb").read_text()
    assert "connected" in text and listener.received == [b"hello from the kernel"]


@pytest.mark.parametrize(
    ("flag", "value", "expected"),
    [
        ("--memory-limit", "lots", "'lots' is not a size"),
        ("--cpu-limit", "1.5x", "must be a whole number of seconds"),
        ("--file-size-limit", "-1M", "is not a size"),
    ],
)
def test_bad_sandbox_flags_exit_2(tmp_path: Path, flag: str, value: str, expected: str) -> None:
    proc = run_cli("run", "q", "--model", "scripted:s.json", f"{flag}={value}", cwd=tmp_path)
    assert proc.returncode == 2
    assert expected in proc.stderr
    assert list(tmp_path.iterdir()) == []


# -- secrets, names and sizes --------------------------------------------------------------------


def test_secret_names_and_the_environment_scrub() -> None:
    for name in (
        "OPENAI_API_KEY",
        "hf_token",
        "GITHUB_TOKEN",
        "AWS_ACCESS_KEY_ID",
        "PGPASSWORD",
        "MY_SECRET",
    ):
        assert is_secret_name(name), name
    for name in ("PATH", "HOME", "LANG", "MPLBACKEND", "JPY_PARENT_PID", "TOKENIZERS_PARALLELISM"):
        assert not is_secret_name(name), name
    clean, removed = scrub_environment({"PATH": "/bin", "X_API_KEY": "1", "Y_TOKEN": "2"}, allow=["y_token"])
    assert clean == {"PATH": "/bin", "Y_TOKEN": "2"} and removed == ["X_API_KEY"]


def test_sizes_parse_and_settings_travel_through_the_environment() -> None:
    assert parse_size("4G") == 4 * 2**30 and parse_size("512M") == 512 * 2**20
    assert parse_size("1.5GiB") == 3 * 2**29 and parse_size("1024") == 1024
    assert parse_size("0") is None and parse_size("none") is None
    with pytest.raises(ValueError, match="not a size"):
        parse_size("4 gallons")
    s = Sandbox(memory=2**30, cpu_time=None, file_size=5, network=True, allow_env=("A", "B"))
    assert Sandbox.from_env(s.to_env()) == s
    assert Sandbox.from_env({}) == Sandbox()
    with pytest.raises(ValueError):
        Sandbox(memory=-1)


def test_saved_notebooks_have_secret_values_redacted_even_inside_escapes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SERVICE_PASSWORD", 'pa"ss\\word-with-escapes')
    monkeypatch.setenv("SHORT_TOKEN", "abc")  # too short to redact safely
    recorder = NotebookRecorder(tmp_path / "r.ipynb", secrets=["explicit-model-key-999"])
    recorder.nb.cells.append(
        nbformat.v4.new_code_cell(
            "print(password)\n# explicit-model-key-999",
            outputs=[nbformat.v4.new_output("stream", name="stdout", text='pa"ss\\word-with-escapes abc\n')],
            metadata={"nbagent": {"reply": 'it is pa"ss\\word-with-escapes', "lone": "\ud800"}},
        )
    )
    recorder.save()
    text = (tmp_path / "r.ipynb").read_text(encoding="utf-8")
    assert "word-with-escapes" not in text and "explicit-model-key-999" not in text
    nb = nbformat.read(tmp_path / "r.ipynb", as_version=4)
    nbformat.validate(nb)
    cell = nb.cells[0]
    assert cell.outputs[0].text == "[redacted $SERVICE_PASSWORD] abc\n"
    assert cell.metadata.nbagent.reply == "it is [redacted $SERVICE_PASSWORD]"
    assert cell.source.endswith("# [redacted secret]")
    assert cell.metadata.nbagent.lone == "\ud800"  # a lone surrogate survives as its JSON escape
    assert not Redactor.from_environment({"AWS_CA_BUNDLE": str(tmp_path)})  # a path, not a secret


def test_the_launcher_module_runs_standalone_without_importing_nbagent() -> None:
    # kernels/nbagent-sandbox/launch.py loads sandbox.py by path: no agent import on kernel start.
    launcher = Path(__file__).resolve().parents[1] / "kernels" / "nbagent-sandbox" / "launch.py"
    assert launcher.exists()
    probe = (
        "import importlib.util, os, sys\n"
        "p = importlib.util.find_spec('nbagent')\n"
        "path = os.path.join(next(iter(p.submodule_search_locations)), 'execution', 'sandbox.py')\n"
        "spec = importlib.util.spec_from_file_location('_s', path)\n"
        "m = importlib.util.module_from_spec(spec); sys.modules['_s'] = m; spec.loader.exec_module(m)\n"
        "print(m.Sandbox().describe(), 'nbagent' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == (
        "jail: memory 4 GiB, CPU time 1800 s, file size 1 GiB, no network, processes 512, disk 1 GiB False"
    )
