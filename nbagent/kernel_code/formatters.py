# nbagent setup: compact text summaries of DataFrames, Series and figures, for the agent.
# Every displayed DataFrame, Series or figure also carries a "text/x-nbagent-summary" version
# (shape, columns, first and last rows; plot kind, title, axes, legend). Notebook viewers ignore it.
def _nbagent_install_summaries(head_rows=2, tail_rows=2, all_rows=20, table_columns=12, listed_columns=60):
    from IPython import get_ipython
    from IPython.core.formatters import BaseFormatter
    from traitlets import ObjectName, Unicode

    shell = get_ipython()
    if shell is None:
        return

    class SummaryFormatter(BaseFormatter):
        format_type = Unicode("text/x-nbagent-summary")
        print_method = ObjectName("_repr_nbagent_summary_")

        def pop(self, typ, *default):
            # Starting matplotlib's inline backend removes the Figure printer of every formatter
            # (IPython's select_figure_formats); the figure summary must survive that.
            if getattr(typ, "__module__", None) == "matplotlib.figure":
                return default[0] if default else None
            return super().pop(typ, *default)

    def safely(summarise):
        def formatter(obj):
            try:
                return summarise(obj)
            except Exception:  # a summary must never break the display of the object itself
                return None

        return formatter

    def num(value, digits=4):
        try:
            return f"{value:,.{digits}g}" if abs(value) >= 10**digits else f"{value:.{digits}g}"
        except (TypeError, ValueError):
            return str(value)

    def clip(text, limit=40):
        text = str(text)
        return text if len(text) <= limit else text[: limit - 1] + "…"

    def pick(items, limit, tail=10):
        # The first and last items of a long list, with a count of those left out.
        items = list(items)
        if len(items) <= limit:
            return ", ".join(items)
        shown = items[: limit - tail]
        return ", ".join([*shown, f"… {len(items) - limit} more …", *items[-tail:]])

    def cell(value):
        if type(value).__name__.startswith("float"):  # float, numpy.float64, numpy.float32...
            return f"{value:.6g}"
        return clip(str(value).replace("\n", "\\n"), 30)  # one row a line

    def csv_table(df, typed=True):
        # The first and last rows as CSV (the header gives each column's dtype), with the rows
        # and columns left out counted in place, where they would be.
        import csv
        import io

        rows, cols = df.shape
        short = rows <= all_rows
        positions = list(range(rows)) if short else [*range(head_rows), *range(rows - tail_rows, rows)]
        columns = list(range(cols))
        if cols > table_columns:
            first = table_columns // 2
            columns = [*range(first), None, *range(cols - (table_columns - first), cols)]
        gap = f"… {cols - table_columns:,} more columns …"
        index = df.index
        names = [str(n) for n in index.names if n is not None]
        index_header = f"{'/'.join(names)}:{index.dtype}" if names else ""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")

        def header(c):
            if c is None:
                return gap
            if cols > table_columns or not typed:  # wide frames list the dtypes above the table
                return clip(df.columns[c])
            return f"{clip(df.columns[c])}:{df.dtypes.iloc[c]}"

        writer.writerow([index_header] + [header(c) for c in columns])
        for n, r in enumerate(positions):
            if not short and n == head_rows:
                out.write(f"… {rows - head_rows - tail_rows:,} more rows …\n")
            key = index[r]
            key = "/".join(cell(k) for k in key) if isinstance(key, tuple) else cell(key)
            writer.writerow([key] + ["…" if c is None else cell(df.iat[r, c]) for c in columns])
        return out.getvalue().rstrip("\n")

    def describe_columns(dtypes):
        groups = {}  # one entry per dtype, in order of first appearance
        for name, dtype in dtypes.items():
            groups.setdefault(str(dtype), []).append(clip(name))
        return "; ".join(
            f"{dtype} ({len(names)}): {pick(names, listed_columns)}" for dtype, names in groups.items()
        )

    def missing_values(obj):
        if not obj.size or obj.size > 10_000_000:  # counting must stay cheap
            return None
        missing = obj.isna().sum()
        if not hasattr(missing, "items"):
            return f"missing values: {missing:,}" if missing else None
        counts = [f"{clip(name)} {count:,}" for name, count in missing.items() if count]
        return "missing values: " + pick(counts, 20, tail=5) if counts else None

    def frame_summary(df):
        rows, cols = df.shape
        lines = [f"DataFrame: {rows:,} rows x {cols:,} columns"]
        if cols > table_columns:
            lines.append("all columns by dtype: " + describe_columns(df.dtypes))
        lines.append(missing_values(df))
        if rows and cols:
            lines.append(csv_table(df))
        elif cols:
            lines.append("columns: " + describe_columns(df.dtypes))
        return "\n".join(line for line in lines if line)

    def series_summary(s):
        name = "" if s.name is None else f" {clip(s.name)!r}"
        lines = [f"Series{name}: {len(s):,} values, dtype {s.dtype}", missing_values(s)]
        if len(s):
            lines.append(csv_table(s.to_frame(name="value" if s.name is None else s.name), typed=False))
        return "\n".join(line for line in lines if line)

    def styler_summary(styler):
        return "Styled " + frame_summary(styler.data)

    def axis_value(axis, value):
        formatter = type(axis.get_major_formatter()).__name__
        if formatter in ("AutoDateFormatter", "DateFormatter", "ConciseDateFormatter"):
            import matplotlib.dates as mdates

            return mdates.num2date(value).strftime("%Y-%m-%d %H:%M").replace(" 00:00", "")
        if formatter == "TimeSeries_DateFormatter":  # pandas' own axis: values are period ordinals
            import pandas as pd

            return str(pd.Period(ordinal=round(value), freq=axis.get_major_formatter().freq))
        return num(value)

    def ticks(axis):
        # {position: label} of the labelled major ticks, as the axis would draw them.
        locs = axis.get_majorticklocs()
        labels = axis.get_major_formatter().format_ticks(locs)
        texts = (" ".join(str(label).split()) for label in labels)
        return {round(float(loc), 6): text for loc, text in zip(locs, texts, strict=True) if text}

    def tick_labels(axis):
        return list(ticks(axis).values())

    def is_number(text):
        try:
            float(text.replace("\u2212", "-").replace(",", ""))  # matplotlib writes a real minus
        except ValueError:
            return False
        return True

    def is_categorical(axis):
        # Text tick labels (species names, months as words) rather than numbers or dates.
        if "Date" in type(axis.get_major_formatter()).__name__:
            return False
        labels = tick_labels(axis)
        return bool(labels) and not all(is_number(label) for label in labels)

    def describe_axis(name, axis, limits):
        label = axis.get_label().get_text()
        text = f"{name}" + (f" {label!r}" if label else "")
        if is_categorical(axis):
            return text + " categories: " + pick(tick_labels(axis), 12, tail=3)
        low, high = limits
        text += f" {axis_value(axis, low)} to {axis_value(axis, high)}"
        scale = axis.get_scale()
        return text + ("" if scale == "linear" else f" ({scale} scale)")

    def label_of(artist):
        label = artist.get_label()
        return "" if not label or label.startswith("_") else label

    def bar_summary(ax, bars):
        patches = list(bars.patches)
        vertical = getattr(bars, "orientation", "vertical") == "vertical"
        starts = [p.get_x() if vertical else p.get_y() for p in patches]
        sizes = [p.get_width() if vertical else p.get_height() for p in patches]
        values = [p.get_height() if vertical else p.get_width() for p in patches]
        contiguous = len(patches) > 2 and all(
            abs(starts[i] + sizes[i] - starts[i + 1]) <= 1e-9 * max(1.0, abs(starts[i + 1]))
            for i in range(len(patches) - 1)
        )
        name = f" {label_of(bars)!r}" if label_of(bars) else ""
        if contiguous:
            peak = max(range(len(values)), key=lambda i: values[i])
            lo, hi = starts[peak], starts[peak] + sizes[peak]
            return (
                f"  histogram{name}: {len(patches)} bins from {num(starts[0])} to "
                f"{num(starts[-1] + sizes[-1])}, total {num(sum(values))}, highest bin "
                f"{num(values[peak])} at {num(lo)} to {num(hi)}"
            )
        axis = ax.xaxis if vertical else ax.yaxis
        centres = [s + w / 2 for s, w in zip(starts, sizes, strict=True)]
        labels = ticks(axis)
        names = [labels.get(round(float(c), 6), num(c)) for c in centres]
        pairs = [f"{clip(n, 24)} {num(v, 6)}" for n, v in zip(names, values, strict=True)]
        kind = "bars" if vertical else "horizontal bars"
        return f"  {len(patches)} {kind}{name}: " + pick(pairs, 20, tail=5)

    def line_summary(ax, line):
        import numpy as np

        x = np.asarray(line.get_xdata(orig=False), dtype=float)
        y = np.asarray(line.get_ydata(orig=False), dtype=float)
        name = f" {label_of(line)!r}" if label_of(line) else ""
        text = f"  line{name}: {len(y):,} points"
        finite = np.isfinite(x) & np.isfinite(y)
        if finite.any():
            low, high = axis_value(ax.xaxis, np.min(x[finite])), axis_value(ax.xaxis, np.max(x[finite]))
            text += f", x from {low} to {high}, y from {num(np.min(y[finite]))} to {num(np.max(y[finite]))}"
        if 0 < len(y) <= 8:
            points = [f"({axis_value(ax.xaxis, a)}, {num(b, 6)})" for a, b in zip(x, y, strict=False)]
            text += ": " + " ".join(points)
        return text

    def axes_summary(ax, number):
        colorbar = getattr(ax, "_colorbar", None)  # set by matplotlib on a colorbar's axes
        if colorbar is not None:
            label = ax.get_ylabel() or ax.get_xlabel()
            low, high = colorbar.vmin, colorbar.vmax
            return f"Axes {number}: colorbar{f' {label!r}' if label else ''} {num(low)} to {num(high)}"
        bars = [c for c in ax.containers if type(c).__name__ == "BarContainer"]
        in_bars = {id(p) for c in bars for p in c.patches}
        lines = [line for line in ax.get_lines() if line.get_visible()]
        scatters = [c for c in ax.collections if type(c).__name__ == "PathCollection"]
        others = [c for c in ax.collections if type(c).__name__ != "PathCollection"]
        wedges = [p for p in ax.patches if type(p).__name__ == "Wedge"]
        loose = [p for p in ax.patches if id(p) not in in_bars and type(p).__name__ != "Wedge"]
        bar_texts = [bar_summary(ax, b) for b in bars[:6]]
        kinds = []
        if lines:
            kinds.append(f"line plot ({len(lines)} line{'s' if len(lines) > 1 else ''})")
        if bars:
            histogram = any(text.startswith("  histogram") for text in bar_texts)
            kinds.append("histogram" if histogram else "bar chart")
        if scatters:
            points = sum(len(c.get_offsets()) for c in scatters)
            kinds.append(f"scatter ({points:,} points)")
        if wedges:
            kinds.append(f"pie chart ({len(wedges)} wedges)")
        if ax.images:
            shapes = ", ".join("x".join(str(n) for n in im.get_array().shape) for im in ax.images)
            kinds.append(f"image ({shapes})")
        if others:
            names = sorted({type(c).__name__ for c in others})
            kinds.append(", ".join(names))
        if loose and not bars:
            kinds.append(f"{len(loose)} shapes")
        title = " / ".join(t for t in (ax.get_title("left"), ax.get_title(), ax.get_title("right")) if t)
        head = f"Axes {number}" + (f" {title!r}" if title else "") + ": " + (", ".join(kinds) or "empty")
        out = [head]
        if not wedges:
            out.append(
                "  "
                + describe_axis("x", ax.xaxis, ax.get_xlim())
                + "; "
                + describe_axis("y", ax.yaxis, ax.get_ylim())
            )
        out += bar_texts
        out += [line_summary(ax, line) for line in lines[:8]]
        if len(lines) > 8:
            out.append(f"  … {len(lines) - 8} more lines")
        legend = ax.get_legend()
        if legend is not None:
            entries = [t.get_text() for t in legend.get_texts()]
            out.append("  legend: " + pick([clip(e) for e in entries], 15, tail=3))
        texts = [t.get_text().strip() for t in ax.texts if t.get_text().strip()]
        if texts:
            out.append("  text: " + pick([repr(clip(t)) for t in texts], 10, tail=2))
        return "\n".join(out)

    def figure_summary(fig):
        width, height = (fig.get_size_inches() * fig.dpi).round().astype(int)
        axes = fig.get_axes()
        head = f"Figure {width}x{height} px, {len(axes)} axes"
        suptitle = getattr(fig, "_suptitle", None)
        if suptitle is not None and suptitle.get_text():
            head += f", title {suptitle.get_text()!r}"
        parts = [head, *(axes_summary(ax, i) for i, ax in enumerate(axes[:12], 1))]
        if len(axes) > 12:
            parts.append(f"… {len(axes) - 12} more axes")
        for legend in fig.legends:
            parts.append("figure legend: " + ", ".join(clip(t.get_text()) for t in legend.get_texts()))
        return "\n".join(parts)

    def image_summary(img):
        return f"Image {img.width}x{img.height} px, mode {img.mode}"

    summaries = SummaryFormatter(parent=shell.display_formatter)
    # By name, so nothing is imported here; pandas 3 names its public classes "pandas.X".
    for module, name, summarise in [
        ("pandas", "DataFrame", frame_summary),
        ("pandas.core.frame", "DataFrame", frame_summary),
        ("pandas", "Series", series_summary),
        ("pandas.core.series", "Series", series_summary),
        ("pandas.io.formats.style", "Styler", styler_summary),
        ("matplotlib.figure", "Figure", figure_summary),
        ("PIL.Image", "Image", image_summary),
    ]:
        summaries.for_type_by_name(module, name, safely(summarise))
    shell.display_formatter.formatters[summaries.format_type] = summaries


_nbagent_install_summaries()
del _nbagent_install_summaries
