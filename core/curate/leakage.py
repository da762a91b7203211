"""No leakage: training examples that repeat an eval prompt, and duplicates across the splits of a version.

A model scored on prompts it was trained on looks better than it is, and a comparison of runs on such an eval set
measures memory, not skill. So the app compares prompts (the messages before the answer) at two moments:

- when a version is frozen (``freeze_checked``): its train and validation prompts against every eval set's prompts,
  and its validation and test prompts against its train prompts (``split_leaks``);
- when training is launched (``launch_leaks``, called by core.train.runs.launch): the version's train and
  validation prompts against every eval set's prompts, less the examples the engineer excluded and the ones that
  came from an eval item still used for comparison (``eval_derived_excluded``).

Two prompts are the same (``exact``) when the content hash of core.curate.dedup says so (lowercased,
whitespace-collapsed roles and contents of the turns; the system prompt is left out), and nearly the same
(``near``) when the MinHash LSH index of core.curate.dedup finds them and their estimated Jaccard similarity of
word 3-grams is at least its ``NEAR_DUP_THRESHOLD``: the very rule an import uses to flag near duplicates, on the
text an import compares (the turns, not a shared system prompt). Eval sets belong to the evaluate stage, above
this one; their two tables are read here directly from storage, which is below both.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Iterable

from sqlalchemy import func
from sqlmodel import Session, select

from core.curate.datasets import freeze_version, version_records
from core.curate.overlap import match_prompts, prompt_keys
from core.errors import NotFound
from storage.models import (DatasetVersion, DatasetVersionItem, EvalPrompt, EvalSet, Example, Output, Project,
                            Score, User)

HELD_OUT = ("validation", "test")  # splits compared against the train split by split_leaks
TRAINED = ("train", "validation")  # splits a training run reads (its validation loss steers the choice of settings)


def _best(hits: Iterable[tuple]) -> tuple:
    """The strongest of several matches: exact before near, then the most similar, then the first."""
    return min(hits, key=lambda h: (h[1] != "exact", -h[2], h[0]))


def _eval_prompts(session: Session, project_id: int, ignore: Iterable[int],
                  limit: int | None = None) -> list[tuple[int, int, str, list]]:
    """(prompt id, eval set id, eval set name, messages) of every eval prompt of the project (the first ``limit``)."""
    query = (select(EvalPrompt.id, EvalPrompt.eval_set_id, EvalSet.name, EvalPrompt.messages)
             .join(EvalSet, EvalSet.id == EvalPrompt.eval_set_id).where(EvalSet.project_id == project_id))
    ignore = [int(i) for i in ignore]
    if ignore:
        query = query.where(EvalSet.id.not_in(ignore))
    return [tuple(row) for row in session.execute(query.order_by(EvalPrompt.id).limit(limit)).all()]


def find_leaks(session: Session, project_id: int, prompts: list[dict], *, ignore_eval_sets=()) -> list[dict]:
    """Training prompts that repeat a prompt of one of the project's eval sets (less ``ignore_eval_sets``).

    ``prompts``: ``[{"key": <hashable>, "messages": [messages before the answer]}]``. One leak per prompt and eval
    set, its strongest match: ``{"key", "eval_set_id", "eval_set", "eval_prompt_id", "kind": "exact"|"near",
    "similarity"}``, in the order of ``prompts``, then by eval set id.
    """
    evals = _eval_prompts(session, project_id, ignore_eval_sets)
    matches = match_prompts([p["messages"] for p in prompts], [e[3] for e in evals])
    leaks = []
    for prompt, hits in zip(prompts, matches):
        per_set: dict[int, list[tuple]] = defaultdict(list)
        for j, kind, similarity in hits:
            per_set[evals[j][1]].append((j, kind, similarity))
        for set_id in sorted(per_set):
            j, kind, similarity = _best(per_set[set_id])
            leaks.append({"key": prompt["key"], "eval_set_id": set_id, "eval_set": evals[j][2],
                          "eval_prompt_id": evals[j][0], "kind": kind, "similarity": similarity})
    return leaks


def _version_prompts(session: Session, version_id: int, splits: Iterable[str]) -> list[dict]:
    """``{"key": example id, "messages", "split"}`` for the items of ``splits`` of a version."""
    return [{"key": rec["example_id"], "messages": rec["prompt"], "split": split}
            for split in splits for rec in version_records(session, version_id, split)]


def _version(session: Session, version_id: int) -> DatasetVersion:
    version = session.get(DatasetVersion, version_id)
    if version is None:
        raise NotFound(f"No dataset version {version_id}.")
    return version


def version_eval_leaks(session: Session, version_id: int) -> list[dict]:
    """``find_leaks`` of a version's train and validation prompts, each leak with its ``split`` and with
    ``example_id`` as its key."""
    version = _version(session, version_id)
    if not _eval_prompts(session, version.project_id, (), limit=1):
        return []  # no eval set: nothing to read (the Train page asks on every rerun)
    prompts = _version_prompts(session, version_id, TRAINED)
    split_of = {p["key"]: p["split"] for p in prompts}
    return [{**leak, "example_id": leak["key"], "split": split_of[leak["key"]]}
            for leak in find_leaks(session, version.project_id, prompts)]


def split_leaks(session: Session, version_id: int) -> list[dict]:
    """Validation and test items whose prompt repeats a train item's prompt (exactly or nearly): ``{"example_id",
    "split", "train_example_id", "kind", "similarity", "train_matches"}``, one per held-out item, its strongest
    match first and the number of train items it repeats."""
    _version(session, version_id)
    train = _version_prompts(session, version_id, ["train"])
    held = _version_prompts(session, version_id, HELD_OUT)
    leaks = []
    for item, hits in zip(held, match_prompts([p["messages"] for p in held], [p["messages"] for p in train])):
        if hits:
            j, kind, similarity = _best(hits)
            leaks.append({"example_id": item["key"], "split": item["split"], "train_example_id": train[j]["key"],
                          "kind": kind, "similarity": similarity, "train_matches": len(hits)})
    return leaks


def freeze_checked(session: Session, user: User, project: Project, name: str, **kwargs) -> dict:
    """Freeze a version (core.curate.datasets.freeze_version, same arguments) and report what overlaps:
    ``{"version", "eval_leaks": version_eval_leaks, "split_leaks": split_leaks}``."""
    version = freeze_version(session, user, project, name, **kwargs)
    return {"version": version, "eval_leaks": version_eval_leaks(session, version.id),
            "split_leaks": split_leaks(session, version.id)}


# ---------------------------------------------------------------- examples that came from an eval item


def eval_sets_in_comparison(session: Session, project_id: int) -> set[int]:
    """Eval sets used to compare systems: outputs from more than one system, or any reviewer's score."""
    systems = session.execute(
        select(EvalPrompt.eval_set_id).join(Output, Output.prompt_id == EvalPrompt.id)
        .join(EvalSet, EvalSet.id == EvalPrompt.eval_set_id).where(EvalSet.project_id == project_id)
        .group_by(EvalPrompt.eval_set_id).having(func.count(func.distinct(Output.system)) > 1)).scalars().all()
    scored = session.execute(
        select(EvalPrompt.eval_set_id).join(Score, Score.prompt_id == EvalPrompt.id)
        .join(EvalSet, EvalSet.id == EvalPrompt.eval_set_id).where(EvalSet.project_id == project_id)
        .distinct()).scalars().all()
    return set(systems) | set(scored)


