"""``%%agent`` and ``%agent``: ask the agent from a notebook; it works in the user's live session.

Load with ``%load_ext nbagent``. The magic parses its options, describes the user's variables to
the model, and hands the question to an :class:`~nbagent.Agent` whose executor is the user's own
shell (:class:`~nbagent.execution.shell.ShellExecutor`); the loop, observations and audit notebook are the
Agent's. Each step is shown live under the cell (:class:`LiveSteps`) and the final answer is the
cell's result. Bad input is one ``UsageError`` line, never a traceback.
"""

from __future__ import annotations

import asyncio
import builtins
import concurrent.futures
import inspect
import json
import math
import os
import re
import textwrap
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from IPython.core.error import UsageError as IPythonUsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.display import display, update_display
from traitlets import Bool, Float, Integer, Unicode

from ..agent.agent import Agent, RunListener, RunResult
from ..agent.observe import Observer
from ..exceptions import StopRun, UsageError
from ..execution.shell import ShellExecutor
from ..models import MODEL_ENV, Model, Usage, resolve_model
from ..models.options import DEFAULT_REQUEST_TIMEOUT, ModelOptions, check_api_base
from ..records import Step, Task
from .namespace import describe_namespace

ANSWER_VARIABLE = "_nbagent_answer"
"""Where the setup code's ``final_answer`` leaves the answer object in the user's namespace."""


@cache
def magic_instructions() -> str:
    """Extra system-prompt text for runs in the user's session (``nbagent/agent/prompts/magic.md``)."""
    return (resources.files("nbagent") / "agent" / "prompts" / "magic.md").read_text(encoding="utf-8")


# -- options ---------------------------------------------------------------------------------


@dataclass
class MagicOptions:
    """What ``%agent`` / ``%%agent`` was asked, options first, then the question."""

    question: str = ""
    model: str | None = None
    api_base: str | None = None
    api_key_env: str | None = None
    request_timeout: float | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    max_steps: int | None = None
    timeout: float | None = None
    notebook: str | None = None
    reset: bool = False
    insert: bool = False
    overwrite: bool = False
    help: bool = False
    approve: bool = False
    max_total_tokens: int | None = None
    max_cost: float | None = None


_VALUE_OPTIONS = {
    "-m": ("model", "MODEL"),
    "--model": ("model", "MODEL"),
    "--api-base": ("api_base", "URL"),
    "--api-key-env": ("api_key_env", "NAME"),
    "--request-timeout": ("request_timeout", "SECONDS"),
    "--temperature": ("temperature", "T"),
    "--max-tokens": ("max_tokens", "N"),
    "--max-steps": ("max_steps", "N"),
    "--timeout": ("timeout", "SECONDS"),
    "--notebook": ("notebook", "PATH"),
    "--max-total-tokens": ("max_total_tokens", "N"),
    "--max-cost": ("max_cost", "USD"),
}
_FLAGS = {
    "--reset": "reset",
    "--insert": "insert",
    "--overwrite": "overwrite",
    "--approve": "approve",
    "-h": "help",
    "--help": "help",
}
_TOKEN = re.compile(r"""\s*("[^"]*"|'[^']*'|\S+)""")
_KNOWN = (
    "--model, --api-base, --api-key-env, --request-timeout, --temperature, --max-tokens, "
    "--max-steps, --timeout, --notebook, --overwrite, --reset, --insert, --approve, "
    "--max-total-tokens, --max-cost"
)


def parse_options(line: str) -> MagicOptions:
    """Read the options at the start of ``line``; the rest of the line is the question.

    Options may be written ``--name value`` or ``--name=value``; values with spaces are quoted.
    ``--`` ends the options (for a question that starts with ``-``). Raises
    :class:`~nbagent.UsageError` with one line saying what is wrong.
    """
    opts = MagicOptions()
    pos = 0
    while True:
        match = _TOKEN.match(line, pos)
        if match is None or not match.group(1).startswith("-"):
            break
        token = match.group(1)
        pos = match.end()
        if token == "--":
            break
        name, has_value, value = token.partition("=")
        if name in _FLAGS:
            if has_value:
                raise UsageError(f"option {name} takes no value (got {token!r})")
            setattr(opts, _FLAGS[name], True)
            continue
        if name not in _VALUE_OPTIONS:
            raise UsageError(
                f"unknown option {token!r}; the options are {_KNOWN} (%agent? shows them; "
                "put -- before a question that starts with '-')"
            )
        field, metavar = _VALUE_OPTIONS[name]
        if not has_value:
            following = _TOKEN.match(line, pos)
            if following is None:
                raise UsageError(f"option {name} needs a value: {name} {metavar}")
            value, pos = following.group(1), following.end()
        value = _unquote(value)
        setattr(opts, field, _convert(name, field, value))
    opts.question = line[pos:].strip()
    return opts


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


