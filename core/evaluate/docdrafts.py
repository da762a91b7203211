"""Generated drafts: a background job (core.evaluate.docdraft_job) has a model write new examples for the experts
to edit or approve, in two ways:

- **from documents**: N questions per chunk of the chosen documents, each answered from that chunk alone; a draft
  says "Generated from <document> §<chunk>";
- **from failures**: K paraphrases of each prompt a run failed on (core.evaluate.failures), drafts whose answer is
  still to write, keeping the failing prompt's lineage.

Every generated prompt passes the import's gate first (core.curate.screening): a repeat of an eval prompt or of a
validation/test item is withheld and counted, an example already holding the same text is skipped, a near copy of
an example is flagged. Drafts made by a model say so (``origin["drafted"]``), so the Datasets page measures how
much the experts changed them per model, as for drafted answers. This module is light: the model runs only in the
job's process.
"""
from __future__ import annotations

import re
import secrets
from dataclasses import asdict, dataclass, field

from sqlmodel import Session, select

from core.accounts import require
from core.configs import strict_from_dict
from core.curate.documents import chunks_of, get_document
from core.errors import InvalidInput, NotFound
from core.evaluate.drafting import _system_base
from core.evaluate.failures import find_failures
from core.evaluate.generate_config import Decoding
from core.evaluate.systems import (BASE, finished_runs, parse_system, plain_system, run_base_model,
                                   system_labels)
from core.jobs.queue import resume_kind, submit
from storage.models import Job, Project, User

KIND = "generate_drafts"
WORKER = "core.evaluate.docdraft_job"
MODES = ("documents", "paraphrases")
MAX_SOURCES = 5_000

QUESTIONS_PROMPT = ("Read the passage from {document}. Write {n} different questions a customer could ask that "
                    "this passage answers. Write one question per line and nothing else.")
ANSWER_PROMPT = ("Answer the customer's question using only the passage below, from {document}. If the passage "
                 "does not answer it, say that you will check and come back.\n\nPassage:\n{text}")
PARAPHRASE_PROMPT = ("Rewrite the customer's question in {n} different ways that keep its meaning. Write one "
                     "question per line and nothing else.")


@dataclass
class GenerateDraftsConfig:
    """A generated-drafts job's config.json."""

    system: str
    """"base" or "run:<job id>": the model that writes the drafts."""
    mode: str = "documents"
    """"documents": questions and grounded answers from chunks; "paraphrases": rewordings of failing prompts."""
    sources: list[dict] = field(default_factory=list)
    """What to generate from: chunks ({"chunk_id", "document_id", "document", "version", "ordinal", "heading",
    "text"}) or failing prompts ({"text", "eval_set_id", "eval_set", "prompt_id", "position", "run", "answer"})."""
    per_source: int = 2
    """Questions per chunk, or paraphrases per failing prompt (1-10)."""
    batch: str = ""
    """A token shared by a job and its resumptions: a source that already has drafts of this batch is skipped."""
    base_model: str | None = None
    """The model behind "base", or the base a run's adapter is attached to (default: the embedded model)."""
    decoding: Decoding = field(default_factory=lambda: Decoding(max_new_tokens=160))
    batch_size: int = 8

    def __post_init__(self):
        if isinstance(self.decoding, dict):
            self.decoding = Decoding(**self.decoding)
        plain_system(self.system)
        if self.mode not in MODES:
            raise InvalidInput(f"Mode must be one of: {', '.join(MODES)}.")
        if not 1 <= int(self.per_source) <= 10:
            raise InvalidInput("Ask for between 1 and 10 questions or paraphrases per source.")
        if not 1 <= int(self.batch_size) <= 256:
            raise InvalidInput("Batch size must be between 1 and 256.")
        self.per_source, self.batch_size = int(self.per_source), int(self.batch_size)
        self.batch = self.batch or secrets.token_hex(6)

    @classmethod
    def from_dict(cls, data: dict) -> "GenerateDraftsConfig":
        return strict_from_dict(cls, data, "generated drafts")


def parse_lines(text: str, limit: int) -> list[str]:
    """Questions or paraphrases from a model's answer: one per line, list markers and quotes taken off, lines of
    fewer than three words dropped, at most ``limit`` different ones."""
    out: list[str] = []
    for line in (text or "").splitlines():
        line = re.sub(r"^\s*(?:[-*•]|\(?\d{1,2}[.):]|Q\d*[.:])\s*", "", line).strip().strip('"“”').strip()
        if len(line.split()) >= 3 and line.lower() not in {o.lower() for o in out}:
            out.append(line)
        if len(out) >= limit:
            break
    return out


