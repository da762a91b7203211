"""Dataset file formats: detect, stream-parse and write Alpaca, ShareGPT, chat, TRL prompt/completion, CSV,
Parquet and Hugging Face ``save_to_disk`` folders.

Every format is read into one normalised record (records). Reading streams: JSON Lines line by line, JSON arrays
element by element on a sliding buffer (jsonstream), CSV row by row, Parquet by record batches (tables), after
sniffing the encoding and format (sniffing). Memory stays bounded by the largest single record (limits).
``read_file`` yields ``Parsed`` (a good record) or ``Rejected`` (line and reason); the caller decides what to do
with them (readers). Writing, CSV formula safety included: writers.

The modules, lowest first: limits, records, sniffing, writers, jsonstream, tables, readers. Names with a leading
underscore are shared inside this package only; callers import the names below from ``core.curate.formats``.
The limits are not re-exported: they are read from ``core.curate.formats.limits`` at call time, so lower them
there (a test's monkeypatch) to change every reader at once.
"""
from core.curate.formats.limits import TOO_DEEP
from core.curate.formats.readers import read_file, read_rows
from core.curate.formats.records import (CHAT_ROLES, EXPORT_FORMATS, FILE_FORMATS, FORMAT_LABELS, NEEDS_ANSWER,
                                         PARSERS, RECORD_FORMATS, SHAREGPT_ROLES, BadRecord, Parsed, ReadInfo,
                                         Rejected, Row, detect_record_format, json_value, make_record,
                                         needs_answer_record, parse_record, repair_sharegpt_turns, validate_turns)
from core.curate.formats.sniffing import SPLIT_NAMES, detect_encoding, detect_format, split_files
from core.curate.formats.tables import CSV_DEFAULTS, CSV_FIELDS, csv_columns, csv_mapping, guess_csv_mapping
from core.curate.formats.writers import (FORMULA_START, chat_messages, csv_cell_value, csv_safe_cell, export_suffix,
                                         to_alpaca, to_chat, to_csv_row, to_prompt_completion, to_sharegpt,
                                         write_records)

__all__ = [
    "TOO_DEEP", "read_file", "read_rows",
    "CHAT_ROLES", "EXPORT_FORMATS", "FILE_FORMATS", "FORMAT_LABELS", "NEEDS_ANSWER", "PARSERS", "RECORD_FORMATS",
    "SHAREGPT_ROLES", "BadRecord", "Parsed", "ReadInfo", "Rejected", "Row", "detect_record_format", "json_value",
    "make_record", "needs_answer_record", "parse_record", "repair_sharegpt_turns", "validate_turns",
    "SPLIT_NAMES", "detect_encoding", "detect_format", "split_files",
    "CSV_DEFAULTS", "CSV_FIELDS", "csv_columns", "csv_mapping", "guess_csv_mapping",
    "FORMULA_START", "chat_messages", "csv_cell_value", "csv_safe_cell", "export_suffix", "to_alpaca", "to_chat",
    "to_csv_row", "to_prompt_completion", "to_sharegpt", "write_records",
]
