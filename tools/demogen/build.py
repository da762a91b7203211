"""Build the demo dataset: every intent rendered many times, single-turn and multi-turn, with no near duplicates.

``python -m tools.demogen`` rewrites core/curate/data/demo_utility.jsonl from the fact sheet
(core/curate/data/demo_fact_sheet.md) and the intents (tools/demogen/intents_*.py). The output is the same
on every run: each example's choices come from ``random.Random`` seeded with the intent and the example number.

Two guards make the file trustworthy:
- facts: every answer gives exactly its intent's checked facts (no more, no fewer), found the way the automatic
  checks find them, so a check built from a reference answer asks for what the answer really should say;
- near duplicates: a candidate too close to an example already kept (word 3-gram Jaccard >= MAX_JACCARD against
  the same intent) is drawn again; the whole file then passes the project's own MinHash check
  (core.curate.dedup.NearDuplicateIndex, what Import uses) with no pair flagged.
"""
from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

from core.curate.dedup import NearDuplicateIndex, normalise_text
from core.curate.demo import DEMO_FILE as OUTPUT, FACT_SHEET  # package data the demo project is seeded from
from core.curate.factsheet import FactSheet, load_fact_sheet, mentions
from tools.demogen.engine import SYSTEM_PROMPT, TONES_BY_KIND, Intent, answer, customer_message, draw_slots, fill

SEED = 2026
MAX_JACCARD = 0.5  # well under Import's 0.8 near-duplicate threshold, so MinHash's error never flags a pair
MAX_TRIES = 60
CHANNELS = [("chat", 0.55), ("email", 0.25), ("sms", 0.2)]


def _weighted(rng: random.Random, options: list[tuple[str, float]]) -> str:
    return rng.choices([o for o, _ in options], weights=[w for _, w in options])[0]


def shingles(text: str) -> set[str]:
    words = normalise_text(text).split()
    return {" ".join(words[i:i + 3]) for i in range(max(1, len(words) - 2))}


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def check_facts(intent: Intent, text: str, sheet: FactSheet) -> None:
    """The answer gives exactly the intent's checked facts, and gives them up front (in the opening or the first
    step: what answers the question comes first); anything else is a bug in the intent."""
    given = {r.key for r in sheet.checked() if mentions(text, r.value)}
    if given != set(intent.facts):
        raise ValueError(f"intent {intent.key}: the answer gives {sorted(given)}, the intent promises "
                         f"{sorted(intent.facts)}:\n{text}")
    first = text.split("\n2. ")[0]
    late = [k for k in intent.facts if not mentions(first, sheet.values[k])]
    if late:
        raise ValueError(f"intent {intent.key}: {late} only come after the first step:\n{text}")


