"""Training on a real Slurm cluster from the Train page (issue 22), as tests/test_ray_target.py does for Ray: the
cluster of tests/fixtures_slurm.py (munge, slurmctld, nodes n1 and n2 on localhost) registered as a target; runs
launched from the page (AppTest) go through sbatch. A run on both nodes succeeds and the live panel follows it;
Cancel on the page reaches scancel, the worker saves and the run is canceled, and Resume continues it on the same
target; a slurmd killed mid-run fails the run with Slurm's NODE_FAIL on the page, not a hang; a run sent to a
partition that is down waits with Slurm's own reason and can be canceled. SQLite serves because every node is
this host (the target's ``same_host``)."""
from __future__ import annotations

import os
import pwd

import pytest

from core.jobs import rundir
from core.jobs.queue import read_metrics
from core.jobs.targets.registry import add_target
from core.jobs.targets.slurm import scontrol_fields
from storage.models import JobStatus
from tests.fixtures_models import make_dataset_version
from tests.fixtures_slurm import CLOSED, LocalSlurm
from tests.fixtures_targets import (assert_continues, cancel_and_wait, cancel_on_page, checkpointed,
                                    launch_from_page, panel_after_reconcile, resume_on_page)
from tests.helpers import status_line, wait_for, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def _settings(cluster: LocalSlurm, **more) -> dict:
    return {"slurm_conf": str(cluster.conf), "nodes": 2, "same_host": True, "time_limit": "00:20:00", **more}


@pytest.fixture
def slurm_target(session, users, slurm_cluster):
    yield add_target(session, users["admin"], "slurm-here", "slurm", _settings(slurm_cluster))
    # nothing a failed test left keeps the nodes busy: every job of this cluster (its jobs are all this user's)
    slurm_cluster.run("scancel", "--user", pwd.getpwuid(os.geteuid()).pw_name)


def _slurm_job(cluster: LocalSlurm, job) -> dict:
    """``scontrol show job`` of the run's Slurm job, as fields (JobState, NumNodes, NodeList...)."""
    return scontrol_fields(cluster.run("scontrol", "show", "job", "-o", job.external_id).stdout)


def _slurm_log(cluster: LocalSlurm, job) -> str:
    out = _slurm_job(cluster, job).get("StdOut", "")
    return open(out, encoding="utf-8", errors="replace").read() if out else ""


def test_a_run_from_the_train_page_runs_on_two_slurm_nodes_and_succeeds(session, users, project, tiny_model,
                                                                          slurm_cluster, slurm_target):
    make_dataset_version(session, project, users["engineer"], n_train=8, n_validation=1)
    at, job = launch_from_page(session, users, tiny_model, "slurm-here", nodes=2, steps=3)
    assert job.target_id == slurm_target.id and job.external_id.isdigit()
    assert (job.config["target"], job.config["nodes"], job.config["procs_per_node"]) == ("slurm-here", 2, 1)
    assert "queued on the cluster" in status_line(at) or "running" in status_line(at)
    wait_until(lambda: read_metrics(job), 300, lambda: f"a first step of run {job.id}: {job.remote_reason}\n"
                                                       f"{_slurm_log(slurm_cluster, job)}")
    at.run()
    assert "step " in next(p.text for p in at.get("progress"))  # the live panel draws the run's progress
    done = wait_for(session, job.id, timeout=300)
    assert done.status == JobStatus.succeeded.value, (done.error, _slurm_log(slurm_cluster, job))
    # the worker records its finish a moment before its processes exit and Slurm completes the job
    slurm = wait_until(lambda: (f := _slurm_job(slurm_cluster, job))["JobState"] != "RUNNING" and f, 60,
                       "Slurm to end the job")
    assert (slurm["JobState"], slurm["NumNodes"], slurm["NodeList"]) == ("COMPLETED", "2", "n[1-2]")
    assert "one of 2 processes (DDP over gloo)" in _slurm_log(slurm_cluster, job)  # both nodes trained it
    assert rundir.has_model(job.run_dir)
    at.run()
    assert "succeeded" in status_line(at)
    assert next(p.text for p in at.get("progress")) == "step 3 / 3"


