"""Database tables (SQLModel), one module per capability; functions that query them live in core/.

JSON columns hold small structured values (chat turns, tags, configs); big artifacts (weights, logs)
live in run folders under the workspace and are referenced by path. Importing this package registers every
table on ``SQLModel.metadata``; import names from here (``from storage.models import Job``).
"""
from storage.models.base import json_default, utcnow
from storage.models.accounts import (  # noqa: F401
    Role,
    User,
    LoginSession,
    LoginThrottle,
    Project,
)
from storage.models.curation import (  # noqa: F401
    ExampleStatus,
    ImportStatus,
    ImportRecord,
    Example,
    ExampleRevision,
    visible_examples,
    ExampleRating,
    DatasetVersion,
    DatasetVersionItem,
)
from storage.models.jobs import (  # noqa: F401
    JobStatus,
    Job,
    ComputeTarget,
)
from storage.models.evaluation import (  # noqa: F401
    EvalSet,
    EvalPrompt,
    Output,
    Score,
    PreferenceVersion,
    PreferencePair,
    Judge,
    JudgeVerdict,
    Pilot,
    PilotExchange,
)
from storage.models.documents import (  # noqa: F401
    Document,
    DocumentChunk,
)

__all__ = [
    "json_default",
    "utcnow",
    "Role",
    "User",
    "LoginSession",
    "LoginThrottle",
    "Project",
    "ExampleStatus",
    "ImportStatus",
    "ImportRecord",
    "Example",
    "ExampleRevision",
    "visible_examples",
    "ExampleRating",
    "DatasetVersion",
    "DatasetVersionItem",
    "JobStatus",
    "Job",
    "ComputeTarget",
    "EvalSet",
    "EvalPrompt",
    "Output",
    "Score",
    "PreferenceVersion",
    "PreferencePair",
    "Judge",
    "JudgeVerdict",
    "Pilot",
    "PilotExchange",
    "Document",
    "DocumentChunk",
]
