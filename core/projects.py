"""Projects: one per fine-tuning effort, each with its own examples, guidelines, rubric, versions, runs and
evaluations."""
from __future__ import annotations

import re

from sqlmodel import Session, select

from core.accounts import require
from core.errors import InvalidInput, NotFound
from core.names import check_name
from storage.models import Project, User

DEFAULT_RUBRIC = [
    {"name": "accuracy", "description": "Facts, numbers and procedures are correct; nothing invented.",
     "min": 1, "max": 5},
    {"name": "tone", "description": "Warm, professional and fitting for the customer's situation.", "min": 1, "max": 5},
    {"name": "helpfulness", "description": "Solves the problem with concrete next steps.", "min": 1, "max": 5},
]


# Image syntax of CommonMark: inline ``![alt](dest "title")`` and reference ``![alt][ref]``, ``![alt][]``.
_IMAGE = re.compile(r"!\[([^\]]*)\]"  # ![alt] then an optional (destination "title") or [reference]
                    r"(?:\((?:[^()\s]|\([^()]*\))*(?:\s+(?:\"[^\"]*\"|'[^']*'|\([^()]*\)))?\s*\)|\[[^\]]*\])?")


def inert_markdown(text: str) -> str:
    """Admin-written Markdown (guidelines) with every image shown as its alt text, so rendering it makes no
    browser fetch anything from anywhere (a remote image would tell another host who reads the page, and when).
    Links, emphasis and lists stay; raw HTML is never rendered as HTML by the pages (no unsafe_allow_html)."""
    text = _IMAGE.sub(lambda m: m.group(1), text or "")
    # Whatever image syntax is left (nested brackets, an odd title) loses its "!": at worst a link, never an image.
    return text.replace("![", "&#33;[")


def list_projects(session: Session) -> list[Project]:
    return list(session.exec(select(Project).order_by(Project.id)))


def get_project(session: Session, project_id_or_name: int | str) -> Project:
    if isinstance(project_id_or_name, int) or str(project_id_or_name).isdigit():
        project = session.get(Project, int(project_id_or_name))
    else:
        project = session.exec(select(Project).where(Project.name == project_id_or_name)).first()
    if project is None:
        raise NotFound(f"No project {project_id_or_name!r}.")
    return project


def create_project(session: Session, actor: User, name: str, description: str = "", guidelines: str = "") -> Project:
    require(actor, "manage_project")
    name = check_name(name, "project")
    if session.exec(select(Project).where(Project.name == name)).first():
        raise InvalidInput(f"A project named {name!r} already exists.")
    project = Project(
        name=name, description=description, guidelines=guidelines, rubric=[dict(c) for c in DEFAULT_RUBRIC],
        created_by=actor.id,
    )
    session.add(project)
    session.commit()
    session.refresh(project)
    return project


def validate_rubric(rubric: list[dict]) -> list[dict]:
    """Normalise and check a rubric: unique non-empty names, integer scales with min < max."""
    clean, seen = [], set()
    for item in rubric:
        name = str(item.get("name", "")).strip().lower()
        if not name:
            raise InvalidInput("Every rubric criterion needs a name.")
        if name in seen:
            raise InvalidInput(f"The criterion {name!r} appears twice.")
        seen.add(name)
        try:
            lo, hi = int(item.get("min", 1)), int(item.get("max", 5))
        except (TypeError, ValueError):
            raise InvalidInput(f"The scale of {name!r} must be whole numbers.") from None
        if lo >= hi:
            raise InvalidInput(f"The scale of {name!r} must go from a lower to a higher number.")
        clean.append({"name": name, "description": str(item.get("description", "")).strip(), "min": lo, "max": hi})
    if not clean:
        raise InvalidInput("A rubric needs at least one criterion.")
    return clean


def _check_license(value: str) -> str:
    """A license as model-card metadata takes it: an identifier such as apache-2.0, mit, llama3.1 or other."""
    value = (value or "").strip().lower()
    if value and not re.fullmatch(r"[a-z0-9][a-z0-9.+-]{0,63}", value):
        raise InvalidInput("A license is an identifier such as apache-2.0, mit, cc-by-4.0 or other (letters, "
                           "digits, dots, dashes).")
    return value


def update_project(
    session: Session,
    actor: User,
    project: Project,
    *,
    guidelines: str | None = None,
    rubric: list[dict] | None = None,
    description: str | None = None,
    max_length: int | None = None,
    annotators_per_example: int | None = None,
    default_system_prompt: str | None = None,
    license: str | None = None,
    intended_use: str | None = None,
) -> Project:
    """Admins edit a project's guidelines, rubric and settings (the default system prompt starts every Playground
    chat; the license and intended use go into every export's model card)."""
    require(actor, "manage_project")
    if rubric is not None:
        project.rubric = validate_rubric(rubric)
    if max_length is not None:
        if not 16 <= int(max_length) <= 131072:
            raise InvalidInput("Max length must be between 16 and 131072 tokens.")
        project.max_length = int(max_length)
    if annotators_per_example is not None:
        if not 1 <= int(annotators_per_example) <= 10:
            raise InvalidInput("Annotators per example must be between 1 and 10.")
        project.annotators_per_example = int(annotators_per_example)
    if guidelines is not None:
        project.guidelines = guidelines
    if description is not None:
        project.description = description
    if default_system_prompt is not None:
        project.default_system_prompt = default_system_prompt.strip()
    if license is not None:
        project.license = _check_license(license)
    if intended_use is not None:
        project.intended_use = intended_use.strip()
    session.add(project)
    session.commit()
    session.refresh(project)
    return project


def project_summary(session: Session, project: Project) -> dict:
    """Counts a person wants on the home page: examples by status, versions, runs, eval sets."""
    from sqlalchemy import func

    from storage.models import DatasetVersion, EvalSet, Example, Job, visible_examples

    by_status = dict(
        session.exec(
            select(Example.status, func.count()).where(Example.project_id == project.id, visible_examples())
            .group_by(Example.status)
        ).all()
    )
    count = lambda model, *where: session.exec(  # noqa: E731
        select(func.count()).select_from(model).where(model.project_id == project.id, *where)
    ).one()
    return {
        "examples": sum(by_status.values()),
        "by_status": by_status,
        "versions": count(DatasetVersion),
        "runs": count(Job, Job.kind == "train"),
        "eval_sets": count(EvalSet),
    }
