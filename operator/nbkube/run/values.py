"""The values an executed notebook records, read as scrapbook writes them (pure: no Kubernetes here).

`scrapbook.glue(name, value)` puts a display output in the cell whose data has one key,
`application/scrapbook.scrap.<encoder>+json` (encoder `text` for a str, `json` for numbers, bools,
lists and dicts, `pandas` for a DataFrame as base64 parquet), holding the payload
`{"name": ..., "data": ..., "encoder": ..., "version": 1}`, and the output's metadata
`{"scrapbook": {"name": ..., "data": true, "display": false}}`. With `display=True` it adds a second,
ordinary output (metadata `"data": false, "display": true`) that carries no value. papermill's older
`pm.record(name, value)` wrote `application/papermill.record+json` with `{name: value}`; it is read too.
A later record of a name replaces the earlier value (it keeps its first place), as scrapbook reads it.

The package-free way writes the same output by hand, so scrapbook reads it back as well::

    from IPython.display import display
    display({"application/scrapbook.scrap.json+json":
             {"name": "accuracy", "data": 0.93, "encoder": "json", "version": 1}}, raw=True)

What a run's status keeps is bounded: scalars (numbers, bools) and strings, at most MAX_VALUES
names of at most MAX_NAME characters, strings cut to MAX_STRING characters. A list, a dict, a
DataFrame or a null is left out, a non-finite float or an integer past int64 turned into a string,
with a note; nothing here ever fails a run.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

SCRAP_PREFIX = "application/scrapbook.scrap."
SCRAP_SUFFIX = "+json"
PAPERMILL_RECORD = "application/papermill.record+json"
MAX_VALUES = 32
"""Names a run's status keeps; the others are counted in valuesOmitted."""
MAX_NAME = 64
MAX_STRING = 256
"""A recorded string longer than this is cut (with a note)."""
MAX_NOTES = 8

Scalar = str | int | float | bool
_INT64 = 2**63


@dataclass
class RecordedValues:
    """What a notebook recorded, bounded: `omitted` names left out, `notes` why (at most MAX_NOTES)."""

    values: dict[str, Scalar] = field(default_factory=dict)
    omitted: int = 0
    notes: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        if len(self.notes) < MAX_NOTES and text not in self.notes:
            self.notes.append(text)


def scrap_mime(encoder: str = "json") -> str:
    """The mime type scrapbook writes a value of `encoder` under."""
    return f"{SCRAP_PREFIX}{encoder}{SCRAP_SUFFIX}"


def scrap_output(name: str, value: Any, encoder: str = "json") -> dict[str, Any]:
    """The display output `scrapbook.glue(name, value)` writes (for tests and for documentation)."""
    return {
        "output_type": "display_data",
        "data": {scrap_mime(encoder): {"name": name, "data": value, "encoder": encoder, "version": 1}},
        "metadata": {"scrapbook": {"name": name, "data": True, "display": False}},
    }


def _records(notebook: Mapping[str, Any]) -> Iterator[tuple[str, str, Any]]:
    """(name, encoder, data) of every record in the notebook's outputs, in order."""
    for cell in notebook.get("cells") or []:
        if not isinstance(cell, Mapping):
            continue
        for output in cell.get("outputs") or []:
            if not isinstance(output, Mapping) or output.get("output_type") not in (
                "display_data",
                "execute_result",
            ):
                continue
            data = output.get("data")
            if not isinstance(data, Mapping):
                continue
            for mime, payload in data.items():
                if not isinstance(mime, str):
                    continue
                if mime.startswith(SCRAP_PREFIX) and mime.endswith(SCRAP_SUFFIX):
                    if isinstance(payload, Mapping) and isinstance(payload.get("name"), str):
                        encoder = payload.get("encoder")
                        if not isinstance(encoder, str):
                            encoder = mime[len(SCRAP_PREFIX) : -len(SCRAP_SUFFIX)]
                        yield payload["name"], encoder, payload.get("data")
                elif mime == PAPERMILL_RECORD and isinstance(payload, Mapping):
                    for name, value in payload.items():
                        if isinstance(name, str):
                            yield name, "json", value


def _scalar(name: str, encoder: str, data: Any, out: RecordedValues) -> Scalar | None:
    """One record's value as the status holds it, None when it is left out; a note when it is cut or
    left out."""
    if encoder == "text":
        data = data if isinstance(data, str) else _as_text(data)
    elif encoder == "json":
        if isinstance(data, str):  # scrapbook's json decoder parses a string that is JSON
            try:
                data = json.loads(data)
            except ValueError:
                pass
    else:
        out.note(f"{name}: a value of encoder {encoder[:32]!r} is not a scalar: left out")
        return None
    if data is None:  # (a merge patch would delete a null; a NaN may arrive as null too)
        out.note(f"{name}: null is not kept: left out")
        return None
    if isinstance(data, bool):
        return data
    if isinstance(data, int):
        if -_INT64 <= data < _INT64:
            return data
        out.note(f"{name}: an integer past 64 bits: kept as a string")
        return _cut(name, str(data), out)
    if isinstance(data, float):
        if math.isfinite(data):
            return data
        out.note(f"{name}: {data} is not a JSON number: kept as a string")
        return str(data)
    if isinstance(data, str):
        return _cut(name, data, out)
    kind = "a list" if isinstance(data, list) else "a dict" if isinstance(data, Mapping) else "a value"
    out.note(f"{name}: {kind} is not a scalar: left out")
    return None


def _as_text(data: Any) -> str:
    try:
        return json.dumps(data)[: MAX_STRING + 1]
    except (TypeError, ValueError):
        return "?"


def _cut(name: str, text: str, out: RecordedValues) -> str:
    if len(text) <= MAX_STRING:
        return text
    out.note(f"{name}: a string of {len(text)} characters: cut to {MAX_STRING}")
    return text[:MAX_STRING]


def recorded_values(notebook: Mapping[str, Any]) -> RecordedValues:
    """The values `notebook` (an nbformat v4 notebook, executed) records, bounded for a run's status."""
    out = RecordedValues()
    seen: set[str] = set()
    for name, encoder, data in _records(notebook):
        seen.add(name)
        if not name or len(name) > MAX_NAME:
            out.note(f"a name of {len(name)} characters (1 to {MAX_NAME} are kept): left out")
            continue
        if name not in out.values and len(out.values) >= MAX_VALUES:
            out.note(f"more than {MAX_VALUES} names recorded: the first {MAX_VALUES} are kept")
            continue
        value = _scalar(name, encoder, data, out)
        if value is not None:
            out.values[name] = value
    out.omitted = len(seen - out.values.keys())
    return out
