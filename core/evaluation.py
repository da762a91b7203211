"""Evaluation: eval sets, generation launches, blind side-by-side review, results and exports.

An eval set is a frozen list of prompts (messages before the answer) with optional reference answers, taken
from a dataset version's test split or from an uploaded JSONL/CSV file. A generation job (core/generate.py)
writes one Output per prompt and system; a *system* is ``"base"`` (the base model) or ``"run:<job id>"`` (a
finished training run's adapter on that base).

Review items are (prompt, unordered pair of systems). Which output a reviewer sees as "A" is decided by a hash
of (eval set seed, prompt, pair, reviewer), so it is random across items and reviewers yet stable on reload;
the page only ever sees "A" and "B". A reviewer's score for an item is one row (a second submit edits it).
Results reveal identities: means with bootstrap intervals, win/tie/loss, Bradley-Terry leaderboard,
Krippendorff's alpha, automatic metrics; exports of DPO pairs, scores CSV and a Markdown report.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Iterable

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from core import stats
from core.accounts import require
from core.errors import InvalidInput, NotFound
from core.projects import DEFAULT_RUBRIC
from storage.models import EvalPrompt, EvalSet, Example, Job, JobStatus, Output, Project, Score, User, utcnow

BASE = "base"
PREFERENCES = ("A", "B", "tie", "both_bad")
PREFERENCE_WORDS = {"A": "A is better", "B": "B is better", "tie": "Tie", "both_bad": "Both bad"}
DEFAULT_REVIEWERS_PER_ITEM = 2
MAX_PROMPTS = 5000


# ---------------------------------------------------------------- systems


def run_system(job_id: int) -> str:
    return f"run:{job_id}"


def parse_system(key: str) -> tuple[str, int | None]:
    """``"base"`` -> ("base", None); ``"run:12"`` (or ``"12"``) -> ("run", 12)."""
    key = (key or "").strip()
    if key == BASE:
        return BASE, None
    raw = key.removeprefix("run:")
    if raw.isdigit():
        return "run", int(raw)
    raise InvalidInput(f"Unknown system {key!r}: use 'base' or 'run:<run id>'.")


def parse_systems(text: str | Iterable[str]) -> list[str]:
    """Normalise a comma-separated list (or iterable) of systems, keeping order and dropping repeats."""
    items = text.split(",") if isinstance(text, str) else list(text)
    out: list[str] = []
    for item in items:
        if not str(item).strip():
            continue
        kind, job_id = parse_system(str(item))
        key = BASE if kind == BASE else run_system(job_id)
        if key not in out:
            out.append(key)
    if not out:
        raise InvalidInput("Choose at least one system: the base model and/or finished runs.")
    return out


def run_base_model(job: Job) -> str | None:
    """The model a run's outputs come from: for LoRA/QLoRA the base it was fine-tuned from (its run folder's
    config.json, else its job config), on which generation attaches the adapter; for full fine-tuning the
    run's own saved model folder."""
    full_model = Path(job.run_dir or "") / "model"
    if job.run_dir and (full_model / "config.json").exists():
        return str(full_model)
    cfg_file = Path(job.run_dir or "") / "config.json"
    if job.run_dir and cfg_file.exists():
        try:
            base = json.loads(cfg_file.read_text()).get("base_model")
            if base:
                return base
        except (OSError, json.JSONDecodeError):
            pass
    return (job.config or {}).get("base_model")


def finished_runs(session: Session, project_id: int) -> list[Job]:
    """Training runs of the project that succeeded (their adapters can be evaluated)."""
    return list(session.exec(
        select(Job).where(Job.project_id == project_id, Job.kind == "train",
                          Job.status == JobStatus.succeeded.value).order_by(Job.id)))


def available_systems(session: Session, project_id: int) -> list[dict]:
    """Systems an engineer can generate with: the base model and each finished run, with labels."""
    out = [{"system": BASE, "label": "Base model (no adapter)", "base_model": None}]
    for job in finished_runs(session, project_id):
        out.append({"system": run_system(job.id), "label": f"Run {job.id}: {job.name}",
                    "base_model": run_base_model(job)})
    return out


def system_labels(session: Session, systems: Iterable[str]) -> dict[str, str]:
    """Human names for systems (results page only; never on the blind review page)."""
    out = {}
    for key in systems:
        kind, job_id = parse_system(key)
        if kind == BASE:
            out[key] = "base model"
        else:
            job = session.get(Job, job_id)
            out[key] = f"run {job_id}: {job.name}" if job else f"run {job_id}"
    return out


