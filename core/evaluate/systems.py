"""Systems under evaluation: ``"base"`` (the base model) or ``"run:<job id>"`` (a finished training run: its
adapter on the base it was trained from, or a full fine-tuned run's own model), each plain or as a ``+prompt`` /
``+rag`` variant (core.evaluate.augment), keys of the grammar in core.systems that shipping shares."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from sqlmodel import Session, select

from core.accounts import require
from core.errors import InvalidInput
from core.jobs import rundir
from core.systems import BASE, RUN, VARIANTS, SystemKey
from core.train.runs import KIND as TRAIN_KIND
from storage.models import Job, JobStatus, User

EVALUATED = (BASE, RUN)
"""The kinds of system an eval set compares (its outputs, votes and drafts name no other)."""


def evaluated_system(key: str) -> SystemKey:
    """The system ``key`` names, refused unless evaluation can generate with it (``base`` or a run)."""
    return SystemKey.parse(key, EVALUATED, base_models=False)


def plain_system(key: str) -> SystemKey:
    """The system ``key`` names, as ``evaluated_system``, refused when it is a ``+prompt`` / ``+rag`` variant: drafts
    are written by a model alone (the variants' messages are built for eval sets, the Playground and endpoints)."""
    found = evaluated_system(key)
    if found.variant:
        raise InvalidInput(f"Drafts are written by a system itself, not {key}: choose {found.plain}.")
    return found


def parse_system(key: str) -> tuple[str, int | None]:
    """``"base"`` -> ("base", None); ``"run:12"`` (or ``"12"``) -> ("run", 12)."""
    found = evaluated_system(key)
    return found.kind, found.job_id


def parse_systems(text: str | Iterable[str]) -> list[str]:
    """Normalise a comma-separated list (or iterable) of systems, keeping order and dropping repeats."""
    items = text.split(",") if isinstance(text, str) else list(text)
    out: list[str] = []
    for item in items:
        if not str(item).strip():
            continue
        key = str(evaluated_system(str(item)))
        if key not in out:
            out.append(key)
    if not out:
        raise InvalidInput("Choose at least one system: the base model and/or finished runs.")
    return out


def run_base_model(job: Job) -> str | None:
    """The model a run's outputs come from: for LoRA/QLoRA the base it was fine-tuned from (its run folder's
    config.json, else its job config), on which generation attaches the adapter; for full fine-tuning the
    run's own saved model folder."""
    full_model = Path(job.run_dir or "") / rundir.FULL_MODEL_DIR
    if job.run_dir and (full_model / "config.json").exists():
        return str(full_model)
    cfg_file = Path(job.run_dir or "") / rundir.CONFIG
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
        select(Job).where(Job.project_id == project_id, Job.kind == TRAIN_KIND,
                          Job.status == JobStatus.succeeded.value).order_by(Job.id)))


def available_systems(session: Session, user: User, project_id: int, *, variants: bool = False) -> list[dict]:
    """Systems an engineer can generate with: the base model and each finished run, with labels; with
    ``variants`` (an eval set's generation), each also as every variant (``+prompt``, ``+rag``) after it."""
    require(user, "evaluate")
    plain: list[tuple[SystemKey, str, str | None]] = [(SystemKey(BASE), "no adapter", None)]
    plain += [(SystemKey(RUN, job.id), job.name, run_base_model(job)) for job in finished_runs(session, project_id)]
    out = []
    for key, name, base in plain:
        for variant in ("",) + (tuple(VARIANTS) if variants else ()):
            found = SystemKey(key.kind, key.ref, variant)
            out.append({"system": str(found), "label": found.label(name), "base_model": base})
    return out


def default_systems(systems: list[dict]) -> list[str]:
    """What the Generate form preselects: the base model and the newest finished run (a fair first comparison;
    older runs are one click away)."""
    keys = [row["system"] for row in systems if not SystemKey.parse(row["system"]).variant]
    runs = [k for k in keys if k != BASE]
    return ([BASE] if BASE in keys else []) + runs[-1:]


def system_labels(session: Session, systems: Iterable[str]) -> dict[str, str]:
    """Human names for systems (results page only; never on the blind review page)."""
    out = {}
    for key in systems:
        found = evaluated_system(key)
        if found.kind == BASE:
            out[key] = "base model"
        else:
            job = session.get(Job, found.job_id)
            out[key] = f"run {found.job_id}: {job.name}" if job else f"run {found.job_id}"
        if found.variant:
            out[key] += f", {VARIANTS[found.variant]}"
    return out
