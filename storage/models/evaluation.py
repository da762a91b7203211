"""Evaluation: eval sets, outputs, blind scores, preference versions, LLM judges and pilots."""
from __future__ import annotations

from datetime import datetime
from typing import Optional

from sqlalchemy import JSON, Column, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from storage.models.base import utcnow


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
    prompt_tokens: int = Field(default=0, sa_column_kwargs={"server_default": "0"})  # what the answer cost to ask
    # +rag systems: the chunks retrieved for this prompt, [{"document", "version", "chunk", "heading", "text"}];
    # shown to engineers, never to blind reviewers.
    context: list = Field(default_factory=list, sa_column=Column(JSON, nullable=False, server_default="[]"))
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
