"""Names users give things (dataset and preference versions, eval sets, runs, exports): the one rule for creating
them and the one function that turns any name into a safe file name.

A name is checked when it is created (``check_name``): no control characters, at most MAX_NAME_CHARS characters.
Names saved before that rule existed are never refused or changed; wherever a name becomes part of a file or
folder name it goes through ``safe_file_name``, so even an old 200-character name or one holding a NUL byte gives a
file name every filesystem takes.
"""
from __future__ import annotations

import re
import unicodedata

from core.errors import InvalidInput

MAX_NAME_CHARS = 100
"""The longest name a user may give anything (characters)."""
FILE_NAME_BYTES = 100
"""The longest stem ``safe_file_name`` makes, in bytes of UTF-8: far below the 255 bytes filesystems allow, so a
prefix, a suffix or a temporary name (".NAME.tmp") still fits."""

_UNSAFE = re.compile(r'[/\\<>:"|?*]+')  # path separators, and what Windows (a browser's download folder) refuses


def _is_control(ch: str) -> bool:
    """Control, format (bidirectional overrides, zero-width), surrogate, private-use and unassigned characters."""
    return unicodedata.category(ch).startswith("C")


def check_name(name: str | None, what: str) -> str:
    """``name`` stripped, or InvalidInput saying why ``what`` ("dataset version", "eval set"...) cannot have it."""
    name = (name or "").strip()
    article = "An" if what[:1].lower() in "aeiou" else "A"
    if not name:
        raise InvalidInput(f"{article} {what} needs a name.")
    bad = sorted({repr(ch)[1:-1] for ch in name if _is_control(ch)})
    if bad:
        raise InvalidInput(f"{article} {what} name cannot hold control characters (line breaks, tabs, NUL...); "
                           f"this one holds {', '.join(bad)}.")
    if len(name) > MAX_NAME_CHARS:
        raise InvalidInput(f"{article} {what} name has at most {MAX_NAME_CHARS} characters; this one has {len(name)}.")
    return name


def safe_file_name(text: str | None, suffix: str = "", *, default: str = "unnamed",
                   max_bytes: int = FILE_NAME_BYTES) -> str:
    """``text`` as a file name, then ``suffix`` (an extension the caller chose, e.g. "-csv.csv").

    Control characters (NUL, line breaks, bidirectional overrides) are dropped; path separators and characters
    Windows refuses become "_"; runs of white space become one "_"; leading and trailing dots, dashes and "_" go
    (no hidden file, never "." or ".."); the stem is cut to ``max_bytes`` of UTF-8 on a character boundary; an
    empty result is ``default``."""
    stem = unicodedata.normalize("NFC", str(text or ""))
    stem = "".join(ch for ch in stem if not _is_control(ch) or ch in "\t\n\r")
    stem = "_".join(_UNSAFE.sub("_", stem).split())
    stem = stem.encode("utf-8")[:max_bytes].decode("utf-8", errors="ignore")
    stem = stem.strip("._- ") or default
    return stem + suffix
