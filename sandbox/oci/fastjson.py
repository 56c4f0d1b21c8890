"""JSON for the runtime's short-lived commands without importing `json`.

Every engine operation starts a new pysandbox-oci process (create, start, state, kill, delete:
four or five per `docker run`), so import time is the runtime's cost per operation. The json
package imports re and enum (about 10 ms here); the C scanner and string encoder it is built on
(`_json`) do not. loads() drives the C scanner directly (strict JSON, as json.loads);
dumps() writes dicts, lists, strings, numbers, booleans and null (what the runtime emits).
"""
import _json

_SPACE = " \t\n\r"


class _Context:
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    memo = None

    @staticmethod
    def parse_constant(name):
        return {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}[name]


_scan = _json.make_scanner(_Context())


def loads(text):
    if isinstance(text, (bytes, bytearray)):
        text = text.decode("utf-8-sig" if text[:3] == b"\xef\xbb\xbf" else "utf-8")
    start = 0
    while start < len(text) and text[start] in _SPACE:
        start += 1
    try:
        value, end = _scan(text, start)
    except Exception:  # noqa: BLE001 - the C scanner's errors need json.decoder: let json say it
        return _slow(text)
    while end < len(text) and text[end] in _SPACE:
        end += 1
    if end != len(text):
        return _slow(text)
    return value


def _slow(text):
    """Invalid input only: the json package's own error (line, column, what was expected)."""
    import json
    return json.loads(text)


def dumps(value, indent=None):
    out = []
    _write(value, out, indent, 0)
    return "".join(out)


def _write(value, out, indent, level):
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, str):
        out.append(_json.encode_basestring_ascii(value))
    elif isinstance(value, int):
        out.append(int.__repr__(value))
    elif isinstance(value, float):
        out.append(float.__repr__(value))
    elif isinstance(value, dict):
        if not value:
            out.append("{}")
            return
        items = list(value.items())
        out.append("{")
        for i, (key, item) in enumerate(items):
            _newline(out, indent, level + 1)
            out.append(_json.encode_basestring_ascii(str(key)))
            out.append(": ")
            _write(item, out, indent, level + 1)
            if i < len(items) - 1:
                out.append(",")
        _newline(out, indent, level)
        out.append("}")
    elif isinstance(value, (list, tuple)):
        if not value:
            out.append("[]")
            return
        out.append("[")
        for i, item in enumerate(value):
            _newline(out, indent, level + 1)
            _write(item, out, indent, level + 1)
            if i < len(value) - 1:
                out.append(",")
        _newline(out, indent, level)
        out.append("]")
    else:
        raise TypeError("not JSON: %r" % type(value).__name__)


def _newline(out, indent, level):
    if indent is not None:
        out.append("\n" + " " * (indent * level))
    elif out and out[-1] == ",":
        out.append(" ")
