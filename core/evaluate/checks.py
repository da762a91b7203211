"""Automatic checks on answers: the measurable form of "accuracy", written by a domain expert per eval prompt.

A check is one of:
- ``contains``: the answer gives any (``match="any"``) or all (``match="all"``) of ``values``;
- ``not_contains``: the answer gives none of ``values``;
- ``regex``: Python's ``re.search(pattern, answer)`` finds a match (add ``(?i)`` to ignore case);
- ``length``: the answer has between ``min`` and ``max`` words or characters (``unit``).
Terms are found as core.curate.factsheet.mentions finds a fact: ignoring case and spacing, whole terms only, so
"/moving" is not found in "/moving-in". A check is stored as a plain dict on EvalPrompt.checks.

A project's *facts to check* (Project.facts: name, keywords, ``match``, optional ``when``) become ``contains``
checks on the prompts whose reference answer gives the fact (or whose last user message matches ``when``): the
expert writes each fact once, and every prompt about it is checked. This module holds the pure functions; storing,
importing and scoring checks is core.evaluate.checkstore.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

from core.configs import strict_from_dict
from core.curate.factsheet import mentions
from core.curate.formats import BadRecord, json_value
from core.errors import InvalidInput
from core.evaluate import stats

KINDS = ("contains", "not_contains", "regex", "length")
MATCHES = ("any", "all")
UNITS = ("words", "chars")
SOURCES = ("expert", "fact")
# Import shorthands: a column per kind, so a CSV can carry checks without JSON in a cell.
SHORTHANDS = {"must_contain": ("contains", "any"), "must_contain_any": ("contains", "any"),
              "must_contain_all": ("contains", "all"), "must_not_contain": ("not_contains", "any")}
LENGTH_FIELDS = {"min_words": ("min", "words"), "max_words": ("max", "words"), "min_chars": ("min", "chars"),
                 "max_chars": ("max", "chars")}
LIST_SEPARATOR = "|"  # "0800 555 0105 | brightwater-energy.example/powercut" in a CSV cell


@dataclass
class Check:
    """One automatic check on an answer (see the module docstring for the kinds)."""

    kind: str
    """contains, not_contains, regex or length."""
    values: list[str] = field(default_factory=list)
    """Terms for contains / not_contains."""
    match: str = "any"
    """contains: "any" term suffices, or "all" terms must appear."""
    pattern: str = ""
    """regex: a Python regular expression searched anywhere in the answer."""
    min: int | None = None
    """length: the fewest words/characters allowed (None: no lower bound)."""
    max: int | None = None
    """length: the most words/characters allowed (None: no upper bound)."""
    unit: str = "words"
    """length: count "words" (split on whitespace) or "chars"."""
    name: str = ""
    """Short name shown in results (a fact's name, or empty for the description)."""
    source: str = "expert"
    """"expert" (written or imported by hand) or "fact" (made from the project's facts to check)."""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InvalidInput(f"Unknown check kind {self.kind!r}; choose one of: {', '.join(KINDS)}.")
        if isinstance(self.values, str):
            self.values = split_terms(self.values)
        self.values = [str(v).strip() for v in self.values or [] if str(v).strip()]
        self.name, self.pattern = str(self.name or "").strip(), str(self.pattern or "")
        if self.kind in ("contains", "not_contains") and not self.values:
            raise InvalidInput(f"A {self.kind} check needs at least one term.")
        if self.match not in MATCHES:
            raise InvalidInput(f"match must be 'any' or 'all' (got {self.match!r}).")
        if self.kind == "regex":
            if not self.pattern:
                raise InvalidInput("A regex check needs a pattern.")
            try:
                re.compile(self.pattern)
            except re.error as err:
                raise InvalidInput(f"The pattern {self.pattern!r} is not a valid regular expression ({err}).") \
                    from None
        if self.kind == "length":
            self.min, self.max = _bound(self.min, "min"), _bound(self.max, "max")
            if self.min is None and self.max is None:
                raise InvalidInput("A length check needs a minimum, a maximum or both.")
            if self.min is not None and self.max is not None and self.min > self.max:
                raise InvalidInput(f"The length check's minimum ({self.min}) is above its maximum ({self.max}).")
            if self.unit not in UNITS:
                raise InvalidInput(f"unit must be 'words' or 'chars' (got {self.unit!r}).")
        if self.source not in SOURCES:
            raise InvalidInput(f"source must be 'expert' or 'fact' (got {self.source!r}).")

    def passes(self, answer: str) -> bool:
        text = answer or ""
        if self.kind == "contains":
            found = [mentions(text, v) for v in self.values]
            return all(found) if self.match == "all" else any(found)
        if self.kind == "not_contains":
            return not any(mentions(text, v) for v in self.values)
        if self.kind == "regex":
            return re.search(self.pattern, text) is not None
        n = len(text.split()) if self.unit == "words" else len(text)
        return (self.min is None or n >= self.min) and (self.max is None or n <= self.max)

    def describe(self) -> str:
        """What the check asks, in words (the results' label when it has no name)."""
        if self.kind == "contains":
            return f"contains {self.match} of: " + "; ".join(self.values) if len(self.values) > 1 \
                else f"contains: {self.values[0]}"
        if self.kind == "not_contains":
            return "contains none of: " + "; ".join(self.values)
        if self.kind == "regex":
            return f"matches /{self.pattern}/"
        if self.min is not None and self.max is not None:
            return f"{self.min} to {self.max} {self.unit}"
        return f"at least {self.min} {self.unit}" if self.min is not None else f"at most {self.max} {self.unit}"

    @property
    def label(self) -> str:
        return self.name or self.describe()

    def to_dict(self) -> dict:
        """The stored form: only what this kind uses, so stored checks stay readable."""
        keep = {"kind", "name", "source"} | {"contains": {"values", "match"}, "not_contains": {"values"},
                                              "regex": {"pattern"}, "length": {"min", "max", "unit"}}[self.kind]
        return {k: v for k, v in asdict(self).items() if k in keep and v not in (None, "")}

    @classmethod
    def from_dict(cls, data: dict) -> "Check":
        if not isinstance(data, dict) or not data.get("kind"):
            raise InvalidInput("Each check must be an object with a 'kind' (contains, not_contains, regex, length).")
        return strict_from_dict(cls, data, "check")


def _bound(value, which: str) -> int | None:
    if value is None or (isinstance(value, float) and value != value) or str(value).strip() == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"The length check's {which} must be a whole number (got {value!r}).") from None
    if number < 0 or not number.is_integer():
        raise InvalidInput(f"The length check's {which} must be a whole number of at least 0 (got {value!r}).")
    return int(number)


