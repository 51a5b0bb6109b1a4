"""``%%agent`` and ``%agent``: ask the agent from a notebook; it works in the user's live session.

Load with ``%load_ext nbagent``. The magic parses its options (the settings of
:class:`~nbagent.AgentConfig` named in :data:`CELL_SETTINGS`, and its own), describes the user's
variables to the model, and hands the question to a new :class:`~nbagent.Agent` made with the
cell's settings. The conversation is one :class:`~nbagent.agent.session.Session` kept across cells:
the user's own shell (:class:`~nbagent.execution.shell.ShellExecutor`), the memory and the audit
notebook; a follow-up cell goes on in it, ``--reset`` starts a new one. Each step is shown live
under the cell (:class:`LiveSteps`) and the final answer is the cell's result. Bad input is one
``UsageError`` line, never a traceback.
"""

from __future__ import annotations

import asyncio
import builtins
import concurrent.futures
import json
import os
import re
import textwrap
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from IPython.core.error import UsageError as IPythonUsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.display import display, update_display
from traitlets import Bool, Float, Integer, Unicode

from ..agent.agent import Agent, RunListener, RunResult
from ..agent.approval import read_decision
from ..agent.config import AgentConfig, Setting, setting, unknown_message
from ..agent.observe import Observer
from ..agent.session import Session
from ..exceptions import UsageError
from ..execution.shell import ShellExecutor
from ..models import MODEL_ENV, Model, Usage, resolve_model
from ..records import Step, Task
from .namespace import describe_namespace

ANSWER_VARIABLE = "_nbagent_answer"
"""Where the setup code's ``final_answer`` leaves the answer object in the user's namespace."""


@cache
def magic_instructions() -> str:
    """Extra system-prompt text for runs in the user's session (``nbagent/agent/prompts/magic.md``)."""
    return (resources.files("nbagent") / "agent" / "prompts" / "magic.md").read_text(encoding="utf-8")


# -- options ---------------------------------------------------------------------------------

CELL_SETTINGS = (
    "model",
    "api_base",
    "api_key_env",
    "request_timeout",
    "temperature",
    "max_tokens",
    "max_retries",
    "max_steps",
    "timeout",
    "observation_chars",
    "planning_interval",
    "max_total_tokens",
    "max_cost",
)
"""The settings (:class:`~nbagent.AgentConfig`) a cell may give as options, e.g. ``--max-steps 3``:
they apply to that cell's question. ``c.AgentMagics.NAME`` sets their default. The key itself is
never one: a key typed in a cell would be saved with the notebook (``--api-key-env`` names the
variable that holds it)."""

MODEL_HELP = (
    "a litellm model string (openai/gpt-4o-mini), hf:MODEL_ID, scripted:FILE.json, or the name of "
    f"a Model object in the namespace; default: c.AgentMagics.model, then ${MODEL_ENV}; a "
    "follow-up goes on with the conversation's model"
)


@dataclass(frozen=True)
class MagicOption:
    """An option of the magic itself (not a setting of the agent)."""

    names: tuple[str, ...]
    field: str
    help: str
    metavar: str | None = None
    """The value's placeholder; ``None``: the option is a switch and takes no value."""


MAGIC_OPTIONS = (
    MagicOption(
        ("--notebook",),
        "notebook",
        "audit notebook of a new conversation (default: NAME.agent.ipynb beside this notebook, "
        "or agent-session.ipynb)",
        "PATH",
    ),
    MagicOption(("--overwrite",), "overwrite", "allow --notebook to replace an existing file"),
    MagicOption(("--reset",), "reset", "start a new conversation (alone: just forget the old one)"),
    MagicOption(("--insert",), "insert", "offer the code of the steps that worked as the next cell"),
    MagicOption(("--approve",), "approve", "before each step runs, ask (input()): run, skip, edit or stop"),
    MagicOption(("-h", "--help"), "help", "show this help"),
)


@dataclass
class MagicOptions:
    """What ``%agent`` / ``%%agent`` was asked, options first, then the question.

    ``settings`` holds the settings the cell gave (by name, checked); ``opts.max_steps`` reads
    one (``None`` when not given).
    """

    question: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    notebook: str | None = None
    reset: bool = False
    insert: bool = False
    overwrite: bool = False
    help: bool = False
    approve: bool = False

    def __getattr__(self, name: str) -> Any:
        if name in CELL_SETTINGS:
            return self.__dict__.get("settings", {}).get(name)
        raise AttributeError(name)


def _option_table() -> dict[str, Setting | MagicOption]:
    """Every option as typed (``-m``, ``--model``...) to what it sets."""
    table: dict[str, Setting | MagicOption] = {}
    for name in CELL_SETTINGS:
        spec = setting(name)
        for typed in (spec.short, spec.option):
            if typed:
                table[typed] = spec
    for option in MAGIC_OPTIONS:
        for typed in option.names:
            table[typed] = option
    return table


