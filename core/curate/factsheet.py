"""A written fact sheet (Markdown) read as data: the demo's one source of phone lines, web pages and time limits.

The sheet is for people first (it is the demo project's guidelines, shown beside the editor), so it stays plain
Markdown: a few tables whose first column is a ``key`` and whose last column says whether the fact is checked.
The demo generator (``tools.demogen``) fills every answer from these values, so the 1,000 examples cannot
disagree with the sheet; the seed turns the ``check = yes`` rows into the project's facts to check
(``facts_to_check``), from which eval prompts get their automatic checks (core.evaluate.checks).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

VALUE_COLUMNS = ("number", "address", "value")  # the column holding the fact itself, whatever the table calls it


@dataclass
class FactRow:
    key: str
    section: str
    label: str  # what the fact is about ("Power cuts and damaged electricity cables (or dial 105)")
    value: str  # the exact text an answer gives ("0800 555 0105")
    check: bool


@dataclass
class FactSheet:
    text: str
    rows: list[FactRow] = field(default_factory=list)

    @property
    def values(self) -> dict[str, str]:
        """key -> value, what templates are filled with."""
        return {r.key: r.value for r in self.rows}

    def checked(self) -> list[FactRow]:
        return [r for r in self.rows if r.check]


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def parse_fact_sheet(text: str) -> FactSheet:
    """Read every table with a ``key`` first column, a value column (number/address/value) and a ``check``
    column. Raises ValueError on a duplicate key or a table without a value column: the sheet is hand-written,
    and a silently dropped fact would make answers and checks disagree."""
    sheet = FactSheet(text=text)
    section, header = "", None
    for line in text.splitlines():
        if line.startswith("#"):
            section, header = line.lstrip("#").strip(), None
            continue
        if not line.strip().startswith("|"):
            header = None
            continue
        cells = _cells(line)
        if header is None:
            header = [c.lower() for c in cells]
            if header[0] != "key":
                header = ["-"]  # a table that is not a fact table
            elif not any(c in header for c in VALUE_COLUMNS) or "check" not in header:
                raise ValueError(f"Fact table under {section!r} needs a value column ({'/'.join(VALUE_COLUMNS)}) "
                                 "and a check column.")
            continue
        if header == ["-"] or set(line.replace("|", "").strip()) <= set("-: "):
            continue
        row = dict(zip(header, cells))
        value_col = next(c for c in VALUE_COLUMNS if c in header)
        key = row["key"]
        if key in sheet.values:
            raise ValueError(f"Fact {key!r} appears twice in the fact sheet.")
        label = row.get(header[1], "") if len(header) > 2 else ""
        sheet.rows.append(FactRow(key=key, section=section, label=label, value=row[value_col],
                                  check=row.get("check", "").lower() == "yes"))
    return sheet


def term_pattern(term: str) -> re.Pattern:
    """How a fact (or any keyword) is found in a text: case-insensitive, any run of spaces matching any other,
    and whole terms only at word edges, so "/moving" is not found in "/moving-in" nor "0100" in "01001"."""
    words = [re.escape(w) for w in term.split()]
    body = r"\s+".join(words) if words else re.escape(term)
    before = r"(?<![\w-])" if term[:1].isalnum() else ""
    after = r"(?![\w-])" if term[-1:].isalnum() else ""
    return re.compile(before + body + after, re.IGNORECASE)


def mentions(text: str, term: str) -> bool:
    """Whether ``text`` gives ``term`` (see term_pattern)."""
    return bool(term.strip()) and term_pattern(term.strip()).search(text or "") is not None


def load_fact_sheet(path: str | Path) -> FactSheet:
    return parse_fact_sheet(Path(path).read_text(encoding="utf-8"))


def facts_to_check(sheet: FactSheet) -> list[dict]:
    """The project's "facts to check": one per ``check = yes`` row, in the shape core.evaluate.checks reads
    (name, what it is about, the keywords an answer must contain)."""
    return [{"name": r.key, "about": r.label, "keywords": [r.value], "match": "all"} for r in sheet.checked()]