def split_terms(text: str) -> list[str]:
    """"a | b | c" -> ["a", "b", "c"] (a list cell in a CSV or in the Generate page's editor)."""
    return [t.strip() for t in str(text or "").split(LIST_SEPARATOR) if t.strip()]


def clean_checks(checks: Iterable[dict | Check]) -> list[dict]:
    """Validate checks (dicts or Check) and return their stored form; raises InvalidInput on the first bad one."""
    out = []
    for i, c in enumerate(checks or [], 1):
        try:
            out.append((c if isinstance(c, Check) else Check.from_dict(c)).to_dict())
        except InvalidInput as err:
            raise InvalidInput(f"check {i}: {err}") from None
    return out


def run_checks(checks: list[dict], answer: str) -> list[bool]:
    """Whether ``answer`` passes each stored check, in order."""
    return [Check.from_dict(c).passes(answer) for c in checks]


# ---------------------------------------------------------------- import and export


def checks_from_row(row: dict, where: str) -> list[dict]:
    """The checks of one imported prompt row: a ``checks`` list (JSON text in a CSV cell), plus shorthand
    fields must_contain / must_contain_all / must_not_contain (a list, or terms separated by "|"), regex,
    min_words / max_words / min_chars / max_chars."""
    found: list[dict] = []
    raw = row.get("checks")
    if isinstance(raw, str) and raw.strip():
        try:
            raw = json_value(raw)  # the importers' JSON decoding: too deep is a bad row, not a crash
        except BadRecord as err:
            raise InvalidInput(f"{where}: 'checks' is not valid JSON ({err}).") from None
    if raw not in (None, "", []):
        if not isinstance(raw, list):
            raise InvalidInput(f"{where}: 'checks' must be a list of checks.")
        found += raw
    for key, (kind, match) in SHORTHANDS.items():
        value = row.get(key)
        terms = split_terms(value) if isinstance(value, str) else [str(v) for v in value or []]
        if terms:
            found.append({"kind": kind, "values": terms, **({"match": match} if kind == "contains" else {})})
    if str(row.get("regex") or "").strip():
        found.append({"kind": "regex", "pattern": str(row["regex"]).strip()})
    for unit in UNITS:
        bounds = {side: row.get(key) for key, (side, u) in LENGTH_FIELDS.items() if u == unit
                  if str(row.get(key) if row.get(key) is not None else "").strip()}
        if bounds:
            found.append({"kind": "length", "unit": unit, **bounds})
    try:
        return clean_checks(found)
    except InvalidInput as err:
        raise InvalidInput(f"{where}: {err}") from None


