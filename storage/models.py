"""Database tables (SQLModel). One section per capability; functions that query them live in core/.

JSON columns hold small structured values (chat turns, tags, configs); big artifacts (weights, logs)
live in run folders under the workspace and are referenced by path.
"""
from __future__ import annotations

from datetime import datetime, timezone
from enum import Enum
from typing import Any, Optional

from sqlalchemy import JSON, Column, Index, Text, UniqueConstraint, or_
from sqlmodel import Field, SQLModel, select


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


# ---------------------------------------------------------------- accounts and projects


class Role(str, Enum):
    """Workspace-wide roles; each includes the rights of the ones before it."""

    agent = "agent"  # a support agent: pilots a model (the Pilot page) and nothing else
    annotator = "annotator"
    reviewer = "reviewer"
    engineer = "engineer"
    admin = "admin"


class User(SQLModel, table=True):
    id: Optional[int] = Field(default=None, primary_key=True)
    username: str = Field(index=True, unique=True, max_length=64)
    password_hash: str
    role: str = Field(default=Role.annotator.value, max_length=16)
    active: bool = True
    created_at: datetime = Field(default_factory=utcnow)
    last_login_at: Optional[datetime] = None


class LoginSession(SQLModel, table=True):
    """One signed-in browser (see core.sessions): only SHA-256 hashes of its cookie token and of the one-time
    ticket that fetched the cookie are stored, so a copy of the database holds no usable cookie."""

    id: Optional[int] = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="user.id", index=True)
    token_hash: Optional[str] = Field(default=None, max_length=64, unique=True)  # set when the cookie is issued
    ticket_hash: Optional[str] = Field(default=None, max_length=64, unique=True)  # cleared when it is used
    ticket_expires_at: Optional[datetime] = None
    client: str = Field(default="", max_length=64)  # the address the log-in came from
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime
    revoked_at: Optional[datetime] = None
    revoke_reason: str = Field(default="", max_length=64)


class LoginThrottle(SQLModel, table=True):
    """Failed log-ins per account name or per client address, and until when that key must wait."""

    key: str = Field(primary_key=True, max_length=200)  # "account:<name>" or "client:<address>"
    failures: int = 0
    last_failure_at: datetime = Field(default_factory=utcnow)
    locked_until: Optional[datetime] = None


class Project(SQLModel, table=True):
    id: Optional[int] = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True, max_length=200)
    description: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    guidelines: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    # [{"name": "accuracy", "description": "...", "min": 1, "max": 5}, ...]
    rubric: list = Field(default_factory=list, sa_column=Column(JSON, nullable=False, server_default="[]"))
    # Facts to check: [{"name": "power_cut_line", "about": "...", "keywords": ["0800 555 0105"], "match": "all"}];
    # core.evaluate.checks turns them into checks on eval prompts whose reference gives the fact.
    facts: list = Field(default_factory=list, sa_column=Column(JSON, nullable=False, server_default="[]"))
    max_length: int = Field(default=1024, sa_column_kwargs={"server_default": "1024"})
    annotators_per_example: int = Field(default=1, sa_column_kwargs={"server_default": "1"})
    created_at: datetime = Field(default_factory=utcnow)
    created_by: Optional[int] = Field(default=None, foreign_key="user.id")
    # The Playground starts every chat with it (editable there); exports' model cards carry the two below.
    default_system_prompt: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))
    license: str = Field(default="", max_length=64, sa_column_kwargs={"server_default": ""})
    intended_use: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))


# ---------------------------------------------------------------- curation


class ExampleStatus(str, Enum):
    draft = "draft"
    submitted = "submitted"
    approved = "approved"
    rejected = "rejected"


class ImportStatus(str, Enum):
    """An import writes its rows in short batches while ``pending`` (hidden from every query through
    ``visible_examples``), then one quick update makes them all visible at once: all or nothing for users, without
    holding the database's write lock for the whole file."""

    pending = "pending"
    done = "done"