class Builder:
    def __init__(self, intents: list[Intent], sheet: FactSheet):
        self.intents = {i.key: i for i in intents}
        self.sheet = sheet
        self.facts = sheet.values
        self.kept: dict[str, list[set]] = {}
        self.records: list[dict] = []
        self.index = NearDuplicateIndex()

    def _values(self, intent: Intent, rng: random.Random) -> dict:
        return {**draw_slots(intent, rng), **self.facts}

    def _accept(self, group: str, turns: list[dict], tags: list[str]) -> bool:
        """Keep the example unless it is close to one already kept: by exact word 3-gram Jaccard within its
        intent, or by the project's MinHash LSH over everything (any shared band, as Import flags it)."""
        text = "\n".join(t["content"] for t in turns)
        sh = shingles(text)
        if any(jaccard(sh, other) >= MAX_JACCARD for other in self.kept.get(group, [])):
            return False
        bands = self.index.band_keys(self.index.signatures([text]))[0]
        tables = self.index.lsh.hashtables
        if any(table.get(band) for table, band in zip(tables, bands)):
            return False
        for table, band in zip(tables, bands):
            table.insert(band, len(self.records))
        self.kept.setdefault(group, []).append(sh)
        self.records.append({"messages": [{"role": "system", "content": SYSTEM_PROMPT}] + turns, "tags": tags})
        return True

    def single(self, intent: Intent, number: int) -> bool:
        for attempt in range(MAX_TRIES):
            rng = random.Random(f"{SEED}:{intent.key}:{number}:{attempt}")
            values = self._values(intent, rng)
            channel, tone = _weighted(rng, CHANNELS), rng.choice(TONES_BY_KIND[intent.kind])
            if intent.kind == "urgent" and channel == "email":
                channel = "chat"  # nobody emails about a gas leak
            first, second = rng.sample(intent.asks, 2)
            ask = customer_message(fill(first, values), intent, channel, tone, values, rng, fill(second, values))
            reply = answer(intent, channel, tone, values, rng)
            check_facts(intent, reply, self.sheet)
            if self._accept(intent.key, [{"role": "user", "content": ask}, {"role": "assistant", "content": reply}],
                            intent.tags + [channel]):
                return True
        return False  # the intent has run out of distinct phrasings

    def clarify(self, intent: Intent, number: int) -> None:
        """A vague first message, the assistant's question back, the details, then the answer."""
        for attempt in range(MAX_TRIES):
            rng = random.Random(f"{SEED}:{intent.key}:clarify:{number}:{attempt}")
            values = self._values(intent, rng)
            channel = rng.choice(["chat", "chat", "sms"])
            first = fill(rng.choice(intent.vague), values)
            question = fill(rng.choice(intent.clarify), values)
            detail = customer_message(fill(rng.choice(intent.asks), values), intent, channel, "neutral", values, rng)
            reply = answer(intent, channel, "neutral", values, rng, follow_up=True)
            check_facts(intent, reply, self.sheet)
            turns = [{"role": "user", "content": first}, {"role": "assistant", "content": question},
                     {"role": "user", "content": detail}, {"role": "assistant", "content": reply}]
            if self._accept(intent.key, turns, intent.tags + [channel, "multi_turn"]):
                return
        raise RuntimeError(f"intent {intent.key}: no distinct clarifying conversation #{number}")

    def follow_up(self, first_key: str, second_key: str, phrasings: list[str], number: int) -> None:
        """A first question and its answer, then a follow-up on a related subject and its answer."""
        a, b = self.intents[first_key], self.intents[second_key]
        for attempt in range(MAX_TRIES):
            rng = random.Random(f"{SEED}:{first_key}>{second_key}:{number}:{attempt}")
            values = {**self._values(a, rng), **{k: rng.choice(v) for k, v in b.slots.items()}}
            channel = rng.choice(["chat", "chat", "email", "sms"])
            tone = rng.choice(TONES_BY_KIND[a.kind])
            ask = customer_message(fill(rng.choice(a.asks), values), a, channel, tone, values, rng)
            reply_a = answer(a, channel, tone, values, rng)
            follow = fill(rng.choice(phrasings), values)
            if channel == "sms" or rng.random() < 0.4:
                follow = follow[:1].lower() + follow[1:]
            reply_b = answer(b, "chat" if channel == "email" else channel, "neutral", values, rng, follow_up=True)
            check_facts(a, reply_a, self.sheet)
            check_facts(b, reply_b, self.sheet)
            turns = [{"role": "user", "content": ask}, {"role": "assistant", "content": reply_a},
                     {"role": "user", "content": follow}, {"role": "assistant", "content": reply_b}]
            tags = list(dict.fromkeys(a.tags + b.tags)) + [channel, "multi_turn"]
            if self._accept(second_key, turns, tags):
                return
        raise RuntimeError(f"follow-up {first_key} > {second_key}: no distinct conversation #{number}")


def build(intents: list[Intent], follow_ups: list[tuple[str, str, list[str]]], sheet: FactSheet,
          clarify_per_intent: int = 2, per_follow_up: int = 3) -> list[dict]:
    """Every example of the demo, in a stable order (grouped by intent, shuffled once with the seed)."""
    b = Builder(intents, sheet)
    for intent in intents:
        made = sum(b.single(intent, i) for i in range(intent.n))
        if made < intent.n:
            raise RuntimeError(f"intent {intent.key}: only {made} of {intent.n} distinct examples; give it more "
                               "phrasings or a smaller n")
        if intent.vague:
            for i in range(clarify_per_intent):
                b.clarify(intent, i)
    for first, second, phrasings in follow_ups:
        for i in range(per_follow_up):
            b.follow_up(first, second, phrasings, i)
    records = b.records
    random.Random(SEED).shuffle(records)
    near = near_duplicate_pairs(records)
    if near:
        raise RuntimeError(f"{len(near)} near-duplicate pairs slipped through, e.g. {near[0]}")
    return records


def near_duplicate_pairs(records: list[dict]) -> list[tuple[int, int]]:
    """(later, earlier) record indices the project's MinHash LSH check flags, as Import would."""
    index = NearDuplicateIndex()
    texts = ["\n".join(m["content"] for m in r["messages"] if m["role"] != "system") for r in records]
    found = index.check_and_add(list(range(len(records))), texts)
    return [(i, j) for i, j in enumerate(found) if j is not None]


def write(records: list[dict], path: Path = OUTPUT) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")


def main() -> None:
    from tools.demogen.intents import FOLLOW_UPS, INTENTS

    sheet = load_fact_sheet(FACT_SHEET)
    records = build(INTENTS, FOLLOW_UPS, sheet)
    write(records)
    turns = Counter(len(r["messages"]) // 2 for r in records)
    channels = Counter(next(t for t in r["tags"] if t in ("chat", "email", "sms")) for r in records)
    print(f"{len(records)} examples from {len(INTENTS)} intents -> {OUTPUT}")
    print(f"turns per example: {dict(sorted(turns.items()))}; channels: {dict(channels)}")
