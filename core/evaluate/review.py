"""Blind side-by-side review. Items are (prompt, unordered pair of systems). Which output a reviewer sees as
"A" is decided by a hash of (eval set seed, prompt, pair, reviewer), so it is random across items and
reviewers yet stable on reload; the page only ever sees "A" and "B". A reviewer's score for an item is one row
(a second submit edits it). An item can be sent back to the annotators as a draft example to fix."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from itertools import combinations
from typing import Iterable

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from core.accounts import require
from core.curate.curation import create_example
from core.curate.dedup import content_hash
from core.errors import InvalidInput, NotFound
from core.evaluate.evalsets import eval_prompts, get_eval_set, latest_outputs
from core.evaluate.generate_config import decoding_differences, describe_differences
from core.projects import DEFAULT_RUBRIC
from storage.models import (DatasetVersion, DatasetVersionItem, EvalPrompt, EvalSet, Example, Project, Score,
                            User, utcnow)

PREFERENCES = ("A", "B", "tie", "both_bad")
PREFERENCE_WORDS = {"A": "A is better", "B": "B is better", "tie": "Tie", "both_bad": "Both bad"}


def pair_key(s1: str, s2: str) -> str:
    """The canonical name of an unordered pair of systems."""
    if s1 == s2:
        raise InvalidInput("A pair needs two different systems.")
    return "|".join(sorted((s1, s2)))


def split_pair(pair: str) -> tuple[str, str]:
    a, _, b = pair.partition("|")
    if not a or not b:
        raise InvalidInput(f"Not a pair of systems: {pair!r}.")
    return a, b


def review_items(session: Session, eval_set_id: int, outputs: dict | None = None) -> list[tuple[int, str]]:
    """All (prompt id, pair) items: every pair of systems that both have an output for the prompt."""
    outputs = outputs if outputs is not None else latest_outputs(session, eval_set_id)
    by_prompt: dict[int, set[str]] = {}
    for pid, system in outputs:
        by_prompt.setdefault(pid, set()).add(system)
    items = []
    for p in eval_prompts(session, eval_set_id):
        for a, b in combinations(sorted(by_prompt.get(p.id, ())), 2):
            items.append((p.id, pair_key(a, b)))
    return items


def _digest(*parts) -> bytes:
    return hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()


def orientation(seed: int, prompt_id: int, pair: str, reviewer_id: int) -> tuple[str, str]:
    """(system shown as A, system shown as B) for this reviewer and prompt: hash parity, so it is balanced
    across items and reviewers and the same on every reload."""
    first, second = split_pair(pair)
    if _digest("side", seed, prompt_id, pair, reviewer_id)[0] % 2 == 0:
        return first, second
    return second, first


def rubric_of(project: Project) -> list[dict]:
    """The project's rubric, or the default accuracy/tone/helpfulness 1-5 rubric."""
    return [dict(c) for c in (project.rubric or DEFAULT_RUBRIC)]


@dataclass
class ReviewItem:
    """What the blind review page shows. ``_system_a``/``_system_b`` are kept for the core only: the page
    renders the prompt, reference, texts and the reviewer's own previous score, never the systems."""

    eval_set_id: int
    prompt_id: int
    pair: str
    token: str  # opaque id for widget keys (no system names in it)
    messages: list
    reference: str
    text_a: str
    text_b: str
    rubric: list
    existing: dict | None = None  # {"scores": {crit: {"A":..,"B":..}}, "preference":.., "comment":..}
    done_by_me: int = 0
    total_items: int = 0
    decoding_note: str = ""  # the decoding settings the two answers differ in, values only (no system named)
    _system_a: str = field(default="", repr=False)
    _system_b: str = field(default="", repr=False)


def scores_of(session: Session, eval_set_id: int) -> list[Score]:
    return list(session.exec(select(Score).join(EvalPrompt, Score.prompt_id == EvalPrompt.id)
                             .where(EvalPrompt.eval_set_id == eval_set_id).order_by(Score.id)))


