# nbagent host bridge: some tools run in the process that drove this kernel (they hold a client or a
# secret). The functions defined below call them over a unix socket. When this notebook is re-run on
# its own, no host is connected: each call is answered from the results recorded during the run (the
# "recorded host calls" cell), and says so on stderr.
class HostToolError(RuntimeError):
    """A host-side tool failed, or the host is absent and no recorded result matches the call."""


def _nbagent_encode(value):
    # One wire format both ways: JSON values as they are; pandas objects, bytes and images tagged.
    import base64
    import io
    import json
    import math

    def plain(v):
        if hasattr(v, "item") and getattr(v, "shape", None) == ():
            v = v.item()  # a numpy scalar
        elif type(v).__module__ == "numpy" and hasattr(v, "tolist"):
            v = v.tolist()
        if isinstance(v, float) and not math.isfinite(v):
            raise TypeError("a NaN or infinite float (not JSON)")
        if v is None or isinstance(v, (bool, int, float, str)):
            return v
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict) and all(isinstance(k, str) for k in v):
            return {k: plain(x) for k, x in v.items()}
        raise TypeError(f"a {type(v).__module__}.{type(v).__qualname__}")

    module = type(value).__module__
    if (module + ".").startswith("pandas.") and type(value).__name__ in ("DataFrame", "Series"):
        kind = type(value).__name__.lower()
        try:
            return {"kind": kind, "value": json.loads(value.to_json(orient="table", date_format="iso"))}
        except Exception:
            text = value.to_json(orient="split", date_format="iso", default_handler=str)
            return {"kind": kind + "-split", "value": json.loads(text)}
    if isinstance(value, (bytes, bytearray)):
        return {"kind": "bytes", "value": base64.b64encode(bytes(value)).decode("ascii")}
    if module.startswith("PIL.") and hasattr(value, "save"):
        buf = io.BytesIO()
        value.save(buf, format="PNG")
        return {"kind": "image", "value": base64.b64encode(buf.getvalue()).decode("ascii")}
    try:
        return {"kind": "json", "value": plain(value)}
    except TypeError as exc:
        raise TypeError(
            f"{exc} cannot pass between the kernel and the host: use JSON-like values "
            "(str, int, float, bool, None, lists, dicts with str keys), a pandas DataFrame or Series, "
            "bytes, or a PIL image"
        ) from None


def _nbagent_decode(payload):
    import base64
    import io
    import json

    kind, value = payload.get("kind"), payload.get("value")
    if kind == "json":
        return value
    if kind == "bytes":
        return base64.b64decode(value)
    if kind == "image":
        data = base64.b64decode(value)
        try:
            from PIL import Image

            return Image.open(io.BytesIO(data))
        except ImportError:
            return data
    if kind in ("dataframe", "series", "dataframe-split", "series-split"):
        import pandas as pd

        text = io.StringIO(json.dumps(value))
        if kind.endswith("-split"):
            return pd.read_json(text, orient="split", typ="frame" if kind == "dataframe-split" else "series")
        frame = pd.read_json(text, orient="table")  # pandas reads the table orient as frames only
        return frame if kind == "dataframe" else frame.iloc[:, 0]
    raise HostToolError(f"unknown value kind {kind!r} from the host")


class _NbagentHost:
    """The kernel's end of the host bridge."""

    UNSET = object()  # a default the host fills in itself (it is not a plain literal)

    def __init__(self):
        self.address = None
        self.token = None
        self.recorded = []
        self.used = set()

    def connect(self, address, token=None):
        self.address = address
        self.token = token  # binds this kernel's calls to the run that started it

    def replay(self, calls):
        """Results recorded during the run, answered in order when no host is connected."""
        self.recorded = list(calls)
        self.used = set()

    def call(self, tool, args):
        args = {k: _nbagent_encode(v) for k, v in args.items() if v is not self.UNSET}
        if self.address is None:
            return self._replay(tool, args)
        import json
        import socket

        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            try:
                sock.connect(self.address)
            except OSError as exc:
                raise HostToolError(f"cannot reach the nbagent host for tool {tool!r}: {exc}") from None
            sock.sendall(json.dumps({"tool": tool, "args": args, "token": self.token}).encode() + b"\n")
            chunks = []
            while not chunks or not chunks[-1].endswith(b"\n"):
                chunk = sock.recv(1 << 20)
                if not chunk:
                    raise HostToolError(f"the nbagent host closed the connection during {tool!r}")
                chunks.append(chunk)
        reply = json.loads(b"".join(chunks))
        if "error" in reply:
            raise HostToolError(reply["error"])
        return _nbagent_decode(reply["result"])

    def _replay(self, tool, args):
        import sys

        for i, call in enumerate(self.recorded):
            if i not in self.used and call.get("tool") == tool and call.get("args") == args:
                self.used.add(i)
                print(
                    f"[nbagent] no host connected: replayed the recorded result of {tool}()", file=sys.stderr
                )
                if "error" in call:
                    raise HostToolError(call["error"])
                return _nbagent_decode(call["result"])
        raise HostToolError(
            f"{tool}() runs on the nbagent host, which is not connected, and no result recorded "
            "during the run matches these arguments"
        )


_nbagent_host = _NbagentHost()