# ---------------------------------------------------------------- eval sets


def _check_name(session: Session, project_id: int, name: str) -> str:
    name = (name or "").strip()
    if not name:
        raise InvalidInput("An eval set needs a name.")
    if session.exec(select(EvalSet).where(EvalSet.project_id == project_id, EvalSet.name == name)).first():
        raise InvalidInput(f"An eval set named {name!r} already exists in this project.")
    return name


def _check_k(reviewers_per_item: int) -> int:
    k = int(reviewers_per_item)
    if not 1 <= k <= 20:
        raise InvalidInput("Reviewers per item must be between 1 and 20.")
    return k


def _save_eval_set(session: Session, eval_set: EvalSet, prompts: list[dict]) -> EvalSet:
    if not prompts:
        raise InvalidInput("No prompts to put in the eval set.")
    if len(prompts) > MAX_PROMPTS:
        raise InvalidInput(f"An eval set holds at most {MAX_PROMPTS} prompts; this has {len(prompts)}.")
    session.add(eval_set)
    session.flush()
    for i, p in enumerate(prompts):
        session.add(EvalPrompt(eval_set_id=eval_set.id, position=i, messages=p["messages"],
                               reference=p.get("reference") or "", example_id=p.get("example_id")))
    session.commit()
    session.refresh(eval_set)
    return eval_set


def create_eval_set_from_version(session: Session, user: User, project_id: int, version_id: int, name: str, *,
                                 split: str = "test",
                                 reviewers_per_item: int = DEFAULT_REVIEWERS_PER_ITEM, seed: int = 0) -> EvalSet:
    """Freeze the prompts of a dataset version's split (default test) with their answers as references."""
    require(user, "evaluate")
    from core.datasets import version_records
    from storage.models import DatasetVersion

    version = session.get(DatasetVersion, version_id)
    if version is None or version.project_id != project_id:
        raise NotFound(f"No dataset version {version_id} in this project.")
    name = _check_name(session, project_id, name)
    prompts = []
    for rec in version_records(session, version_id, split):
        completion = rec.get("completion") or []
        prompts.append({"messages": [dict(m) for m in rec["prompt"]],
                        "reference": completion[-1]["content"] if completion else "",
                        "example_id": rec.get("example_id")})
    if not prompts:
        raise InvalidInput(f"Version {version.name!r} has no {split} examples; freeze it with a {split} share "
                           "or upload prompts instead.")
    es = EvalSet(project_id=project_id, name=name, source="version", dataset_version_id=version_id,
                 created_by=user.id, reviewers_per_item=_check_k(reviewers_per_item), seed=int(seed))
    return _save_eval_set(session, es, prompts)


def _prompt_messages(raw, system: str, where: str) -> list[dict]:
    if isinstance(raw, str):
        if not raw.strip():
            raise InvalidInput(f"{where}: the prompt is empty.")
        msgs = [{"role": "user", "content": raw}]
    elif isinstance(raw, list) and raw and all(isinstance(m, dict) for m in raw):
        msgs = []
        for m in raw:
            role, content = m.get("role"), m.get("content")
            if role not in ("system", "user", "assistant") or not isinstance(content, str):
                raise InvalidInput(f"{where}: prompt messages need a role (system/user/assistant) and text content.")
            msgs.append({"role": role, "content": content})
        if msgs[-1]["role"] != "user":
            raise InvalidInput(f"{where}: the prompt's last message must be from the user.")
    else:
        raise InvalidInput(f"{where}: 'prompt' must be text or a list of chat messages.")
    if system and msgs[0]["role"] != "system":
        msgs.insert(0, {"role": "system", "content": system})
    return msgs


