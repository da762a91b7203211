"""JSON Lines line by line and JSON arrays element by element with ``json.JSONDecoder.raw_decode`` on a sliding
buffer (exact line numbers, and it can resynchronise after a malformed element, which a streaming event parser
cannot). Memory stays bounded by the per-record limit (core.curate.formats.limits)."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable, Iterator

from core.curate.formats import limits
from core.curate.formats.limits import _json_error, _too_big
from core.curate.formats.records import ReadInfo, Rejected
from core.curate.formats.sniffing import _first_char, _open, _skip_ws


def _read_json(source: Path | bytes, convert: Callable, info: ReadInfo) -> Iterator:
    """The values of a JSON array or JSON Lines file, each passed through ``convert(value, line, byte)``."""
    if _first_char(source, info.encoding) == "[":
        info.container = "json_array"
        return _read_json_array(source, convert, info)
    info.container = "jsonl"
    return _read_jsonl(source, convert, info)


def _read_jsonl(path: Path | bytes, convert: Callable, info: ReadInfo) -> Iterator:
    any_line = False
    lineno = 0
    for text, offset, size in _lines(path, info):
        lineno += 1
        if text is None:  # longer than the per-record limit: skipped unread
            any_line = True
            yield Rejected(_too_big(size), lineno, offset)
            continue
        if isinstance(text, bytes):
            text = text.decode(info.encoding, errors="replace")
        if lineno == 1:
            text = text.lstrip("\ufeff")
        if not text.strip():
            continue
        any_line = True
        complete = text.endswith("\n")
        try:
            raw = json.loads(text)
        except (ValueError, RecursionError) as err:
            if not complete and isinstance(err, json.JSONDecodeError):
                info.ended_early = f"file ended early at line {lineno}" + (f" / byte {offset}" if offset else "")
                yield Rejected(f"record cut off: {info.ended_early}", lineno, offset)
            elif isinstance(err, json.JSONDecodeError):
                yield Rejected(f"malformed JSON: {err.msg} (column {err.colno})", lineno)
            else:
                yield Rejected(_json_error(err), lineno)
            continue
        yield convert(raw, lineno, None)
    info.empty = not any_line


def _lines(path: Path | bytes, info: ReadInfo) -> Iterator[tuple[bytes | str | None, int | None, int]]:
    """(line, byte offset, size) for each line; a line over limits.MAX_RECORD_BYTES comes as (None, offset, size) and
    is skipped in pieces, never held whole. UTF-16 cannot be split on b"\n": its lines come from the text layer
    (offsets are then None)."""
    utf16 = info.encoding == "utf-16"
    offset = 0
    with (_open(path, "utf-16", newline="") if utf16 else _open(path, buffering=limits.CHUNK)) as fh:
        newline = "\n" if utf16 else b"\n"
        while True:
            line = fh.readline(limits.MAX_RECORD_BYTES + 1)
            if not line:
                return
            size = len(line)
            if size > limits.MAX_RECORD_BYTES and not line.endswith(newline):
                del line
                while (piece := fh.readline(limits.CHUNK)) and not piece.endswith(newline):
                    size += len(piece)
                size += len(piece)
                yield None, None if utf16 else offset, size
            else:
                yield line, None if utf16 else offset, size
            offset += size * (2 if utf16 else 1)
            info.bytes_read = min(info.total_bytes, offset) if info.total_bytes else offset


class _ValueEnd:
    """Finds where one JSON value ends, fed text piece by piece: bracket depth outside strings, strings with
    their escapes, or a bare scalar up to the next comma or bracket. Only used after ``raw_decode`` failed, to
    step over a malformed, too deep or too large element to the next one. Linear in the text and constant in
    memory (str.find-style searches; no backtracking regex, no copy of the text)."""

    _SPECIAL = re.compile(r'["{}\[\]]')
    _IN_STRING = re.compile(r'["\\]')
    _SCALAR_END = re.compile(r"[,\]}\s]")

    def __init__(self) -> None:
        self.depth = 0
        self.in_string = False
        self.escape = False  # a backslash ended the previous piece
        self.scalar = False
        self.started = False

    def feed(self, text: str, pos: int) -> int | None:
        """The index just past the value's end in ``text`` (scanning from ``pos``), or None if it goes on."""
        n = len(text)
        while True:
            if self.escape:
                if pos >= n:
                    return None
                pos, self.escape = pos + 1, False
            if not self.started:
                pos = _skip_ws(text, pos)
                if pos >= n:
                    return None
                self.started = True
                self.scalar = text[pos] not in '"{['
            if self.scalar:
                m = self._SCALAR_END.search(text, pos)
                return None if m is None else m.start()
            if self.in_string:
                m = self._IN_STRING.search(text, pos)
                if m is None:
                    return None
                if m.group() == "\\":
                    pos = m.end()
                    self.escape = True
                    continue
                self.in_string, pos = False, m.end()
                if self.depth == 0:
                    return pos  # the value was a string
                continue
            m = self._SPECIAL.search(text, pos)
            if m is None:
                return None
            ch, pos = m.group(), m.end()
            if ch == '"':
                self.in_string = True
                continue
            self.depth += 1 if ch in "{[" else -1
            if self.depth <= 0:
                return pos


