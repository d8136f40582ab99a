"""JSON text exactly as Go's ``encoding/json`` writes it.

containers/storage and tar-split write compact JSON with Go's escaping rules; files we write must
read back identically in Go and compare equal byte for byte with files Go writes. Python's encoder
differs in four places, fixed here on its output:

* ``<``, ``>`` and ``&`` are escaped as ``\\u003c``, ``\\u003e``, ``\\u0026`` (HTML-safe output);
* U+2028 and U+2029 are escaped (they end lines in JavaScript);
* backspace and form feed are written as ``\\u0008`` and ``\\u000c`` (Go before 1.22, which built
  containers/storage 1.43, has no short forms for them);
* non-ASCII text is written as UTF-8, not as ``\\u`` escapes.

Map keys are sorted by Go; callers sort the maps they pass (only free-form maps such as layer
flags are maps in Go; records are structs whose key order is fixed by the caller).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["dumps", "sort_maps"]

# An escaped backslash is matched first, so the "b" in "\\b" (a backslash, then a letter b) is
# never taken for the backspace escape.
_GO_DIFFERENCES = re.compile(r"\\\\|\\b|\\f|[<>&\u2028\u2029]")
_REPLACEMENTS = {
    "\\\\": "\\\\",
    "\\b": "\\u0008",
    "\\f": "\\u000c",
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}


def _go_fix(match: re.Match[str]) -> str:
    return _REPLACEMENTS[match.group(0)]


def _default(value: object) -> Any:
    # Layer records hold deep-frozen flags: mappings that are not dicts, and tuples.
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps(value: Any) -> str:
    """Encode ``value`` as compact JSON with Go's escaping."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=_default)
    return _GO_DIFFERENCES.sub(_go_fix, text)


def sort_maps(value: Any) -> Any:
    """Return ``value`` with every mapping's keys in Go's order (sorted), recursively."""
    if isinstance(value, Mapping):
        return {key: sort_maps(value[key]) for key in sorted(value)}
    if isinstance(value, list | tuple):
        return [sort_maps(item) for item in value]
    return value
