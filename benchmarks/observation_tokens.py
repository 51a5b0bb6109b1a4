"""How many tokens an observation costs, against printing everything, and which key facts survive.

A fixed set of analysis steps (tables, plots, logs, errors) runs in a real nbagent kernel, on the
penguins data shipped in ``examples/data`` and seeded synthetic data. For each step it compares:

- **everything**: the full text of every output, as an executor that prints everything would show
  it (smolagents' local executor: the printed text and the last value's ``str``; here the
  ``text/plain`` of each output and the whole traceback);
- **nbagent**: the observation :class:`nbagent.Observer` makes (default budget, 6,000 characters).

Tokens are counted with the ``cl100k_base`` tokenizer (tiktoken, with the copy bundled in litellm;
nothing is downloaded). A step's key facts are strings (or patterns) the model needs: the shape,
the column names, the numbers asked for, the plot's title, the error and its line.

Run: ``.venv/bin/python benchmarks/observation_tokens.py`` (about 10 seconds).
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbagent import Execution, Kernel, Observer
from nbagent.kernel_code import setup_code
from nbagent.models.base import estimate_tokens

DATA = Path(__file__).resolve().parents[1] / "examples" / "data"


@dataclass
class Case:
    """One step: its code and the facts the model must be able to read from what it is shown."""

    name: str
    code: str
    facts: list[str]  # plain substrings, or regular expressions when they start with "re:"


CASES = [
    Case(
        "table: penguins (344 x 8)",
        "penguins = pd.read_csv('penguins.csv')\npenguins",
        [
            r"re:344 rows",
            r"re:8 columns",
            "species",
            "island",
            "bill_length_mm",
            "bill_depth_mm",
            "flipper_length_mm",
            "body_mass_g",
            "sex",
            "year",
        ],
    ),
    Case(
        "table: 10,000 rows x 6",
        "rng = np.random.default_rng(0)\n"
        "sales = pd.DataFrame({'order_id': np.arange(10_000), 'region': rng.choice(['north', 'south', "
        "'east', 'west'], 10_000), 'units': rng.integers(1, 50, 10_000), 'price': rng.normal(20, 5, "
        "10_000).round(2), 'date': pd.date_range('2024-01-01', periods=10_000, freq='h'), "
        "'returned': rng.random(10_000) < 0.05})\nsales",
        [r"re:10,?000 rows", r"re:6 columns", "order_id", "region", "units", "price", "date", "returned"],
    ),
    Case(
        "table: wide (200 x 60)",
        "wide = pd.DataFrame(np.random.default_rng(1).normal(size=(200, 60)).round(3), "
        "columns=[f'sensor_{i:02d}' for i in range(60)])\nwide",
        [r"re:200 rows", r"re:60 columns", "sensor_00", "sensor_17", "sensor_30", "sensor_44", "sensor_59"],
    ),
    Case(
        "series: mean mass by species",
        "penguins.groupby('species')['body_mass_g'].mean()",
        ["Adelie", "3700.66", "Chinstrap", r"re:3733\.0(9|88)", "Gentoo", r"re:5076\.0(2|16)"],
    ),
    Case(
        "table: describe()",
        "penguins.describe()",
        ["count", "mean", "4201.75", "flipper_length_mm", "200.91"],
    ),
    Case(
        "print(df) of 10,000 rows",
        "print(sales)",
        [r"re:10000 rows x 6 columns", "order_id", "region"],
    ),
    Case(
        "log: 3,000 training epochs",
        "loss = 2.0\nfor epoch in range(3000):\n    loss *= 0.999\n"
        "    print(f'epoch {epoch:4d}  loss {loss:.5f}  lr 0.001  grad_norm {1 / (epoch + 1):.4f}')",
        ["epoch    0", "epoch 2999", "loss 0.09942"],
    ),
    Case(
        "print: a list of 20,000 numbers",
        "print(list(range(20_000)))",
        ["[0, 1, 2", "19999]"],
    ),
    Case(
        "plot: bar chart",
        "ax = penguins.groupby('species')['body_mass_g'].mean().plot.bar()\n"
        "ax.set_title('Mean body mass')\nax.set_ylabel('grams')\nplt.show()",
        ["Mean body mass", "grams", "Adelie", "Gentoo", "5076"],
    ),
    Case(
        "plot: two lines and a legend",
        "x = np.arange(1990, 2021)\nfig, ax = plt.subplots()\n"
        "ax.plot(x, 3 + 0.1 * (x - 1990), label='north')\nax.plot(x, 5 - 0.05 * (x - 1990), label='south')\n"
        "ax.set_title('Rainfall trend')\nax.set_xlabel('year')\nax.set_ylabel('mm/day')\n"
        "ax.legend()\nplt.show()",
        ["Rainfall trend", "year", "mm/day", "north", "south", "1990"],
    ),
    Case(
        "error: merge on a missing key",
        "penguins.merge(penguins, on='mass')",
        ["KeyError", "'mass'", "penguins.merge(penguins, on='mass')"],
    ),
    Case(
        "error: deep in a user function",
        "def heavier(row):\n    return row['weight'] > 4000\npenguins.apply(heavier, axis=1)",
        ["KeyError", "'weight'", "return row['weight'] > 4000", "penguins.apply(heavier, axis=1)"],
    ),
]


KINDS = {
    "displayed tables and series": ("table", "series"),
    "printed table (plain text)": ("print(df)",),
    "floods of printed text": ("log", "print:"),
    "plots": ("plot",),
    "errors": ("error",),
}


def everything_text(execution: Execution) -> str:
    """The full text of all outputs: what an executor that prints everything shows."""
    parts = []
    for out in execution.outputs:
        kind = out.get("output_type")
        if kind == "stream":
            parts.append(out.get("text", ""))
        elif kind == "error":
            parts.append("\n".join(out.get("traceback", [])))
        else:
            parts.append(str(out.get("data", {}).get("text/plain", "")))
    return "\n".join(parts)


def facts_kept(text: str, facts: list[str]) -> int:
    found = 0
    for fact in facts:
        if fact.startswith("re:"):
            found += re.search(fact[3:], text) is not None
        else:
            found += fact in text
    return found


def tokenizer() -> Any:
    """cl100k_base from the copy bundled in litellm (no download, no litellm import)."""
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("litellm is not installed; install nbagent first")
    bundled = Path(next(iter(spec.submodule_search_locations))) / "litellm_core_utils" / "tokenizers"
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(bundled))
    import tiktoken

    return tiktoken.get_encoding("cl100k_base")


@dataclass
class Result:
    """The measures of one step."""

    case: Case
    everything: int  # tokens
    observation: int  # tokens
    facts_everything: int
    facts_observation: int
    estimate: int  # estimate_tokens of the observation
    images: int


HEADER = (
    "| {} | everything (tokens) | nbagent (tokens) | share | key facts: everything | key facts: nbagent |\n"
    "|---|---:|---:|---:|---:|---:|"
)


def table_row(label: str, results: list[Result], bold: bool = False) -> str:
    t_all = sum(r.everything for r in results)
    t_obs = sum(r.observation for r in results)
    images = sum(r.images for r in results)
    n = sum(len(r.case.facts) for r in results)
    f_all = sum(r.facts_everything for r in results)
    f_obs = sum(r.facts_observation for r in results)
    pictures = f" + {images} image{'s' if images > 1 else ''}" if images else ""
    cells = [
        label,
        f"{t_all:,}",
        f"{t_obs:,}{pictures}",
        f"{t_obs / max(t_all, 1):.0%}",
        f"{f_all}/{n}",
        f"{f_obs}/{n}",
    ]
    return "| " + " | ".join(f"**{c}**" if bold else c for c in cells) + " |"


def main() -> int:
    encoding = tokenizer()

    def tokens(text: str) -> int:
        return len(encoding.encode(text, disallowed_special=()))

    observer = Observer()
    results = []
    started = time.perf_counter()
    with Kernel(cwd=DATA) as kernel:
        kernel.execute(setup_code())
        kernel.execute("import numpy as np\nimport pandas as pd\nimport matplotlib.pyplot as plt")
        for case in CASES:
            execution = kernel.execute(case.code, timeout=120)
            observation = observer.observe(execution)
            everything = everything_text(execution)
            results.append(
                Result(
                    case,
                    tokens(everything),
                    tokens(observation.text),
                    facts_kept(everything, case.facts),
                    facts_kept(observation.text, case.facts),
                    estimate_tokens(observation.text),
                    len(observation.images),
                )
            )
    took = time.perf_counter() - started

    print(HEADER.format("step"))
    for result in results:
        print(table_row(result.case.name, [result]))
    print(table_row(f"all {len(results)} steps", results, bold=True))
    print()
    print(HEADER.format("kind of step"))
    for kind, prefixes in KINDS.items():
        print(table_row(kind, [r for r in results if r.case.name.startswith(prefixes)]))
    total = sum(r.observation for r in results)
    estimate = sum(r.estimate for r in results)
    print()
    print(
        f"Tokens: cl100k_base. nbagent's built-in estimate (estimate_tokens) gave {estimate:,} for "
        f"the observations ({estimate / total:.0%} of the real count). {len(results)} steps in {took:.1f} s."
    )
    missing = [r.case.name for r in results if r.facts_observation < len(r.case.facts)]
    if missing:
        print("Key facts missing from the observation of: " + ", ".join(missing))
    goal = total <= sum(r.everything for r in results) / 2 and not missing
    print("Goal (<= 50% of the tokens, every key fact kept): " + ("met" if goal else "NOT met"))
    return 0 if goal else 1


if __name__ == "__main__":
    sys.exit(main())