def _build_item(session: Session, es: EvalSet, user: User, prompt_id: int, pair: str, outputs: dict,
                mine: dict, n_items: int) -> ReviewItem:
    prompt = session.get(EvalPrompt, prompt_id)
    a, b = orientation(es.seed, prompt_id, pair, user.id)
    own = mine.get((prompt_id, pair))
    existing = None
    if own is not None:
        # Stored by system, shown in this reviewer's A/B orientation (which never changes for them).
        existing = {"scores": own.scores, "preference": own.preference, "comment": own.comment}
    differences = decoding_differences({side: [outputs[(prompt_id, system)].decoding or {}]
                                        for side, system in (("A", a), ("B", b))})
    return ReviewItem(eval_set_id=es.id, prompt_id=prompt_id, pair=pair,
                      token=_digest("token", es.id, prompt_id, pair).hex()[:12], messages=prompt.messages,
                      reference=prompt.reference, text_a=outputs[(prompt_id, a)].text,
                      text_b=outputs[(prompt_id, b)].text, rubric=rubric_of(session.get(Project, es.project_id)),
                      existing=existing, done_by_me=len(mine), total_items=n_items,
                      decoding_note=describe_differences(differences), _system_a=a, _system_b=b)


def next_item(session: Session, user: User, eval_set_id: int,
              exclude: Iterable[tuple[int, str]] = ()) -> ReviewItem | None:
    """The next item for this reviewer: one they have not scored (nor skipped: ``exclude``), among those with
    the fewest scores so far (so every item gets K reviewers before any gets K+1); None when none is left."""
    require(user, "score")
    es = get_eval_set(session, eval_set_id)
    outputs = latest_outputs(session, es.id)
    items = review_items(session, es.id, outputs)
    counts: dict[tuple[int, str], int] = {}
    mine: dict[tuple[int, str], Score] = {}
    for s in scores_of(session, es.id):
        counts[(s.prompt_id, s.pair)] = counts.get((s.prompt_id, s.pair), 0) + 1
        if s.reviewer_id == user.id:
            mine[(s.prompt_id, s.pair)] = s
    skipped = {(int(p), str(q)) for p, q in exclude}
    todo = [it for it in items if it not in mine and it not in skipped]
    if not todo:
        return None
    # Among the least-reviewed, a per-reviewer hash order spreads reviewers who start together over
    # different items instead of all landing on the first one.
    pick = min(todo, key=lambda it: (counts.get(it, 0), _digest("order", es.seed, user.id, *it)))
    return _build_item(session, es, user, pick[0], pick[1], outputs, mine, len(items))


def get_item(session: Session, user: User, eval_set_id: int, prompt_id: int, pair: str) -> ReviewItem:
    """A specific item as this reviewer sees it (to revisit and edit an earlier score)."""
    require(user, "score")
    es = get_eval_set(session, eval_set_id)
    outputs = latest_outputs(session, es.id)
    items = review_items(session, es.id, outputs)
    if (prompt_id, pair) not in items:
        raise NotFound("That item is not in this eval set.")
    mine = {(s.prompt_id, s.pair): s for s in scores_of(session, es.id) if s.reviewer_id == user.id}
    return _build_item(session, es, user, prompt_id, pair, outputs, mine, len(items))


def my_scored_items(session: Session, user: User, eval_set_id: int) -> list[dict]:
    """Items this reviewer has scored, most recently edited first, with a short excerpt of each prompt."""
    require(user, "score")
    rows = [s for s in scores_of(session, eval_set_id) if s.reviewer_id == user.id]
    rows.sort(key=lambda s: s.updated_at, reverse=True)
    out = []
    for s in rows:
        prompt = session.get(EvalPrompt, s.prompt_id)
        last = next((m["content"] for m in reversed(prompt.messages) if m["role"] == "user"), "")
        excerpt = " ".join(last.split())
        out.append({"prompt_id": s.prompt_id, "pair": s.pair, "updated_at": s.updated_at,
                    "excerpt": excerpt[:80] + ("…" if len(excerpt) > 80 else "")})
    return out