class ImportRecord(SQLModel, table=True):
    """One import: who, when, which file, and what happened to each record."""

    id: Optional[int] = Field(default=None, primary_key=True)
    status: str = Field(default=ImportStatus.done.value, max_length=16, sa_column_kwargs={"server_default": "done"})
    project_id: int = Field(foreign_key="project.id", index=True)
    user_id: Optional[int] = Field(default=None, foreign_key="user.id")
    filename: str = ""
    format: str = ""
    strict: bool = False
    created_at: datetime = Field(default_factory=utcnow)
    n_read: int = 0
    n_imported: int = 0
    n_rejected: int = 0
    n_duplicates: int = 0
    n_near_duplicates: int = 0
    ended_early: bool = False
    report: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class Example(SQLModel, table=True):
    """One instruction/response example or a whole multi-turn conversation.

    ``turns`` is the list of ``{"role": "user"|"assistant", "content": str}`` after the system prompt.
    A single-turn pair is ``[user, assistant]``: instruction = user content, response = assistant content.
    ``input`` is Alpaca's optional input, kept apart so Alpaca round-trips without loss.
    """

    __table_args__ = (
        Index("ix_example_project_status_id", "project_id", "status", "id"),
        Index("ix_example_project_hash", "project_id", "content_hash"),
        Index("ix_example_project_assignee", "project_id", "assigned_to", "status"),
    )

    id: Optional[int] = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="project.id")
    system: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    turns: list = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    input: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    tags: list = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    note: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    status: str = Field(default=ExampleStatus.draft.value, max_length=16)
    reject_reason: str = ""
    content_hash: str = Field(default="", max_length=64)
    search_text: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    near_duplicate_of: Optional[int] = Field(default=None)
    token_count: int = 0
    source: str = Field(default="manual", max_length=32)
    # Where a generated draft came from, so it can be traced: for source "review_feedback" the eval set, prompt,
    # reviewer, the reviewer's whole comment, the starting answer and any test-split example it repeats.
    origin: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False, server_default="{}"))
    import_id: Optional[int] = Field(default=None, foreign_key="importrecord.id")
    assigned_to: Optional[int] = Field(default=None, foreign_key="user.id")
    created_by: Optional[int] = Field(default=None, foreign_key="user.id")
    updated_by: Optional[int] = Field(default=None, foreign_key="user.id")
    reviewed_by: Optional[int] = Field(default=None, foreign_key="user.id")
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    # Optimistic locking: a save carries the version it started from; a stale save is refused.
    version: int = 1