_OPTIONS = _option_table()
_TOKEN = re.compile(r"""\s*("[^"]*"|'[^']*'|\S+)""")


def parse_options(line: str) -> MagicOptions:
    """Read the options at the start of ``line``; the rest of the line is the question.

    Options may be written ``--name value`` or ``--name=value``; values with spaces are quoted.
    ``--`` ends the options (for a question that starts with ``-``). Each setting's value is read
    and checked by its :class:`~nbagent.agent.config.Setting`. Raises
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
        target = _OPTIONS.get(name)
        if target is None:
            raise UsageError(_unknown_option(name))
        if isinstance(target, MagicOption) and target.metavar is None:
            if has_value:
                raise UsageError(f"option {name} takes no value (got {token!r})")
            setattr(opts, target.field, True)
            continue
        if not has_value:
            following = _TOKEN.match(line, pos)
            if following is None:
                raise UsageError(f"option {name} needs a value: {name} {target.metavar}")
            value, pos = following.group(1), following.end()
        value = _unquote(value)
        if not value:
            raise UsageError(f"option {name} needs a non-empty value")
        if isinstance(target, MagicOption):
            setattr(opts, target.field, value)
        else:
            opts.settings[target.name] = target.parse(value, target.option)
    if opts.api_key_env:
        check_key_variable(opts.api_key_env)
    opts.question = line[pos:].strip()
    return opts


def check_key_variable(name: str) -> None:
    """Refuse an ``--api-key-env`` naming a variable that is not set (the key would be missing)."""
    if not os.environ.get(name):
        raise UsageError(
            f"--api-key-env {name}: that environment variable is not set; set it first, e.g. "
            f"%env {name}=... in a cell you do not save, or before starting Jupyter"
        )


def _unknown_option(name: str) -> str:
    if name == "--api-key":
        return (
            "unknown option '--api-key': a key typed in a cell would be saved with your notebook; "
            "put it in an environment variable and give its name: --api-key-env NAME"
        )
    hint = "%agent? shows the options; put -- before a question that starts with '-'"
    return f"{unknown_message(name, _OPTIONS, 'option')} ({hint})"


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def magic_help() -> str:
    """The help of ``%agent?`` and ``--help``, made from the same declarations as the options."""
    rows: list[tuple[str, str]] = []
    for name in CELL_SETTINGS:
        spec = setting(name)
        names = ", ".join(n for n in (spec.short, spec.option) if n)
        text = MODEL_HELP if name == "model" else spec.help
        if spec.default is not None and "(default" not in text:
            text += f" (default {spec.default_text()})"
        rows.append((f"{names} {spec.metavar}", text))
    for option in MAGIC_OPTIONS:
        names = ", ".join(option.names)
        rows.append((f"{names} {option.metavar}" if option.metavar else names, option.help))
    lines = []
    for flags, text in rows:
        head = f"  {flags:<22} " if len(flags) <= 22 else f"  {flags}\n" + " " * 25
        body = textwrap.wrap(text, 92 - 25)
        lines.append(head + ("\n" + " " * 25).join(body))
    return _HELP_HEAD + "\n".join(lines)


_HELP_HEAD = """Ask the agent; it answers by running code in this session, on your variables.

    %%agent [options]
    QUESTION (the rest of the cell)

    %agent [options] QUESTION

Each step (thought, code, outputs) is shown below the cell; the answer is the cell's
result, so `_` holds it. A follow-up %%agent cell continues the conversation (the same
session: variables, memory and audit notebook), with that cell's options; every
conversation is recorded in an audit notebook. c.AgentMagics.NAME sets an option's
default (%config AgentMagics.max_steps = 5).

