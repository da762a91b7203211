"""The gate every generated draft passes before it is stored: the duplicate, near-duplicate and leakage checks
an import gets, so no question generated from a document and no paraphrase of a failing prompt can put an
evaluation or test prompt into training.

A generated prompt is **withheld** (counted, never stored) when it repeats, exactly or nearly (the MinHash match of
core.curate.overlap), a prompt of one of the project's eval sets, or a validation/test item of any frozen version
of the project, or when an example already holds the same text (core.curate.curation.create_example refuses it).
A near copy of an ordinary example is stored and flagged for review, as an import flags it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from sqlmodel import Session, select

from core.curate.datasets import version_records
from core.curate.leakage import find_leaks
from core.curate.overlap import match_prompts
from storage.models import DatasetVersion

HELD_OUT_SPLITS = ("validation", "test")
REASONS = {"eval_leak": "repeats an eval prompt", "split_leak": "repeats a validation/test item",
           "duplicate": "an example already has the same text", "repeated": "generated twice"}
LEAK_REASONS = ("eval_leak", "split_leak")
"""The reasons that are the leakage check's: a prompt that would put an eval or held-out item into training."""


@dataclass
class Withheld:
    """What the gate kept out, by reason (keys of REASONS), with the first few prompts of each for people to read."""

    counts: dict[str, int] = field(default_factory=lambda: {k: 0 for k in REASONS})
    samples: list[dict] = field(default_factory=list)

    def add(self, reason: str, prompt: str, detail: str = "") -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        if len(self.samples) < 20:
            self.samples.append({"reason": reason, "prompt": prompt[:300], "detail": detail})

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def held_out_prompts(session: Session, project_id: int) -> list[dict]:
    """``{"messages", "version", "split", "example_id"}`` of every validation/test item of the project's versions."""
    out: list[dict] = []
    for version in session.exec(select(DatasetVersion).where(DatasetVersion.project_id == project_id)):
        for split in HELD_OUT_SPLITS:
            out.extend({"messages": rec["prompt"], "version": version.name, "split": split,
                        "example_id": rec.get("example_id")} for rec in version_records(session, version.id, split))
    return out


def screen(session: Session, project_id: int, prompts: list[list[dict]], withheld: Withheld,
           held_out: list[dict] | None = None) -> list[bool]:
    """For each generated prompt (messages before the answer), whether it may be stored; what is not is counted in
    ``withheld``. ``held_out``: ``held_out_prompts`` computed once by a caller screening many batches."""
    held_out = held_out_prompts(session, project_id) if held_out is None else held_out
    keep = [True] * len(prompts)
    seen: set[str] = set()
    for i, messages in enumerate(prompts):
        text = _user_text(messages)
        key = " ".join(text.lower().split())
        if key in seen:
            keep[i] = False
            withheld.add("repeated", text)
        seen.add(key)
    for leak in find_leaks(session, project_id, [{"key": i, "messages": m} for i, m in enumerate(prompts)]):
        if keep[leak["key"]]:
            keep[leak["key"]] = False
            withheld.add("eval_leak", _user_text(prompts[leak["key"]]),
                          f"eval set {leak['eval_set']}, prompt id {leak['eval_prompt_id']} ({leak['kind']})")
    if held_out:
        for i, hits in enumerate(match_prompts(prompts, [h["messages"] for h in held_out])):
            if keep[i] and hits:
                j, kind, _ = hits[0]
                keep[i] = False
                withheld.add("split_leak", _user_text(prompts[i]),
                             f"{held_out[j]['split']} item of version {held_out[j]['version']} ({kind})")
    return keep


def _user_text(messages: list[dict]) -> str:
    return " ".join(m.get("content") or "" for m in messages if m.get("role") == "user").strip()
