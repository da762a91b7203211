"""The server reconciles jobs on its own timer: a job killed while nobody has a page open becomes failed and the
next queued job starts, with only `finetune-studio serve` running."""
from __future__ import annotations

import os
import signal
import time

import pytest
from sqlmodel import Session

from storage.models import Job, JobStatus

pytestmark = pytest.mark.timeout(180)


def _submit(session, user, project, name):
    from core.jobs.queue import submit

    return submit(session, user, project_id=project.id, kind="sleep", action="train", name=name, config={},
                  module="tests.sleeping_worker")


def _status(job_id: int) -> str:
    from storage.db import get_engine

    with Session(get_engine()) as s:  # a plain read: no reconcile from the test's side
        return s.get(Job, job_id).status


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
        time.sleep(2)  # both are settled: the first job heartbeats, the second waits for the device
        assert (_status(first.id), _status(second.id)) == ("running", "queued")

        os.kill(first.pid, signal.SIGKILL)
        killed_at = time.time()
        while time.time() - killed_at < 30 and (_status(first.id), _status(second.id)) != ("failed", "running"):
            time.sleep(0.2)
        assert (_status(first.id), _status(second.id)) == ("failed", "running")
        assert time.time() - killed_at < 15
        with Session(session.get_bind()) as s:
            assert "ended without reporting a result" in s.get(Job, first.id).error
            cancel(s, eng, second.id)  # let the second job end cleanly
        deadline = time.time() + 30
        while time.time() < deadline and _status(second.id) != "canceled":
            time.sleep(0.2)
        with Session(session.get_bind()) as s:
            assert _status(second.id) == "canceled", s.get(Job, second.id).error
    finally:
        server.stop()
        try:
            os.waitpid(first.pid, 0)  # the killed job was this process's child
        except (ChildProcessError, NameError):
            pass
