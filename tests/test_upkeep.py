"""The server reconciles jobs on its own timer: a job killed while nobody has a page open becomes failed and the
next queued job starts, with only `finetune-studio serve` running."""
from __future__ import annotations

import os
import signal
import time

import pytest
from sqlmodel import Session

from storage.models import Job, JobStatus
from tests.helpers import wait_until

pytestmark = pytest.mark.timeout(180)


def _submit(session, user, project, name):
    from core.jobs.queue import submit

    return submit(session, user, project_id=project.id, kind="sleep", action="train", name=name, config={},
                  module="tests.sleeping_worker")


def _status(job_id: int) -> str:
    from storage.db import get_engine

    with Session(get_engine()) as s:  # a plain read: no reconcile from the test's side
        return s.get(Job, job_id).status


def _heartbeat(job_id: int):
    from storage.db import get_engine

    with Session(get_engine()) as s:
        return s.get(Job, job_id).heartbeat_at


@pytest.mark.slow
def test_a_killed_job_fails_and_the_next_starts_with_no_page_open(session, users, project, workspace, monkeypatch):
    from core.jobs.queue import cancel
    from tests.e2e.conftest import Server

    monkeypatch.setenv("FINETUNE_STUDIO_UPKEEP_S", "1")
    server = Server(workspace)
    try:
        server.wait_ready()
        eng = users["engineer"]
        first = _submit(session, eng, project, "first")
        second = _submit(session, eng, project, "second")
        assert (first.status, second.status) == (JobStatus.running.value, JobStatus.queued.value)
        launched = _heartbeat(first.id)  # written by the queue at launch; then the job process heartbeats itself
        wait_until(lambda: _heartbeat(first.id) != launched, 30, "the first job's own heartbeat")
        assert (_status(first.id), _status(second.id)) == ("running", "queued")

        os.kill(first.pid, signal.SIGKILL)
        killed_at = time.time()
        wait_until(lambda: (_status(first.id), _status(second.id)) == ("failed", "running"), 30,
                   lambda: f"the killed job failed and the next running, not {(_status(first.id), _status(second.id))}")
        assert time.time() - killed_at < 15
        with Session(session.get_bind()) as s:
            assert "ended without reporting a result" in s.get(Job, first.id).error
            cancel(s, eng, second.id)  # let the second job end cleanly
        with Session(session.get_bind()) as s:
            wait_until(lambda: _status(second.id) == "canceled", 30,
                       lambda: f"the second job canceled, not {_status(second.id)}: {s.get(Job, second.id).error}")
    finally:
        server.stop()
        try:
            os.kill(first.pid, signal.SIGKILL)  # already killed, unless the test failed before: never wait forever
        except (ProcessLookupError, NameError, TypeError):
            pass
        try:
            os.waitpid(first.pid, 0)  # the killed job was this process's child
        except (ChildProcessError, NameError, TypeError):
            pass
