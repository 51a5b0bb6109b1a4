# nbagent setup: defines final_answer(). Needs only IPython; nbagent itself is not required.
def final_answer(answer):
    """Give `answer` as the result of the task: shown below, and handed back to the agent."""
    import base64
    import io
    import json
    import math

    from IPython import get_ipython
    from IPython.display import display

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
        if getattr(value, "format", None) == "png" and isinstance(getattr(value, "data", None), bytes):
            return value.data  # IPython.display.Image
        return None

    kind, payload = "repr", None
    kind_name = type(answer).__module__ + "." + type(answer).__qualname__
    if kind_name.startswith("pandas.") and type(answer).__name__ in ("DataFrame", "Series"):
        kind = type(answer).__name__.lower()
        try:
            payload = json.loads(answer.to_json(orient="table", date_format="iso"))
        except Exception:
            payload = json.loads(answer.to_json(orient="split", date_format="iso", default_handler=str))
            kind += "-split"
    else:
        png = png_of(answer)
        if png is not None:
            kind, payload = "image", base64.b64encode(png).decode("ascii")
        else:
            try:
                kind, payload = "json", to_json(answer)
            except (TypeError, ValueError):
                pass

    shell = get_ipython()
    bundle, metadata = shell.display_formatter.format(answer) if shell else ({}, {})
    text = answer if isinstance(answer, str) else bundle.get("text/plain", repr(answer))
    bundle = dict(bundle)
    if isinstance(answer, str):
        bundle["text/markdown"] = answer
    if kind == "image":
        bundle.setdefault("image/png", payload)
    bundle["text/plain"] = text
    bundle["application/vnd.nbagent.answer+json"] = {
        "kind": kind,
        "type": kind_name,
        "value": payload,
        "text": text,
    }
    display(bundle, raw=True, metadata=metadata)
    if hasattr(answer, "savefig"):
        try:
            import matplotlib.pyplot as plt

            plt.close(answer)  # shown once, as the answer, not again by the inline backend
        except Exception:
            pass
    globals()["_nbagent_answer"] = answer
