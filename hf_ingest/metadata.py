"""A row's other columns as JSON that PostgreSQL `jsonb`, SQLite and a JavaScript app all accept.

Every Arrow type has one documented shape (README, "Scene metadata"), and no value can fail an import:
- timestamps, dates and times: ISO 8601 strings (`2024-05-01T12:00:00+00:00`; a timestamp without a
  time zone is written without an offset, as stored); durations: ISO 8601 `PT<seconds>S`;
- decimals: strings (exact); integers beyond ±(2^53 - 1): strings (JavaScript numbers would round them);
- floats NaN and ±infinity: null (JSON has neither); NUL characters in strings: U+FFFD (jsonb rejects them);
- binary: `{"base64": ..., "bytes": n}` up to MAX_INLINE_BINARY bytes, else `{"base64": null, "bytes": n}`;
- lists, structs, nested lists of structs: arrays and objects; maps: objects (non-string keys as strings);
- dictionary-encoded columns: their values; `ClassLabel`: the id, and the label name in `<column>_name`.
A value whose JSON would exceed MAX_VALUE_JSON_BYTES is left out of that row (one warning per column),
so a stray text blob cannot bloat every scene.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

logger = logging.getLogger("hf_ingest.metadata")

MAX_SAFE_INTEGER = 2**53 - 1
MAX_INLINE_BINARY = 1024
MAX_VALUE_JSON_BYTES = 64 * 1024
JsonValue = Any


def json_value(value: Any) -> JsonValue:
    """`value` (as pyarrow's or datasets' `to_pylist` gives it) as plain JSON data."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        inline = base64.b64encode(data).decode("ascii") if len(data) <= MAX_INLINE_BINARY else None
        return {"base64": inline, "bytes": len(data)}
    if isinstance(value, dt.datetime):  # also pandas.Timestamp, whose isoformat keeps nanoseconds
        return value.isoformat()
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return _iso_duration(value)
    if isinstance(value, decimal.Decimal):
        return str(value) if value.is_finite() else None
    if isinstance(value, Mapping):
        return {json_value(k) if isinstance(k, str) else str(json_value(k)): json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        if value and all(isinstance(item, tuple) and len(item) == 2 for item in value) and isinstance(value, list):
            keys = [k for k, _ in value]
            if all(isinstance(k, (str, int)) for k in keys) and len(set(keys)) == len(keys):  # an Arrow map
                return {str(json_value(k)): json_value(v) for k, v in value}
        return [json_value(item) for item in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return json_value(value.item())
    if hasattr(value, "tolist") and callable(value.tolist):  # numpy arrays
        return json_value(value.tolist())
    return str(value)


def _iso_duration(value: dt.timedelta) -> str:
    nanoseconds = getattr(value, "value", None)  # pandas.Timedelta keeps nanoseconds
    if not isinstance(nanoseconds, int):
        nanoseconds = ((value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds) * 1_000
    sign = "-" if nanoseconds < 0 else ""
    seconds, fraction = divmod(abs(nanoseconds), 1_000_000_000)
    text = f"{seconds}.{fraction:09d}".rstrip("0").rstrip(".")
    return f"{sign}PT{text}S"


class MetadataColumns:
    """Turns one row's metadata columns into its scene's `metadata`, with label names for ClassLabel columns."""

    def __init__(self, features: Mapping[str, Any], columns: list[str]) -> None:
        self.columns = columns
        self._label_names: dict[str, Callable[[Any], Any]] = {}
        for name in columns:
            names = _label_names(features.get(name))
            if names is not None and f"{name}_name" not in features:
                self._label_names[name] = names
        self._warned: set[str] = set()

    def row(self, values: Mapping[str, Any]) -> dict[str, JsonValue]:
        out: dict[str, JsonValue] = {}
        for name in self.columns:
            if name not in values:
                continue
            try:
                value = json_value(values[name])
                if isinstance(value, (str, list, dict)) and len(json.dumps(value)) > MAX_VALUE_JSON_BYTES:
                    self._warn(name, f"a value over {MAX_VALUE_JSON_BYTES} bytes of JSON was left out")
                    continue
            except Exception as exc:  # noqa: BLE001 - a metadata value must never fail an import
                self._warn(name, f"a value could not be represented ({type(exc).__name__}) and was left out")
                continue
            out[name] = value
            if name in self._label_names:
                out[f"{name}_name"] = self._label_names[name](values[name])
        return out

    def _warn(self, column: str, what: str) -> None:
        if column not in self._warned:
            self._warned.add(column)
            logger.warning("metadata column %r: %s", column, what)


def _label_names(feature: Any) -> Callable[[Any], Any] | None:
    """For a ClassLabel (or a list of them), a function from ids to names; None for anything else."""
    from datasets import ClassLabel, LargeList, List

    if isinstance(feature, ClassLabel):
        return lambda label: _label_name(feature, label)
    inner = getattr(feature, "feature", None)
    if isinstance(feature, (List, LargeList)) and isinstance(inner, ClassLabel):
        return lambda labels: None if labels is None else [_label_name(inner, label) for label in labels]
    return None


def _label_name(feature: Any, label: Any) -> str | None:
    if not isinstance(label, int) or not 0 <= label < feature.num_classes:
        return None  # -1 is "no label" in datasets; anything else out of range is not a known class
    return str(feature.int2str(label))
