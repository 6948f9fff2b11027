"""Row dtypes stored as data: a canonical JSON description and its strict validator.

A state region (and a state image) must carry the numpy dtype of its rows so that any
process can read them, but never as a pickle. The description is plain JSON::

    {"fields": [{"name": "bid", "offset": 0, "format": "<f8", "shape": [5]},
                {"name": "pos", "offset": 40, "format": "<i8", "shape": []},
                {"name": "flags", "offset": 48,
                 "format": {"fields": [...], "itemsize": 8}, "shape": []}],
     "itemsize": 64, "version": 1}

written canonically (sorted keys, no spaces, fields in offset order), so two regions
have the same dtype exactly when their descriptions are the same bytes. ``parse``
accepts only that form: known keys, scalar formats from a fixed list (booleans,
integers, floats, complex, fixed-size bytes/str/void, datetime/timedelta with a unit),
explicit byte order, fields inside the row and not overlapping, nesting at most 4 deep,
and a text that re-serialises to itself.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np

from ..errors import CorruptSegmentError, InvalidParameterError

DESCRIPTION_VERSION = 1
MAX_FIELDS = 1024
MAX_DEPTH = 4
MAX_NAME = 64
MAX_DIMS = 4
MAX_ITEMSIZE = 1 << 20

_UNITS = "Y|M|W|D|h|m|s|ms|us|ns|ps|fs|as"
_SCALAR_RE = re.compile(
    r"\|b1|\|[iu]1|[<>][iu](2|4|8)|[<>]f(2|4|8)|[<>]c(8|16)|\|[SV][1-9]\d{0,6}"
    r"|[<>]U[1-9]\d{0,5}|[<>][Mm]8\[(" + _UNITS + r")\]")


def _canonical_text(desc: dict[str, Any]) -> str:
    return json.dumps(desc, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def _describe(dt: np.dtype, depth: int) -> dict[str, Any]:
    if depth > MAX_DEPTH:
        raise InvalidParameterError(f"dtype nests structures more than {MAX_DEPTH} deep")
    if dt.names is None:
        raise InvalidParameterError(f"row dtype {dt} must be structured (named fields), "
                                    f"e.g. [('price', '<f8'), ('qty', '<i8')]")
    fields = []
    assert dt.fields is not None
    for name in dt.names:
        entry = dt.fields[name]
        if len(entry) > 2:
            raise InvalidParameterError(f"field {name!r}: titles are not supported")
        fdt, offset = entry[0], entry[1]
        shape: tuple[int, ...] = ()
        if fdt.subdtype is not None:
            fdt, shape = fdt.subdtype
        if fdt.names is not None:
            fmt: Any = _describe(fdt, depth + 1)
        else:
            if fdt.hasobject:
                raise InvalidParameterError(f"field {name!r}: Python objects cannot live "
                                            f"in shared memory")
            fmt = fdt.str
            if not _SCALAR_RE.fullmatch(fmt):
                raise InvalidParameterError(f"field {name!r}: format {fmt!r} is not "
                                            f"supported in a state region")
        fields.append({"name": name, "offset": int(offset), "format": fmt,
                       "shape": [int(x) for x in shape]})
    fields.sort(key=lambda f: f["offset"])
    out = {"fields": fields, "itemsize": int(dt.itemsize)}
    if depth == 0:
        out["version"] = DESCRIPTION_VERSION
    return out


def describe(dtype: Any) -> str:
    """The canonical description of ``dtype`` (anything ``np.dtype`` accepts)."""
    try:
        dt = np.dtype(dtype)
    except (TypeError, ValueError) as exc:
        raise InvalidParameterError(f"invalid row dtype {dtype!r}: {exc}") from None
    text = _canonical_text(_describe(dt, 0))
    parse(text, where="dtype", error=InvalidParameterError)  # the same rules both ways
    return text


def _fail(error: type[Exception], where: str, path: str, msg: str) -> Exception:
    return error(f"{where}: dtype description{' at ' + path.lstrip('.') if path else ''}: "
                 f"{msg}")


def _int(v: Any, lo: int, hi: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def _build(obj: Any, depth: int, path: str, where: str,
           error: type[Exception]) -> np.dtype:
    top = depth == 0
    want = {"fields", "itemsize", "version"} if top else {"fields", "itemsize"}
    if not isinstance(obj, dict) or set(obj) != want:
        got = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
        raise _fail(error, where, path, f"must be an object with keys {sorted(want)}, "
                    f"got {got}")
    if top and obj["version"] != DESCRIPTION_VERSION:
        raise _fail(error, where, path, f"version {obj['version']!r}, this pyshm reads "
                    f"version {DESCRIPTION_VERSION}")
    itemsize = obj["itemsize"]
    if not _int(itemsize, 1, MAX_ITEMSIZE):
        raise _fail(error, where, path, f"itemsize {itemsize!r} must be an integer in "
                    f"1..{MAX_ITEMSIZE}")
    fields = obj["fields"]
    if not isinstance(fields, list) or not 1 <= len(fields) <= MAX_FIELDS:
        raise _fail(error, where, path, f"fields must be a list of 1..{MAX_FIELDS} entries")
    names: list[str] = []
    formats: list[Any] = []
    offsets: list[int] = []
    end = 0
    for i, f in enumerate(fields):
        fp = f"{path}.fields[{i}]"
        if not isinstance(f, dict) or set(f) != {"name", "offset", "format", "shape"}:
            raise _fail(error, where, fp, "must be an object with keys format, name, "
                        "offset, shape")
        name, offset, fmt, shape = f["name"], f["offset"], f["format"], f["shape"]
        if not isinstance(name, str) or not 1 <= len(name) <= MAX_NAME \
                or not name.isprintable() or name in names:
            raise _fail(error, where, fp, f"name {name!r} must be a unique printable "
                        f"string of 1..{MAX_NAME} characters")
        if not _int(offset, 0, itemsize - 1):
            raise _fail(error, where, fp, f"offset {offset!r} is outside the row "
                        f"({itemsize} bytes)")
        if not isinstance(shape, list) or len(shape) > MAX_DIMS \
                or not all(_int(d, 1, MAX_ITEMSIZE) for d in shape):
            raise _fail(error, where, fp, f"shape {shape!r} must be a list of at most "
                        f"{MAX_DIMS} positive integers")
        if isinstance(fmt, dict):
            if depth + 1 > MAX_DEPTH:
                raise _fail(error, where, fp, f"structures nest more than {MAX_DEPTH} deep")
            base = _build(fmt, depth + 1, fp + ".format", where, error)
        elif isinstance(fmt, str) and _SCALAR_RE.fullmatch(fmt):
            base = np.dtype(fmt)
        else:
            raise _fail(error, where, fp, f"format {fmt!r} is not a supported scalar "
                        f"format (e.g. '<f8', '<i8', '|S8', '|b1') or a structure")
        count = 1
        for d in shape:
            count *= d
        size = base.itemsize * count
        if offset < end:
            raise _fail(error, where, fp, f"starts at {offset}, inside the previous field "
                        f"(which ends at {end}); fields must be in offset order and not "
                        f"overlap")
        if offset + size > itemsize:
            raise _fail(error, where, fp, f"ends at {offset + size}, past the row's "
                        f"{itemsize} bytes")
        end = offset + size
        names.append(name)
        formats.append((base, tuple(shape)) if shape else base)
        offsets.append(offset)
    try:
        dt = np.dtype({"names": names, "formats": formats, "offsets": offsets,
                       "itemsize": itemsize})
    except (TypeError, ValueError) as exc:
        raise _fail(error, where, path, f"numpy refuses it: {exc}") from None
    return dt


def parse(text: str | bytes, where: str = "state region",
          error: type[Exception] = CorruptSegmentError) -> np.dtype:
    """The dtype of a canonical description; ``error`` names the first problem."""
    if isinstance(text, (bytes, bytearray, memoryview)):
        try:
            text = bytes(text).decode("ascii")
        except UnicodeDecodeError:
            raise error(f"{where}: dtype description is not ASCII text") from None
    if len(text) > 64 << 10:
        raise error(f"{where}: dtype description of {len(text)} bytes is too long")
    try:
        obj = json.loads(text)
    except ValueError as exc:
        raise error(f"{where}: dtype description is not valid JSON ({exc})") from None
    dt = _build(obj, 0, "", where, error)
    if _canonical_text(obj) != text:
        raise error(f"{where}: dtype description is not in canonical form (sorted keys, "
                    f"no spaces)")
    if _canonical_text(_describe(dt, 0)) != text:
        raise error(f"{where}: dtype description does not round-trip through numpy (fields "
                    f"out of offset order?)")
    return dt


def fields_summary(dt: np.dtype) -> list[str]:
    """One line per field: ``name  format  offset`` (for inspect/info output)."""
    out = []
    assert dt.fields is not None
    for name in dt.names or ():
        fdt, off = dt.fields[name][:2]
        if fdt.subdtype is not None:
            base, shape = fdt.subdtype
            fmt = f"{base.str if base.names is None else 'struct'}{list(shape)}"
        else:
            fmt = fdt.str if fdt.names is None else f"struct({', '.join(fdt.names)})"
        out.append(f"{name}: {fmt} @ {off}")
    return out
