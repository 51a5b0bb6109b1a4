# nbagent (run only; not written into the notebook): final_answer hands its value to the agent as
# typed data, never as a pickle: Arrow IPC for DataFrames and Series, .npy (no pickle) for numeric
# arrays and numpy scalars, tagged JSON for the rest. What cannot be carried goes as str(value).
def _nbagent_install_hand_over(key, inline_limit=1_000_000, max_pixels=50_000_000):
    import base64
    import io
    import json
    import math

    class Uncarried(Exception):
        pass

    def b64(data):
        return base64.b64encode(data).decode("ascii")

    def npy(array):
        import numpy

        buf = io.BytesIO()
        numpy.save(buf, array, allow_pickle=False)
        return b64(buf.getvalue())

    def arrow(obj):
        # A Series travels as a one-column table; its name travels beside it (any value).
        import pyarrow

        frame = obj.to_frame(name="values") if obj.ndim == 1 else obj
        table = pyarrow.Table.from_pandas(frame)
        if any(isinstance(t, pyarrow.ExtensionType) for t in table.schema.types):
            raise Uncarried("extension types")
        sink = pyarrow.BufferOutputStream()
        with pyarrow.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        return b64(sink.getvalue().to_pybytes())

    def module_of(value):
        return type(value).__module__.split(".")[0]

    def tag(value, depth=0):
        if depth > 100:
            raise Uncarried("nested too deeply")
        kind = type(value)
        if value is None or kind in (bool, int, str):
            return value
        if kind is float:
            return value if math.isfinite(value) else {"$": "float", "v": repr(value)}
        if kind is list:
            return [tag(v, depth + 1) for v in value]
        if kind in (tuple, set, frozenset):
            items = sorted(value, key=repr) if kind is not tuple else value
            return {"$": kind.__name__, "v": [tag(v, depth + 1) for v in items]}
        if kind is dict:
            if all(type(k) is str for k in value) and "$" not in value:
                return {k: tag(v, depth + 1) for k, v in value.items()}
            return {"$": "dict", "v": [[tag(k, depth + 1), tag(v, depth + 1)] for k, v in value.items()]}
        if kind in (bytes, bytearray):
            return {"$": kind.__name__, "v": b64(bytes(value))}
        if kind is complex:
            return {"$": "complex", "v": [tag(value.real), tag(value.imag)]}
        name = kind.__module__ + "." + kind.__qualname__
        if name == "decimal.Decimal":
            return {"$": "decimal", "v": str(value)}
        if name in ("datetime.datetime", "datetime.date", "datetime.time"):
            return {"$": kind.__name__, "v": value.isoformat()}
        if name == "datetime.timedelta":
            return {"$": "timedelta", "v": [value.days, value.seconds, value.microseconds]}
        if module_of(value) == "numpy":
            import numpy

            if isinstance(value, numpy.dtype) and value.names is None:  # not a structured dtype
                return {"$": "dtype", "v": value.str}
            if isinstance(value, numpy.ndarray) and value.dtype.hasobject:
                items = tag(value.ravel().tolist(), depth + 1)
                return {"$": "ndarray", "shape": list(value.shape), "v": items}
            if isinstance(value, (numpy.ndarray, numpy.generic)):
                scalar = value.ndim == 0 and kind is not numpy.ndarray
                if value.dtype.kind in "mM":  # .npy cannot hold dates and durations: their int64 view
                    return {"$": "npy", "scalar": scalar, "view": value.dtype.str, "v": npy(value.view("i8"))}
                return {"$": "npy", "scalar": scalar, "v": npy(value)}
        if module_of(value) == "pandas":
            return tag_pandas(value, kind.__name__, depth)
        raise Uncarried(f"a {name}")

    def tag_pandas(value, kind, depth):
        import pandas

        if value is pandas.NaT:
            return {"$": "NaT"}
        if kind == "Timestamp":
            return {"$": "Timestamp", "v": value.isoformat(), "tz": str(value.tz) if value.tz else None}
        if kind == "Timedelta":
            return {"$": "Timedelta", "v": int(value.value), "unit": value.unit}
        if kind == "Period":
            return {"$": "Period", "v": str(value), "freq": value.freqstr}
        if kind == "Interval":
            ends = [tag(value.left, depth + 1), tag(value.right, depth + 1)]
            return {"$": "Interval", "v": ends, "closed": value.closed}
        if kind in ("DataFrame", "Series"):
            try:
                name = tag(getattr(value, "name", None))
                freq = getattr(value.index, "freqstr", None)  # Arrow keeps an index's values, not its freq
                return {
                    "$": "arrow",
                    "series": kind == "Series",
                    "name": name,
                    "freq": freq,
                    "v": arrow(value),
                }
            except Exception:  # e.g. object columns of mixed types: tagged JSON, column by column
                pass
            if kind == "Series":
                return dict(
                    [("$", "Series"), ("name", tag(value.name)), ("dtype", tag(value.dtype))],
                    index=tag(value.index, depth + 1),
                    v=tag(value.tolist(), depth + 1),
                )
            return dict(
                [("$", "DataFrame")],
                index=tag(value.index, depth + 1),
                columns=tag(value.columns, depth + 1),
                dtypes=[tag(t) for t in value.dtypes],
                v=[tag(value.iloc[:, i].tolist(), depth + 1) for i in range(value.shape[1])],
            )
        if kind == "MultiIndex":
            return {"$": "MultiIndex", "names": tag(list(value.names)), "v": tag(list(value), depth + 1)}
        if isinstance(value, pandas.Index):
            items = tag(value.tolist(), depth + 1)
            return {"$": "Index", "name": tag(value.name), "dtype": tag(value.dtype), "v": items}
        if isinstance(value, pandas.api.extensions.ExtensionDtype):
            return {"$": "pandas-dtype", "v": str(value)}
        raise Uncarried(f"a pandas {kind}")

    def png_of(value):
        if hasattr(value, "get_figure"):  # an Axes
            value = value.figure
        if hasattr(value, "savefig"):  # a matplotlib Figure
            width, height = value.get_size_inches() * value.dpi
            if width * height > max_pixels:
                raise Uncarried(f"a figure of {width:.0f}x{height:.0f} pixels")
            buf = io.BytesIO()
            value.savefig(buf, format="png", bbox_inches="tight")
            return buf.getvalue()
        if module_of(value) == "PIL" and hasattr(value, "save"):
            if value.width * value.height > max_pixels:
                raise Uncarried(f"an image of {value.width}x{value.height} pixels")
            buf = io.BytesIO()
            value.save(buf, format="PNG")
            return buf.getvalue()
        if module_of(value) == "IPython" and getattr(value, "format", None) in ("png", "jpeg"):
            return value.data if isinstance(value.data, bytes) else None  # IPython.display.Image
        return None

    def encode(answer, limit=None):
        kind = type(answer)
        payload = {"key": key, "type": f"{kind.__module__}.{kind.__qualname__}"}
        try:
            png = png_of(answer)
            if png is not None:
                payload.update(kind="image", value=b64(png))
            else:
                payload.update(kind="tagged", value=tag(answer))
        except Exception as exc:
            why = str(exc) if isinstance(exc, Uncarried) else f"{type(exc).__name__}: {exc}"
            payload.update(kind="str", value=str(answer), note=f"{why} cannot be carried as data")
        if limit is not None and len(json.dumps(payload["value"])) > limit:
            payload.update(value=None, deferred=True)  # fetched separately, not stored twice
        return payload

    def hand_over(answer, bundle, metadata):
        bundle = dict(bundle)
        payload = encode(answer, inline_limit)
        text = answer if isinstance(answer, str) else bundle.get("text/plain", repr(answer))
        if module_of(answer) == "numpy" and getattr(answer, "shape", None) == ():
            text = str(answer)  # "2.0", not numpy 2's "np.float64(2.0)"
        summary = bundle.get("text/x-nbagent-summary")
        if summary and text.startswith("<") and text.endswith(">"):
            text = summary  # "<Figure size 640x480 with 1 Axes>" says little, and vanishes in Markdown
        if payload["kind"] == "image" and not payload.get("deferred"):
            # The picture is stored once, as the image the notebook shows; the agent reads it there.
            mime = "image/png" if payload["value"].startswith("iVBOR") else "image/jpeg"
            bundle.setdefault(mime, payload["value"])
            payload.update(value=None, value_in=mime)
        bundle["text/plain"] = text
        bundle["application/vnd.nbagent.answer+json"] = {**payload, "text": text}
        globals()["_nbagent_answer"] = answer
        return bundle, metadata

    globals()["final_answer"].hand_over = [hand_over]
    return encode


_nbagent_encode_answer = _nbagent_install_hand_over("NBAGENT_ANSWER_KEY")
del _nbagent_install_hand_over