def review_progress(session: Session, user: User, eval_set_id: int) -> dict:
    """Coverage: items, items with at least K scores, total scores, per-reviewer counts (engineers and up)."""
    require(user, "evaluate")
    es = get_eval_set(session, eval_set_id)
    items = review_items(session, es.id)
    counts: dict = {}
    by_reviewer: dict[str, int] = {}
    names = {u.id: u.username for u in session.exec(select(User))}
    for s in scores_of(session, es.id):
        counts[(s.prompt_id, s.pair)] = counts.get((s.prompt_id, s.pair), 0) + 1
        who = names.get(s.reviewer_id, str(s.reviewer_id))
        by_reviewer[who] = by_reviewer.get(who, 0) + 1
    return {"items": len(items), "complete": sum(1 for it in items if counts.get(it, 0) >= es.reviewers_per_item),
            "scores": sum(counts.values()), "reviewers_per_item": es.reviewers_per_item,
            "by_reviewer": by_reviewer}


def _validate_scores(rubric: list[dict], scores: dict) -> dict:
    clean: dict = {}
    for crit in rubric:
        name = crit["name"]
        given = (scores or {}).get(name) or {}
        clean[name] = {}
        for side in ("A", "B"):
            value = given.get(side)
            if value is None:
                raise InvalidInput(f"Give {name} a score for {side}.")
            try:
                value = int(value)
            except (TypeError, ValueError):
                raise InvalidInput(f"The {name} score for {side} must be a whole number.") from None
            if not crit["min"] <= value <= crit["max"]:
                raise InvalidInput(f"The {name} score for {side} must be between {crit['min']} and {crit['max']}.")
            clean[name][side] = value
    return clean


def submit_score(session: Session, user: User, eval_set_id: int, prompt_id: int, pair: str, *, scores: dict,
                 preference: str, comment: str = "") -> Score:
    """Save this reviewer's judgement of an item; a second submit edits their row instead of adding one.

    ``scores`` is ``{criterion: {"A": int, "B": int}}`` and ``preference`` one of A / B / tie / both_bad, both
    in the reviewer's own A/B orientation; which system A was is filled in here, never taken from the page.
    """
    require(user, "score")
    es = get_eval_set(session, eval_set_id)
    outputs = latest_outputs(session, es.id)
    if (prompt_id, pair) not in review_items(session, es.id, outputs):
        raise NotFound("That item is not in this eval set.")
    clean = _validate_scores(rubric_of(session.get(Project, es.project_id)), scores)
    if preference not in PREFERENCES:
        raise InvalidInput("Choose an overall preference: A, B, tie or both bad.")
    a, b = orientation(es.seed, prompt_id, pair, user.id)
    values: dict = dict(scores=clean, preference=preference, comment=(comment or "").strip(), system_a=a, system_b=b)
    row = _own_score(session, prompt_id, pair, user.id)
    if row is None:
        row = Score(prompt_id=prompt_id, pair=pair, reviewer_id=user.id, **values)
        session.add(row)
        try:
            session.commit()
            session.refresh(row)
            return row
        except IntegrityError:
            # The same reviewer submitted twice at once (double click): the other request inserted; edit it.
            session.rollback()
            row = _own_score(session, prompt_id, pair, user.id)
    for k, v in values.items():
        setattr(row, k, v)
    row.updated_at = utcnow()
    session.add(row)
    session.commit()
    session.refresh(row)
    return row


def _own_score(session: Session, prompt_id: int, pair: str, reviewer_id: int) -> Score | None:
    return session.exec(select(Score).where(Score.prompt_id == prompt_id, Score.pair == pair,
                                            Score.reviewer_id == reviewer_id)).first()


SEND_BACK_STARTS = ("A", "B", "reference", "empty")
START_WORDS = {"A": "Answer A", "B": "Answer B", "reference": "The reference answer", "empty": "An empty answer"}


def split_leak_warning(session: Session, prompt: EvalPrompt) -> str | None:
    """A warning when the prompt is an example frozen into a test split: a draft of it, once approved, would
    carry an eval prompt into the training data of the next version; None otherwise."""
    if not prompt.example_id:
        return None
    hit = session.exec(select(DatasetVersion.id).join(DatasetVersionItem,
                                                        DatasetVersionItem.version_id == DatasetVersion.id)
                       .where(DatasetVersionItem.example_id == prompt.example_id, DatasetVersionItem.split == "test")
                       .order_by(DatasetVersion.id.desc())).first()
    if hit is None:
        return None
    # Ids only (no names): pages show this in a warning box, which renders Markdown.
    return (f"This prompt is example #{prompt.example_id}, in the test split of dataset version #{hit}. A draft "
            "of it, once approved, would put an eval prompt into the training data of later versions and make "
            "the comparison unfair. Send it back only to fix the example itself, and keep it out of training.")


