"""Model-drafted answers: a background job (core.evaluate.draft_job) has a chosen system, the base model or a
finished run, write a first answer into each example that still needs one, so annotators edit instead of
writing from nothing; and a measure of how much the experts changed those drafts.

An example needs an answer when it is a draft (or was rejected) whose last turn is an empty assistant answer: a
prompt-only record from an import (core.curate.formats), or a send-back that started empty. The job writes the
answer as a new version of the example, still a draft, and keeps in ``origin["drafted"]`` the system, its label,
the job and the drafted text. Annotators see "Drafted by <system>" on Annotate, edit and submit as usual (the
example's history says who edited). ``draft_edit_stats`` compares each submitted draft's final answer with the
drafted text: the mean normalised character-level Levenshtein distance (rapidfuzz: edits / length of the
longer text; 0 = kept as drafted, 1 = rewritten) per drafting system, a direct measure of how close the model
is to the experts.

This module is light (pages import it); the model runs only in the job's own process.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from statistics import mean

from sqlmodel import Session, select

from core.accounts import require
from core.configs import strict_from_dict
from core.errors import InvalidInput, NotFound
from core.evaluate.generate_config import Decoding
from core.evaluate.systems import (BASE, evaluated_system, finished_runs, parse_system, plain_system,
                                   run_base_model, system_labels)
from core.jobs import rundir
from core.jobs.queue import resume_kind, submit
from core.train.runs import KIND as TRAIN_KIND
from storage.models import Example, ExampleStatus, Job, JobStatus, Project, User, visible_examples

KIND = "draft"
WORKER = "core.evaluate.draft_job"
OPEN = (ExampleStatus.draft.value, ExampleStatus.rejected.value)  # statuses an annotator still works on
MAX_EXAMPLES = 100_000


@dataclass
class DraftConfig:
    """A draft-answers job's config.json."""

    system: str
    """"base" or "run:<job id>": the model that drafts the answers."""
    example_ids: list[int] = field(default_factory=list)
    """The examples to draft (those that still need an answer when the job reaches them)."""
    base_model: str | None = None
    """The model behind "base", or the base a run's adapter is attached to (default: the embedded model)."""
    decoding: Decoding = field(default_factory=Decoding)
    batch_size: int = 8
    """Prompts generated together; larger is faster until memory runs out."""

    def __post_init__(self):
        if isinstance(self.decoding, dict):
            self.decoding = Decoding(**self.decoding)
        plain_system(self.system)
        if not 1 <= int(self.batch_size) <= 256:
            raise InvalidInput("Batch size must be between 1 and 256.")
        self.batch_size = int(self.batch_size)
        self.example_ids = [int(i) for i in self.example_ids]

    @classmethod
    def from_dict(cls, data: dict) -> "DraftConfig":
        """From a config.json dict; an unknown key is refused."""
        return strict_from_dict(cls, data, "draft answers")


def needs_answer(example: Example) -> bool:
    """An example an annotator still works on whose last turn is an empty assistant answer."""
    turns = example.turns or []
    return (example.status in OPEN and bool(turns) and turns[-1].get("role") == "assistant"
            and not (turns[-1].get("content") or "").strip())


def needs_answer_ids(session: Session, project_id: int, *, tag: str | None = None,
                     limit: int | None = None) -> list[int]:
    """Ids of the project's examples that need an answer (optionally only those tagged ``tag``), oldest first."""
    q = (select(Example).where(Example.project_id == project_id, Example.status.in_(OPEN), visible_examples())
         .order_by(Example.id))
    out = []
    for ex in session.exec(q):
        if needs_answer(ex) and (not tag or tag in (ex.tags or [])):
            out.append(ex.id)
            if limit and len(out) >= limit:
                break
    return out


def _system_base(session: Session, project_id: int, system: str) -> str | None:
    """The base model a run's adapter goes on (None for the base system), after checking the run can draft."""
    kind, run_id = parse_system(system)
    if kind == BASE:
        return None
    run = session.get(Job, run_id)
    if run is None or run.project_id != project_id or run.kind != TRAIN_KIND:
        raise NotFound(f"No training run {run_id} in this project.")
    if run.status != JobStatus.succeeded.value:
        raise InvalidInput(f"Run {run_id} has not finished successfully ({run.status}); only finished runs can draft.")
    if not rundir.has_model(run.run_dir):
        raise InvalidInput(f"Run {run_id} has no saved adapter or model in its run folder ({run.run_dir}).")
    return run_base_model(run)