# ---------------------------------------------------------------- facts to check


@dataclass
class Fact:
    """One fact to check: answers about it must give its keywords."""

    name: str
    """Short name shown in results ("power_cut_line")."""
    keywords: list[str]
    """What an answer must contain (the exact phone number, web address, amount)."""
    match: str = "all"
    """"all" keywords, or "any" one of them."""
    about: str = ""
    """What the fact is about, for people reading the list."""
    when: str = ""
    """Optional regular expression on the prompt's last user message that also makes the fact apply."""

    def __post_init__(self) -> None:
        self.name = str(self.name or "").strip()
        if isinstance(self.keywords, str):
            self.keywords = split_terms(self.keywords)
        self.keywords = [str(k).strip() for k in self.keywords or [] if str(k).strip()]
        if not self.name:
            raise InvalidInput("Every fact to check needs a name.")
        if not self.keywords:
            raise InvalidInput(f"The fact {self.name!r} needs at least one keyword.")
        if self.match not in MATCHES:
            raise InvalidInput(f"The fact {self.name!r}: match must be 'any' or 'all'.")
        if self.when:
            try:
                re.compile(self.when)
            except re.error as err:
                raise InvalidInput(f"The fact {self.name!r}: 'when' is not a valid regular expression ({err}).") \
                    from None

    def applies(self, reference: str, last_user_message: str) -> bool:
        """The prompt is about this fact: its reference gives the fact, or its question matches ``when``."""
        given = [mentions(reference, k) for k in self.keywords]
        if all(given) if self.match == "all" else any(given):
            return True
        return bool(self.when) and re.search(self.when, last_user_message or "", re.IGNORECASE) is not None

    def check(self) -> dict:
        return Check(kind="contains", values=list(self.keywords), match=self.match, name=self.name,
                     source="fact").to_dict()


def clean_facts(facts: Iterable[dict]) -> list[dict]:
    """Validate a project's facts to check; names must be unique."""
    out, seen = [], set()
    for data in facts or []:
        if not isinstance(data, dict):
            raise InvalidInput("Each fact to check must be an object with a name and keywords.")
        fact = strict_from_dict(Fact, {"name": "", "keywords": [], **data}, "fact")
        if fact.name in seen:
            raise InvalidInput(f"The fact {fact.name!r} appears twice.")
        seen.add(fact.name)
        out.append({k: v for k, v in asdict(fact).items() if v not in ("", None)})
    return out


def fact_checks(facts: list[dict], reference: str, messages: list[dict]) -> list[dict]:
    """The checks the project's facts give one prompt (its reference answer and its messages)."""
    last_user = next((m["content"] for m in reversed(messages or []) if m.get("role") == "user"), "")
    return [f.check() for f in (Fact(**d) for d in facts) if f.applies(reference, last_user)]


# ---------------------------------------------------------------- pass rates


def pass_rates(rows: list[dict], *, seed: int = 0) -> dict:
    """Pass rates from one row per (system, prompt, check): ``{"system", "prompt_id", "check", "passed"}``.

    ``by_system``: per system the share of checked prompts that pass every check (a prompt counts once) and the
    share of all checks passed; ``by_check``: per system and check label the share of prompts passing it. Each
    share has a 95% percentile bootstrap interval over prompts (core.evaluate.stats.bootstrap_mean)."""
    prompts: dict[str, dict[Any, list[bool]]] = {}
    per_check: dict[tuple[str, str], list[bool]] = {}
    for r in rows:
        prompts.setdefault(r["system"], {}).setdefault(r["prompt_id"], []).append(bool(r["passed"]))
        per_check.setdefault((r["system"], r["check"]), []).append(bool(r["passed"]))
    by_system = []
    for system, results in prompts.items():
        whole = stats.bootstrap_mean([float(all(v)) for v in results.values()], seed=seed)
        every = [x for v in results.values() for x in v]
        by_system.append({"system": system, "prompts": whole.n, "passed": int(round(whole.value * whole.n)),
                          "pass_rate": whole.value, "lo": whole.lo, "hi": whole.hi, "checks": len(every),
                          "checks_passed": sum(every), "check_pass_rate": sum(every) / len(every)})
    by_check = []
    for (system, label), values in per_check.items():
        iv = stats.bootstrap_mean([float(v) for v in values], seed=seed)
        by_check.append({"system": system, "check": label, "prompts": iv.n, "passed": sum(values),
                         "pass_rate": iv.value, "lo": iv.lo, "hi": iv.hi})
    by_check.sort(key=lambda r: (r["check"], r["system"]))
    return {"by_system": by_system, "by_check": by_check}
