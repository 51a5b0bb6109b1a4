# nbagent setup: defines final_answer(). Needs only IPython; nbagent itself is not required.
def _nbagent_encode_answer(answer, inline_limit=None):
    """The answer as JSON for the agent: its kind ("json", "dataframe", "series", "image", "repr")
    and value. A value whose JSON exceeds `inline_limit` characters is left out ("deferred")
    and fetched by the agent separately, so the notebook does not carry it twice."""
    import base64
    import io
    import json
    import math

    def to_json(value):
        # Strict JSON or nothing: NaN and infinities are not JSON, tuples become lists.
        if hasattr(value, "item") and getattr(value, "shape", None) == ():
            value = value.item()
        elif type(value).__module__ == "numpy" and hasattr(value, "tolist"):
            value = value.tolist()
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError("not finite")
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if isinstance(value, (list, tuple)):
            return [to_json(v) for v in value]
        if isinstance(value, dict) and all(isinstance(k, str) for k in value):
            return {k: to_json(v) for k, v in value.items()}
        raise TypeError(type(value).__name__)

    def png_of(value):
        if hasattr(value, "savefig"):  # a matplotlib Figure
            buf = io.BytesIO()
            value.savefig(buf, format="png", bbox_inches="tight")
            return buf.getvalue()
        if hasattr(value, "figure") and hasattr(value.figure, "savefig"):  # an Axes
            return png_of(value.figure)
        if type(value).__module__.startswith("PIL.") and hasattr(value, "save"):
            buf = io.BytesIO()
            value.save(buf, format="PNG")
            return buf.getvalue()
        data = getattr(value, "data", None)
        if getattr(value, "format", None) in ("png", "jpeg") and isinstance(data, bytes):
            return data  # IPython.display.Image
        return None

    type_name = type(answer).__module__ + "." + type(answer).__qualname__
    payload = {"kind": "repr", "type": type_name, "value": None}
    if type_name.startswith("pandas.") and type(answer).__name__ in ("DataFrame", "Series"):
        kind = type(answer).__name__.lower()
        frame = answer.to_frame() if kind == "series" else answer
        try:  # the table schema keeps dtypes and index names; 15 digits keep floats exact enough
            value = json.loads(answer.to_json(orient="table", date_format="iso", double_precision=15))
        except Exception:
            value = json.loads(answer.to_json(orient="split", date_format="iso", default_handler=str))
            kind += "-split"
        payload.update(kind=kind, value=value, dtypes=[str(t) for t in frame.dtypes])
        if payload["kind"].startswith("series"):
            payload["name"] = answer.name if isinstance(answer.name, (str, int, float)) else None
    else:
        png = png_of(answer)
        if png is not None:
            payload.update(kind="image", value=base64.b64encode(png).decode("ascii"))
        else:
            try:
                payload.update(kind="json", value=to_json(answer))
            except (TypeError, ValueError):
                pass
    if inline_limit is not None and len(json.dumps(payload["value"])) > inline_limit:
        payload.update(value=None, deferred=True)
    return payload


def final_answer(answer):
    """Give `answer` as the result of the task: shown below, and handed back to the agent."""
    from IPython import get_ipython
    from IPython.display import display

    payload = _nbagent_encode_answer(answer, inline_limit=1_000_000)
    shell = get_ipython()
    bundle, metadata = shell.display_formatter.format(answer) if shell else ({}, {})
    text = answer if isinstance(answer, str) else bundle.get("text/plain", repr(answer))
    bundle = dict(bundle)
    if isinstance(answer, str):
        bundle["text/markdown"] = answer
    summary = bundle.get("text/x-nbagent-summary")
    if summary and text.startswith("<") and text.endswith(">"):
        text = summary  # "<Figure size 640x480 with 1 Axes>" says little, and vanishes in Markdown
    if payload["kind"] == "image":
        # The picture is stored once, as the image the notebook shows; the agent reads it there.
        mime = "image/png" if payload["value"].startswith("iVBOR") else "image/jpeg"
        bundle.setdefault(mime, payload["value"])
        payload.update(value=None, value_in=mime)
    bundle["text/plain"] = text
    bundle["application/vnd.nbagent.answer+json"] = {**payload, "text": text}
    display(bundle, raw=True, metadata=metadata)
    figure = answer if hasattr(answer, "savefig") else getattr(answer, "figure", None)
    if hasattr(figure, "savefig"):
        try:
            import matplotlib.pyplot as plt

            plt.close(figure)  # shown once, as the answer, not again by the inline backend
        except Exception:
            pass
    globals()["_nbagent_answer"] = answer