def parse_prompt_file(data: bytes | str, filename: str) -> list[dict]:
    """Prompts from an uploaded JSONL or CSV file: a ``prompt`` field (text, or chat messages in JSONL), an
    optional ``reference`` (also ``response``/``answer``/``completion``) and an optional ``system``."""
    text = data.decode("utf-8-sig") if isinstance(data, bytes) else data
    name = (filename or "").lower()
    rows: list[tuple[str, dict]] = []
    if name.endswith(".csv"):
        reader = csv.DictReader(io.StringIO(text))
        if not reader.fieldnames or "prompt" not in [f.strip().lower() for f in reader.fieldnames]:
            raise InvalidInput("The CSV needs a 'prompt' column (and optionally 'reference').")
        for i, row in enumerate(reader, 2):
            rows.append((f"row {i}", {(k or "").strip().lower(): v for k, v in row.items()}))
    elif name.endswith((".jsonl", ".json")):
        for i, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise InvalidInput(f"line {i}: not valid JSON ({err.msg}).") from None
            if not isinstance(obj, dict):
                raise InvalidInput(f"line {i}: each line must be a JSON object with a 'prompt'.")
            rows.append((f"line {i}", obj))
    else:
        raise InvalidInput("Upload a .jsonl or .csv file with a 'prompt' field.")
    prompts = []
    for where, row in rows:
        if "prompt" not in row:
            raise InvalidInput(f"{where}: no 'prompt' field.")
        reference = next((row[k] for k in ("reference", "response", "answer", "completion") if row.get(k)), "")
        if isinstance(reference, list):  # TRL conversational completion
            reference = reference[-1].get("content", "") if reference and isinstance(reference[-1], dict) else ""
        prompts.append({"messages": _prompt_messages(row["prompt"], str(row.get("system") or ""), where),
                        "reference": str(reference or "")})
    if not prompts:
        raise InvalidInput("The file has no prompts.")
    return prompts


def create_eval_set_from_file(session: Session, user: User, project_id: int, name: str, data: bytes | str,
                              filename: str, *, reviewers_per_item: int = DEFAULT_REVIEWERS_PER_ITEM,
                              seed: int = 0) -> EvalSet:
    """Freeze an uploaded list of prompts (JSONL/CSV) with optional reference answers."""
    require(user, "evaluate")
    if session.get(Project, project_id) is None:
        raise NotFound(f"No project {project_id}.")
    name = _check_name(session, project_id, name)
    prompts = parse_prompt_file(data, filename)
    es = EvalSet(project_id=project_id, name=name, source="upload", created_by=user.id,
                 reviewers_per_item=_check_k(reviewers_per_item), seed=int(seed))
    return _save_eval_set(session, es, prompts)


def get_eval_set(session: Session, eval_set_id_or_name: int | str, project_id: int | None = None) -> EvalSet:
    """An eval set by id, or by name within ``project_id``."""
    es = None
    if isinstance(eval_set_id_or_name, int) or str(eval_set_id_or_name).isdigit():
        es = session.get(EvalSet, int(eval_set_id_or_name))
    if es is None:
        q = select(EvalSet).where(EvalSet.name == str(eval_set_id_or_name))
        if project_id is not None:
            q = q.where(EvalSet.project_id == project_id)
        es = session.exec(q).first()
    if es is None or (project_id is not None and es.project_id != project_id):
        raise NotFound(f"No eval set {eval_set_id_or_name!r}.")
    return es


def eval_prompts(session: Session, eval_set_id: int) -> list[EvalPrompt]:
    return list(session.exec(select(EvalPrompt).where(EvalPrompt.eval_set_id == eval_set_id)
                             .order_by(EvalPrompt.position)))


def list_eval_sets(session: Session, project_id: int) -> list[dict]:
    """Eval sets of a project with prompt, output and score counts."""
    from sqlalchemy import func

    rows = []
    for es in session.exec(select(EvalSet).where(EvalSet.project_id == project_id).order_by(EvalSet.id)):
        n_prompts = session.exec(select(func.count()).select_from(EvalPrompt)
                                 .where(EvalPrompt.eval_set_id == es.id)).one()
        n_refs = session.exec(select(func.count()).select_from(EvalPrompt)
                              .where(EvalPrompt.eval_set_id == es.id, EvalPrompt.reference != "")).one()
        systems = session.exec(select(Output.system).join(EvalPrompt, Output.prompt_id == EvalPrompt.id)
                               .where(EvalPrompt.eval_set_id == es.id).distinct()).all()
        n_scores = session.exec(select(func.count()).select_from(Score).join(EvalPrompt, Score.prompt_id == EvalPrompt.id)
                                .where(EvalPrompt.eval_set_id == es.id)).one()
        rows.append({"id": es.id, "name": es.name, "source": es.source, "dataset_version_id": es.dataset_version_id,
                     "prompts": n_prompts, "references": n_refs, "systems": sorted(systems), "scores": n_scores,
                     "reviewers_per_item": es.reviewers_per_item, "created_at": es.created_at})
    return rows


