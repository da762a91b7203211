"""Training on a real Ray cluster (issue 22): a head and a second node started here by the test (`ray start`),
registered as a target; runs launched from the Train page (AppTest) go through Ray's Job Submission API with one
rank per node; the live panel moves and the run succeeds; Cancel on the page stops the Ray job and Resume
continues from the last checkpoint; killing the second node mid-run fails the run with a reason, and Resume works
once the node is back. SQLite serves here because every node is on this host (the target's ``same_host``)."""
from __future__ import annotations

from pathlib import Path

import pytest

from core.jobs import rundir
from core.jobs.queue import read_metrics, reconcile
from core.jobs.targets.registry import add_target
from storage.models import JobStatus
from tests.fixtures_models import make_dataset_version
from tests.fixtures_ray import RAY, SPARE, LocalRay, free_ports
from tests.fixtures_targets import (assert_continues, cancel_and_wait, cancel_on_page, checkpointed,
                                    launch_from_page, resume_on_page)
from tests.helpers import status_line, wait_for, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def ray_cluster():
    if not Path(RAY).exists():
        pytest.fail("ray is not installed: pip install -e '.[dev]' installs ray[default,train]")
    cluster = LocalRay()
    try:
        yield cluster.start()
    finally:
        cluster.stop()


@pytest.fixture
def ray_target(session, users, ray_cluster):
    wait_until(lambda: len(ray_cluster.alive_nodes()) == 2, 60, "two Ray nodes")
    return add_target(session, users["admin"], "ray-here", "ray", {
        "address": ray_cluster.address, "same_host": True, "master_port": free_ports(1)[0]})


def _ray_status(cluster: LocalRay, job) -> str:
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(cluster.address).get_job_status(job.external_id).value


def test_a_run_from_the_train_page_runs_on_two_ray_nodes_and_succeeds(session, users, project, tiny_model,
                                                                         ray_cluster, ray_target):
    make_dataset_version(session, project, users["engineer"], n_train=8, n_validation=1)
    at, job = launch_from_page(session, users, tiny_model, "ray-here", nodes=2, steps=3)
    assert job.target_id == ray_target.id and job.external_id.startswith("raysubmit")
    assert (job.config["target"], job.config["nodes"], job.config["procs_per_node"]) == ("ray-here", 2, 1)
    assert "queued on the cluster" in status_line(at) or "running" in status_line(at)
    wait_until(lambda: read_metrics(job), 300, lambda: f"a first step of run {job.id}: {job.remote_reason}")
    at.run()
    assert "step " in next(p.text for p in at.get("progress"))  # the live panel draws the run's progress
    done = wait_for(session, job.id, timeout=300)
    assert done.status == JobStatus.succeeded.value, done.error
    wait_until(lambda: _ray_status(ray_cluster, job) == "SUCCEEDED", 60, "Ray to say the job succeeded")
    assert rundir.has_model(job.run_dir)
    from ray.job_submission import JobSubmissionClient
    assert "Started 2 node(s) x 1 rank(s)" in JobSubmissionClient(ray_cluster.address).get_job_logs(job.external_id)


def test_cancel_on_the_page_stops_the_ray_job_and_resume_continues(session, users, project, tiny_model, ray_cluster,
                                                                   ray_target):
    make_dataset_version(session, project, users["engineer"], n_train=8, n_validation=1)
    at, job = launch_from_page(session, users, tiny_model, "ray-here", nodes=1, steps=400, save_steps=2)
    wait_until(lambda: checkpointed(session, job), 300, lambda: f"a checkpoint of run {job.id}")
    canceled = cancel_on_page(at, session, job)
    assert canceled.status == JobStatus.canceled.value, canceled.error
    wait_until(lambda: _ray_status(ray_cluster, job) in ("STOPPED", "SUCCEEDED", "FAILED"), 60, "the Ray job's end")
    assert _ray_status(ray_cluster, job) == "STOPPED"
    resumed, kept = resume_on_page(at, session, canceled)
    assert resumed.target_id == ray_target.id
    assert_continues(resumed, kept)
    cancel_and_wait(session, users["engineer"], resumed)  # 400 steps are not the point: it continued


def test_a_ray_node_that_dies_fails_the_run_with_a_reason_and_resume_works(session, users, project, tiny_model,
                                                                           ray_cluster, ray_target):
    make_dataset_version(session, project, users["engineer"], n_train=8, n_validation=1)
    # The run's one rank on the second node (the only one with the custom resource), the node that is killed.
    add_target(session, users["admin"], "ray-spare", "ray", {"address": ray_cluster.address, "same_host": True,
                                                             "resources_per_node": {SPARE: 1}})
    _, job = launch_from_page(session, users, tiny_model, "ray-spare", nodes=1, steps=400, save_steps=2)
    wait_until(lambda: checkpointed(session, job), 300, lambda: f"a checkpoint of run {job.id}")
    ray_cluster.kill_worker()
    failed = wait_for(session, job.id, timeout=180)
    assert failed.status == JobStatus.failed.value
    assert "The cluster job failed (FAILED: The run failed: node 0 was lost" in failed.error, failed.error
    ray_cluster.start_worker()
    wait_until(lambda: len(ray_cluster.alive_nodes()) == 2, 120, "the second node back")
    from core.train.runs import resume_run
    resumed = resume_run(session, users["engineer"], job.id)
    assert_continues(resumed, rundir.checkpoint_step(rundir.last_complete_checkpoint(job.run_dir)))
    cancel_and_wait(session, users["engineer"], resumed)


def test_a_run_the_cluster_cannot_place_waits_with_its_reason_and_cancels(session, users, project, ray_cluster):
    from core.jobs.queue import cancel, submit

    big = add_target(session, users["admin"], "ray-big", "ray", {"address": ray_cluster.address, "same_host": True,
                                                                  "cpus_per_node": 2})
    job = submit(session, users["engineer"], project_id=project.id, kind="generate", action="evaluate", name="big",
                 config={}, module="tests.sleeping_worker", target_id=big.id)

    def held():
        reconcile(session)
        session.refresh(job)
        return job.status == JobStatus.queued.value and job.remote_reason.startswith("Waiting for 1 node(s) with 2")
    wait_until(held, 120, lambda: f"the cluster's reason (now {job.remote_state}: {job.remote_reason})")
    cancel(session, users["engineer"], job.id)
    assert wait_for(session, job.id, timeout=60).status == JobStatus.canceled.value
    wait_until(lambda: _ray_status(ray_cluster, job) == "STOPPED", 60, "the Ray job stopped")