_NUMBERS: dict[str, tuple[type[int] | type[float], Callable[[float], bool], str]] = {
    "max_steps": (int, lambda n: n >= 1, "a whole number of steps, at least 1"),
    "max_total_tokens": (int, lambda n: n >= 1, "a whole number of tokens, at least 1"),
    "max_tokens": (int, lambda n: n >= 1, "a whole number of tokens, at least 1"),
    "max_cost": (float, lambda n: n > 0, "a positive number of US dollars"),
    "timeout": (float, lambda n: n > 0, "a positive number of seconds"),
    "request_timeout": (float, lambda n: n > 0, "a positive number of seconds"),
    "temperature": (float, lambda n: 0 <= n <= 2, "a number from 0 to 2"),
}
"""Numeric options: the type, the values allowed, and how the error says what is allowed."""


def _convert(option: str, field: str, value: str) -> Any:
    if not value:
        raise UsageError(f"option {option} needs a non-empty value")
    if field in _NUMBERS:
        kind, allowed, what = _NUMBERS[field]
        try:
            number: float = kind(value)
        except ValueError:
            number = math.nan
        if not (math.isfinite(number) and allowed(number)):
            raise UsageError(f"{option} must be {what} (got {value!r})")
        return number
    if field == "api_key_env":
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
            raise UsageError(
                f"{option} takes the NAME of an environment variable holding the key (got {value!r}); "
                "a key typed here would be saved in your notebook"
            )
        if not os.environ.get(value):
            raise UsageError(
                f"{option} {value}: that environment variable is not set; set it first, e.g. "
                f"%env {value}=... in a cell you do not save, or before starting Jupyter"
            )
        return value
    if field == "api_base":
        return check_api_base(value)
    return value


# -- "%agent question?" is a question, not a help request -------------------------------------

_LINE_QUESTION = re.compile(r"^(?P<indent>[ \t]*)%agent(?P<rest>[ \t]+\S.*\?)[ \t]*$")


def question_mark_transform(lines: list[str]) -> list[str]:
    """IPython input transform: run ``%agent ... ?`` as the magic instead of asking for help.

    IPython reads a line ending in ``?`` as a help request (and answers "Object not found").
    ``%agent?`` alone still shows the magic's help; ``%%agent`` cells are left alone.
    """
    if not lines or lines[0].lstrip().startswith("%%"):
        return lines
    out = []
    for line in lines:
        body = line.rstrip("\r\n")
        match = _LINE_QUESTION.match(body)
        if match:
            call = f"get_ipython().run_line_magic('agent', {match['rest'].strip()!r})"
            line = match["indent"] + call + line[len(body) :]
        out.append(line)
    return out


# -- the audit notebook ------------------------------------------------------------------------


def current_notebook(shell: Any) -> Path | None:
    """The notebook this kernel serves, when the front end says (JupyterLab, VS Code)."""
    candidates = [shell.user_ns.get("__vsc_ipynb_file__"), os.environ.get("JPY_SESSION_NAME")]
    for candidate in candidates:
        if not isinstance(candidate, str) or not candidate.endswith(".ipynb"):
            continue
        path = Path(candidate)
        if not path.is_absolute():
            # Older Jupyter servers give the path from their root; the kernel runs in its folder.
            path = Path.cwd() / path.name
        if path.parent.is_dir():
            return path
    return None


def default_audit_notebook(shell: Any) -> Path:
    """Where a new conversation is recorded: ``NAME.agent.ipynb`` beside the current notebook,
    else ``agent-session.ipynb`` in the current directory; never an existing file (``-2``, ``-3``...).
    """
    notebook = current_notebook(shell)
    base = notebook.with_name(notebook.stem + ".agent") if notebook else Path.cwd() / "agent-session"
    candidate = base.with_name(base.name + ".ipynb")
    n = 2
    while candidate.exists():
        candidate = base.with_name(f"{base.name}-{n}.ipynb")
        n += 1
    return candidate


