"""The reader's limits, shared by every container (one knob each, read at call time so a test can lower them on
this module), and the reasons a record breaking them is rejected with."""
from __future__ import annotations

import json


CHUNK = 1 << 20  # bytes read at a time
# One record may be at most this big: a JSON Lines line, a JSON array element (counted in characters) or a CSV
# field. A bigger one is rejected with its size and reading goes on with the next record, so memory stays a few
# times this limit whatever the file holds.
MAX_RECORD_BYTES = 16 << 20


TOO_DEEP = "value nested too deeply (JSON nesting deeper than Python's recursion limit)"


def _json_error(err: Exception) -> str:
    """The reason for a JSON value that could not be decoded. Besides JSONDecodeError, json raises a plain
    ValueError for a number with more digits than Python converts (4,300) and RecursionError for deep nesting."""
    if isinstance(err, RecursionError):
        return TOO_DEEP
    if isinstance(err, json.JSONDecodeError):
        return f"malformed JSON: {err.msg}"
    return f"unreadable JSON value: {str(err).split(';')[0]}"


def _size_text(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB" if n >= 1 << 20 else f"{n:,} bytes"


def _too_big(size: int) -> str:
    return (f"record too large: {_size_text(size)}, over the limit of {_size_text(MAX_RECORD_BYTES)} per record "
            "(split it, or shorten it)")
