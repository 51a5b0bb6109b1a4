"""Every setting of a run, declared once: :class:`AgentConfig`.

Each field of :class:`AgentConfig` carries a :class:`Setting`: its type, default, the values it
allows, a help sentence, its command-line flag, and what a notebook may say about it. Every way
of starting a run reads the same declarations:

- ``Agent(max_steps=3)`` and ``Agent(config=AgentConfig(...))``: unknown names are an error
  naming the nearest valid one (:class:`UnknownSettingError`);
- the flags of ``nbagent run``, ``resume`` and ``batch`` (:func:`add_setting_arguments`), which
  share one definition;
- the fields of a batch task file and the options of ``%%agent`` (:meth:`AgentConfig.parse`).

A run records its settings (secrets never) in the notebook's ``runs[i].settings``.
``resume`` and ``verify`` take the loop's settings back from there (``reuse``), and the sandbox
limits only where they are tighter than the defaults (``tighten``). Everything that decides what
the code may reach or who is sent a key (kernel, sandbox level, network, environment, tools,
model, endpoint, credentials) is never taken from a notebook (``never``): a notebook is
untrusted input.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
import os
import re
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field, fields
from functools import cache
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from ..exceptions import UnknownSettingError, UsageError
from ..execution.kernel import DEFAULT_KERNEL
from ..execution.sandbox import (
    DEFAULT_CPU_TIME,
    DEFAULT_DISK,
    DEFAULT_FILE_SIZE,
    DEFAULT_MAX_PROCESSES,
    DEFAULT_MEMORY,
    LEVELS,
    MIN_SIZE,
    Sandbox,
    format_size,
    parse_size,
)
from ..models.options import DEFAULT_REQUEST_TIMEOUT, ModelOptions, check_api_base
from ..models.retry import RetryPolicy
from .memory import HistoryLimits
from .observe import Observer

Kind = Literal["int", "float", "bool", "str", "size", "names", "choice", "url", "env_name"]
FromNotebook = Literal["reuse", "tighten", "never"]
Group = Literal["model", "loop", "budget", "sandbox", "tools"]

GROUPS: dict[Group, str] = {
    "model": "how the model is reached and how it replies",
    "loop": "the agent's loop: steps, time, what the model is shown",
    "budget": "what one question may spend on the model",
    "sandbox": "the sandboxed kernel (nbagent-sandbox) and its limits; other kernels ignore the limits",
    "tools": "what the code can call",
}

EXCLUSIVE: tuple[tuple[str, str], ...] = (("observation_chars", "observation_tokens"),)
"""Settings of which a command line takes one or the other, never both (the second replaces the
first when both are set)."""


@dataclass(frozen=True)
class Setting:
    """One setting: what it is, what it allows, and where it may come from.

    ``minimum`` / ``maximum`` bound numbers (``above`` makes the minimum exclusive);
    ``optional`` allows ``None`` (for limits: no limit, written ``0`` on the command line).
    ``from_notebook`` says what ``resume`` and ``verify`` take from a recorded run.
    """

    help: str
    kind: Kind
    group: Group
    default: Any = None
    metavar: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    above: bool = False
    optional: bool = False
    choices: tuple[str, ...] = ()
    from_notebook: FromNotebook = "never"
    secret: bool = False
    flag: str | None = None
    short: str | None = None
    name: str = ""

    @property
    def option(self) -> str:
        """The command-line flag (``--max-steps``)."""
        return self.flag or "--" + self.name.replace("_", "-")

    def default_text(self) -> str:
        """The default as the help shows it."""
        return self.value_text(self.default)

    def value_text(self, value: Any) -> str:
        """A value as nbagent shows it (``2G``, ``3 s``, ``on``, ``a, b``); not escaped."""
        if value is None or value == "":
            return "none"
        if self.kind == "size" and isinstance(value, int) and not isinstance(value, bool):
            return format_size(value)
        if isinstance(value, bool):
            return "on" if value else "off"
        if isinstance(value, float):
            text = f"{value:g}"
        elif isinstance(value, (tuple, list)):
            return ", ".join(map(str, value)) or "none"
        else:
            text = str(value)
        return f"{text} s" if self.metavar == "SECONDS" else text

    def check(self, value: Any, label: str | None = None) -> Any:
        """``value`` as this setting holds it (an int for a float is a float; a size string is
        bytes), or one :class:`UsageError` saying which setting, what is wrong and what is allowed."""
        label = label or self.name
        if value is None:
            if self.optional or self.default is None:
                return None
            raise UsageError(f"{label} cannot be None; {self._allowed()}")
        kind = self.kind
        if kind == "bool":
            if not isinstance(value, bool):
                raise UsageError(f"{label} must be true or false, not {value!r}")
            return value
        if kind in ("int", "float"):
            return self._number(value, label)
        if kind == "size":
            return self._size(value, label)
        if kind == "names":
            items = (value,) if isinstance(value, str) else value
            if not isinstance(items, Iterable) or not all(isinstance(v, str) and v for v in items):
                raise UsageError(f"{label} must be a list of names, not {value!r}")
            return tuple(items)
        if value == "" and self.default == "":
            return value
        if not isinstance(value, str) or not value.strip():
            raise UsageError(f"{label} must be a non-empty string, not {value!r}")
        if kind == "choice" and value not in self.choices:
            raise UsageError(f"{label} must be one of {', '.join(self.choices)}, not {value!r}")
        if kind == "url":
            return check_api_base(value, label)
        if kind == "env_name" and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
            raise UsageError(
                f"{label} takes the NAME of an environment variable holding the key (letters, digits "
                "and _), not a key: a key written here would be saved with your notebook or task file"
            )
        return value

    def parse(self, text: str, label: str | None = None) -> Any:
        """Read a value typed as text (a flag, a ``%%agent`` option), then :meth:`check` it."""
        label = label or self.option
        text = text.strip()
        if self.kind in ("int", "float"):
            if self.optional and text.lower() in ("none", "off"):
                return None
            try:
                number: float = int(text) if self.kind == "int" else float(text)
            except ValueError:
                number = math.nan
            try:
                return self.check(number, label)
            except UsageError:  # said with the text as typed: "not '-3'", not "not -3.0"
                raise UsageError(f"{label} must be {self._allowed_number()}, not {text!r}") from None
        if self.kind == "bool":
            lowered = text.lower()
            if lowered not in ("true", "false", "yes", "no", "on", "off", "1", "0"):
                raise UsageError(f"{label} must be true or false, not {text!r}")
            return lowered in ("true", "yes", "on", "1")
        return self.check(text, label)

    def _number(self, value: Any, label: str) -> Any:
        ok_type = isinstance(value, (int, float)) and not isinstance(value, bool)
        if self.kind == "int" and ok_type and isinstance(value, float) and value.is_integer():
            value = int(value)
        if not ok_type or (self.kind == "int" and not isinstance(value, int)):
            raise UsageError(f"{label} must be {self._allowed_number()}, not {value!r}")
        if self.optional and value == 0 and self.kind == "int" and self.group == "sandbox":
            return None  # a count limit of 0: no limit
        bad = not math.isfinite(value)
        if self.minimum is not None:
            bad = bad or (value <= self.minimum if self.above else value < self.minimum)
        if self.maximum is not None:
            bad = bad or value > self.maximum
        if bad:
            raise UsageError(f"{label} must be {self._allowed_number()}, not {value!r}")
        return float(value) if self.kind == "float" else value

    def _size(self, value: Any, label: str) -> int | None:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise UsageError(f"{label} must be a size such as 2G or 512M (0 for no limit), not {value!r}")
        try:
            size = parse_size(value)
        except ValueError as exc:
            raise UsageError(f"{label}: {exc}") from None
        if size is not None and size < MIN_SIZE:
            # "0.1" or "512" is a slip (bytes, or a fraction of one), not a limit anyone wants.
            raise UsageError(
                f"{label} {value!r} is {size} bytes, below the smallest limit of {format_size(MIN_SIZE)}; "
                "give a unit (512M, 2G), or 0 for no limit"
            )
        return size

    def _allowed_number(self) -> str:
        seconds = self.metavar == "SECONDS"
        what = ("a whole number" if self.kind == "int" else "a number") + (" of seconds" if seconds else "")
        if self.minimum is not None and self.maximum is not None:
            what += f" from {self.minimum:g} to {self.maximum:g}"
        elif self.minimum == 0 and self.above:
            what = "a positive " + what.removeprefix("a ")
        elif self.minimum is not None:
            least = ", at least" if seconds else " of at least"
            what += f" above {self.minimum:g}" if self.above else f"{least} {self.minimum:g}"
        if self.optional and self.group == "sandbox":
            what += " (0 for no limit)"
        return what

    def _allowed(self) -> str:
        if self.kind in ("int", "float"):
            return f"give {self._allowed_number()}"
        return f"the default is {self.default_text()}"


def _setting(default: Any, help: str, kind: Kind, group: Group, **more: Any) -> Any:
    """A dataclass field holding its :class:`Setting` (the name is filled in by :func:`settings`)."""
    spec = Setting(help=help, kind=kind, group=group, default=default, **more)
    return field(default=default, repr=not spec.secret, metadata={"setting": spec})


@dataclass(frozen=True)
class AgentConfig:
    """The settings of a run, each declared once (see the module docstring).

    Build one with keywords (checked: a wrong value or an unknown name is one
    :class:`~nbagent.UsageError`), or with :meth:`from_mapping` from a dict, and change one
    with :meth:`replace`. Objects that are not settings (a model object, tools given as
    functions, an observer, an approval callback) are given to :class:`~nbagent.Agent` itself.
    """

    # -- the model --------------------------------------------------------------------------
    model: str | None = _setting(
        None,
        "litellm model string, 'hf:MODEL_ID' or 'scripted:FILE.json' (default: $NBAGENT_MODEL)",
        "str",
        "model",
        metavar="MODEL",
        short="-m",
    )
    api_base: str | None = _setting(
        None,
        "base URL of an OpenAI-compatible server or endpoint, e.g. http://localhost:8000/v1 "
        "(default: $NBAGENT_API_BASE); no key is sent to it unless you give one",
        "url",
        "model",
        metavar="URL",
    )
    api_key: str | None = _setting(
        None,
        "key to send to the model's server (default: $NBAGENT_API_KEY, else the provider's own "
        "variable such as OPENAI_API_KEY; never sent to an --api-base unless given here)",
        "str",
        "model",
        metavar="KEY",
        secret=True,
    )
    api_key_env: str | None = _setting(
        None,
        "name of the environment variable holding the model's key (the key itself is never saved)",
        "env_name",
        "model",
        metavar="NAME",
    )
    request_timeout: float = _setting(
        DEFAULT_REQUEST_TIMEOUT,
        "time limit of one model request, in seconds",
        "float",
        "model",
        metavar="SECONDS",
        minimum=0,
        above=True,
    )
    temperature: float | None = _setting(
        None,
        "sampling temperature (default: the model's)",
        "float",
        "model",
        metavar="T",
        minimum=0,
        maximum=2,
    )
    max_tokens: int | None = _setting(
        None,
        "longest reply of the model, in tokens (default: the model's)",
        "int",
        "model",
        metavar="N",
        minimum=1,
    )
    max_retries: int = _setting(
        RetryPolicy.max_attempts - 1,
        "retries of a request refused for a rate limit (429) or a server error (5xx), honouring "
        "Retry-After; other failures are not retried",
        "int",
        "model",
        metavar="N",
        minimum=0,
    )
    vision: bool | None = _setting(
        None,
        "send figures to the model as images (default: if litellm says the model takes images)",
        "bool",
        "model",
        optional=True,
    )
    # -- the loop ---------------------------------------------------------------------------
    max_steps: int = _setting(
        10,
        "steps before a final answer is demanded",
        "int",
        "loop",
        metavar="N",
        minimum=1,
        from_notebook="reuse",
    )
    timeout: float | None = _setting(
        60.0,
        "time limit of one step, in seconds; the step is interrupted and the run goes on",
        "float",
        "loop",
        metavar="SECONDS",
        minimum=0,
        above=True,
        optional=True,
        from_notebook="reuse",
    )
    observation_chars: int = _setting(
        6000,
        "budget of what the model is shown after each step, in characters",
        "int",
        "loop",
        metavar="N",
        minimum=200,
        from_notebook="reuse",
    )
    observation_tokens: int | None = _setting(
        None,
        "the same budget in (estimated) tokens; replaces --observation-chars",
        "int",
        "loop",
        metavar="N",
        minimum=50,
        from_notebook="reuse",
    )
    history_images: int = _setting(
        HistoryLimits.max_images,
        "figures of the newest steps replayed to the model as images",
        "int",
        "loop",
        metavar="N",
        minimum=0,
        from_notebook="reuse",
    )
    history_recent_steps: int = _setting(
        HistoryLimits.recent_steps,
        "newest steps whose observations are replayed whole (older ones are shortened)",
        "int",
        "loop",
        metavar="N",
        minimum=0,
        from_notebook="reuse",
    )
    history_old_chars: int = _setting(
        HistoryLimits.old_observation_chars,
        "characters an older step's observation is shortened to",
        "int",
        "loop",
        metavar="N",
        minimum=200,
        from_notebook="reuse",
    )
    history_max_chars: int = _setting(
        HistoryLimits.max_chars,
        "characters of history replayed to the model; the oldest steps are left out past it",
        "int",
        "loop",
        metavar="N",
        minimum=1000,
        from_notebook="reuse",
    )
    planning_interval: int | None = _setting(
        None,
        "plan before the first step and every N steps (default: no planning)",
        "int",
        "loop",
        metavar="N",
        minimum=1,
        from_notebook="reuse",
    )
    max_restarts: int = _setting(
        3,
        "kernel restarts (deaths, ignored interrupts) a run survives",
        "int",
        "loop",
        metavar="N",
        minimum=0,
        from_notebook="reuse",
    )
    seed: int | None = _setting(
        0,
        "seed of random and numpy.random, set by the setup cell so a re-run draws the same numbers",
        "int",
        "loop",
        metavar="N",
        minimum=0,
        optional=True,
        from_notebook="reuse",
    )
    instructions: str = _setting(
        "", "extra text appended to the system prompt", "str", "loop", metavar="TEXT"
    )
    # -- budgets ----------------------------------------------------------------------------
    max_total_tokens: int | None = _setting(
        None,
        "stop (status 'budget') before a model call once the question has used N tokens, "
        "estimated where the model reports none; resume with a larger budget to go on",
        "int",
        "budget",
        metavar="N",
        minimum=1,
        from_notebook="reuse",
    )
    max_cost: float | None = _setting(
        None,
        "the same in US dollars, priced by litellm's price map (models it has no price for count 0)",
        "float",
        "budget",
        metavar="USD",
        minimum=0,
        above=True,
        from_notebook="reuse",
    )
    # -- the kernel and its sandbox ---------------------------------------------------------
    kernel: str = _setting(
        DEFAULT_KERNEL,
        "kernel spec to run the code in ('nbagent kernels' lists them)",
        "str",
        "sandbox",
        metavar="NAME",
    )
    sandbox: str = _setting(
        "jail",
        "jail (bubblewrap: read-only system, one writable folder, own processes, no network) or "
        "limits (rlimits and no network only); --kernel NAME picks any other kernel",
        "choice",
        "sandbox",
        metavar="LEVEL",
        choices=LEVELS,
    )
    memory_limit: int | None = _setting(
        DEFAULT_MEMORY,
        "memory of the kernel and all its children together, e.g. 2G or 512M; 0 for none",
        "size",
        "sandbox",
        metavar="SIZE",
        optional=True,
        from_notebook="tighten",
    )
    cpu_limit: int | None = _setting(
        DEFAULT_CPU_TIME,
        "CPU seconds the kernel and its children may use; 0 for none",
        "int",
        "sandbox",
        metavar="SECONDS",
        minimum=1,
        optional=True,
        from_notebook="tighten",
    )
    max_processes: int | None = _setting(
        DEFAULT_MAX_PROCESSES,
        "processes and threads the run may have at once; 0 for none",
        "int",
        "sandbox",
        metavar="N",
        minimum=1,
        optional=True,
        from_notebook="tighten",
    )
    disk_limit: int | None = _setting(
        DEFAULT_DISK,
        "what the run may keep in its working folder (measured during and after each step, so "
        "approximate); 0 for none",
        "size",
        "sandbox",
        metavar="SIZE",
        optional=True,
        from_notebook="tighten",
    )
    file_size_limit: int | None = _setting(
        DEFAULT_FILE_SIZE,
        "largest file the kernel may write; 0 for none",
        "size",
        "sandbox",
        metavar="SIZE",
        optional=True,
        from_notebook="tighten",
    )
    allow_network: bool = _setting(False, "let the kernel use the network", "bool", "sandbox")
    allow_env: tuple[str, ...] = _setting(
        (),
        "pass this secret-looking environment variable to the kernel anyway (repeatable)",
        "names",
        "sandbox",
        metavar="NAME",
    )
    # -- tools ------------------------------------------------------------------------------
    tool_sources: tuple[str, ...] = _setting(
        (),
        "a saved tool: a folder or a Hugging Face Hub repo id (repeatable; needs --trust-tools)",
        "names",
        "tools",
        metavar="SOURCE",
        flag="--tool",
    )
    trust_tools: bool = _setting(
        False, "allow loading the --tool tools: their code runs here and in the kernel", "bool", "tools"
    )
    web_search: bool = _setting(False, "add the web_search tool (needs network)", "bool", "tools")
    default_tools: bool = _setting(
        True, "give the code list_files, read_file and inspect_data", "bool", "tools"
    )

    def __post_init__(self) -> None:
        for spec in settings():
            value = spec.check(getattr(self, spec.name))
            object.__setattr__(self, spec.name, value)

    # -- building ---------------------------------------------------------------------------

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], *, where: str = "") -> AgentConfig:
        """A config from ``values`` (setting name to value; strings are parsed for sizes);
        unknown names are an :class:`UnknownSettingError` naming the nearest valid one."""
        return cls().replace(where=where, **values)

    def replace(self, *, where: str = "", **changes: Any) -> AgentConfig:
        """A copy with ``changes``, each checked (``where`` prefixes the error, e.g. a task's line)."""
        check_names(changes, where=where)
        prefix = f"{where}: " if where else ""
        checked = {}
        for name, value in changes.items():
            spec = setting(name)
            try:
                checked[name] = spec.check(value)
            except UsageError as exc:
                raise UsageError(f"{prefix}{exc}") from None
        return dataclasses.replace(self, **checked)

    # -- what a notebook records and gives back ----------------------------------------------

    def to_record(self) -> dict[str, Any]:
        """The settings as JSON for the notebook's ``runs[i].settings``: secrets left out, a
        password in a URL removed."""
        record: dict[str, Any] = {}
        for spec in settings():
            if spec.secret:
                continue
            value = getattr(self, spec.name)
            if spec.kind == "url" and value:
                value = _without_password(value)
            record[spec.name] = list(value) if isinstance(value, tuple) else value
        return record

    def resumed(self, recorded: Mapping[str, Any], explicit: Collection[str] = ()) -> AgentConfig:
        """This config with what a recorded run may decide (see the module docstring).

        ``explicit``: the settings the user gave now; they win over the notebook (one of an
        :data:`EXCLUSIVE` pair counts for both: ``--observation-chars`` now is not overruled by
        the tokens budget the notebook recorded). A recorded value that is not valid is ignored
        (the notebook is untrusted input).
        """
        explicit = set(explicit)
        for pair in EXCLUSIVE:
            if explicit & set(pair):
                explicit |= set(pair)
        changes: dict[str, Any] = {}
        for spec in settings():
            if spec.name in explicit or spec.name not in recorded or spec.from_notebook == "never":
                continue
            try:
                value = spec.check(recorded[spec.name])
            except UsageError:
                continue
            if spec.from_notebook == "reuse":
                changes[spec.name] = value
            else:
                changes[spec.name] = _tighter(value, getattr(self, spec.name))
        return dataclasses.replace(self, **changes)

    # -- the objects the settings describe --------------------------------------------------

    def sandbox_spec(self) -> Sandbox:
        """The :class:`~nbagent.Sandbox` these settings describe."""
        return Sandbox(
            memory=self.memory_limit,
            cpu_time=self.cpu_limit,
            file_size=self.file_size_limit,
            network=self.allow_network,
            allow_env=self.allow_env,
            level=self.sandbox,
            max_processes=self.max_processes,
            disk=self.disk_limit,
        )

    def history_limits(self) -> HistoryLimits:
        """The :class:`~nbagent.agent.memory.HistoryLimits` these settings describe."""
        return HistoryLimits(
            max_images=self.history_images,
            recent_steps=self.history_recent_steps,
            old_observation_chars=self.history_old_chars,
            max_chars=self.history_max_chars,
        )

    def observer(self) -> Observer:
        """An :class:`~nbagent.agent.observe.Observer` with this observation budget."""
        return Observer(max_chars=self.observation_chars, max_tokens=self.observation_tokens)

    def model_options(self, environ: Mapping[str, str] | None = None) -> ModelOptions:
        """How the model is reached (``api_key_env`` read from ``environ``, default ``os.environ``)."""
        key = self.api_key
        if key is None and self.api_key_env:
            key = (environ if environ is not None else os.environ).get(self.api_key_env) or None
            if key is None:
                raise UsageError(
                    f"api_key_env {self.api_key_env}: that environment variable is not set; set it first"
                )
        return ModelOptions(
            api_base=self.api_base,
            api_key=key,
            request_timeout=self.request_timeout,
            temperature=self.temperature,
            max_tokens=self.max_tokens,
            retry=RetryPolicy(max_attempts=self.max_retries + 1),
        )

    @classmethod
    def from_objects(
        cls,
        sandbox: Sandbox | None = None,
        observer: Observer | None = None,
        history: HistoryLimits | None = None,
    ) -> dict[str, Any]:
        """The settings a :class:`~nbagent.Sandbox`, an observer and :class:`HistoryLimits` stand for
        (so that a run given objects records them like any other)."""
        values: dict[str, Any] = {}
        if sandbox is not None:
            values |= {
                "memory_limit": sandbox.memory,
                "cpu_limit": sandbox.cpu_time,
                "file_size_limit": sandbox.file_size,
                "allow_network": sandbox.network,
                "allow_env": sandbox.allow_env,
                "sandbox": sandbox.level,
                "max_processes": sandbox.max_processes,
                "disk_limit": sandbox.disk,
            }
        if observer is not None:
            values |= {"observation_chars": observer.max_chars, "observation_tokens": observer.max_tokens}
        if history is not None:
            values |= {
                "history_images": history.max_images,
                "history_recent_steps": history.recent_steps,
                "history_old_chars": history.old_observation_chars,
                "history_max_chars": history.max_chars,
            }
        return values


@cache
def settings() -> tuple[Setting, ...]:
    """Every :class:`Setting`, in declaration order."""
    return tuple(
        dataclasses.replace(f.metadata["setting"], name=f.name)
        for f in fields(AgentConfig)
        if "setting" in f.metadata
    )


def setting(name: str) -> Setting:
    """The :class:`Setting` called ``name`` (:class:`UnknownSettingError` if there is none)."""
    for spec in settings():
        if spec.name == name:
            return spec
    raise UnknownSettingError(unknown_message(name))


def setting_names() -> tuple[str, ...]:
    """The names of every setting."""
    return tuple(s.name for s in settings())


def unknown_message(name: str, known: Iterable[str] | None = None, what: str = "setting") -> str:
    """``unknown setting 'max_step'; did you mean 'max_steps'?``"""
    names = list(known) if known is not None else list(setting_names())
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else f"; the {what}s are: {', '.join(sorted(names))}"
    return f"unknown {what} {name!r}{hint}"


def check_names(values: Mapping[str, Any] | Iterable[str], *, where: str = "") -> None:
    """Refuse any name in ``values`` that is not a setting, naming the nearest valid one."""
    known = set(setting_names())
    for name in values:
        if name not in known:
            prefix = f"{where}: " if where else ""
            raise UnknownSettingError(prefix + unknown_message(name))


def _tighter(a: int | None, b: int | None) -> int | None:
    """The tighter of two limits (``None`` is no limit)."""
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None and parts.username is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


# -- the command line -------------------------------------------------------------------------


def add_setting_arguments(
    parser: argparse.ArgumentParser,
    groups: Collection[Group] = ("model", "loop", "budget", "sandbox", "tools"),
    *,
    exclude: Collection[str] = (),
    help: Mapping[str, str] | None = None,
) -> None:
    """Add a flag for every setting of ``groups`` (minus ``exclude``), one argument group each.

    A flag not given is absent from the parsed namespace (``argparse.SUPPRESS``), so
    :func:`settings_from_args` tells what the user chose from what they left to the default (and
    to the notebook, on ``resume``). ``help`` replaces a setting's help sentence for one command.
    A value is checked as it is parsed: a wrong one is an argparse error whose message starts
    with the flag (``--max-steps must be a whole number of at least 1, not 0``). The pairs of
    :data:`EXCLUSIVE` are mutually exclusive.
    """
    help = help or {}
    for group_name in groups:
        specs = [s for s in settings() if s.group == group_name and s.name not in exclude]
        if not specs:
            continue
        group = parser.add_argument_group(group_name, GROUPS[group_name])
        names = {s.name for s in specs}
        exclusive: dict[str, Any] = {}
        for pair in EXCLUSIVE:
            if set(pair) <= names:
                both = group.add_mutually_exclusive_group()
                exclusive |= dict.fromkeys(pair, both)
        for spec in specs:
            add_setting_argument(exclusive.get(spec.name, group), spec, help.get(spec.name))


def add_setting_argument(
    container: argparse.ArgumentParser | argparse._ArgumentGroup,
    spec: Setting,
    help: str | None = None,
) -> argparse.Action:
    """Add the flag of one setting to ``container`` (see :func:`add_setting_arguments`)."""
    text = help or spec.help
    if (spec.kind != "bool" or spec.optional or spec.default) and not (
        spec.kind == "names" and not spec.default
    ):
        text = f"{text} (default {spec.default_text()})" if "(default" not in text else text
    names = [spec.short, spec.option] if spec.short else [spec.option]
    kwargs: dict[str, Any] = {"dest": spec.name, "default": argparse.SUPPRESS, "help": text}
    if spec.kind == "bool":
        if spec.optional or spec.default:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["action"] = "store_true"
    elif spec.kind == "names":
        kwargs |= {"action": "append", "metavar": spec.metavar, "type": _flag_parser(spec)}
    else:
        kwargs |= {"metavar": spec.metavar, "type": _flag_parser(spec)}
    return container.add_argument(*names, **kwargs)


def _flag_parser(spec: Setting) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            if spec.kind == "names":  # one name per flag: the flag is repeated for more
                return spec.check((text,), spec.option)[0]
            return spec.parse(text, spec.option)
        except UsageError as exc:
            # The whole sentence, flag first: nbagent's parser prints it as the error line.
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = spec.metavar or spec.name  # argparse names the type in its error
    return parse


def settings_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The settings the user gave on the command line (those left out are absent; a repeated
    flag's values as a tuple)."""
    given = vars(args)
    return {
        name: tuple(given[name]) if isinstance(given[name], list) else given[name]
        for name in setting_names()
        if name in given
    }


# -- the documentation ------------------------------------------------------------------------


def settings_table() -> str:
    """The README's table of settings (``tests/test_config.py`` keeps the README in step)."""
    reuse = {"reuse": "reused", "tighten": "if tighter", "never": "never"}
    rows = [
        "| setting | flag | default | what it is | from a notebook |",
        "|---|---|---|---|---|",
    ]
    for spec in settings():
        flag = f"`{spec.option}`" + (f" `{spec.metavar}`" if spec.metavar else "")
        if spec.kind == "bool" and (spec.optional or spec.default):
            flag = f"`{spec.option}` / `--no-{spec.option[2:]}`"
        what = spec.help.replace("|", "\\|")
        if spec.secret:
            what += " (never recorded)"
        rows.append(
            f"| `{spec.name}` | {flag} | {spec.default_text()} | {what} | {reuse[spec.from_notebook]} |"
        )
    return "\n".join(rows)