def set_reviewers_per_item(session: Session, user: User, eval_set_id: int, k: int) -> EvalSet:
    """Change K, the number of reviewers each item gets before any item gets one more."""
    require(user, "evaluate")
    es = get_eval_set(session, eval_set_id)
    es.reviewers_per_item = _check_k(k)
    session.add(es)
    session.commit()
    session.refresh(es)
    return es


# ---------------------------------------------------------------- generation launch


def launch_generation(session: Session, user: User, eval_set_id: int, systems: Iterable[str] | str, *,
                      decoding: dict | None = None, base_model: str | None = None, batch_size: int = 8,
                      perplexity: bool = True, name: str = "") -> Job:
    """Queue a generation job: one output per prompt for each system, written to the Output table."""
    require(user, "evaluate")
    from core.generate import Decoding, GenerateConfig

    es = get_eval_set(session, eval_set_id)
    keys = parse_systems(systems)
    bases: dict[str, str | None] = {}
    for key in keys:
        kind, job_id = parse_system(key)
        if kind == BASE:
            continue
        run = session.get(Job, job_id)
        if run is None or run.project_id != es.project_id or run.kind != "train":
            raise NotFound(f"No training run {job_id} in this project.")
        if run.status != JobStatus.succeeded.value:
            raise InvalidInput(f"Run {job_id} has not finished successfully ({run.status}); only finished runs "
                               "can be evaluated.")
        if not (Path(run.run_dir) / "adapter_config.json").exists():
            raise InvalidInput(f"Run {job_id} has no adapter in its run folder ({run.run_dir}).")
        bases[key] = run_base_model(run)
    if base_model is None:
        found = [b for b in bases.values() if b]
        base_model = found[0] if found else None
    dec = Decoding(**(decoding or {}))
    cfg = GenerateConfig(eval_set_id=es.id, systems=keys, run_bases=bases, base_model=base_model,
                         decoding=dec, batch_size=int(batch_size), perplexity=bool(perplexity))
    from dataclasses import asdict

    from core.jobs import submit

    label = name.strip() or f"generate {es.name}: {', '.join(keys)}"
    return submit(session, user, project_id=es.project_id, kind="generate", name=label[:200], config=asdict(cfg),
                  module="core.generate", eval_set_id=es.id)


def generation_jobs(session: Session, eval_set_id: int) -> list[Job]:
    return list(session.exec(select(Job).where(Job.kind == "generate", Job.eval_set_id == eval_set_id)
                             .order_by(Job.id.desc())))


def generation_progress(job: Job) -> dict:
    """The last progress line the generation job wrote (done/total prompts, tokens/s), or {}."""
    path = Path(job.run_dir or "") / "progress.jsonl"
    if not job.run_dir or not path.exists():
        return {}
    last = ""
    with open(path, "rb") as fh:
        for line in fh:
            if line.strip():
                last = line
    try:
        return json.loads(last) if last else {}
    except json.JSONDecodeError:  # a line being written right now
        return {}


# ---------------------------------------------------------------- outputs and items


def latest_outputs(session: Session, eval_set_id: int) -> dict[tuple[int, str], Output]:
    """The newest output per (prompt id, system) in the eval set."""
    rows = session.exec(select(Output).join(EvalPrompt, Output.prompt_id == EvalPrompt.id)
                        .where(EvalPrompt.eval_set_id == eval_set_id).order_by(Output.id)).all()
    return {(o.prompt_id, o.system): o for o in rows}


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


def system_shown_as_a(seed: int, prompt_id: int, pair: str, reviewer_id: int) -> str:
    """Which system of ``pair`` this reviewer sees as A for this prompt: hash parity, so it is balanced across
    items and reviewers and the same on every reload."""
    first, second = split_pair(pair)
    return first if _digest("side", seed, prompt_id, pair, reviewer_id)[0] % 2 == 0 else second


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
    _system_a: str = field(default="", repr=False)
    _system_b: str = field(default="", repr=False)


def _scores_of(session: Session, eval_set_id: int) -> list[Score]:
    return list(session.exec(select(Score).join(EvalPrompt, Score.prompt_id == EvalPrompt.id)
                             .where(EvalPrompt.eval_set_id == eval_set_id).order_by(Score.id)))