def test_cancel_on_the_page_reaches_scancel_and_resume_continues_on_slurm(session, users, project, tiny_model,
                                                                          slurm_cluster, slurm_target):
    make_dataset_version(session, project, users["engineer"], n_train=8, n_validation=1)
    at, job = launch_from_page(session, users, tiny_model, "slurm-here", nodes=1, steps=400, save_steps=2)
    wait_until(lambda: checkpointed(session, job), 300,
               lambda: f"a checkpoint of run {job.id}\n{_slurm_log(slurm_cluster, job)}")
    canceled = cancel_on_page(at, session, job)
    assert canceled.status == JobStatus.canceled.value, canceled.error
    wait_until(lambda: _slurm_job(slurm_cluster, job)["JobState"] == "CANCELLED", 60, "Slurm to cancel the job")
    assert "canceled" in status_line(at.run()).lower()
    resumed, kept = resume_on_page(at, session, canceled)
    assert resumed.target_id == slurm_target.id and resumed.external_id != job.external_id
    assert_continues(resumed, kept)
    cancel_and_wait(session, users["engineer"], resumed)  # 400 steps are not the point: it continued


def test_a_slurmd_killed_mid_run_fails_the_run_with_slurms_reason_and_resume_works(session, users, project,
                                                                                     tiny_model, slurm_cluster,
                                                                                     slurm_target):
    make_dataset_version(session, project, users["engineer"], n_train=8, n_validation=1)
    at, job = launch_from_page(session, users, tiny_model, "slurm-here", nodes=1, steps=400, save_steps=2)
    wait_until(lambda: checkpointed(session, job), 300,
               lambda: f"a checkpoint of run {job.id}\n{_slurm_log(slurm_cluster, job)}")
    node = _slurm_job(slurm_cluster, job)["NodeList"]
    try:
        assert slurm_cluster.kill_node(node)
        failed = wait_for(session, job.id, timeout=180)  # SlurmdTimeout=10: Slurm notices within seconds
        assert failed.status == JobStatus.failed.value
        assert failed.error.startswith("The cluster job failed (NODE_FAIL: a node of the job failed"), failed.error
        at.run()
        assert "failed" in status_line(at)
        assert any("NODE_FAIL" in e.value for e in at.error), [e.value for e in at.error]
    finally:
        slurm_cluster.start_node(node)
    resumed, kept = resume_on_page(at, session, failed)
    assert_continues(resumed, kept)
    cancel_and_wait(session, users["engineer"], resumed)


def test_a_run_on_a_partition_that_is_down_waits_with_slurms_reason_and_cancels(session, users, project,
                                                                                  tiny_model, slurm_cluster,
                                                                                  slurm_target):
    add_target(session, users["admin"], "slurm-closed", "slurm", _settings(slurm_cluster, partition=CLOSED))
    make_dataset_version(session, project, users["engineer"], n_train=8, n_validation=1)
    at, job = launch_from_page(session, users, tiny_model, "slurm-closed", nodes=2, steps=3)
    wait_until(lambda: "queued on the cluster — PartitionDown" in panel_after_reconcile(at, session), 60,
               lambda: f"Slurm's reason on the page, not {status_line(at)!r}")
    session.refresh(job)
    assert (job.status, job.remote_state) == (JobStatus.queued.value, "pending")
    canceled = cancel_on_page(at, session, job, timeout=60)
    assert canceled.status == JobStatus.canceled.value and not read_metrics(canceled)
    assert _slurm_job(slurm_cluster, job)["JobState"] == "CANCELLED"
    assert "canceled" in status_line(at.run()).lower()
    assert [i.value for i in at.info if "waited on the cluster" in i.value] == [
        "Canceled while it waited on the cluster; it had not started."]
