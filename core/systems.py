"""System keys: the one grammar that names a model to generate with, review, draft with or serve. Parsing,
formatting and labels only (cheap to import: no database, no model loading).

A key is stored as text (Output.system, Score.system_a/system_b/pair, a job's config "systems"/"system") and means
the same thing in every process of the workspace:

- ``base``: the base model of the job at hand (a generation or draft job's ``base_model``; the embedded model
  when a serving endpoint is asked for it);
- ``base:<model>``: a base model as core.basemodel names it (a folder, a hub id, ``embedded:...``);
- ``run:<job id>``: a finished training run (its adapter on the base it was trained from, or a full fine-tuned
  run's own model); a bare ``<job id>`` is the short form and reads as ``run:<job id>``;
- ``export:<job id>``: the merged model folder an export job wrote.

Each stage accepts the kinds it can use (evaluation: base and runs; serving: all four) and says so when a key
names another. To add a kind, add it to ``KINDS`` (and ``EXAMPLES``); to add a variant of a system (a key
ending ``+<variant>``, e.g. the same run behind another prompt), add it to ``VARIANTS``: a key whose suffix is no
known variant stays one unknown key, so old keys never change meaning.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from core.errors import InvalidInput

BASE, RUN, EXPORT = "base", "run", "export"
KINDS = (BASE, RUN, EXPORT)
"""Every kind of system a key can name."""
JOB_KINDS = (RUN, EXPORT)
"""The kinds whose reference is a job id."""
EXAMPLES = {BASE: "base", RUN: "run:<run id>", EXPORT: "export:<export id>"}
"""How the error message spells each kind for a person."""
BASE_MODEL_EXAMPLE = "base:<model>"
PROMPT, RAG = "prompt", "rag"
VARIANTS: dict[str, str] = {PROMPT: "with the team's prompt", RAG: "with retrieved documents"}
"""Variant name -> what its label adds: ``run:3+prompt`` answers with the project's team prompt as its system
prompt, ``base+rag`` with the document chunks retrieved for each question (Project.team_prompt, rag_top_k)."""


@dataclass(frozen=True)
class SystemKey:
    """One parsed key: ``kind`` (base, run, export), ``ref`` (a job id for runs and exports; the base model's
    name for ``base:<model>``, None for plain ``base``) and ``variant`` ("" for the system itself)."""

    kind: str
    ref: int | str | None = None
    variant: str = ""

    def __post_init__(self):
        if self.kind not in KINDS:
            raise InvalidInput(f"Unknown kind of system {self.kind!r}: one of {', '.join(KINDS)}.")
        if self.kind in JOB_KINDS and not (isinstance(self.ref, int) and self.ref >= 0):
            raise InvalidInput(f"A {self.kind} system needs a job id, not {self.ref!r}.")
        if self.kind == BASE and not (self.ref is None or isinstance(self.ref, str) and self.ref):
            raise InvalidInput(f"A base system names its model or nothing, not {self.ref!r}.")
        if self.variant and self.variant not in VARIANTS:
            raise InvalidInput(f"Unknown variant {self.variant!r} of a system.")

    def __str__(self) -> str:
        head = self.kind if self.ref is None else f"{self.kind}:{self.ref}"
        return f"{head}+{self.variant}" if self.variant else head

    @property
    def job_id(self) -> int | None:
        """The run's or export's job id; None for a base model."""
        return self.ref if self.kind in JOB_KINDS and isinstance(self.ref, int) else None

    @property
    def plain(self) -> "SystemKey":
        """The system itself without its variant: ``run:3+rag`` -> ``run:3`` (the model a variant loads)."""
        return SystemKey(self.kind, self.ref) if self.variant else self

    @property
    def base_model(self) -> str | None:
        """The model a ``base:<model>`` key names; None for plain ``base`` and for runs and exports."""
        return self.ref if self.kind == BASE and isinstance(self.ref, str) else None

    @classmethod
    def parse(cls, text: str | int, kinds: Iterable[str] = KINDS, *, base_models: bool = True) -> "SystemKey":
        """The key ``text`` names (spaces around it ignored), refusing one of a kind not in ``kinds`` (or a
        ``base:<model>`` unless ``base_models``) with a message that lists what the caller accepts."""
        kinds = tuple(kinds)
        key = str(text if text is not None else "").strip()
        head, plus, variant = key.rpartition("+")
        if not (plus and variant in VARIANTS):
            head, variant = key, ""
        found = _parse_head(head, kinds, base_models and BASE in kinds)
        if found is None:
            raise InvalidInput(f"Unknown system {key!r}: use {_spelled(kinds, base_models)}.")
        return cls(found[0], found[1], variant)

    def label(self, name: str = "") -> str:
        """A person's name for the system (``name``: the run's or the base model's name, when known)."""
        if self.kind == BASE:
            text = f"Base model ({name})" if name else "Base model"
        elif self.kind == RUN:
            text = f"Run {self.ref}: {name}" if name else f"Run {self.ref}"
        else:
            text = f"Export {self.ref} ({name})" if name else f"Export {self.ref}"
        return f"{text}, {VARIANTS[self.variant]}" if self.variant else text


def _is_id(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _parse_head(key: str, kinds: tuple[str, ...], base_models: bool) -> tuple[str, int | str | None] | None:
    """(kind, ref) of a key without its variant, or None when ``kinds`` has no such key."""
    if BASE in kinds and key == BASE:
        return BASE, None
    if base_models and key.startswith(f"{BASE}:"):
        return BASE, key.removeprefix(f"{BASE}:") or None  # "base:" is plain "base"
    if RUN in kinds and _is_id(key):
        return RUN, int(key)
    kind, _, raw = key.partition(":")
    if kind in JOB_KINDS and kind in kinds and _is_id(raw):
        return kind, int(raw)
    return None


def _spelled(kinds: tuple[str, ...], base_models: bool) -> str:
    names = [f"'{EXAMPLES[k]}'" for k in kinds]
    if BASE in kinds and base_models:
        names.insert(1, f"'{BASE_MODEL_EXAMPLE}'")
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + f" or {names[-1]}"


def run_key(job_id: int) -> str:
    """``run:<job id>``."""
    return str(SystemKey(RUN, int(job_id)))


def export_key(job_id: int) -> str:
    """``export:<job id>``."""
    return str(SystemKey(EXPORT, int(job_id)))