def _build_item(session: Session, es: EvalSet, user: User, prompt_id: int, pair: str, outputs: dict,
                mine: dict, n_items: int) -> ReviewItem:
    prompt = session.get(EvalPrompt, prompt_id)
    a = system_shown_as_a(es.seed, prompt_id, pair, user.id)
    b = next(s for s in split_pair(pair) if s != a)
    own = mine.get((prompt_id, pair))
    existing = None
    if own is not None:
        # Stored by system, shown in this reviewer's A/B orientation (which never changes for them).
        existing = {"scores": own.scores, "preference": own.preference, "comment": own.comment}
    return ReviewItem(eval_set_id=es.id, prompt_id=prompt_id, pair=pair,
                      token=_digest("token", es.id, prompt_id, pair).hex()[:12], messages=prompt.messages,
                      reference=prompt.reference, text_a=outputs[(prompt_id, a)].text,
                      text_b=outputs[(prompt_id, b)].text, rubric=rubric_of(session.get(Project, es.project_id)),
                      existing=existing, done_by_me=len(mine), total_items=n_items, _system_a=a, _system_b=b)


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
    for s in _scores_of(session, es.id):
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
    mine = {(s.prompt_id, s.pair): s for s in _scores_of(session, es.id) if s.reviewer_id == user.id}
    return _build_item(session, es, user, prompt_id, pair, outputs, mine, len(items))


def my_scored_items(session: Session, user: User, eval_set_id: int) -> list[dict]:
    """Items this reviewer has scored, most recently edited first, with a short excerpt of each prompt."""
    rows = [s for s in _scores_of(session, eval_set_id) if s.reviewer_id == user.id]
    rows.sort(key=lambda s: s.updated_at, reverse=True)
    out = []
    for s in rows:
        prompt = session.get(EvalPrompt, s.prompt_id)
        last = next((m["content"] for m in reversed(prompt.messages) if m["role"] == "user"), "")
        excerpt = " ".join(last.split())
        out.append({"prompt_id": s.prompt_id, "pair": s.pair, "updated_at": s.updated_at,
                    "excerpt": excerpt[:80] + ("…" if len(excerpt) > 80 else "")})
    return out


def review_progress(session: Session, eval_set_id: int) -> dict:
    """Coverage: items, items with at least K scores, total scores, per-reviewer counts."""
    es = get_eval_set(session, eval_set_id)
    items = review_items(session, es.id)
    counts: dict = {}
    by_reviewer: dict[str, int] = {}
    names = {u.id: u.username for u in session.exec(select(User))}
    for s in _scores_of(session, es.id):
        counts[(s.prompt_id, s.pair)] = counts.get((s.prompt_id, s.pair), 0) + 1
        who = names.get(s.reviewer_id, str(s.reviewer_id))
        by_reviewer[who] = by_reviewer.get(who, 0) + 1
    return {"items": len(items), "complete": sum(1 for it in items if counts.get(it, 0) >= es.reviewers_per_item),
            "scores": sum(counts.values()), "reviewers_per_item": es.reviewers_per_item,
            "by_reviewer": by_reviewer}


def _validate_scores(rubric: list[dict], scores: dict) -> dict:
    clean = {}
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
    a = system_shown_as_a(es.seed, prompt_id, pair, user.id)
    b = next(s for s in split_pair(pair) if s != a)
    values = dict(scores=clean, preference=preference, comment=(comment or "").strip(), system_a=a, system_b=b)
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


