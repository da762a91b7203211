"""Jobs (training, generation, exports, serving...) and the compute targets they run on."""
from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Optional

from sqlalchemy import JSON, Column, Text
from sqlmodel import Field, SQLModel

from storage.models.base import utcnow


# ---------------------------------------------------------------- jobs (training and generation)


class JobStatus(str, Enum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    canceled = "canceled"


class Job(SQLModel, table=True):
    """A background process (training run or generation job). Its truth lives here, not in memory."""

    id: Optional[int] = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="project.id", index=True)
    kind: str = Field(default="train", max_length=16)  # "train" | "generate" | ...: what the stage calls it
    # Python module the worker runs as `python -m <module> --run-dir DIR` (kept so a queued job starts later).
    module: str = Field(default="", max_length=100)
    # The action (core.accounts.ACTIONS) a user needs to submit, cancel or resume this job.
    action: str = Field(default="train", max_length=32)
    # GPUs the job takes where there are GPUs (0: every visible one); one job at a time on a CPU machine.
    slots: int = 1
    # "python": run the module as is; "auto"/"accelerate": one process per GPU through accelerate.
    launcher: str = Field(default="python", max_length=16)
    name: str = Field(default="", max_length=200)
    status: str = Field(default=JobStatus.queued.value, max_length=16, index=True)
    run_dir: str = ""
    pid: Optional[int] = None
    # psutil create_time of the process: tells our process apart from a later one that reused the pid.
    pid_create_time: Optional[float] = None
    # core.jobs.processes.identity: boot id and start ticks, unmoved by a clock step (the create time is not).
    pid_ident: Optional[str] = Field(default=None, max_length=80)
    heartbeat_at: Optional[datetime] = None
    created_by: Optional[int] = Field(default=None, foreign_key="user.id")
    created_at: datetime = Field(default_factory=utcnow)
    started_at: Optional[datetime] = None
    finished_at: Optional[datetime] = None
    dataset_version_id: Optional[int] = Field(default=None, foreign_key="datasetversion.id")
    eval_set_id: Optional[int] = Field(default=None)
    resumed_from: Optional[int] = Field(default=None)
    config: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    result: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    error: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    estimated_peak_mb: Optional[float] = None
    measured_peak_mb: Optional[float] = None
    cancel_requested: bool = False
    # Where it runs: None is this machine (the local queue); else a ComputeTarget, whose job id is external_id
    # and whose own view of the job (core.jobs.targets.base.RemoteState) is remote_state and remote_reason.
    target_id: Optional[int] = Field(default=None, foreign_key="computetarget.id")
    external_id: str = Field(default="", max_length=200, sa_column_kwargs={"server_default": ""})
    remote_state: str = Field(default="", max_length=32, sa_column_kwargs={"server_default": ""})
    remote_reason: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))


class ComputeTarget(SQLModel, table=True):
    """Where jobs may run besides this machine: a Ray or Slurm cluster (core.jobs.targets), registered by an admin."""

    id: Optional[int] = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True, max_length=64)
    kind: str = Field(max_length=16)  # "local" | "ray" | "slurm": core.jobs.targets.TARGET_KINDS
    settings: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_by: Optional[int] = Field(default=None, foreign_key="user.id")
    created_at: datetime = Field(default_factory=utcnow)