def chunk_sources(session: Session, project: Project, document_ids: list[int], max_chunks: int = 0) -> list[dict]:
    """The chunks of the chosen documents (their current versions) as generation sources, in document order."""
    out: list[dict] = []
    for doc_id in document_ids:
        doc = get_document(session, project, int(doc_id))
        if doc.deleted_at is not None or not doc.current:
            raise InvalidInput(f"{doc.name} version {doc.version} is not a current document.")
        out.extend({"chunk_id": c.id, "document_id": doc.id, "document": doc.name, "version": doc.version,
                    "ordinal": c.ordinal, "heading": c.heading, "text": c.text} for c in chunks_of(session, doc))
    return out[:max_chunks] if max_chunks else out


def failure_sources(session: Session, user: User, eval_set_id: int, run: str, **rule) -> list[dict]:
    """The prompts ``run`` failed on in an eval set (core.evaluate.failures.find_failures) as paraphrase sources."""
    out = []
    for item in find_failures(session, user, eval_set_id, run, **rule):
        prompt = item["prompt"]
        user_turns = [m["content"] for m in prompt.messages if m.get("role") == "user"]
        if user_turns:
            out.append({"text": user_turns[-1], "eval_set_id": eval_set_id, "prompt_id": prompt.id,
                        "position": prompt.position, "run": run, "caught": item["caught"]})
    return out


def _model_base(session: Session, project_id: int, system: str, base_model: str | None) -> str | None:
    run_base = _system_base(session, project_id, system)
    if parse_system(system)[0] == BASE and base_model is None:  # as generation does: the runs' own base
        runs = finished_runs(session, project_id)
        base_model = run_base_model(runs[-1]) if runs else None
    return run_base or base_model


def launch_generated_drafts(session: Session, user: User, project_id: int, system: str, mode: str,
                            sources: list[dict], *, per_source: int = 2, base_model: str | None = None,
                            decoding: dict | None = None, batch_size: int = 8) -> Job:
    """Queue a generated-drafts job over ``sources`` (``chunk_sources`` or ``failure_sources``)."""
    require(user, "evaluate")
    require(user, "curate")
    if session.get(Project, project_id) is None:
        raise NotFound(f"Project {project_id} does not exist.")
    if not sources:
        raise InvalidInput("Nothing to generate from: choose documents with text, or a run with failures.")
    if len(sources) > MAX_SOURCES:
        raise InvalidInput(f"{len(sources):,} sources is more than the {MAX_SOURCES:,} one job takes; choose fewer.")
    kind, run_id = parse_system(system)
    system = BASE if kind == BASE else f"run:{run_id}"
    cfg = GenerateDraftsConfig(system=system, mode=mode, sources=sources, per_source=per_source,
                               base_model=_model_base(session, project_id, system, base_model),
                               decoding=Decoding(**{"max_new_tokens": 160, **(decoding or {})}),
                               batch_size=batch_size)
    label = system_labels(session, [system])[system]
    what = "questions from documents" if mode == "documents" else "paraphrases of failures"
    return submit(session, user, project_id=project_id, kind=KIND, action="evaluate",
                  name=f"{what}: {label}"[:200], config=asdict(cfg), module=WORKER)


def resume_generated_drafts(session: Session, user: User, job_id: int) -> Job:
    """Continue a failed or canceled generated-drafts job: sources that already gave drafts are skipped."""
    return resume_kind(session, user, job_id, KIND, "a generated-drafts job")


def generated_drafts_jobs(session: Session, project_id: int, limit: int = 20) -> list[Job]:
    return list(session.exec(select(Job).where(Job.project_id == project_id, Job.kind == KIND)
                             .order_by(Job.id.desc()).limit(limit)))


def paraphrase_jobs(session: Session, project_id: int, eval_set_id: int, limit: int = 5) -> list[Job]:
    """The newest paraphrase jobs of an eval set's failures (the Results page follows them), newest first."""
    jobs = session.exec(select(Job).where(Job.project_id == project_id, Job.kind == KIND).order_by(Job.id.desc()))
    out = []
    for job in jobs:
        cfg = job.config or {}
        if cfg.get("mode") == "paraphrases" and any(src.get("eval_set_id") == eval_set_id
                                                    for src in cfg.get("sources") or []):
            out.append(job)
        if len(out) >= limit:
            break
    return out