def send_back_to_annotation(session: Session, user: User, eval_set_id: int, prompt_id: int, pair: str | None = None,
                            comment: str = "") -> Example:
    """Put an item back in the annotation queue as a new draft example to fix (source ``review_feedback``):
    the prompt, a starting answer and the reviewer's comment as its note. The starting answer is the
    reference, or, when there is none or it is already an example word for word, the output this reviewer
    preferred (else the one they scored higher)."""
    require(user, "score")
    from core.curation import create_example
    from core.dedup import content_hash

    es = get_eval_set(session, eval_set_id)
    prompt = session.get(EvalPrompt, prompt_id)
    if prompt is None or prompt.eval_set_id != es.id:
        raise NotFound("That prompt is not in this eval set.")
    candidates = [prompt.reference]
    if pair:
        outputs = latest_outputs(session, es.id)
        a = system_shown_as_a(es.seed, prompt_id, pair, user.id)
        b = next(s for s in split_pair(pair) if s != a)
        own = _own_score(session, prompt_id, pair, user.id)
        better, worse = a, b
        if own is not None and own.preference == "B":
            better, worse = b, a
        elif own is not None and own.preference != "A":
            total = {side: sum(v[side] for v in own.scores.values()) for side in ("A", "B")}
            if total["B"] > total["A"]:
                better, worse = b, a
        candidates += [outputs[(prompt_id, s)].text for s in (better, worse) if (prompt_id, s) in outputs]
    msgs = prompt.messages
    system = msgs[0]["content"] if msgs and msgs[0]["role"] == "system" else ""
    head = [dict(m) for m in msgs if m["role"] != "system"]
    project = session.get(Project, es.project_id)
    note = (comment or "").strip() or "(no comment)"
    note = f"From blind review of eval set {es.name!r}: {note}"
    for start in [c for c in candidates if (c or "").strip()] or ["(write the answer)"]:
        turns = head + [{"role": "assistant", "content": start}]
        taken = session.exec(select(Example.id).where(Example.project_id == project.id,
                                                      Example.content_hash == content_hash(system, turns))).first()
        if taken is not None:
            continue
        example = create_example(session, user, project, system=system, turns=turns, note=note)
        example.source = "review_feedback"
        session.add(example)
        session.commit()
        session.refresh(example)
        return example
    raise InvalidInput("This prompt is already in the annotation queue with each of these answers; "
                       "edit that example instead.")


# ---------------------------------------------------------------- results (identities revealed)


def _winner(score: Score) -> str:
    if score.preference == "A":
        return score.system_a
    if score.preference == "B":
        return score.system_b
    return score.preference


def score_table(session: Session, eval_set_id: int) -> list[dict]:
    """One row per score with systems revealed: per criterion the score of each system, and the winner."""
    names = {u.id: u.username for u in session.exec(select(User))}
    positions = {p.id: p.position for p in eval_prompts(session, eval_set_id)}
    rows = []
    for s in _scores_of(session, eval_set_id):
        row = {"prompt_id": s.prompt_id, "prompt_position": positions.get(s.prompt_id), "pair": s.pair,
               "reviewer": names.get(s.reviewer_id, str(s.reviewer_id)), "system_a": s.system_a,
               "system_b": s.system_b, "preference": s.preference, "winner": _winner(s), "comment": s.comment,
               "updated_at": s.updated_at.isoformat() if s.updated_at else ""}
        for crit, v in s.scores.items():
            row[f"{crit}_a"] = v.get("A")
            row[f"{crit}_b"] = v.get("B")
        rows.append(row)
    return rows


def _votes(scores: list[Score]) -> list[stats.Vote]:
    out = []
    for s in scores:
        outcome = {"A": "1", "B": "2"}.get(s.preference, s.preference)
        out.append((s.system_a, s.system_b, outcome))
    return out