# -- live display --------------------------------------------------------------------------------


class LiveSteps(RunListener):
    """Shows each step under the magic's cell as it happens: thought and code, then notes.

    The step's own outputs appear between them, shown by the shell itself. Events arrive on the
    agent's thread; the displays are made on the shell's thread, in turn with the steps.
    """

    def __init__(self, executor: ShellExecutor) -> None:
        self.executor = executor
        self.spent = Usage()
        self._step_display: str | None = None  # the display the current reply streams into
        self._text = ""
        self._updated = 0.0
        self._stop_ticking = threading.Event()

    def _show(self, markdown: str, plain: str, display_id: str | None = None, update: bool = False) -> None:
        bundle = {"text/markdown": markdown, "text/plain": plain}
        if update:
            self.executor.call_soon(lambda: update_display(bundle, raw=True, display_id=display_id))
        elif display_id is not None:
            self.executor.call_soon(lambda: display(bundle, raw=True, display_id=display_id))
        else:
            self.executor.call_soon(lambda: display(bundle, raw=True))

    # -- the reply as it streams: one display, updated, then replaced by the step ------------------

    def model_called(self, number: int) -> None:
        self._stop_ticking.set()
        self._stop_ticking = threading.Event()
        self._step_display, self._text, self._updated = uuid.uuid4().hex, "", 0.0
        self._show(
            f"*Step {number} · waiting for model… 0 s*",
            f"Step {number} · waiting for model… 0 s",
            self._step_display,
        )
        threading.Thread(
            target=self._tick, args=(number, self._step_display, self._stop_ticking), daemon=True
        ).start()

    def _tick(self, number: int, display_id: str, stop: threading.Event) -> None:
        started = time.monotonic()
        while not stop.wait(1.0):
            if self._text or self._step_display != display_id:
                return
            waited = f"waiting for model… {int(time.monotonic() - started)} s"
            self._show(f"*Step {number} · {waited}*", f"Step {number} · {waited}", display_id, update=True)

    def reply_text(self, number: int, text: str) -> None:
        self._stop_ticking.set()
        self._text += text
        now = time.monotonic()
        if self._step_display is None or now - self._updated < 0.1:
            return  # a few updates a second are enough to read along
        self._updated = now
        fence = "`" * max(4, _longest_backtick_run(self._text) + 1)
        self._show(
            f"*Step {number} · the model is writing…*\n\n{fence}text\n{self._text}\n{fence}",
            f"Step {number} · the model is writing…\n{self._text}",
            self._step_display,
            update=True,
        )

    def _show_step(self, markdown: str, plain: str) -> None:
        self._stop_ticking.set()
        display_id, self._step_display = self._step_display, None
        if display_id is None:
            self._show(markdown, plain)
        else:
            self._show(markdown, plain, display_id, update=True)

    def task_started(self, task: Task, notebook_path: Path | None) -> None:
        self.spent = Usage()
        where = _where(notebook_path)
        self._show(f"*nbagent · audit notebook {where}*", f"nbagent · audit notebook {notebook_path}")

    def reply_received(self, number: int, thought: str, code: str | None) -> None:
        thought = thought or "(no thought given)"
        if code is None:
            self._show_step(
                f"**Step {number}.** {thought}\n\n*(the reply had no code to run)*",
                f"Step {number}. {thought}\n(the reply had no code to run)",
            )
            return
        fence = "`" * max(3, _longest_backtick_run(code) + 1)
        self._show_step(
            f"**Step {number}.** {thought}\n\n{fence}python\n{code}\n{fence}",
            f"Step {number}. {thought}\n" + textwrap.indent(code, "    "),
        )

    def step_finished(self, step: Step) -> None:
        execution = step.execution
        if execution is not None and execution.status == "timeout":
            self._show(f"*Step {step.number} was stopped: {execution.note}.*", f"(stopped: {execution.note})")
        elif execution is not None and execution.status == "error" and execution.note:
            # What was undone of the failed step, and what it changed that could not be.
            self._show(f"*Step {step.number}: {execution.note}.*", f"(step {step.number}: {execution.note})")
        self.spent = self.spent + step.usage
        spent = _spent(self.spent)
        self._show(f"<sub>{spent} so far</sub>", f"({spent} so far)")

    def run_finished(self, result: RunResult) -> None:
        self._stop_ticking.set()
        if self._step_display is not None:  # the model never answered: no "waiting" left behind
            self._show("*no reply*", "no reply", self._step_display, update=True)
            self._step_display = None
        tokens = f"{result.usage.total_tokens:,} tokens"
        cost = f", ${result.usage.cost:.4f}" if result.usage.cost else ""
        facts = f"{len(result.steps)} steps · {result.duration:.1f} s · {tokens}{cost}"
        if result.answered:
            self._show(f"*answered · {facts}*", f"answered · {facts}")
            return
        reason = {
            "max_steps": "no final answer within the step limit",
            "interrupted": "interrupted; the audit notebook keeps the steps so far",
            "budget": f"the run stopped: {result.error}",
            "stopped": "stopped at your request; the audit notebook keeps the steps so far",
        }.get(result.status, result.error or result.status)
        if result.status == "error" and result.error:
            reason = f"the run stopped: {result.error}"
        self._show(f"**nbagent:** {reason} · *{facts}*", f"nbagent: {reason} · {facts}")


