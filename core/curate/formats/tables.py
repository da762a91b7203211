"""Tabular files: CSV row by row through a column mapping, Parquet by record batches, and Hugging Face
``save_to_disk`` folders."""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Iterable, Iterator

from core.curate.formats import limits
from core.curate.formats.records import (NEEDS_ANSWER, BadRecord, Parsed, ReadInfo, Rejected, Row, _from_csv_row,
                                         _parse, detect_record_format)
from core.curate.formats.sniffing import _open, detect_encoding
from core.curate.formats.writers import csv_cell_value
from core.errors import InvalidInput


# CSV columns recognised without a mapping (first match wins).
CSV_DEFAULTS = {
    "instruction": ["instruction", "prompt", "question", "query"],
    "input": ["input", "context"],
    "output": ["output", "response", "answer", "completion"],
    "system": ["system", "system_prompt"],
    "tags": ["tags"],
    "note": ["note"],
    "conversation": ["conversation", "messages"],
}
CSV_FIELDS = list(CSV_DEFAULTS)


def guess_csv_mapping(columns: list[str]) -> dict[str, str]:
    """Field -> column for the well-known column names of CSV_DEFAULTS (case and spaces ignored); the mapping
    form starts from it."""
    lower = {c.strip().lower(): c for c in columns}
    out = {}
    for name in CSV_FIELDS:
        found = next((lower[c] for c in CSV_DEFAULTS[name] if c in lower), None)
        if found is not None:
            out[name] = found
    return out


def csv_mapping(columns: list[str], mapping: dict | None = None) -> dict:
    """Field -> column for a CSV: the given ``mapping`` first, then well-known column names."""
    out = guess_csv_mapping(columns)
    for name in CSV_FIELDS:
        if mapping and mapping.get(name):
            if mapping[name] not in columns:
                raise InvalidInput(f"The CSV has no column {mapping[name]!r} (columns: {', '.join(columns)}).")
            out[name] = mapping[name]
    if "conversation" not in out and "instruction" not in out:
        raise InvalidInput("Map the CSV columns: instruction (and output, unless the file holds prompts only) "
                           "is needed "
                           f"(columns: {', '.join(columns)}).")
    return out


def csv_columns(path: str | Path) -> list[str]:
    """The header of a CSV file (for the mapping form)."""
    path = Path(path)
    with open(path, encoding=detect_encoding(path), newline="") as fh:
        return next(csv.reader(fh), [])


def _csv_rows(reader) -> Iterator[tuple[int, list | Rejected]]:
    """(line, cells) for each row that is not blank, (line, Rejected) for one the csv module cannot read (a field
    over the per-record limit, csv.field_size_limit); reading goes on after it."""
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            yield reader.line_num, Rejected(f"unreadable CSV row: {err}", reader.line_num)
            continue
        if any(cell.strip() for cell in row):
            yield reader.line_num, row


def _csv_header(fh, info: ReadInfo):
    """A csv reader on ``fh`` under the per-record limit, and the header (None for an empty file)."""
    info.container = "csv"
    csv.field_size_limit(limits.MAX_RECORD_BYTES)
    reader = csv.reader(fh)
    try:
        header = next(reader, None)
    except csv.Error as err:
        raise InvalidInput(f"The CSV header is unreadable: {err}.") from None
    if not header:
        info.empty = True
    return reader, header


def _csv_dicts(source: Path | bytes, info: ReadInfo) -> Iterator[Row | Rejected]:
    """Each CSV row as {column: cell} (None for a missing cell), with its line."""
    with _open(source, info.encoding, newline="") as fh:
        reader, header = _csv_header(fh, info)
        if not header:
            return
        any_row = False
        for line, row in _csv_rows(reader):
            any_row = True
            yield row if isinstance(row, Rejected) else Row(
                {col: row[i] if i < len(row) else None for i, col in enumerate(header)}, line)
        info.empty = not any_row


def _read_csv(path: Path, mapping: dict | None, info: ReadInfo) -> Iterator[Parsed | Rejected]:
    with _open(path, info.encoding, newline="") as fh:
        reader, header = _csv_header(fh, info)
        if not header:
            return
        cols = csv_mapping(header, mapping)
        index = {c: i for i, c in enumerate(header)}
        any_row = False
        for line, row in _csv_rows(reader):
            any_row = True
            if isinstance(row, Rejected):
                yield row
                continue
            if len(row) < len(header):
                cut = fh.read(1) == ""
                if cut:
                    info.ended_early = f"file ended early at line {line}"
                    yield Rejected(f"record cut off: {info.ended_early}", line)
                else:
                    yield Rejected(f"row has {len(row)} columns, the header has {len(header)}", line)
                continue
            raw = {name: csv_cell_value(row[index[col]]) for name, col in cols.items()}
            try:
                record = _from_csv_row(raw)
                yield Parsed(record, line, needs_answer=bool(record.pop(NEEDS_ANSWER, False)))
            except BadRecord as err:
                yield Rejected(str(err), line)
            info.bytes_read = min(info.total_bytes, info.bytes_read + sum(map(len, row)) + len(row))
        info.empty = not any_row


def _rows_to_records(rows: Iterable[dict], info: ReadInfo, fmt: str | None) -> Iterator[Parsed | Rejected]:
    n = 0
    for n, raw in enumerate(rows, 1):
        rfmt = fmt or detect_record_format(raw)
        if rfmt is None:
            raise InvalidInput("The dataset's columns match no known format "
                               f"(columns: {', '.join(raw)}); expected instruction/output, messages, "
                               "conversations or prompt/completion.")
        fmt = rfmt
        yield _parse(raw, rfmt, n, None, info)
    info.empty = n == 0


def _parquet_rows(source: Path | bytes, filename: str) -> Iterator[dict]:
    """The rows of a Parquet file as dicts, a record batch at a time."""
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source)
    except Exception as err:  # pyarrow raises several types for a damaged file
        raise InvalidInput(f"{filename} is not a readable Parquet file: {err}") from None

    def rows():
        for batch in pf.iter_batches(batch_size=2048):
            yield from batch.to_pylist()

    return rows()


def _read_parquet(path: Path, info: ReadInfo) -> Iterator[Parsed | Rejected]:
    info.container = "parquet"
    return _rows_to_records(_parquet_rows(path, path.name), info, None)


def _read_hf_disk(path: Path, info: ReadInfo) -> Iterator[Parsed | Rejected]:
    from datasets import Dataset, DatasetDict, load_from_disk

    info.container = "hf_disk"
    try:
        ds = load_from_disk(str(path))
    except Exception as err:  # datasets raises FileNotFoundError or its own errors
        raise InvalidInput(f"{path.name} is not a dataset saved with save_to_disk: {err}") from None
    splits = list(ds.values()) if isinstance(ds, DatasetDict) else [ds]

    def rows():
        for split in splits:
            assert isinstance(split, Dataset)
            yield from split

    return _rows_to_records(rows(), info, None)