def results(session: Session, user: User, eval_set_id: int, *, bootstrap_rounds: int = 200, seed: int = 0) -> dict:
    """Everything the results page and ``cli results`` show, with identities revealed."""
    require(user, "evaluate")
    es = get_eval_set(session, eval_set_id)
    project = session.get(Project, es.project_id)
    rubric = rubric_of(project)
    scores = _scores_of(session, es.id)
    outputs = latest_outputs(session, es.id)
    systems = sorted({sys for _, sys in outputs} | {x for s in scores for x in (s.system_a, s.system_b)})
    labels = system_labels(session, systems)

    per_system: dict[str, dict[str, list[int]]] = {s: {c["name"]: [] for c in rubric} for s in systems}
    crit_ratings: dict[str, dict[int, dict]] = {c["name"]: {} for c in rubric}
    pref_ratings: dict[int, dict] = {}
    for s in scores:
        for crit, v in s.scores.items():
            for side, system in (("A", s.system_a), ("B", s.system_b)):
                if crit in per_system.get(system, {}) and v.get(side) is not None:
                    per_system[system][crit].append(v[side])
                    crit_ratings[crit].setdefault(s.reviewer_id, {})[(s.prompt_id, s.pair, system)] = v[side]
        pref_ratings.setdefault(s.reviewer_id, {})[(s.prompt_id, s.pair)] = _winner(s)

    means = []
    for system in systems:
        for crit in rubric:
            iv = stats.bootstrap_mean(per_system[system][crit["name"]], seed=seed)
            if iv.n:
                means.append({"system": system, "label": labels[system], "criterion": crit["name"],
                              "mean": iv.value, "lo": iv.lo, "hi": iv.hi, "n": iv.n})

    votes = _votes(scores)
    wtl = stats.win_tie_loss(votes)
    for row in wtl:
        row["label_a"], row["label_b"] = labels.get(row["system_a"]), labels.get(row["system_b"])
    board = stats.bradley_terry_bootstrap(votes, rounds=bootstrap_rounds, seed=seed) if votes else []
    for row in board:
        row["label"] = labels.get(row["system"])

    agreement = []
    for crit in rubric:
        ratings = crit_ratings[crit["name"]]
        agreement.append({"criterion": crit["name"], "measure": "Krippendorff's alpha (ordinal)",
                          "alpha": stats.krippendorff_alpha(ratings, level="ordinal",
                                                            value_domain=range(crit["min"], crit["max"] + 1)),
                          "percent_agreement": stats.percent_agreement(ratings)})
    agreement.append({"criterion": "preference", "measure": "Krippendorff's alpha (nominal)",
                      "alpha": stats.krippendorff_alpha(pref_ratings, level="nominal"),
                      "percent_agreement": stats.percent_agreement(pref_ratings)})

    prompts = {p.id: p for p in eval_prompts(session, es.id)}
    perplexities: dict[str, float] = {}
    validation_ppl: dict[str, float] = {}
    for job in reversed(generation_jobs(session, es.id)):  # oldest first, newest wins
        for system, value in ((job.result or {}).get("perplexity") or {}).items():
            perplexities[system] = value
        for system, value in ((job.result or {}).get("validation_perplexity") or {}).items():
            validation_ppl[system] = value
    metrics = []
    for system in systems:
        pairs = [(o.text, prompts[pid].reference) for (pid, sysk), o in outputs.items()
                 if sysk == system and pid in prompts]
        row = {"system": system, "label": labels[system], "outputs": len(pairs)}
        row.update(stats.automatic_metrics([p for p, _ in pairs], [r for _, r in pairs]))
        row["references"] = row.pop("n")
        row["perplexity"] = perplexities.get(system)
        row["validation_perplexity"] = validation_ppl.get(system)
        toks = [o.n_new_tokens for (_, sysk), o in outputs.items() if sysk == system]
        row["mean_new_tokens"] = sum(toks) / len(toks) if toks else None
        metrics.append(row)

    return _no_nan({"eval_set": {"id": es.id, "name": es.name, "prompts": len(prompts),
                         "reviewers_per_item": es.reviewers_per_item},
            "systems": [{"system": s, "label": labels[s]} for s in systems],
            "progress": review_progress(session, es.id), "means": means, "win_tie_loss": wtl,
            "leaderboard": board, "agreement": agreement, "metrics": metrics, "n_scores": len(scores)})


