"""What every stage's commands share: the project a command acts on."""
from __future__ import annotations

from core.errors import InvalidInput
from core.projects import get_project, list_projects


def project_arg(session, args):
    """The project named by ``--project`` (name or id), else the first project."""
    if getattr(args, "project", None):
        return get_project(session, args.project)
    projects = list_projects(session)
    if not projects:
        raise InvalidInput("No project yet: create one with `finetune-studio projects --create NAME`.")
    return projects[0]