class ExampleRevision(SQLModel, table=True):
    """One step in an example's life (created, edited, submitted, approved, rejected, edited by a reviewer):
    who, when, the status after it and the text as it was then, so a reviewer sees what changed since the last
    review. Imports write no revision (the import record says who and when); version 1 is the imported text."""

    __table_args__ = (Index("ix_examplerevision_example_id_id", "example_id", "id"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    example_id: int = Field(foreign_key="example.id")
    version: int
    action: str = Field(max_length=32)
    status: str = Field(max_length=16)
    user_id: Optional[int] = Field(default=None, foreign_key="user.id")
    at: datetime = Field(default_factory=utcnow)
    reason: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    # {"system", "turns", "input", "tags", "note"} after this step
    record: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


def visible_examples():
    """The WHERE clause every read of examples uses: not the rows of an import still in progress."""
    pending = select(ImportRecord.id).where(ImportRecord.status == ImportStatus.pending.value)
    return or_(Example.import_id.is_(None), Example.import_id.not_in(pending))


class ExampleRating(SQLModel, table=True):
    """Multi-annotator mode: one quality label per annotator per example (used for agreement)."""

    __table_args__ = (UniqueConstraint("example_id", "user_id"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    example_id: int = Field(foreign_key="example.id", index=True)
    user_id: int = Field(foreign_key="user.id", index=True)
    rating: int
    created_at: datetime = Field(default_factory=utcnow)


class DatasetVersion(SQLModel, table=True):
    """An immutable snapshot of the approved examples; training runs point here."""

    __table_args__ = (UniqueConstraint("project_id", "name"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="project.id", index=True)
    name: str = Field(max_length=200)
    content_hash: str = Field(max_length=64)
    seed: int = 0
    split_fractions: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    n_train: int = 0
    n_validation: int = 0
    n_test: int = 0
    created_by: Optional[int] = Field(default=None, foreign_key="user.id")
    created_at: datetime = Field(default_factory=utcnow)


class DatasetVersionItem(SQLModel, table=True):
    """A frozen copy of one example inside a version (never changes after freezing)."""

    __table_args__ = (Index("ix_dvi_version_split", "version_id", "split"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    version_id: int = Field(foreign_key="datasetversion.id")
    example_id: int = Field(index=True)
    split: str = Field(max_length=16)
    system: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    turns: list = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    input: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    tags: list = Field(default_factory=list, sa_column=Column(JSON, nullable=False))


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


# ---------------------------------------------------------------- evaluation


class EvalSet(SQLModel, table=True):
    id: Optional[int] = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="project.id", index=True)
    name: str = Field(max_length=200)
    source: str = Field(default="upload", max_length=32)  # "version" | "upload"
    dataset_version_id: Optional[int] = Field(default=None, foreign_key="datasetversion.id")
    created_by: Optional[int] = Field(default=None, foreign_key="user.id")
    created_at: datetime = Field(default_factory=utcnow)
    # Blind review: each (prompt, pair) item gets this many reviewers before any gets one more.
    reviewers_per_item: int = Field(default=2, sa_column_kwargs={"server_default": "2"})
    # Seeds which output is shown as A for each item and reviewer (stable across reloads).
    seed: int = Field(default=0, sa_column_kwargs={"server_default": "0"})


class EvalPrompt(SQLModel, table=True):
    id: Optional[int] = Field(default=None, primary_key=True)
    eval_set_id: int = Field(foreign_key="evalset.id", index=True)
    position: int = 0
    # Messages before the answer (system + user/assistant turns), as the model will see them.
    messages: list = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    reference: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    example_id: Optional[int] = None
    # Automatic checks an answer must pass (core.evaluate.checks): [{"kind": "contains", "values": [...], ...}]
    checks: list = Field(default_factory=list, sa_column=Column(JSON, nullable=False, server_default="[]"))


class Output(SQLModel, table=True):
    """One generated answer of one system (``base`` or ``run:<job id>``) for one prompt."""

    __table_args__ = (UniqueConstraint("prompt_id", "system", "job_id"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    prompt_id: int = Field(foreign_key="evalprompt.id", index=True)
    system: str = Field(max_length=64, index=True)
    job_id: Optional[int] = Field(default=None, foreign_key="job.id")
    text: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    decoding: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    n_new_tokens: int = 0
    seconds: float = 0.0
    created_at: datetime = Field(default_factory=utcnow)


class Score(SQLModel, table=True):
    """One reviewer's blind judgement of one prompt for one pair of systems.

    ``system_a`` is the system that was shown as A to this reviewer (randomised per item and reviewer).
    ``scores`` maps criterion -> {"A": int, "B": int}; ``preference`` is "A" | "B" | "tie" | "both_bad".
    """

    __table_args__ = (UniqueConstraint("prompt_id", "pair", "reviewer_id"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    prompt_id: int = Field(foreign_key="evalprompt.id", index=True)
    pair: str = Field(max_length=140)  # "<system>|<system>" in sorted order
    reviewer_id: int = Field(foreign_key="user.id", index=True)
    system_a: str = Field(max_length=64)
    system_b: str = Field(max_length=64)
    scores: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    preference: str = Field(default="tie", max_length=16)
    comment: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


def json_default(value: Any) -> Any:
    """``json.dumps(default=...)`` for rows that hold datetimes."""
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(type(value).__name__)


# ---------------------------------------------------------------- preference versions (DPO)


class PreferenceVersion(SQLModel, table=True):
    """A frozen set of preference pairs (prompt, chosen, rejected) that DPO runs train on; never changes after
    freezing. ``sources`` says where its pairs came from and what was left out (core.curate.preference_versions)."""

    __table_args__ = (UniqueConstraint("project_id", "name"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="project.id", index=True)
    name: str = Field(max_length=200)
    content_hash: str = Field(max_length=64)
    n_pairs: int = 0
    # [{"kind": "votes", "eval_set_id": 3, "eval_set": "...", "pairs": 12, "disagreements": 2, "even_split": 1,
    #   "ties_or_both_bad": 4, ...}, {"kind": "file", "file": "prefs.jsonl", "pairs": 40, "rejected_rows": 1}]
    sources: list = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    created_by: Optional[int] = Field(default=None, foreign_key="user.id")
    created_at: datetime = Field(default_factory=utcnow)


class PreferencePair(SQLModel, table=True):
    """One frozen pair: ``prompt`` is the messages before the answer, ``chosen``/``rejected`` one assistant
    message each (TRL's conversational preference format). Where it came from: an eval set's prompt (eval_set_id,
    eval_prompt_id) or an imported file (source_file, line)."""

    __table_args__ = (Index("ix_prefpair_version", "version_id", "position"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    version_id: int = Field(foreign_key="preferenceversion.id")
    position: int = 0
    prompt: list = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    chosen: list = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    rejected: list = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    eval_set_id: Optional[int] = None
    eval_prompt_id: Optional[int] = None
    source_file: str = Field(default="", max_length=300)
    source_line: Optional[int] = None


# ---------------------------------------------------------------- LLM judges (a separate rater, never mixed in)


class Judge(SQLModel, table=True):
    """An OpenAI-compatible endpoint that grades outputs (core.evaluate.judges). The API key is never stored:
    ``api_key_env`` names the environment variable the app and its jobs read it from. Its figures count as
    trusted only when its Cohen's kappa with the reviewers reaches ``min_kappa`` on at least ``min_items``."""

    id: Optional[int] = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True, max_length=100)
    base_url: str = Field(max_length=500)
    model: str = Field(default="", max_length=200)
    api_key_env: str = Field(default="", max_length=100)
    min_kappa: float = Field(default=0.6, sa_column_kwargs={"server_default": "0.6"})
    min_items: int = Field(default=30, sa_column_kwargs={"server_default": "30"})
    created_by: Optional[int] = Field(default=None, foreign_key="user.id")
    created_at: datetime = Field(default_factory=utcnow)


class JudgeVerdict(SQLModel, table=True):
    """One judge answer. Pairwise: ``system_a`` was shown first (as A), ``output_b_id`` the second, ``verdict``
    "A" | "B" | "tie"; each pair is asked in both orders (two rows). Rubric: ``system_a`` is the system graded,
    ``output_b_id`` is 0 and ``score`` the 1-5 grade on ``criterion``. ``verdict``/``score`` stay NULL when the
    answer could not be parsed (counted, never guessed); ``raw`` is the judge's whole answer."""

    __table_args__ = (UniqueConstraint("judge_id", "mode", "criterion", "output_a_id", "output_b_id"),
                      Index("ix_judgeverdict_judge_evalset", "judge_id", "eval_set_id"))

    id: Optional[int] = Field(default=None, primary_key=True)
    judge_id: int = Field(foreign_key="judge.id")
    eval_set_id: int = Field(foreign_key="evalset.id")
    job_id: Optional[int] = Field(default=None, foreign_key="job.id")
    prompt_id: int = Field(foreign_key="evalprompt.id")
    mode: str = Field(max_length=16)  # "pairwise" | "rubric"
    criterion: str = Field(default="", max_length=100)  # "" for pairwise
    system_a: str = Field(max_length=64)
    system_b: str = Field(default="", max_length=64)
    output_a_id: int
    output_b_id: int = 0
    raw: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    verdict: Optional[str] = Field(default=None, max_length=8)
    score: Optional[int] = None
    created_at: datetime = Field(default_factory=utcnow)


# ---------------------------------------------------------------- pilots (agents try a system on real questions)


class Pilot(SQLModel, table=True):
    """A system (``base:<model>`` / ``run:<id>`` / ``export:<id>``, as the Playground names it) that agents try on
    customers' questions between ``starts_at`` and ``ends_at``; ``blind`` hides which system it is from agents."""

    __table_args__ = (UniqueConstraint("project_id", "name"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="project.id", index=True)
    name: str = Field(max_length=200)
    system: str = Field(max_length=64)
    starts_at: datetime
    ends_at: datetime
    blind: bool = False
    created_by: Optional[int] = Field(default=None, foreign_key="user.id")
    created_at: datetime = Field(default_factory=utcnow)


class PilotExchange(SQLModel, table=True):
    """One answer of a pilot's system and what the agent made of it. ``messages`` are what the model saw (system
    prompt and turns up to the question); ``ratings`` maps a rubric criterion to its score. An exchange comes from
    the Pilot page (``user_id``) or from a chat front end through serve-model --pilot (``client``)."""

    __table_args__ = (Index("ix_pilotexchange_pilot_created", "pilot_id", "created_at"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    pilot_id: int = Field(foreign_key="pilot.id")
    user_id: Optional[int] = Field(default=None, foreign_key="user.id")
    client: str = Field(default="", max_length=200)
    conversation_id: str = Field(default="", max_length=64)
    turn_index: int = 0
    messages: list = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    answer: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    completion_id: Optional[str] = Field(default=None, max_length=100, unique=True)
    ratings: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    escalate: Optional[bool] = None  # None until the agent says
    correction: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    rated_at: Optional[datetime] = None
    sent_example_id: Optional[int] = Field(default=None, foreign_key="example.id")
    created_at: datetime = Field(default_factory=utcnow)


# ---------------------------------------------------------------- knowledge documents


class Document(SQLModel, table=True):
    """One version of a knowledge document of a project (an FAQ, a policy, the fact sheet), as plain text with its
    chunks (DocumentChunk). Uploading a document under a name that exists makes the next version; only the
    ``current`` version of a name is searched. Deleting keeps the rows (``deleted_at``): drafts made from a
    document keep their origin."""

    __table_args__ = (UniqueConstraint("project_id", "name", "version"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="project.id", index=True)
    name: str = Field(max_length=200)
    version: int = 1
    kind: str = Field(max_length=16)  # markdown | text | html | pdf
    content_hash: str = Field(max_length=64)  # sha256 of the uploaded bytes
    size_bytes: int = 0
    text: str = Field(default="", sa_column=Column(Text, nullable=False))
    n_chunks: int = 0
    current: bool = True
    created_by: Optional[int] = Field(default=None, foreign_key="user.id")
    created_at: datetime = Field(default_factory=utcnow)
    deleted_at: Optional[datetime] = None
    deleted_by: Optional[int] = Field(default=None, foreign_key="user.id")


class DocumentChunk(SQLModel, table=True):
    """A passage of a document version: ``ordinal`` is its § number (1-based) and ``heading`` the section it sits
    in. Indexed for full-text search (SQLite FTS5 table ``documentchunk_fts``; PostgreSQL a GIN index)."""

    __table_args__ = (Index("ix_documentchunk_document", "document_id", "ordinal"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    document_id: int = Field(foreign_key="document.id")
    ordinal: int
    heading: str = Field(default="", max_length=500)
    text: str = Field(sa_column=Column(Text, nullable=False))
