"""The Playground's core: which systems a project can talk to, the messages a chat sends, and "Save as example".

The page keeps a chat in its session (it is a scratchpad, not data); what becomes data goes through here: an
exchange the user keeps, with the answer as they edited it, becomes a draft example in the annotation queue whose
source is ``playground`` and whose note records where it came from (system, decoding, edited or not).
"""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone

from sqlmodel import Session

from core.accounts import require
from core.curate.curation import create_example
from core.errors import InvalidInput
from core.evaluate.augment import Augmented, augment
from core.evaluate.generate_config import Decoding
from core.jobs.queue import get_job, jobs_ahead, reconcile
from core.jobs.states import job_label
from core.ship.systems import Servable, project_systems
from core.systems import VARIANTS, SystemKey
from storage.models import Example, JobStatus, Project, User

SOURCE = "playground"


def systems(session: Session, user: User, project_id: int, *, variants: bool = False) -> list[Servable]:
    """The systems of a project the Playground offers: base models, succeeded runs, merged exports; with
    ``variants`` each also with the team prompt (``+prompt``) and with retrieved passages (``+rag``), after it (a
    pilot serves a system itself)."""
    require(user, "evaluate")
    extra = list(VARIANTS.items()) if variants else []
    return [replace(s, key=f"{s.key}+{variant}", label=f"{s.label}, {words}") if variant else s
            for s in project_systems(session, project_id) for variant, words in [("", "")] + extra]


def waiting_text(session: Session, job_id: int) -> str:
    """What the Playground says while its endpoint (serving job ``job_id``) waits for the device: every job ahead of
    it, by kind and number ("Waiting for run 3 (training) to free the device; queued before the endpoint: generation
    job 5."), or that the endpoint is starting."""
    reconcile(session)
    job = get_job(session, job_id)
    session.refresh(job)
    if job.status != JobStatus.queued.value:
        return "Starting the model endpoint..."
    ahead = jobs_ahead(session, job)
    running = [job_label(j) for j in ahead if j.status == JobStatus.running.value]
    queued = [job_label(j) for j in ahead if j.status == JobStatus.queued.value]
    text = f"Waiting for {' and '.join(running) or 'the device'} to free the device"
    if queued:
        text += f"; queued before the endpoint: {', '.join(queued)}"
    return text + ". The answer starts when the endpoint is up."


def chat_messages(system_prompt: str, turns: list[dict]) -> list[dict]:
    """What a chat sends: the system prompt (when there is one), then the turns so far."""
    head = [{"role": "system", "content": system_prompt.strip()}] if (system_prompt or "").strip() else []
    return head + [{"role": t["role"], "content": t["content"]} for t in turns]


def chat_request(session: Session, project: Project, key: str, system_prompt: str,
                 turns: list[dict]) -> tuple[str, Augmented]:
    """The system the endpoint is asked for and what it is sent: a ``+prompt`` / ``+rag`` key asks its plain system
    (the same model) with the messages core.evaluate.augment builds, the passages it retrieved kept to show."""
    return str(SystemKey.parse(key).plain), augment(session, project, key, chat_messages(system_prompt, turns))


def describe(decoding: Decoding) -> str:
    d = decoding.stored()
    if d["mode"] == "greedy":
        return f"greedy, max {d['max_new_tokens']} new tokens"
    return (f"sampled at temperature {d['temperature']}, top-p {d['top_p']}, seed {d['seed']}, "
            f"max {d['max_new_tokens']} new tokens")


def save_exchange(session: Session, user: User, project: Project, *, system_label: str, system_prompt: str,
                  turns: list[dict], answer: str, generated: str, decoding: Decoding) -> Example:
    """A draft example from one exchange: the conversation up to the user's message, then ``answer`` (the
    generated answer ``generated`` as the user edited it)."""
    require(user, "curate")
    if not turns or turns[-1].get("role") != "user":
        raise InvalidInput("An exchange ends with the user's message and then the answer.")
    if not (answer or "").strip():
        raise InvalidInput("The answer is empty; write the answer the model should give.")
    edited = answer.strip() != (generated or "").strip()
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    note = (f"From the Playground: {system_label}, {describe(decoding)}, "
            f"{'answer edited' if edited else 'answer as generated'}, saved by {user.username} on {stamp}.")
    conversation = [{"role": t["role"], "content": t["content"]} for t in turns]
    example = create_example(session, user, project, system=(system_prompt or "").strip(),
                             turns=conversation + [{"role": "assistant", "content": answer.strip()}], note=note)
    example.source = SOURCE
    session.add(example)
    session.commit()
    session.refresh(example)
    return example