def eval_derived(session: Session, version_id: int) -> dict[int, int]:
    """Example id -> eval set id, for the version's examples made from an eval item (an ``origin`` naming an
    ``eval_set_id``: a blind-review send-back, or any later routing that records its origin the same way)."""
    items = select(DatasetVersionItem.example_id).where(DatasetVersionItem.version_id == version_id)
    out = {}
    for example_id, origin in session.execute(select(Example.id, Example.origin).where(Example.id.in_(items))):
        set_id = (origin or {}).get("eval_set_id") if isinstance(origin, dict) else None
        if set_id is not None:
            out[example_id] = int(set_id)
    return out


def eval_derived_excluded(session: Session, version_id: int, include_eval_derived: bool = False) -> list[int]:
    """The version's examples a run leaves out because they came from an eval set still used for comparison
    (none when the engineer chose ``include_eval_derived``)."""
    if include_eval_derived:
        return []
    derived = eval_derived(session, version_id)
    if not derived:
        return []
    compared = eval_sets_in_comparison(session, _version(session, version_id).project_id)
    return sorted(e for e, s in derived.items() if s in compared)


def launch_leaks(session: Session, version_id: int, exclude_example_ids: Iterable[int] = (),
                 include_eval_derived: bool = False) -> dict:
    """What a training launch must know: ``leaks`` (train/validation examples repeating an eval prompt that the
    run would still train on: these refuse the launch), ``excluded`` (leaks the engineer excluded),
    ``eval_derived_excluded`` (example ids left out automatically) and ``eval_derived_included`` (eval-derived
    examples kept because the engineer asked for them; their leaks do not refuse the launch)."""
    leaks = version_eval_leaks(session, version_id)
    excluded = {int(i) for i in exclude_example_ids}
    auto = set(eval_derived_excluded(session, version_id, include_eval_derived))
    included = sorted(eval_derived(session, version_id)) if include_eval_derived else []
    accepted = excluded | auto | set(included)
    return {"leaks": [leak for leak in leaks if leak["key"] not in accepted],
            "excluded": [leak for leak in leaks if leak["key"] in excluded],
            "eval_derived_excluded": sorted(auto), "eval_derived_included": included}


def leak_ids(leaks: list[dict]) -> list[int]:
    """The distinct example ids of a list of leaks, in order."""
    return list(dict.fromkeys(leak["key"] for leak in leaks))


def describe_leaks(leaks: list[dict], unit: str = "example", limit: int = 8) -> str:
    """One line naming the leaks by ids (no user text: pages may show it in a Markdown box): "example #12 repeats
    prompt #5 of eval set #2 (near, 0.91); ..." (``unit``: what the keys are, "example" or "pair")."""
    parts = [f"{unit} #{leak['key']} repeats prompt #{leak['eval_prompt_id']} of eval set #{leak['eval_set_id']} "
             f"({leak['kind']}, {leak['similarity']:.2f})" for leak in leaks[:limit]]
    more = f"; and {len(leaks) - limit} more" if len(leaks) > limit else ""
    return "; ".join(parts) + more


__all__ = ["find_leaks", "split_leaks", "freeze_checked", "launch_leaks", "version_eval_leaks", "match_prompts",
           "eval_derived", "eval_derived_excluded", "eval_sets_in_comparison", "describe_leaks", "leak_ids",
           "prompt_keys"]
