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


def wait_succeeded(session, job, what: str):
    """Poll ``job`` until it ends (``--wait``); raise with its first error line unless it succeeded."""
    import time

    from core.errors import StudioError
    from core.jobs.queue import LIVE, reconcile
    from storage.models import JobStatus

    while job.status in LIVE:
        time.sleep(1.0)  # CLI polling only; the pages use st.fragment(run_every=...)
        session.expire_all()
        reconcile(session)
        session.refresh(job)
    if job.status != JobStatus.succeeded.value:
        raise StudioError(f"{what} {job.id} {job.status}: {job.error.splitlines()[0] if job.error else ''}")
    return job
