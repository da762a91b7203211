"""What can be served: a base model, a finished training run, or a merged export. Cheap to import (no torch).

A system is named by a key of the grammar in core.systems (shared with evaluation), which means the same thing
in every process of the workspace, so one serving process can answer for any of them: ``base:<model>`` (a base
model as core.basemodel names it; plain ``base`` is the embedded model), ``run:<job id>`` (a run's adapter on the
base it was trained from, or a full fine-tuned run's own model) or ``export:<job id>`` (the merged model folder an
export job wrote).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from sqlmodel import Session, select

from core.basemodel import EMBEDDED, EMBEDDED_NAME, is_embedded
from core.errors import InvalidInput, NotFound
from core.evaluate.systems import run_base_model
from core.jobs import rundir
from core.systems import BASE, EXPORT, RUN, SystemKey, export_key, run_key
from core.train.runs import KIND as TRAIN_KIND
from storage.models import Job, JobStatus

EXPORT_KIND = "export"  # the job kind of deploy exports (core.ship.deploy)
MERGED = "merged"  # the artifact name of a merged model folder in an export's result


@dataclass(frozen=True)
class Servable:
    """One system, resolved to the folders it loads from."""

    key: str
    label: str
    base_model: str | None = None
    """The base model (core.basemodel name) when the system is a base or an adapter on it."""
    adapter_dir: str | None = None
    """A PEFT adapter folder loaded on ``base_model``."""
    model_dir: str | None = None
    """A standalone model folder (a full fine-tuned run, a merged export)."""
    lora_r: int | None = None


def base_key(model: str | None) -> str:
    """``base:<model>``, the embedded model under its one name."""
    return str(SystemKey(BASE, EMBEDDED if is_embedded(model) else model))


def _base_label(model: str) -> str:
    return SystemKey(BASE).label(EMBEDDED_NAME if is_embedded(model) else Path(model).name or model)


def _run_config(job: Job) -> dict:
    path = Path(job.run_dir or "") / rundir.CONFIG
    try:
        return json.loads(path.read_text(encoding="utf-8")) if job.run_dir and path.is_file() else dict(job.config)
    except (OSError, json.JSONDecodeError):
        return dict(job.config or {})


def merged_dir(job: Job) -> str | None:
    """The merged model folder an export job wrote (None when it wrote none or it is gone)."""
    result = job.result or {}
    folder = (result.get("artifacts") or {}).get(MERGED, {}).get("path") or result.get("out_dir")
    return folder if folder and (Path(folder) / "config.json").is_file() else None


def run_servable(job: Job) -> Servable:
    """A finished training run as a system: its full model, or its adapter on the base it was trained from."""
    if job.kind != TRAIN_KIND:
        raise InvalidInput(f"Job {job.id} is not a training run.")
    if job.status != JobStatus.succeeded.value or not rundir.has_model(job.run_dir or ""):
        raise InvalidInput(f"Run {job.id} has no finished model ({job.status}); only succeeded runs can be served.")
    label = SystemKey(RUN, job.id).label(job.name)
    full = Path(job.run_dir) / rundir.FULL_MODEL_DIR
    if (full / "config.json").is_file():
        return Servable(run_key(job.id), label, model_dir=str(full))
    cfg = _run_config(job)
    return Servable(run_key(job.id), label, base_model=run_base_model(job) or EMBEDDED, adapter_dir=job.run_dir,
                    lora_r=int(cfg.get("lora_r") or 0) or None)


def export_servable(job: Job) -> Servable:
    """A succeeded export job's merged model folder as a system."""
    folder = merged_dir(job) if job.kind == EXPORT_KIND and job.status == JobStatus.succeeded.value else None
    if folder is None:
        raise InvalidInput(f"Export {job.id} has no merged model folder to serve.")
    run_id = (job.config or {}).get("run_id")
    return Servable(export_key(job.id), SystemKey(EXPORT, job.id).label(f"merged run {run_id}"), model_dir=folder)


def resolve(session: Session, key: str) -> Servable:
    """The system named by ``key``: ``base`` (the embedded model), ``base:<model>``, ``run:<id>`` (or ``<id>``),
    ``export:<id>``."""
    found = SystemKey.parse(key)
    if found.kind == BASE:
        model = found.base_model or EMBEDDED
        return Servable(base_key(model), _base_label(model), base_model=EMBEDDED if is_embedded(model) else model)
    job = session.get(Job, found.job_id)
    if job is None:
        raise NotFound(f"No {found.kind} {found.job_id}.")
    return run_servable(job) if found.kind == RUN else export_servable(job)


def project_systems(session: Session, project_id: int) -> list[Servable]:
    """Every system of a project a person can talk to: its base models, succeeded runs and merged exports."""
    runs = list(session.exec(select(Job).where(Job.project_id == project_id, Job.kind == TRAIN_KIND,
                                               Job.status == JobStatus.succeeded.value).order_by(Job.id.desc())))
    out: list[Servable] = []
    servable_runs = []
    for job in runs:
        try:
            servable_runs.append(run_servable(job))
        except InvalidInput:
            continue
    bases = [EMBEDDED] + [s.base_model for s in servable_runs if s.base_model]
    for model in dict.fromkeys(base_key(b) for b in bases):
        out.append(resolve(session, model))
    out.extend(servable_runs)
    exports = session.exec(select(Job).where(Job.project_id == project_id, Job.kind == EXPORT_KIND,
                                             Job.status == JobStatus.succeeded.value).order_by(Job.id.desc()))
    for job in exports:
        if merged_dir(job):
            out.append(export_servable(job))
    return out
