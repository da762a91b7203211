"""A step of the wall clock loses no running work. Seen in the five-system bench (issue 24): the VM paused for
10 s, the kernel moved its boot time by 10 s, psutil's create time (boot time + start ticks) moved with it, and
reconcile failed a generation job whose process ran on for minutes (7.5 GB, both cores) while the page said
"ended without reporting a result". The same check decided whether another process's pending import was
abandoned (and deleted its rows) and whether a local target's run was gone.

The step is made where it acts: the boot time psutil reads from /proc/stat moves forward, as it did."""
from __future__ import annotations

import psutil
import pytest
from psutil import _pslinux

from core.jobs.processes import alive, identity, stamps
from core.jobs.queue import get_job, reconcile
from core.jobs.targets.local import LocalTarget
from tests.fixtures_jobs import add_job, live_process

pytestmark = pytest.mark.skipif(not psutil.LINUX, reason="the boot time read from /proc/stat is Linux's")


@pytest.fixture
def clock_step(monkeypatch):
    """Move the kernel's boot time as a 10 s step of the wall clock does (after the records were made)."""
    real = _pslinux.boot_time

    def step():
        monkeypatch.setattr(_pslinux, "boot_time", lambda: real() + 10.0)
        monkeypatch.setattr(psutil, "boot_time", lambda: real() + 10.0)

    return step


def test_a_running_job_survives_a_step_of_the_clock(session, users, project, clock_step):
    with live_process() as proc:
        job = add_job(session, project, users["engineer"], name="generating", kind="generate", pid=proc.pid)
        created = psutil.Process(proc.pid).create_time()
        clock_step()
        assert abs(psutil.Process(proc.pid).create_time() - created - 10.0) < 0.01  # the step is real to psutil
        assert reconcile(session) == []
        assert get_job(session, job.id).status == "running"
    reconcile(session)  # and once its process is gone, it is gone
    job = get_job(session, job.id)
    assert job.status == "failed" and "ended without reporting a result" in job.error


def test_a_process_of_another_boot_with_the_same_pid_is_not_the_job(session, users, project):
    with live_process() as proc:
        here = identity(proc.pid)
        assert here and here.split(":")[0] in open("/proc/sys/kernel/random/boot_id").read()
        job = add_job(session, project, users["engineer"], name="before the reboot", pid=proc.pid,
                      pid_ident="00000000-0000-0000-0000-000000000000:" + here.split(":")[1])
        assert not alive(job)
        reconcile(session)
        assert get_job(session, job.id).status == "failed"


def test_a_pending_import_of_a_live_process_is_not_discarded_after_a_step(session, project, clock_step):
    from sqlmodel import select

    from core.curate.importing import _owner, discard_abandoned_imports
    from storage.models import ImportRecord

    with live_process() as proc:
        report = {**_owner(), "pid": proc.pid}  # what the writing process records, for another live process:
        report.update({k: v for k, v in stamps(proc.pid).items() if k in report})  # its pid and its stamps
        rec = ImportRecord(project_id=project.id, filename="big.jsonl", status="pending", report=report)
        session.add(rec)
        session.commit()
        clock_step()
        assert discard_abandoned_imports(session) == []
        assert session.exec(select(ImportRecord)).one().status == "pending"


def test_a_local_target_run_survives_a_step_of_the_clock(clock_step):
    with live_process() as proc:
        target = LocalTarget({})
        external_id = f"{proc.pid}:{identity(proc.pid)}"
        legacy_id = f"{proc.pid}:{psutil.Process(proc.pid).create_time()}"
        assert target._process(external_id) is not None and target._process(legacy_id) is not None
        clock_step()
        assert target._process(external_id) is not None