def prompt_record(prompt: EvalPrompt, answer: str) -> tuple[str, list]:
    """(system prompt, turns) of a draft example holding an eval prompt and ``answer`` as its reply."""
    msgs = prompt.messages
    system = msgs[0]["content"] if msgs and msgs[0]["role"] == "system" else ""
    return system, [dict(m) for m in msgs if m["role"] != "system"] + [{"role": "assistant", "content": answer}]


def send_back_options(session: Session, user: User, eval_set_id: int, prompt_id: int) -> dict:
    """What a reviewer may start the new draft from (``starts``: A, B, the reference when there is one, empty),
    the suggested ``default`` and a ``leak`` warning (``split_leak_warning``)."""
    require(user, "score")
    es = get_eval_set(session, eval_set_id)
    prompt = session.get(EvalPrompt, prompt_id)
    if prompt is None or prompt.eval_set_id != es.id:
        raise NotFound("That prompt is not in this eval set.")
    starts = [k for k in SEND_BACK_STARTS if k != "reference" or prompt.reference.strip()]
    return {"starts": starts, "default": "reference" if "reference" in starts else "empty",
            "leak": split_leak_warning(session, prompt)}


def send_back_to_annotation(session: Session, user: User, eval_set_id: int, prompt_id: int, pair: str | None = None,
                            comment: str = "", start: str = "reference") -> Example:
    """Put an item back in the annotation queue as a new draft example to fix (source ``review_feedback``).

    The draft holds the prompt and starts from ``start``: "A" or "B" (the answers as this reviewer saw them),
    "reference" or "empty" (the annotator writes the answer). The reviewer's comment is kept whole as the
    draft's note, and ``origin`` records the eval set, prompt (``prompt_number`` counts from 1, as people see it;
    ``position`` is the stored index), reviewer, comment, start and any test-split example the prompt repeats, so
    the draft can be traced back to the review."""
    require(user, "score")
    if start not in SEND_BACK_STARTS:
        raise InvalidInput(f"Start the draft from one of: {', '.join(SEND_BACK_STARTS)}.")
    es = get_eval_set(session, eval_set_id)
    prompt = session.get(EvalPrompt, prompt_id)
    if prompt is None or prompt.eval_set_id != es.id:
        raise NotFound("That prompt is not in this eval set.")
    if start in ("A", "B"):
        if not pair:
            raise InvalidInput("Starting from answer A or B needs the pair of answers shown.")
        shown = dict(zip(("A", "B"), orientation(es.seed, prompt_id, pair, user.id)))
        output = latest_outputs(session, es.id).get((prompt_id, shown[start]))
        if output is None:
            raise NotFound("That item is not in this eval set.")
        answer = output.text
    else:
        answer = prompt.reference if start == "reference" else ""
    if start != "empty" and not answer.strip():
        raise InvalidInput(f"{START_WORDS[start]} is empty; start from another answer or an empty one.")
    system, turns = prompt_record(prompt, answer)
    project = session.get(Project, es.project_id)
    taken = session.exec(select(Example.id).where(Example.project_id == project.id,
                                                  Example.content_hash == content_hash(system, turns))).first()
    if taken is not None:
        raise InvalidInput(f"Example #{taken} already holds this prompt with this answer; edit it on the Annotate "
                           "page, or start the draft from another answer.")
    comment = (comment or "").strip()
    leak = split_leak_warning(session, prompt)
    origin = {"kind": "blind_review", "eval_set_id": es.id, "eval_set": es.name, "prompt_id": prompt.id,
              "position": prompt.position, "prompt_number": prompt.position + 1, "reviewer_id": user.id,
              "reviewer": user.username, "comment": comment, "start": start,
              "test_split_example_id": prompt.example_id if leak else None}
    return create_example(session, user, project, system=system, turns=turns, note=comment,
                          source="review_feedback", origin=origin, answer_to_write=start == "empty")