def _spent(usage: Usage) -> str:
    approx = "~" if usage.estimated else ""
    cost = f", ${usage.cost:.4f}" if usage.cost else ""
    return f"{approx}{usage.total_tokens:,} tokens{cost}"


class ShellApproval:
    """The ``approve`` callback of ``%%agent --approve``: asks under the cell with ``input()``.

    The agent runs on a helper thread; the question is asked on the shell's thread, where the
    front end can answer ``input()``, and the agent waits for the answer.
    """

    PROMPT = "step {number}: [r]un, [s]kip, [e]dit, s[t]op? "

    def __init__(self, executor: ShellExecutor) -> None:
        self.executor = executor

    async def __call__(self, number: int, thought: str, code: str) -> bool | str:
        answer: concurrent.futures.Future[bool | str] = concurrent.futures.Future()

        def ask() -> None:
            try:
                answer.set_result(self.ask(number))
            except BaseException as exc:  # StopRun, or an interrupt while waiting: the agent gets it
                answer.set_exception(exc)

        self.executor.call_soon(ask)
        return await asyncio.wrap_future(answer)

    def ask(self, number: int) -> bool | str:
        """One decision, read with ``input()`` (looked up when asked, so the front end's is used)."""
        while True:
            choice = builtins.input(self.PROMPT.format(number=number)).strip().lower()
            if choice in ("r", "run", "y", "yes", ""):
                return True
            if choice in ("s", "skip", "n", "no"):
                return False
            if choice in ("t", "stop", "q", "quit"):
                raise StopRun(f"stopped by the user at step {number}")
            if choice in ("e", "edit"):
                lines = []
                while True:
                    line = builtins.input("code to run instead (an empty line ends it): ")
                    if not line.strip():
                        break
                    lines.append(line)
                if lines:
                    return "\n".join(lines)
                continue
            print("please answer r, s, e or t")


def _where(path: Path | None) -> str:
    if path is None:
        return "*(not saved)*"
    try:
        shown = os.path.relpath(path, Path.cwd())
    except ValueError:  # another drive (Windows)
        shown = str(path)
    if shown.startswith(".."):
        return f"`{path}`"  # outside the notebook's folder: a link would not resolve
    return f"[`{shown}`]({shown.replace(' ', '%20')})"


def _longest_backtick_run(text: str) -> int:
    runs = re.findall(r"`+", text)
    return max((len(r) for r in runs), default=0)


# -- the magics ----------------------------------------------------------------------------------