def launch_drafting(session: Session, user: User, project_id: int, system: str, *,
                    example_ids: list[int] | None = None, tag: str | None = None, limit: int | None = None,
                    base_model: str | None = None, decoding: dict | None = None, batch_size: int = 8) -> Job:
    """Queue a draft-answers job: ``system`` writes an answer into each example that needs one (all of the
    project's, those tagged ``tag``, at most ``limit``, or exactly ``example_ids``)."""
    require(user, "evaluate")
    if session.get(Project, project_id) is None:
        raise NotFound(f"Project {project_id} does not exist.")
    key = evaluated_system(system)
    kind, system = key.kind, str(key)
    run_base = _system_base(session, project_id, system)
    if example_ids:
        wanted = set(needs_answer_ids(session, project_id))
        missing = [i for i in example_ids if int(i) not in wanted]
        if missing:
            raise InvalidInput(f"Example(s) {', '.join(f'#{i}' for i in missing[:10])} do not need an answer "
                               "(not a draft with an empty answer in this project).")
        ids = sorted({int(i) for i in example_ids})
    else:
        ids = needs_answer_ids(session, project_id, tag=tag, limit=limit or MAX_EXAMPLES)
    if not ids:
        raise InvalidInput("No example needs an answer" + (f" with tag {tag!r}" if tag else "") +
                           ": import prompt-only records (a prompt without its answer) first.")
    if kind == BASE and base_model is None:  # as generation does: the base the project's runs were trained from
        runs = finished_runs(session, project_id)
        base_model = run_base_model(runs[-1]) if runs else None
    cfg = DraftConfig(system=system, example_ids=ids, base_model=run_base or base_model,
                      decoding=Decoding(**(decoding or {})), batch_size=batch_size)
    label = system_labels(session, [system])[system]
    return submit(session, user, project_id=project_id, kind=KIND, action="evaluate",
                  name=f"draft answers: {label}"[:200], config=asdict(cfg), module=WORKER)


def resume_drafting(session: Session, user: User, job_id: int) -> Job:
    """Continue a failed or canceled draft-answers job: examples it already answered no longer need one."""
    return resume_kind(session, user, job_id, KIND, "a draft-answers job")


def drafting_jobs(session: Session, user: User, project_id: int, limit: int = 20) -> list[dict]:
    """The project's latest draft-answers jobs: id, system, status, how many examples and how many drafted."""
    require(user, "evaluate")
    jobs = session.exec(select(Job).where(Job.project_id == project_id, Job.kind == KIND)
                        .order_by(Job.id.desc()).limit(limit)).all()
    return [{"job": j.id, "system": (j.config or {}).get("system"), "status": j.status,
             "examples": len((j.config or {}).get("example_ids") or []),
             "drafted": (j.result or {}).get("drafted"), "error": (j.error or "").splitlines()[0] if j.error else ""}
            for j in jobs]


def drafted_info(example: Example) -> dict | None:
    """What a model drafted into this example (``origin["drafted"]``: system, label, job, text), or None."""
    drafted = (example.origin or {}).get("drafted")
    return drafted if isinstance(drafted, dict) and "text" in drafted else None


def edit_distance(drafted: str, final: str) -> float:
    """Normalised character-level Levenshtein distance (rapidfuzz): edits over the longer text's length."""
    from rapidfuzz.distance import Levenshtein

    return float(Levenshtein.normalized_distance(drafted, final))


def draft_edits(session: Session, project_id: int) -> list[dict]:
    """One row per model-drafted example an expert has submitted since (submitted, approved or rejected): the
    drafting system, who edited it last, the drafted and final answers and their normalised edit distance."""
    names = {u.id: u.username for u in session.exec(select(User))}
    rows = []
    q = select(Example).where(Example.project_id == project_id, Example.status.not_in([ExampleStatus.draft.value]),
                              visible_examples())
    for ex in session.exec(q):
        drafted = drafted_info(ex)
        if drafted is None:
            continue
        final = ex.turns[-1]["content"] if ex.turns else ""
        rows.append({"example_id": ex.id, "system": drafted.get("system"), "label": drafted.get("label"),
                     "edited_by": names.get(ex.updated_by), "status": ex.status,
                     "distance": round(edit_distance(drafted["text"], final), 4),
                     "unchanged": drafted["text"] == final})
    return rows


def draft_edit_stats(session: Session, user: User, project_id: int) -> list[dict]:
    """Per drafting system: how many drafts experts submitted, the mean normalised edit distance between the
    drafted and the final answer, and how many were kept unchanged; also how many drafts are still waiting."""
    require(user, "curate")
    edits = draft_edits(session, project_id)
    waiting: dict[str, int] = {}
    # The label each system had when it drafted (kept even if the run is deleted later).
    labels = {r["system"]: r["label"] for r in edits if r["label"]}
    for ex in session.exec(select(Example).where(Example.project_id == project_id,
                                                 Example.status == ExampleStatus.draft.value, visible_examples())):
        drafted = drafted_info(ex)
        if drafted is not None:
            waiting[drafted.get("system")] = waiting.get(drafted.get("system"), 0) + 1
            labels.setdefault(drafted.get("system"), drafted.get("label"))
    systems = sorted({r["system"] for r in edits} | set(waiting), key=lambda s: (s != BASE, s))
    labels = {**system_labels(session, systems), **{k: v for k, v in labels.items() if v}}
    out = []
    for system in systems:
        mine = [r for r in edits if r["system"] == system]
        out.append({"system": system, "label": labels.get(system, system), "submitted": len(mine),
                    "mean_edit_distance": round(mean(r["distance"] for r in mine), 4) if mine else None,
                    "unchanged": sum(r["unchanged"] for r in mine), "waiting": waiting.get(system, 0)})
    return out