def _element_end(buf: str, start: int) -> int | None:
    """End of the JSON value starting at ``start`` (ignoring brackets in strings), or None if it is cut off."""
    return _ValueEnd().feed(buf, start)


def _read_json_array(path: Path | bytes, convert: Callable, info: ReadInfo) -> Iterator:
    """Elements of a top-level JSON array, decoded one at a time from a sliding text buffer.

    The buffer holds one chunk plus the element being read. An element that does not decode is stepped over
    with ``_ValueEnd`` (its scan resumes where the last refill stopped, so a big element costs linear time); an
    element over limits.MAX_RECORD_BYTES is rejected and skipped chunk by chunk without being held."""
    decoder = json.JSONDecoder()
    enc = "utf-16" if info.encoding == "utf-16" else info.encoding
    width = 2 if enc == "utf-16" else 1
    index = 0
    with _open(path, enc, errors="replace", newline="") as fh:
        buf = fh.read(limits.CHUNK).lstrip("\ufeff")
        eof = len(buf) == 0
        pos = _skip_ws(buf, 0)
        if pos >= len(buf) or buf[pos] != "[":
            yield Rejected("the file does not start with a JSON array", 1)
            return
        pos += 1
        line = 1 + buf.count("\n", 0, pos)  # line number at ``pos``
        consumed = 0  # characters dropped from the front of ``buf``
        scan: _ValueEnd | None = None  # the scan of the current element after raw_decode failed on it
        scanned = 0  # characters of the current element that ``scan`` has seen
        while True:
            start = _skip_ws(buf, pos)
            if start < len(buf) and buf[start] == ",":
                start = _skip_ws(buf, start + 1)
            if start < len(buf) and buf[start] == "]":
                info.bytes_read = info.total_bytes
                info.empty = index == 0
                return
            need_more = start >= len(buf)
            if not need_more:
                rec_line = line + buf.count("\n", pos, start)
                here = (start + consumed) * width
                end = None
                if scan is not None:  # the element went on past the buffer: scan on, decode once it is whole
                    end = scan.feed(buf, start + scanned)
                    scanned = len(buf) - start
                    if end is not None:
                        scan = None
                if scan is None:
                    try:
                        value, end = decoder.raw_decode(buf, start)
                    except (ValueError, RecursionError) as err:
                        scan = _ValueEnd()
                        end = scan.feed(buf, start)
                        scanned = len(buf) - start
                        if end is not None:  # a complete element that is not valid JSON: skip just it
                            where = err.pos if isinstance(err, json.JSONDecodeError) else start
                            yield Rejected(_json_error(err), line + buf.count("\n", pos, where), here)
                            index += 1
                            line, pos, scan = rec_line + buf.count("\n", start, end), end, None
                            continue
                    else:
                        index += 1
                        line, pos = rec_line + buf.count("\n", start, end), end
                        info.bytes_read = min(info.total_bytes, (consumed + end) * width)
                        if end - start > limits.CHUNK:  # a big element: drop its text before the caller works on it
                            buf, consumed, pos = buf[end:], consumed + end, 0
                        yield convert(value, rec_line, here)
                        del value
                        continue
                # The element is cut off by the end of the buffer.
                if eof:
                    info.ended_early = f"file ended early at line {rec_line} / byte {here}"
                    yield Rejected(f"record cut off: {info.ended_early}", rec_line, here)
                    return
                if len(buf) - start > limits.MAX_RECORD_BYTES:
                    size, newlines, buf, eof = _skip_value(fh, scan, buf[start:])
                    if buf is None:
                        info.ended_early = f"file ended early at line {rec_line} / byte {here}"
                        yield Rejected(f"record cut off: {info.ended_early}", rec_line, here)
                        return
                    yield Rejected(_too_big(size), rec_line, here)
                    index += 1
                    consumed += start + size
                    line, pos, scan = rec_line + newlines, 0, None
                    info.bytes_read = min(info.total_bytes, consumed * width)
                    continue
                need_more = True
            if eof:
                if index == 0:
                    info.empty = True
                info.ended_early = (f"file ended early at line {line + buf.count(chr(10), pos)} "
                                    "(the array is not closed)")
                if index:
                    yield Rejected(f"record cut off: {info.ended_early}", line + buf.count("\n", pos))
                return
            # Keep only the unread part, then read on: the buffer holds one chunk plus one element at most.
            line += buf.count("\n", pos, start)
            consumed += start
            more = fh.read(limits.CHUNK)
            eof = not more
            buf, pos = buf[start:] + more, 0


def _skip_value(fh, scan: _ValueEnd, seen: str) -> tuple[int, int, str | None, bool]:
    """Read on past the end of an element too large to keep: ``scan`` has already seen ``seen`` (the element's
    start). Returns (its size in characters, newlines in it, the text after it, eof); the text is None when the
    file ended inside the element. Holds one chunk at a time."""
    size, newlines = len(seen), seen.count("\n")
    del seen
    while True:
        piece = fh.read(limits.CHUNK)
        if not piece:
            return size, newlines, None, True
        end = scan.feed(piece, 0)
        if end is not None:
            return size + end, newlines + piece.count("\n", 0, end), piece[end:], False
        size += len(piece)
        newlines += piece.count("\n")