@magics_class
class AgentMagics(Magics):
    """The ``%agent`` line magic and ``%%agent`` cell magic (configurable as ``c.AgentMagics``)."""

    model = Unicode(
        "",
        help="Model used when --model is not given: a litellm string, 'hf:MODEL_ID', "
        "'scripted:FILE.json' or the name of a Model object in the namespace. "
        f"Empty: the {MODEL_ENV} environment variable.",
    ).tag(config=True)
    api_base = Unicode("", help="Base URL of an OpenAI-compatible server or endpoint.").tag(config=True)
    api_key_env = Unicode(
        "", help="Name of the environment variable holding the model's key (not the key itself)."
    ).tag(config=True)
    request_timeout = Float(DEFAULT_REQUEST_TIMEOUT, help="Seconds one model request may take.").tag(
        config=True
    )
    temperature = Float(None, allow_none=True, help="Sampling temperature (None: the model's).").tag(
        config=True
    )
    max_tokens = Integer(None, allow_none=True, help="Longest reply, in tokens (None: the model's).").tag(
        config=True
    )
    max_steps = Integer(10, help="Steps before the model is asked for its final answer.").tag(config=True)
    timeout = Float(60.0, help="Seconds a step may run before it is interrupted.").tag(config=True)
    insert = Bool(
        False, help="Offer the code of the steps that worked as the next input cell (like --insert)."
    ).tag(config=True)
    max_variables = Integer(40, help="How many of the user's variables the model is told of.").tag(
        config=True
    )

    def __init__(self, shell: Any = None, **kwargs: Any) -> None:
        super().__init__(shell=shell, **kwargs)
        self.ip: Any = shell  # the InteractiveShell (Magics.shell is typed Optional)
        # Errors under the user's cell in the short form the model reads (full traceback folded).
        self.executor = ShellExecutor(shell, short_error=Observer().render_error)
        self._agent: Agent | None = None
        self._model_key: str | None = None
        self._model: Model | None = None
        self._reset_pending = False

    @line_cell_magic
    def agent(self, line: str, cell: str | None = None) -> Any:
        """Ask the agent; it answers by running code in this session, on your variables.

            %%agent [options]
            QUESTION (the rest of the cell)

            %agent [options] QUESTION

        Each step (thought, code, outputs) is shown below the cell; the answer is the cell's
        result, so `_` holds it. A follow-up %%agent cell continues the conversation; every
        conversation is recorded in an audit notebook.

        Options:
          -m, --model MODEL    a litellm model string (openai/gpt-4o-mini), hf:MODEL_ID,
                               scripted:FILE.json, or the name of a Model object in the
                               namespace; default: c.AgentMagics.model, then $NBAGENT_MODEL
          --api-base URL       base URL of an OpenAI-compatible server or endpoint
          --api-key-env NAME   send the key held by environment variable NAME (a key typed
                               here would be saved in the notebook); default: $NBAGENT_API_KEY,
                               else the provider's own variable
          --request-timeout SECONDS  time limit of one model request (default 120)
          --temperature T      sampling temperature (default: the model's)
          --max-tokens N       longest reply of the model, in tokens (default: the model's)
          --max-steps N        steps before a final answer is demanded (default 10)
          --timeout SECONDS    time limit of one step; the step is interrupted (default 60)
          --notebook PATH      audit notebook of a new conversation (default: NAME.agent.ipynb
                               beside this notebook, or agent-session.ipynb)
          --overwrite          allow --notebook to replace an existing file
          --reset              start a new conversation (alone: just forget the old one)
          --insert             offer the code of the steps that worked as the next cell
          --approve            before each step runs, ask (input()): run, skip, edit or stop
          --max-total-tokens N stop before a model call once the question used N tokens
          --max-cost USD       the same in US dollars (litellm's prices)
          -h, --help           show this help
        """
        try:
            return self._ask(line, cell)
        except UsageError as exc:
            raise IPythonUsageError(str(exc)) from None

    def _ask(self, line: str, cell: str | None) -> Any:
        opts = parse_options(line)
        if opts.help:
            print(inspect.getdoc(AgentMagics.agent))
            return None
        question = "\n".join(part for part in (opts.question, (cell or "").strip()) if part).strip()
        if opts.reset:
            self._reset_pending = True
            if not question:
                print("nbagent: the conversation was reset; the next question starts a new one.")
                return None
        if not question:
            usage = "%%agent on the first line and the question below it" if cell is None else ""
            raise UsageError(
                "no question: write it after %agent, or use " + (usage or "a %%agent cell with a body")
            )
        follow_up = self._agent is not None and self._agent.memory is not None and not self._reset_pending
        model = self._resolve_model(opts, follow_up)
        max_steps = opts.max_steps or self._checked("max_steps", self.max_steps)
        timeout = opts.timeout or self._checked("timeout", self.timeout)

        agent = self._agent
        if agent is None:
            agent = Agent(
                model,
                max_steps=max_steps,
                timeout=timeout,
                instructions=magic_instructions(),
                # The session is the user's own: no seeding of their random state, and no
                # default tools that would define list_files/read_file... in their namespace.
                seed=None,
                default_tools=False,
                listeners=[LiveSteps(self.executor)],
                executor=self.executor,
            )
            self._agent = agent
        agent.model, agent.max_steps, agent.timeout = model, max_steps, timeout
        agent.approve = ShellApproval(self.executor) if opts.approve else None
        agent.max_total_tokens, agent.max_cost = opts.max_total_tokens, opts.max_cost

        notebook: str | Path | None = opts.notebook
        recorded = agent.recorder.path if agent.recorder is not None else None
        if follow_up and notebook is not None and recorded != Path(notebook).expanduser().resolve():
            raise UsageError(
                f"this conversation is recorded in {str(recorded)!r}; "
                f"add --reset to start a new one recorded in {notebook!r}"
            )
        if not follow_up:
            self.executor.cwd = Path.cwd().resolve()
            if notebook is None:
                notebook = default_audit_notebook(self.ip)
        task = self._task_text(question)
        self.ip.user_ns.pop(ANSWER_VARIABLE, None)
        try:
            result = self.executor.run_coroutine(
                agent.arun(task, notebook=notebook, reset=not follow_up, overwrite=opts.overwrite)
            )
        except KeyboardInterrupt:
            return None  # LiveSteps has said so under the cell
        self._reset_pending = False

        if opts.insert or self.insert:
            self._offer_code(result)
        if not result.answered:
            return None
        return self.ip.user_ns.pop(ANSWER_VARIABLE, result.answer)

    def reset(self) -> None:
        """Forget the conversation: the next question starts a new one (and a new audit notebook)."""
        self._reset_pending = True

    def _resolve_model(self, opts: MagicOptions, follow_up: bool) -> Model:
        if follow_up and not opts.model and self._agent is not None:
            return self._agent.model  # a follow-up goes on with the conversation's model
        spec = opts.model or self.model or os.environ.get(MODEL_ENV, "")
        if not spec:
            raise UsageError(
                "no model configured: pass --model MODEL (e.g. %%agent --model openai/gpt-4o-mini), "
                f"or set %config AgentMagics.model = '...' or the {MODEL_ENV} environment variable"
            )
        named = self.ip.user_ns.get(spec) if spec.isidentifier() else None
        if isinstance(named, Model):
            return named
        key_env = opts.api_key_env or self.api_key_env or None
        options = ModelOptions(
            api_base=opts.api_base or self.api_base or None,
            api_key=os.environ.get(key_env) if key_env else None,
            request_timeout=opts.request_timeout or self.request_timeout,
            temperature=opts.temperature if opts.temperature is not None else self.temperature,
            max_tokens=opts.max_tokens or self.max_tokens,
        ).check()
        key = json.dumps([spec, key_env, {k: repr(v) for k, v in sorted(options.kwargs().items())}])
        if self._model is None or self._model_key != key:
            # The same spec keeps its model object: a scripted model goes on with its script.
            self._model = resolve_model(spec, **options.kwargs())
            self._model_key = key
        return self._model

    def _checked(self, name: str, value: float) -> Any:
        if not value > 0:
            raise UsageError(f"c.AgentMagics.{name} must be positive (it is {value!r})")
        return value

    def _task_text(self, question: str) -> str:
        described = describe_namespace(
            self.ip.user_ns, self.ip.user_ns_hidden, limit=max(self.max_variables, 1)
        )
        if not described:
            return question
        return (
            f"{question}\n\nThe user's session already holds these variables "
            f"(use them directly):\n{described}"
        )

    def _offer_code(self, result: RunResult) -> None:
        # Only one cell can be inserted per execution, so every step that worked goes in one.
        pieces = [
            f"# Step {step.number}\n{step.code}"
            for step in result.steps
            if step.code and step.execution is not None and step.execution.ok
        ]
        if pieces:
            self.ip.set_next_input("\n\n".join(pieces), replace=False)


def load_ipython_extension(shell: Any) -> None:
    """``%load_ext nbagent``: register ``%agent`` / ``%%agent``."""
    shell.register_magics(AgentMagics(shell))
    if question_mark_transform not in shell.input_transformers_cleanup:
        shell.input_transformers_cleanup.append(question_mark_transform)


def unload_ipython_extension(shell: Any) -> None:
    """``%unload_ext nbagent``: remove the magics and the input transform."""
    if question_mark_transform in shell.input_transformers_cleanup:
        shell.input_transformers_cleanup.remove(question_mark_transform)
    manager = shell.magics_manager
    instance = manager.registry.pop("AgentMagics", None)
    for kind in ("line", "cell"):
        manager.magics[kind].pop("agent", None)
    if isinstance(instance, AgentMagics):
        instance.executor.close()
