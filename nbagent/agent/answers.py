"""Final answers on the host: the value ``final_answer`` handed over, rebuilt from typed data.

The kernel runs the model's code, so what it sends is untrusted: nothing here unpickles or
evaluates it. DataFrames and Series arrive as Arrow IPC (extension types refused), numeric
arrays and numpy scalars as ``.npy`` read with ``allow_pickle=False``, figures and images as
PNG (size bounded), everything else as tagged JSON. A value that cannot be rebuilt becomes the
answer's text, with a note saying why kept beside it (:class:`Answer`), never an exception: by
then the run has answered.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import decimal
import io
import json
import math
import warnings
from dataclasses import dataclass
from typing import Any, Protocol

from ..exceptions import KernelError
from ..execution.outputs import ANSWER_MIME, Execution

MAX_ANSWER_BYTES = 256_000_000
"""Largest encoded answer (base64 characters) the host decodes."""

MAX_IMAGE_PIXELS = 50_000_000
"""Largest image answer (width x height) the host decodes; bigger ones come back as text."""

MAX_DEPTH = 100
"""Deepest nesting of containers the host rebuilds."""


class AnswerFormatError(ValueError):
    """The handed-over answer is not in a form the host reads (malformed, too big, or refused)."""


@dataclass
class Answer:
    """A decoded answer: ``value``, and ``note`` when it could not be carried faithfully."""

    value: Any
    note: str | None = None


def decode_answer(payload: dict[str, Any]) -> Answer:
    """Rebuild the value ``final_answer`` was given from its payload.

    Pandas objects come back with their index, dtypes and names; numpy arrays with shape and
    dtype; tuples, sets, datetimes, Decimals, NaN and infinities as themselves; figures and
    images as ``PIL.Image.Image``. Anything else is exactly ``str(value)`` with a note.
    """
    kind = str(payload.get("kind"))
    text = str(payload.get("text", ""))
    value = payload.get("value")
    if kind == "str":
        return Answer(str(value), str(payload.get("note") or "the answer is given as its text"))
    try:
        if isinstance(value, str) and len(value) > MAX_ANSWER_BYTES:
            raise AnswerFormatError(f"it is larger than {MAX_ANSWER_BYTES:,} characters")
        if kind == "image":
            return Answer(_image(str(value)))
        if kind == "tagged":
            return Answer(_untag(value, 0))
        if kind in ("json", "repr"):  # notebooks written before tagged JSON
            return Answer(value if kind == "json" else text)
        if kind in ("dataframe", "series", "dataframe-split", "series-split"):
            return Answer(_legacy_pandas(kind, value, payload))
        raise AnswerFormatError(f"unknown answer kind {kind!r}")
    except Exception as exc:  # whatever the kernel sent, the run has answered: keep its text
        why = str(exc) if isinstance(exc, AnswerFormatError) else f"{type(exc).__name__}: {exc}"
        return Answer(text, f"the answer could not be rebuilt on the host ({why}); this is its text")


def _b64(value: Any) -> bytes:
    if not isinstance(value, str) or len(value) > MAX_ANSWER_BYTES:
        raise AnswerFormatError("binary data must be a base64 string within the size limit")
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error as exc:
        raise AnswerFormatError(f"bad base64 ({exc})") from None


def _image(value: str) -> Any:
    from PIL import Image

    data = _b64(value)
    with warnings.catch_warnings():
        # PIL only warns below twice its own limit; an answer is refused at the first sign.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
            if image.width * image.height > MAX_IMAGE_PIXELS:
                raise AnswerFormatError(
                    f"an image of {image.width}x{image.height} pixels is over the "
                    f"{MAX_IMAGE_PIXELS:,}-pixel limit"
                )
            image.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise AnswerFormatError(f"the image is too large ({exc})") from None
    return image


def _untag(value: Any, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise AnswerFormatError(f"it is nested more than {MAX_DEPTH} levels deep")
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, list):
        return [_untag(v, depth + 1) for v in value]
    if not isinstance(value, dict):
        raise AnswerFormatError(f"unexpected JSON value of type {type(value).__name__}")
    tag = value.get("$")
    if tag is None:
        return {k: _untag(v, depth + 1) for k, v in value.items()}
    v = value.get("v")
    if tag in ("tuple", "set", "frozenset", "dict"):
        if not isinstance(v, list):
            raise AnswerFormatError(f"a {tag} must hold a list")
        items = [_untag(x, depth + 1) for x in v]
        if tag == "dict":
            return {_hashable(k): item for k, item in (_pair(p) for p in items)}
        if tag == "tuple":
            return tuple(items)
        return (set if tag == "set" else frozenset)(_hashable(x) for x in items)
    simple = _SIMPLE.get(str(tag))
    if simple is not None:
        return simple(v)
    if tag == "complex":
        return complex(*[float(x) for x in _untag(v, depth + 1)])
    if tag == "npy":
        return _npy(v, bool(value.get("scalar")), value.get("view"))
    if tag == "ndarray":
        import numpy as np

        items = _untag(v, depth + 1)
        array = np.empty(len(items), dtype=object)
        array[:] = items
        return array.reshape([int(n) for n in value.get("shape", [len(items)])])
    return _untag_pandas(str(tag), value, depth)


def _pair(item: Any) -> tuple[Any, Any]:
    if not isinstance(item, list) or len(item) != 2:
        raise AnswerFormatError("a dict entry must be a [key, value] pair")
    return item[0], item[1]


def _hashable(value: Any) -> Any:
    if isinstance(value, list):  # a list cannot be a key or a set member: the kernel sent a tuple
        raise AnswerFormatError("a dict key or set member is a list")
    return value


def _special_float(v: Any) -> float:
    if v not in ("nan", "inf", "-inf"):
        raise AnswerFormatError(f"unexpected float {v!r}")
    return float(v)


def _timedelta(v: Any) -> dt.timedelta:
    days, seconds, micro = (int(x) for x in v)
    return dt.timedelta(days=days, seconds=seconds, microseconds=micro)


def _dtype(v: Any) -> Any:
    import numpy as np

    dtype = np.dtype(str(v))
    if dtype.hasobject and dtype.kind != "O":
        raise AnswerFormatError("structured dtypes holding objects are not carried")
    return dtype


def _pandas_dtype(v: Any) -> Any:
    import pandas as pd

    return pd.api.types.pandas_dtype(str(v))


_SIMPLE: dict[str, Any] = {
    "float": _special_float,
    "bytes": lambda v: _b64(v),
    "bytearray": lambda v: bytearray(_b64(v)),
    "decimal": lambda v: decimal.Decimal(str(v)),
    "datetime": lambda v: dt.datetime.fromisoformat(str(v)),
    "date": lambda v: dt.date.fromisoformat(str(v)),
    "time": lambda v: dt.time.fromisoformat(str(v)),
    "timedelta": _timedelta,
    "dtype": _dtype,
    "pandas-dtype": _pandas_dtype,
}


def _npy(v: Any, scalar: bool, view: Any = None) -> Any:
    import numpy as np

    array = np.load(io.BytesIO(_b64(v)), allow_pickle=False)
    if view is not None:  # dates and durations travel as their int64 view
        dtype = np.dtype(str(view))
        if dtype.kind not in "mM" or array.dtype != np.dtype("i8"):
            raise AnswerFormatError(f"an int64 array can only be viewed as dates or durations, not {view}")
        array = array.view(dtype)
    return array[()] if scalar else array


def _untag_pandas(tag: str, value: dict[str, Any], depth: int) -> Any:
    import pandas as pd

    if tag == "NaT":
        return pd.NaT
    if tag == "Timestamp":
        stamp = pd.Timestamp(str(value["v"]))
        return stamp.tz_convert(str(value["tz"])) if value.get("tz") else stamp
    if tag == "Timedelta":
        delta = pd.Timedelta(int(value["v"]), unit="ns")
        return delta.as_unit(str(value["unit"])) if value.get("unit") else delta
    if tag == "Period":
        return pd.Period(str(value["v"]), freq=str(value["freq"]))
    if tag == "Interval":
        left, right = (_untag(end, depth + 1) for end in value["v"])
        return pd.Interval(left, right, closed=str(value.get("closed", "right")))
    if tag == "arrow":
        return _arrow(value)
    if tag == "Index":
        dtype = _untag(value.get("dtype"), depth + 1)
        return pd.Index(_untag(value["v"], depth + 1), dtype=dtype, name=_untag(value.get("name"), depth + 1))
    if tag == "MultiIndex":
        tuples = _untag(value["v"], depth + 1)
        names = _untag(value.get("names"), depth + 1)
        return pd.MultiIndex.from_tuples([tuple(t) for t in tuples], names=names)
    if tag == "Series":
        index = _untag(value["index"], depth + 1)
        name = _untag(value.get("name"), depth + 1)
        series = pd.Series(_untag(value["v"], depth + 1), index=index, name=name)
        return _astype(series, _untag(value.get("dtype"), depth + 1))
    if tag == "DataFrame":
        index = _untag(value["index"], depth + 1)
        columns = _untag(value["columns"], depth + 1)
        data = [_untag(col, depth + 1) for col in value["v"]]
        dtypes = [_untag(t, depth + 1) for t in value.get("dtypes", [])]
        frame = pd.DataFrame(dict(enumerate(data)), index=index)
        for i, dtype in enumerate(dtypes):
            frame.isetitem(i, _astype(frame.iloc[:, i], dtype))
        frame.columns = columns
        return frame
    raise AnswerFormatError(f"unknown tag {tag!r}")


def _astype(series: Any, dtype: Any) -> Any:
    if dtype is None or series.dtype == dtype:
        return series
    try:
        return series.astype(dtype)
    except (TypeError, ValueError):
        return series


def _arrow(value: dict[str, Any]) -> Any:
    import pandas as pd
    import pyarrow as pa

    data = _b64(value["v"])
    _refuse_compressed_batches(data)
    with pa.ipc.open_stream(data) as reader:
        schema = reader.schema
        _refuse_extension_types(schema.types)
        table = reader.read_all()
    frame = table.to_pandas()
    if value.get("freq"):
        index = frame.index
        if isinstance(index, pd.DatetimeIndex):
            frame.index = pd.DatetimeIndex(index, freq=str(value["freq"]))
        elif isinstance(index, pd.TimedeltaIndex):
            frame.index = pd.TimedeltaIndex(index, freq=str(value["freq"]))
    if not value.get("series"):
        return frame
    series = frame.iloc[:, 0]
    series.name = _untag(value.get("name"), 1)
    return series


def _refuse_compressed_batches(data: bytes) -> None:
    """Refuse an Arrow stream whose batches are compressed: nbagent's kernel code never compresses,
    and a compressed body is decompressed before any size check (a decompression bomb)."""
    import pyarrow as pa

    messages = pa.ipc.MessageReader.open_stream(pa.BufferReader(data))
    while True:
        try:
            message = messages.read_next_message()
        except StopIteration:
            return
        batch = message.type in ("record batch", "dictionary batch")
        if batch and _compressed(message.metadata.to_pybytes()):
            raise AnswerFormatError("compressed Arrow data is refused")


def _compressed(meta: bytes) -> bool:
    # The IPC message is a flatbuffer: Message{header_type (field 1), header (2)}; a RecordBatch
    # (header type 3, or inside a DictionaryBatch, type 2, as its field 1) names its compression
    # in field 3. pyarrow does not expose that field, so it is read here.
    def u32(pos: int) -> int:
        return int.from_bytes(meta[pos : pos + 4], "little")

    def field(table: int, n: int) -> int | None:
        vtable = table - int.from_bytes(meta[table : table + 4], "little", signed=True)
        entry = 4 + 2 * n
        if entry + 2 > int.from_bytes(meta[vtable : vtable + 2], "little"):
            return None
        offset = int.from_bytes(meta[vtable + entry : vtable + entry + 2], "little")
        return table + offset if offset else None

    root = u32(0)
    type_at, header_at = field(root, 1), field(root, 2)
    if type_at is None or header_at is None:
        return False
    header = header_at + u32(header_at)
    if meta[type_at] == 2:  # a DictionaryBatch: its RecordBatch
        data_at = field(header, 1)
        if data_at is None:
            return False
        header = data_at + u32(data_at)
    elif meta[type_at] != 3:
        return False
    return field(header, 3) is not None


def _refuse_extension_types(types: list[Any]) -> None:
    import pyarrow as pa

    for t in types:
        if isinstance(t, pa.ExtensionType):
            raise AnswerFormatError(f"Arrow extension type {t} is refused")
        _refuse_extension_types([t.field(i).type for i in range(t.num_fields)])


def _legacy_pandas(kind: str, value: Any, payload: dict[str, Any]) -> Any:
    # pandas' JSON table form: answers in notebooks written before Arrow, and host bridge values.
    import pandas as pd

    orient = "split" if kind.endswith("-split") else "table"
    frame = pd.read_json(io.StringIO(json.dumps(value)), orient=orient, typ="frame")
    for i, dtype in enumerate(payload.get("dtypes") or []):
        if i < frame.shape[1] and str(frame.dtypes.iloc[i]) != dtype:
            frame.isetitem(i, _astype(frame.iloc[:, i], dtype))
    if not kind.startswith("series"):
        return frame
    series = frame.iloc[:, 0]
    series.name = payload.get("name")
    return series


def json_friendly(value: Any) -> Any:
    """``value`` as plain JSON (for ``nbagent run --json``): frames as ``{"columns", "index",
    "data"}``, arrays as nested lists, NaN and infinities as ``null``, other values as text."""
    import numpy as np
    import pandas as pd

    if isinstance(value, pd.DataFrame):
        return json.loads(value.to_json(orient="split", date_format="iso", default_handler=str))
    if isinstance(value, pd.Series):
        return json.loads(value.to_json(orient="split", date_format="iso", default_handler=str))
    if isinstance(value, (pd.Index, np.ndarray)):
        return json_friendly(value.tolist())
    if isinstance(value, np.generic):
        return json_friendly(value.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, dict):
        return {str(k): json_friendly(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
        return [json_friendly(v) for v in items]
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    return str(value)


# -- answers too large for the notebook ------------------------------------------------------

FETCH_ANSWER_CODE = (
    "from IPython.display import display as _nbagent_display\n"
    f"_nbagent_display({{{ANSWER_MIME!r}: _nbagent_encode_answer(_nbagent_answer)}}, raw=True)\n"
    "del _nbagent_display"
)
"""Run in the kernel (not recorded) to fetch an answer too large to travel in the notebook."""


class AnswerExecutor(Protocol):
    """What :func:`complete_answer` needs of an executor."""

    async def aexecute(self, code: str, timeout: float | None = None) -> Execution: ...


async def complete_answer(executor: AnswerExecutor, payload: dict[str, Any]) -> dict[str, Any]:
    """The answer payload with its value: a deferred (large) value is fetched from the kernel."""
    if not payload.get("deferred"):
        return payload
    text = str(payload.get("text", ""))
    try:
        execution = await executor.aexecute(FETCH_ANSWER_CODE, timeout=120)
    except KernelError as exc:  # the run has answered: its text is still the answer
        fetched, why = None, str(exc)
    else:
        fetched = execution.answer_bundle(payload.get("key"))
        why = str(execution.error or "nothing came back")
    if fetched is None or fetched.get("deferred"):
        note = f"the answer was too large to carry in the notebook and fetching it failed ({why})"
        return {**payload, "kind": "str", "value": text, "note": note, "deferred": False}
    return {**fetched, "text": text}