def _no_nan(value):
    """NaN (a metric with no data) becomes None, so JSON output stays valid."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_no_nan(v) for v in value]
    return value


# ---------------------------------------------------------------- exports


def dpo_pairs(session: Session, eval_set_id: int) -> list[dict]:
    """Preference pairs in TRL's conversational format: ``prompt`` (messages), ``chosen``/``rejected``
    (one assistant message each). One pair per item, by majority of the reviewers' A/B preferences; items
    with only ties, both-bad votes or an even split give none."""
    outputs = latest_outputs(session, eval_set_id)
    prompts = {p.id: p for p in eval_prompts(session, eval_set_id)}
    tally: dict[tuple[int, str], dict[str, int]] = {}
    for s in _scores_of(session, eval_set_id):
        if s.preference in ("A", "B"):
            t = tally.setdefault((s.prompt_id, s.pair), {})
            w = _winner(s)
            t[w] = t.get(w, 0) + 1
    out = []
    for (pid, pair), t in sorted(tally.items()):
        ranked = sorted(t.items(), key=lambda kv: -kv[1])
        if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
            continue
        chosen = ranked[0][0]
        rejected = next(s for s in split_pair(pair) if s != chosen)
        if (pid, chosen) not in outputs or (pid, rejected) not in outputs:
            continue
        out.append({"prompt": [dict(m) for m in prompts[pid].messages],
                    "chosen": [{"role": "assistant", "content": outputs[(pid, chosen)].text}],
                    "rejected": [{"role": "assistant", "content": outputs[(pid, rejected)].text}]})
    return out


def export_dpo(session: Session, user: User, eval_set_id: int, out_dir: str | Path | None = None) -> dict:
    """Write DPO pairs as ``dpo.jsonl`` and a ``datasets`` folder (``save_to_disk``) under ``out_dir``."""
    require(user, "evaluate")
    from core.workspace import exports_dir

    es = get_eval_set(session, eval_set_id)
    rows = dpo_pairs(session, es.id)
    if not rows:
        raise InvalidInput("No preference pairs yet: DPO pairs come from items where reviewers preferred A or B.")
    out = Path(out_dir) if out_dir else exports_dir() / f"evalset-{es.id}-dpo"
    out.mkdir(parents=True, exist_ok=True)
    jsonl = out / "dpo.jsonl"
    with open(jsonl, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    from datasets import Dataset

    disk = out / "dpo_dataset"
    Dataset.from_list(rows).save_to_disk(str(disk))
    return {"pairs": len(rows), "jsonl": str(jsonl), "dataset": str(disk)}


def scores_csv(session: Session, user: User, eval_set_id: int) -> str:
    """All scores as CSV text (systems revealed)."""
    require(user, "evaluate")
    es = get_eval_set(session, eval_set_id)
    rows = score_table(session, es.id)
    buf = io.StringIO()
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    writer = csv.DictWriter(buf, fieldnames=columns or ["prompt_id", "pair", "reviewer"])
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _fmt(value, digits: int = 2) -> str:
    if value is None or value != value:  # None or NaN
        return "n/a"
    return f"{value:.{digits}f}"


def comparison_report(session: Session, user: User, eval_set_id: int, *, bootstrap_rounds: int = 200) -> str:
    """A Markdown report of the comparison: leaderboard, means, win/tie/loss, agreement and metrics."""
    return report_markdown(results(session, user, eval_set_id, bootstrap_rounds=bootstrap_rounds))


def report_markdown(res: dict) -> str:
    """The Markdown comparison report of a ``results()`` dict."""
    es = res["eval_set"]
    lines = [f"# Comparison report: {es['name']}", "",
             f"{es['prompts']} prompts, {res['n_scores']} scores, {res['progress']['complete']} of "
             f"{res['progress']['items']} items with at least {es['reviewers_per_item']} reviewers.", ""]
    if res["leaderboard"]:
        lines += ["## Leaderboard (Bradley-Terry, Elo scale, 95% bootstrap interval)", "",
                  "| system | rating | 95% interval | votes |", "|---|---:|---|---:|"]
        lines += [f"| {r['label']} | {r['rating']:.0f} | {r['lo']:.0f} to {r['hi']:.0f} | {r['n_votes']} |"
                  for r in res["leaderboard"]]
        lines.append("")
    if res["means"]:
        lines += ["## Mean scores (95% bootstrap interval)", "", "| system | criterion | mean | interval | n |",
                  "|---|---|---:|---|---:|"]
        lines += [f"| {r['label']} | {r['criterion']} | {r['mean']:.2f} | {r['lo']:.2f} to {r['hi']:.2f} | {r['n']} |"
                  for r in res["means"]]
        lines.append("")
    if res["win_tie_loss"]:
        lines += ["## Win / tie / loss", "", "| A | B | A wins | ties (incl. both bad) | B wins | n |",
                  "|---|---|---:|---:|---:|---:|"]
        lines += [f"| {r['label_a']} | {r['label_b']} | {r['a_win_rate']:.0%} | {r['tie_rate']:.0%} | "
                  f"{r['b_win_rate']:.0%} | {r['n']} |" for r in res["win_tie_loss"]]
        lines.append("")
    lines += ["## Agreement between reviewers", "", "| criterion | measure | alpha | % agreement |",
              "|---|---|---:|---:|"]
    lines += [f"| {r['criterion']} | {r['measure']} | {_fmt(r['alpha'])} | {_fmt(r['percent_agreement'])} |"
              for r in res["agreement"]]
    lines += ["", "## Automatic metrics against references", "",
              "| system | outputs | references | ROUGE-L | BLEU | exact match | perplexity | validation perplexity |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['label']} | {r['outputs']} | {r['references']} | {_fmt(r['rouge_l'], 3)} | {_fmt(r['bleu'], 1)} "
              f"| {_fmt(r['exact_match'], 3)} | {_fmt(r['perplexity'])} | {_fmt(r['validation_perplexity'])} |"
              for r in res["metrics"]]
    return "\n".join(lines) + "\n"
