"""Tokens and quality hints for the example editor: length against the project's max length, empty or very
short answers, duplicates. The page shows them live while typing (ui.browser.live_hints uses the same
wording, ``HINT_TEXTS``); the server's figures use the base model's tokenizer when it can be loaded.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

from sqlmodel import Session, select

from core.curate.dedup import record_hash, record_text, word_count
from storage.models import Example, Project, visible_examples

SHORT_RESPONSE_WORDS = 3


def estimate_tokens(text: str) -> int:
    """A tokenizer-free estimate: about 4/3 tokens per whitespace-separated word."""
    return math.ceil(word_count(text) * 4 / 3)


def token_counter(tokenizer: Any) -> Callable[[str], int]:
    """A ``count_tokens(text)`` for a Hugging Face tokenizer or a ``tokenizers.Tokenizer``."""
    if callable(tokenizer):  # transformers tokenizers are callable; a raw tokenizers.Tokenizer is not
        return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])
    return lambda text: len(tokenizer.encode(text, add_special_tokens=False).ids)


def default_token_counter() -> tuple[Callable[[str], int], str]:
    """(count_tokens, label): the base model's tokenizer when core.basemodel provides one, else the estimate."""
    try:
        from core.basemodel import load_tokenizer

        tok = load_tokenizer()
    except Exception:  # no base model yet, or it cannot be loaded offline: fall back, and say so
        return estimate_tokens, "estimated from word count (base model tokenizer unavailable)"
    return token_counter(tok), "base model tokenizer"


@dataclass
class Hint:
    level: str  # "error" | "warning" | "info"
    text: str
    kind: str = ""  # "length" | "empty" | "short" | "duplicate": the live editor recomputes all but duplicates


# One wording for the server's hints and the editor's live ones (ui.browser.live_hints fills the same templates).
HINT_TEXTS = {
    "too_long": "{tokens} tokens: longer than the project's max length of {max}; training will cut it.",
    "near_max": "{tokens} tokens: close to the max length of {max}.",
    "empty": "A response is empty.",
    "short": "A response is very short (under {words} words).",
    "line": "{tokens} tokens of max {max} ({label})",
    "live_line": "About {tokens} tokens of max {max} (estimated while you type; exact once the field is left)",
}


def quality_hints(record: dict, max_length: int, count_tokens: Callable[[str], int] = estimate_tokens,
                  near_duplicate_of: int | None = None, exact_duplicate_of: int | None = None
                  ) -> tuple[int, list[Hint]]:
    """(token count, hints) for a record being edited: length vs max length, empty/short answers, duplicates."""
    tokens = count_tokens(record_text(record))
    values = {"tokens": tokens, "max": max_length, "words": SHORT_RESPONSE_WORDS}
    hints: list[Hint] = []
    if tokens > max_length:
        hints.append(Hint("error", HINT_TEXTS["too_long"].format(**values), "length"))
    elif tokens > 0.9 * max_length:
        hints.append(Hint("warning", HINT_TEXTS["near_max"].format(**values), "length"))
    answers = [t["content"] for t in record.get("turns", []) if t["role"] == "assistant"]
    if not answers or any(not a.strip() for a in answers):
        hints.append(Hint("error", HINT_TEXTS["empty"], "empty"))
    elif any(len(a.split()) < SHORT_RESPONSE_WORDS for a in answers):
        hints.append(Hint("warning", HINT_TEXTS["short"].format(**values), "short"))
    if exact_duplicate_of:
        hints.append(Hint("error", f"Same text as example #{exact_duplicate_of}.", "duplicate"))
    if near_duplicate_of:
        hints.append(Hint("warning", f"Near duplicate of example #{near_duplicate_of}; keep only one if they "
                                     "say the same thing.", "duplicate"))
    return tokens, hints


def example_hints(session: Session, project: Project, example: Example | None, record: dict,
                  count_tokens: Callable[[str], int] = estimate_tokens) -> tuple[int, list[Hint]]:
    """Hints for the editor: checks the edited text for an exact duplicate and reports the stored near-dup flag."""
    digest = record_hash(record)
    other = session.exec(select(Example.id).where(Example.project_id == project.id, Example.content_hash == digest,
                                                  Example.id != (example.id if example else -1),
                                                  visible_examples())).first()
    return quality_hints(record, project.max_length, count_tokens,
                         example.near_duplicate_of if example else None, other)
