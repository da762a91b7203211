"""Where a draft came from, in words: the one mapping from the keys stored in an example's ``origin`` (a blind
review's send-back, a run's failures on the Results page) to what the annotator reads. Prompt positions are
stored 0-based and shown 1-based, as the Generate and Results pages number prompts.

A draft made from an eval item keeps its review blind: below engineer, nobody reads which systems, scores or answer
are behind it (``sees_systems``, ``describe(..., blind=True)``), as nobody below engineer reads them on Results.
"""
from __future__ import annotations

import re

from core.accounts import can

# What the draft's answer started from: a reviewer's choice on Compare, or the failures' pick on Results.
START_WORDS = {"A": "answer A (as the reviewer saw it)", "B": "answer B (as the reviewer saw it)",
               "reference": "the reference answer", "empty": "an empty answer (write it)",
               "base": "the base model's answer", "run": "the fine-tuned run's answer",
               "correction": "the agent's corrected answer"}
# How a failure was caught (core.evaluate.failures stores these keys in ``origin["caught"]`` and ``rule``).
RULE_WORDS = {"lost_to_base": "lost to the base model (reviewers' majority preference)",
              "low_score": "scored at or below the threshold on the criterion (mean over reviewers)",
              "either": "either of the two"}
_LOW_SCORE = re.compile(r"^low_score: (?P<criterion>.+) (?P<mean>\S+) <= (?P<threshold>\S+)$")


def start_words(key: str | None) -> str:
    return START_WORDS.get(key or "", str(key))


def caught_words(caught: str) -> str:
    """One reason a failure was caught, in words: "lost_to_base" or "low_score: accuracy 1.5 <= 2"."""
    m = _LOW_SCORE.match(caught or "")
    if m:
        return f"mean {m['criterion']} score {m['mean']}, at or below {m['threshold']}"
    return RULE_WORDS.get(caught, caught)


def prompt_number(origin: dict) -> str:
    """The prompt as the Generate and Results pages number it: its 1-based position in the eval set."""
    position = origin.get("position")
    return f"prompt {int(position) + 1}" if isinstance(position, int) else f"prompt id {origin.get('prompt_id')}"


def sees_systems(user, origin: dict) -> bool:
    """Whether ``user`` may read which systems, scores and answers are behind a draft with this ``origin``.

    A draft made from an eval item (its origin names an ``eval_set_id``) is blind while that eval set's review is
    open. The project has no explicit "review closed" state: Compare hands out an eval set's items for as long as
    the set exists (core.evaluate.review.next_item keeps taking scores after every item has its K reviewers), so
    the review is never closed, and systems are revealed only where the Results page reveals them: to engineers
    and admins (the "evaluate" right). A draft from a blind pilot hides its system the same way. Other drafts
    hide nothing."""
    o = origin or {}
    return not (o.get("eval_set_id") or o.get("pilot_blind")) or can(user, "evaluate")


# What a blind reader may be told the draft started from: answers no system wrote.
BLIND_STARTS = ("reference", "empty")


def describe(source: str, origin: dict, *, blind: bool) -> str:
    """One line of plain text saying where a sent-back or failure draft came from ("" for other examples).
    ``blind`` (``not sees_systems(user, origin)``): a failure draft's line names no run, no score, no rule that
    caught it and, unless it started from the reference or empty, not what it started from."""
    o = origin or {}
    where = f"eval set {o.get('eval_set')}, {prompt_number(o)}"
    if source == "eval_failure" and blind:
        start = o.get("start")
        started = f"; the draft started from {start_words(start)}" if start in BLIND_STARTS else ""
        return f"A failure found on the Results page: {where}{started}."
    if source == "pilot":  # a pilot's question (core.ship.pilot_results): a blind pilot's system stays hidden
        system = "" if blind or not o.get("system") else f" of {o['system']}"
        why = "an agent would escalate it to a human" if o.get("escalated") else "an agent corrected the answer"
        return (f"From pilot {o.get('pilot')}{system}, exchange {o.get('exchange_id')}: {why}; "
                f"the draft started from {start_words(o.get('start'))}.")
    if source == "review_feedback":
        return (f"Sent back from a blind review on the Compare page: {where}, by reviewer {o.get('reviewer')}; "
                f"the draft started from {start_words(o.get('start'))}.")
    if source == "document":
        section = f" ({o.get('heading')})" if o.get("heading") else ""
        return (f"Generated from {o.get('document')} §{o.get('ordinal')}{section} by a model; "
                "check it against the passage.")
    if source == "paraphrase":
        if blind:
            return f"A paraphrase, written by a model, of a prompt that failed: {where}; write its answer."
        why = "; ".join(caught_words(c) for c in o.get("caught") or []) or "failed"
        return (f"A paraphrase, written by a model, of a prompt {o.get('run')} failed on the Results page: "
                f"{where}: {why}; write its answer.")
    if source == "eval_failure":
        why = "; ".join(caught_words(c) for c in o.get("caught") or []) or "failed"
        # run_label is the run's display name ("run 2: name"), so it is not prefixed with "run" again.
        return (f"A failure of {o.get('run_label') or o.get('run')} on the Results page: {where}: {why}; "
                f"the draft started from {start_words(o.get('start'))}.")
    return ""
