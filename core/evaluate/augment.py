"""Prompted and +RAG systems (core.systems VARIANTS): what a ``+prompt`` or ``+rag`` key sends for a conversation,
and the passages it was given. The one place Generate, the Playground and serve-model build these messages.

- ``+prompt``: the project's team prompt (Project.team_prompt) is the system message. An example that has its own
  system prompt keeps it, after the team prompt in the same message: the team's standing instructions first, then
  what the example itself says (replacing it would change the question being asked).
- ``+rag``: the project's ``rag_top_k`` document chunks that best match the last user message
  (core.curate.documents.search) go, each under its document name and heading, into the system message, again
  before the example's own system prompt. When no passage matches, the conversation goes as it is (context []).

The variant shares its plain system's model (``SystemKey.plain``); only the messages differ. A ``+prompt`` key is
refused while the project has no team prompt, a ``+rag`` key while it has no documents, naming the fix.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from sqlmodel import Session, select

from core.accounts import require
from core.curate.documents import Hit, list_documents, search
from core.errors import InvalidInput
from core.systems import PROMPT, RAG, SystemKey
from storage.models import EvalPrompt, Job, Output, Project, User

RAG_INTRO = "Passages from the team's documents that may answer the question:"


@dataclass
class Augmented:
    """The messages a system sends for one conversation, and the passages it was given (+rag; else [])."""

    messages: list[dict]
    context: list[dict] = field(default_factory=list)
    """Output.context rows: [{"document", "version", "chunk", "heading", "text"}]."""


def check_variant(session: Session, project: Project, key: str) -> SystemKey:
    """The system ``key`` names, refused when its variant cannot answer in ``project``: ``+prompt`` without a team
    prompt, ``+rag`` without documents."""
    found = SystemKey.parse(key)
    if found.variant == PROMPT and not (project.team_prompt or "").strip():
        raise InvalidInput(f"{key} answers with the team prompt, and this project has no team prompt yet: write it "
                           "on the Documents page (Team prompt for +prompt systems).")
    if found.variant == RAG and not list_documents(session, project):
        raise InvalidInput(f"{key} answers with retrieved documents, and this project has no documents yet: "
                           "upload them on the Documents page.")
    return found


def variant_project(session: Session, key: str, fallback: int | None) -> Project:
    """The project whose team prompt and documents the system ``key`` answers with, outside an eval set (an
    endpoint): a run's or an export's own project; for a base model, ``fallback`` (the serving job's project)."""
    found = SystemKey.parse(key)
    job = session.get(Job, found.job_id) if found.job_id is not None else None
    project_id = job.project_id if job is not None else fallback
    project = session.get(Project, project_id) if project_id is not None else None
    if project is None:
        raise InvalidInput(f"{key} answers with a project's team prompt or documents, and names no project here.")
    return project


def context_row(hit: Hit) -> dict:
    """One retrieved chunk as Output.context stores it."""
    return {"document": hit.document, "version": hit.version, "chunk": hit.ordinal, "heading": hit.heading,
            "text": hit.text}


def passages_text(context: list[dict]) -> str:
    """The retrieved chunks as the system message gives them: numbered, each under its document and heading."""
    blocks = []
    for i, row in enumerate(context, 1):
        title = f"[{i}] {row['document']} §{row['chunk']}" + (f" — {row['heading']}" if row.get("heading") else "")
        blocks.append(f"{title}\n{row['text'].strip()}")
    return RAG_INTRO + "\n\n" + "\n\n".join(blocks)


def _with_system(messages: list[dict], head: str) -> list[dict]:
    """``head`` as the system message, before the conversation's own system prompt (if any)."""
    own = [m["content"].strip() for m in messages if m.get("role") == "system" and (m.get("content") or "").strip()]
    rest = [{"role": m["role"], "content": m["content"]} for m in messages if m.get("role") != "system"]
    return [{"role": "system", "content": "\n\n".join([head.strip()] + own)}] + rest


def last_user_message(messages: list[dict]) -> str:
    return next((m.get("content") or "" for m in reversed(messages) if m.get("role") == "user"), "")


def augment(session: Session, project: Project, key: str, messages: list[dict]) -> Augmented:
    """What the system ``key`` sends for the conversation ``messages`` (system/user/assistant turns): unchanged
    for a plain system; the team prompt (``+prompt``) or the retrieved passages (``+rag``) in the system message."""
    found = check_variant(session, project, key)
    plain = [{"role": m["role"], "content": m["content"]} for m in messages]
    if found.variant == PROMPT:
        return Augmented(_with_system(plain, project.team_prompt))
    if found.variant == RAG:
        hits = search(session, project, last_user_message(plain), k=max(1, int(project.rag_top_k or 0)))
        context = [context_row(h) for h in hits]
        return Augmented(_with_system(plain, passages_text(context)) if context else plain, context)
    return Augmented(plain)


def set_team_prompt(session: Session, user: User, project: Project, *, team_prompt: str | None = None,
                    rag_top_k: int | None = None) -> Project:
    """Set what ``+prompt`` systems say first (``team_prompt``; "" for none) and how many chunks ``+rag``
    systems retrieve per question (``rag_top_k``, 1 to 20). Engineers and admins."""
    require(user, "evaluate")
    project = session.get(Project, project.id) or project  # the page's copy may come from another session
    if rag_top_k is not None:
        if not 1 <= int(rag_top_k) <= 20:
            raise InvalidInput("Passages per question (top k) must be between 1 and 20.")
        project.rag_top_k = int(rag_top_k)
    if team_prompt is not None:
        project.team_prompt = team_prompt.strip()
    session.add(project)
    session.commit()
    session.refresh(project)
    return project


def suggested_team_prompt(session: Session, project: Project) -> str:
    """What the team prompt starts as while the project has none: its fact sheet (the first document whose name
    says "fact", else the first one added), so ``+prompt`` is the whole sheet where ``+rag`` retrieves parts."""
    docs = sorted(list_documents(session, project), key=lambda d: d.id or 0)
    sheet = next((d for d in docs if "fact" in d.name.lower()), docs[0] if docs else None)
    return sheet.text.strip() if sheet is not None else ""


def retrieved_answers(session: Session, user: User, eval_set_id: int) -> list[dict]:
    """Every answer of a ``+rag`` system in an eval set, with the passages it was given (engineers only: never
    on the blind review page): [{"position", "question", "system", "answer", "prompt_tokens", "context"}]."""
    require(user, "evaluate")
    rows = session.exec(select(Output, EvalPrompt).join(EvalPrompt, Output.prompt_id == EvalPrompt.id)
                        .where(EvalPrompt.eval_set_id == eval_set_id, Output.system.like(f"%+{RAG}"))
                        .order_by(EvalPrompt.position, Output.system, Output.id)).all()
    return [{"position": p.position, "question": last_user_message(p.messages), "system": o.system,
             "answer": o.text, "prompt_tokens": o.prompt_tokens, "context": list(o.context or [])}
            for o, p in rows]