Options:
"""


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
            decision = read_decision(builtins.input(self.PROMPT.format(number=number)), number)
            if decision == "run":
                return True
            if decision == "skip":
                return False
            if decision == "edit":
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


def _trait(name: str, help: str | None = None) -> Any:
    """The ``c.AgentMagics.NAME`` trait of a setting: its default and help are the setting's
    (text settings: ``""`` for not set)."""
    spec = setting(name)
    text = help or spec.help
    options: dict[str, Any] = {"allow_none": spec.default is None or spec.optional, "help": text}
    if spec.kind == "int":
        trait: Any = Integer(spec.default, **options)
    elif spec.kind == "float":
        trait = Float(spec.default, **options)
    else:
        trait = Unicode(spec.default or "", help=text)
    return trait.tag(config=True)


def _documented(func: Callable[..., Any]) -> Callable[..., Any]:
    """Give the magic its help (what ``%agent?`` shows), made from the option declarations."""
    func.__doc__ = magic_help()
    return func


@magics_class
class AgentMagics(Magics):
    """The ``%agent`` line magic and ``%%agent`` cell magic (configurable as ``c.AgentMagics``).

    The magic keeps one :class:`~nbagent.agent.session.Session` for the conversation (the user's
    shell, the memory, the audit notebook) and asks each cell's question with a new
    :class:`~nbagent.Agent` made with that cell's settings, going on in that session.
    """

    model = _trait("model", f"Model used when --model is not given: {MODEL_HELP}.")
    api_base = _trait("api_base")
    api_key_env = _trait("api_key_env")
    request_timeout = _trait("request_timeout")
    temperature = _trait("temperature")
    max_tokens = _trait("max_tokens")
    max_retries = _trait("max_retries")
    max_steps = _trait("max_steps")
    timeout = _trait("timeout")
    observation_chars = _trait("observation_chars")
    planning_interval = _trait("planning_interval")
    max_total_tokens = _trait("max_total_tokens")
    max_cost = _trait("max_cost")
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
        self.session: Session | None = None
        """The conversation: the user's shell, the memory and the audit notebook."""
        self.last_agent: Agent | None = None
        """The agent of the latest question (each cell has its own)."""
        self._model_key: str | None = None
        self._model: Model | None = None
        self._model_spec: str | None = None
        self._reset_pending = False

    @line_cell_magic
    @_documented
    def agent(self, line: str, cell: str | None = None) -> Any:
        try:
            return self._ask(line, cell)
        except UsageError as exc:
            raise IPythonUsageError(str(exc)) from None

    def _ask(self, line: str, cell: str | None) -> Any:
        opts = parse_options(line)
        if opts.help:
            print(magic_help())
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
        session = self.session
        follow_up = session is not None and session.started and not self._reset_pending
        config = self._cell_config(opts)
        model = self._resolve_model(config, opts, follow_up)
        agent = Agent(
            model,
            config=config,
            listeners=[LiveSteps(self.executor)],
            approve=ShellApproval(self.executor) if opts.approve else None,
        )

        notebook: str | Path | None = opts.notebook
        if follow_up:
            assert session is not None
            recorded = session.recorder.path if session.recorder is not None else None
            if notebook is not None and recorded != Path(notebook).expanduser().resolve():
                raise UsageError(
                    f"this conversation is recorded in {str(recorded)!r}; "
                    f"add --reset to start a new one recorded in {notebook!r}"
                )
        else:
            self.executor.cwd = Path.cwd().resolve()
            session = Session(self.executor)
            if notebook is None:
                notebook = default_audit_notebook(self.ip)
        self.session, self.last_agent = session, agent
        task = self._task_text(question)
        self.ip.user_ns.pop(ANSWER_VARIABLE, None)
        try:
            result = self.executor.run_coroutine(
                agent.arun(
                    task,
                    notebook=notebook,
                    reset=not follow_up,
                    overwrite=opts.overwrite,
                    session=session,
                )
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

    def _cell_config(self, opts: MagicOptions) -> AgentConfig:
        """The settings of this cell's question: ``c.AgentMagics``, then the cell's options."""
        values: dict[str, Any] = {}
        for name in CELL_SETTINGS:
            configured = getattr(self, name)
            values[name] = setting(name).check(
                configured if configured != "" else None, f"c.AgentMagics.{name}"
            )
        values |= opts.settings
        # The session is the user's own: no seeding of their random state, and no default tools
        # that would define list_files/read_file... in their namespace.
        return AgentConfig(instructions=magic_instructions(), seed=None, default_tools=False).replace(
            **values
        )

    def _resolve_model(self, config: AgentConfig, opts: MagicOptions, follow_up: bool) -> Model:
        model_options = [n for n in opts.settings if setting(n).group == "model"]
        if follow_up and not model_options and self.last_agent is not None:
            return self.last_agent.model  # a follow-up goes on with the conversation's model
        spec = (
            opts.model
            or (self._model_spec if follow_up else None)
            or config.model
            or os.environ.get(MODEL_ENV, "")
        )
        if not spec:
            raise UsageError(
                "no model configured: pass --model MODEL (e.g. %%agent --model openai/gpt-4o-mini), "
                f"or set %config AgentMagics.model = '...' or the {MODEL_ENV} environment variable"
            )
        self._model_spec = spec
        named = self.ip.user_ns.get(spec) if spec.isidentifier() else None
        if isinstance(named, Model):
            return named
        key_env = config.api_key_env
        if key_env:
            check_key_variable(key_env)
        options = config.model_options()
        # A scripted model takes no options: one for its script must not restart the script.
        chosen = {} if spec.startswith("scripted:") else options.kwargs()
        key = json.dumps([spec, key_env, {k: repr(v) for k, v in sorted(chosen.items())}])
        if self._model is None or self._model_key != key:
            # The same spec keeps its model object: a scripted model goes on with its script.
            self._model = resolve_model(spec, **options.kwargs())
            self._model_key = key
        return self._model

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
