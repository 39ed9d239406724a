"""Many records of one shape as a few columns: how a snapshot stores every key's state.

A snapshot of a million keys as a million small dicts of small arrays costs a pickled object
and a tensor record for each, several times the state's own size while it is written and
read. :func:`to_columns` turns a list of records of one shape (dicts of numbers, strings,
lists and arrays, as :meth:`~anomalyd.keystates.KeyState.get_state` gives) into one array or
list per field; :func:`from_columns` gives the records back, value for value (ints as ints,
floats as floats, arrays with their dtype and shape; an array comes back as a view).

>>> rows = [{"n": 1, "x": np.arange(2.0), "t": None}, {"n": 2, "x": np.arange(3.0), "t": "a"}]
>>> packed = to_columns(rows)
>>> packed["n"]
{'kind': 'int', 'data': array([1, 2])}
>>> back = from_columns(packed, 2)
>>> [(r["n"], r["x"].tolist(), r["t"]) for r in back]
[(1, [0.0, 1.0], None), (2, [0.0, 1.0, 2.0], 'a')]
"""

from __future__ import annotations

from typing import Any

import numpy as np

_SCALARS = {bool: ("bool", np.bool_), int: ("int", np.int64), float: ("float", np.float64)}


def to_columns(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Records with the same fields (the first record's) as one column per field."""
    fields = list(rows[0]) if rows else []
    if any(list(row) != fields for row in rows):
        raise ValueError("records of one shape only: the fields differ")
    return {name: _column([row[name] for row in rows]) for name in fields}


def from_columns(columns: dict[str, Any], n: int) -> list[dict[str, Any]]:
    """The ``n`` records :func:`to_columns` was given."""
    rows: list[dict[str, Any]] = [{} for _ in range(n)]
    for name, column in columns.items():
        for row, value in zip(rows, _values(column, n), strict=True):
            row[name] = value
    return rows


def _column(values: list[Any]) -> dict[str, Any]:
    first = type(values[0]) if values else None
    if first in _SCALARS and all(type(v) is first for v in values):
        kind, dtype = _SCALARS[first]
        return {"kind": kind, "data": np.array(values, dtype=dtype)}
    if first is str and all(type(v) is str for v in values):
        return {"kind": "str", "data": list(values)}
    if all(isinstance(v, np.ndarray) for v in values):
        return _arrays(values)
    if first is dict and all(type(v) is dict and list(v) == list(values[0]) for v in values):
        return {"kind": "dict", "data": to_columns(values)}
    if first is list and all(type(v) is list and len(v) == len(values[0]) for v in values):
        width = len(values[0])
        return {"kind": "list", "data": [_column([v[i] for v in values]) for i in range(width)]}
    if values and any(v is None for v in values) and not all(v is None for v in values):
        present = [v is not None for v in values]
        kept = _column([v for v in values if v is not None])
        return {"kind": "optional", "data": {"present": np.array(present), "values": kept}}
    return {"kind": "object", "data": list(values)}


def _arrays(values: list[np.ndarray]) -> dict[str, Any]:
    dtype, tail = values[0].dtype, values[0].shape[1:]
    if not all(v.dtype == dtype and v.ndim >= 1 and v.shape[1:] == tail for v in values):
        return {"kind": "object", "data": list(values)}
    lengths = np.array([len(v) for v in values], dtype=np.int64)
    data = np.concatenate(values) if values else np.zeros((0, *tail), dtype=dtype)
    return {"kind": "arrays", "data": {"lengths": lengths, "values": data}}


def _values(column: dict[str, Any], n: int) -> list[Any]:
    kind, data = column["kind"], column["data"]
    if kind in ("bool", "int", "float"):
        return list(np.asarray(data).tolist())
    if kind in ("str", "object"):
        return list(data)
    if kind == "arrays":
        values, lengths = np.asarray(data["values"]), np.asarray(data["lengths"]).tolist()
        starts = np.concatenate(([0], np.cumsum(lengths)[:-1])).tolist() if lengths else []
        return [values[start : start + length] for start, length in zip(starts, lengths, strict=True)]
    if kind == "dict":
        return from_columns(data, n)
    if kind == "list":
        parts = [_values(part, n) for part in data]
        return [list(items) for items in zip(*parts, strict=True)] if parts else [[] for _ in range(n)]
    if kind == "optional":
        present = np.asarray(data["present"]).tolist()
        kept = iter(_values(data["values"], sum(present)))
        return [next(kept) if here else None for here in present]
    raise ValueError(f"unknown column kind {kind!r}")
