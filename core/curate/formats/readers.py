"""The two entry points that read a file: ``read_file`` (examples, as normalised records) and ``read_rows`` (raw
rows for the other importers), each picking the reader of the file's container."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

from core.curate.formats.jsonstream import _read_json
from core.curate.formats.records import FILE_FORMATS, Parsed, ReadInfo, Rejected, Row, _parse
from core.curate.formats.sniffing import _size, detect_encoding, detect_format, split_files
from core.curate.formats.tables import _csv_dicts, _parquet_rows, _read_csv, _read_hf_disk, _read_parquet
from core.errors import InvalidInput


def read_file(path: str | Path, fmt: str | None = None, mapping: dict | None = None,
              info: ReadInfo | None = None, repair: bool = False) -> Iterator[Parsed | Rejected]:
    """Stream the records of ``path``. ``fmt`` None detects it; ``mapping`` maps CSV fields to columns;
    ``repair`` applies FastChat's rule to ShareGPT conversations (Parsed.repaired says what it dropped)."""
    path = Path(path)
    info = info if info is not None else ReadInfo()
    info.repair_sharegpt = repair
    fmt = fmt or detect_format(path)
    if fmt not in FILE_FORMATS:
        raise InvalidInput(f"Unknown format {fmt!r}; choose one of: {', '.join(FILE_FORMATS)}.")
    info.format = fmt
    if fmt == "hf_disk":
        return _read_hf_disk(path, info)
    if path.is_dir():
        return _read_split_files(split_files(path), fmt, mapping, info, repair)
    if not path.exists():
        raise InvalidInput(f"No file {path}.")
    info.total_bytes = path.stat().st_size
    if fmt == "parquet":
        return _read_parquet(path, info)
    if info.total_bytes == 0:
        info.empty = True
        return iter(())
    info.encoding = detect_encoding(path)
    if fmt == "csv":
        return _read_csv(path, mapping, info)
    return _read_json(path, lambda raw, line, byte: _parse(raw, fmt, line, byte, info), info)


def _read_split_files(files: list[Path], fmt: str, mapping: dict | None, info: ReadInfo, repair: bool
                      ) -> Iterator[Parsed | Rejected]:
    """The records of each split file in turn; a rejection names its file."""
    info.total_bytes = sum(f.stat().st_size for f in files)
    done, seen = 0, False
    for f in files:
        part = ReadInfo()
        for item in read_file(f, fmt, mapping, part, repair):
            if isinstance(item, Rejected):
                item.reason = f"{f.name}: {item.reason}"
            info.bytes_read, seen = done + part.bytes_read, True
            yield item
        done += part.total_bytes
        info.encoding, info.container = part.encoding, part.container
        info.ended_early = info.ended_early or (f"{f.name}: {part.ended_early}" if part.ended_early else "")
    info.empty = not seen


def read_rows(source: Path | bytes, filename: str, info: ReadInfo | None = None) -> Iterator[Row | Rejected]:
    """The raw rows of a JSON Lines, JSON array, CSV or Parquet file (told apart by ``filename``'s extension and
    the first character), read by the code that reads examples and so under the same limits: limits.MAX_RECORD_BYTES per
    record or CSV field, and the JSON nesting Python's decoder takes. Preference pairs and eval-set prompts are
    imported through it. A row that breaks a limit or is not JSON comes as Rejected with its line and reason."""
    info = info if info is not None else ReadInfo()
    suffix = Path(filename).suffix.lower()
    info.total_bytes = _size(source)
    if suffix in (".parquet", ".pq"):
        info.container = "parquet"
        return (Row(raw, n) for n, raw in enumerate(_parquet_rows(source, filename), 1))
    if info.total_bytes == 0:
        info.empty = True
        return iter(())
    info.encoding = detect_encoding(source)
    if suffix == ".csv":
        return _csv_dicts(source, info)
    return _read_json(source, Row, info)
