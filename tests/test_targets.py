"""Compute targets without a cluster (issue 22): the registry from the CLI and the Admin page, the refusal of a
multi-host target on SQLite, and the queue's remote path end to end through the local target (a real detached
process): submitted without taking this machine's slot, running, canceled through the target's stop, and a job
whose process dies failed with the target's reason and the log tail."""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from sqlmodel import select

from core.errors import InvalidInput, PermissionDenied
from core.jobs import queue
from core.jobs.targets.base import SQLITE_REFUSAL
from core.jobs.targets.registry import add_target, check_target, get_target, remove_target
from storage.models import Job, JobStatus
from tests.helpers import cli, page, wait_for, wait_until

SLEEPER = "tests.sleeping_worker"  # waits, heartbeating, until SIGTERM; then records canceled
CLOSED = "http://127.0.0.1:9"  # the discard port: nothing listens there


def _submit(session, user, project, target_id=None, name="job", config=None):
    return queue.submit(session, user, project_id=project.id, kind="generate", action="evaluate", name=name,
                        config=config or {}, module=SLEEPER, target_id=target_id)


@pytest.mark.slow
def test_cli_registers_checks_and_removes_targets(workspace):
    bad = cli(workspace, "targets", "add", "gpu-ray", "--kind", "ray", "--settings", '{"adress": "x"}')
    assert bad.returncode == 1 and "Unknown setting(s) for a Ray target: adress" in bad.stderr
    added = cli(workspace, "targets", "add", "gpu-ray", "--kind", "ray", "--settings",
                json.dumps({"address": CLOSED.removeprefix("http://"), "cpus_per_node": 2}), "--json")
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["settings"]["address"] == CLOSED  # normalised to the dashboard's URL
    listed = json.loads(cli(workspace, "targets", "list", "--json").stdout)
    assert [t["name"] for t in listed] == ["gpu-ray"]
    checked = cli(workspace, "targets", "check", "gpu-ray", "--json")
    assert checked.returncode == 1  # unreachable: scripts can tell
    row = json.loads(checked.stdout)[0]
    assert not row["reachable"] and "not reachable" in row["offers"] and "dashboard" in row["offers"]
    assert cli(workspace, "targets", "remove", "gpu-ray").returncode == 0
    assert json.loads(cli(workspace, "targets", "list", "--json").stdout) == []


def test_only_admins_manage_targets_and_bad_settings_are_refused(session, users):
    with pytest.raises(PermissionDenied):
        add_target(session, users["engineer"], "mine", "local", {})
    with pytest.raises(InvalidInput, match="The settings are not valid JSON"):
        add_target(session, users["admin"], "mine", "ray", "{not json")
    with pytest.raises(InvalidInput, match="needs the address of its dashboard"):
        add_target(session, users["admin"], "mine", "ray", "{}")
    with pytest.raises(InvalidInput, match="cannot be named 'local'"):
        add_target(session, users["admin"], "local", "local", {})
    add_target(session, users["admin"], "mine", "local", {})
    with pytest.raises(InvalidInput, match="exists already"):
        add_target(session, users["admin"], "mine", "local", {})


def test_a_multi_host_target_on_sqlite_is_refused_with_the_reason(session, users, project):
    ray = add_target(session, users["admin"], "ray", "ray", {"address": CLOSED})
    with pytest.raises(InvalidInput) as err:
        _submit(session, users["engineer"], project, ray.id)
    assert str(err.value) == SQLITE_REFUSAL.format(kind="Ray")
    assert str(err.value).startswith("A Ray target runs on other machines: they need the workspace on a filesystem "
                                     "every node mounts and a database every node reaches (PostgreSQL).")
    assert session.exec(select(Job)).all() == []  # nothing queued, nothing to clean up
    same_host = add_target(session, users["admin"], "ray-here", "ray", {"address": CLOSED, "same_host": True})
    with pytest.raises(InvalidInput, match="Target ray-here is not reachable now: Ray dashboard at"):
        _submit(session, users["engineer"], project, same_host.id)  # past the database check: the cluster is down


@pytest.mark.slow
def test_a_job_on_a_target_takes_no_slot_runs_and_cancels_through_the_target(session, users, project):
    here = add_target(session, users["admin"], "this-box", "local", {})
    assert check_target(here).reachable and check_target(here).nodes == 1
    remote = _submit(session, users["engineer"], project, here.id, name="remote")
    assert remote.external_id and remote.status == JobStatus.queued.value and remote.remote_state == "pending"
    local = _submit(session, users["engineer"], project, name="local")  # this machine's one slot is still free
    assert local.status == JobStatus.running.value

    def running():
        queue.reconcile(session)
        session.refresh(remote)
        return remote.status == JobStatus.running.value and remote.heartbeat_at is not None
    wait_until(running, 60, "the target's job to run")
    assert remote.remote_state == "running"
    assert queue.queue_position(session, remote) is None and queue.jobs_ahead(session, remote) == []

    queue.cancel(session, users["engineer"], remote.id)  # SIGTERM through LocalTarget.stop
    assert wait_for(session, remote.id, timeout=60).status == JobStatus.canceled.value
    queue.cancel(session, users["engineer"], local.id)
    assert wait_for(session, local.id, timeout=60).status == JobStatus.canceled.value
    resumed = queue.resubmit(session, users["engineer"], remote)
    assert resumed.target_id == here.id and resumed.external_id  # Resume goes to the same target
    queue.cancel(session, users["engineer"], resumed.id)
    wait_for(session, resumed.id, timeout=60)


def test_a_target_job_whose_process_dies_fails_with_the_reason_and_log_tail(session, users, project):
    here = add_target(session, users["admin"], "this-box", "local", {})
    job = _submit(session, users["engineer"], project, here.id)
    wait_until(lambda: (queue.reconcile(session), session.refresh(job), job.heartbeat_at is not None
                        and job.status == "running")[-1], 60, "the job to run")
    with Path(job.run_dir, "job.log").open("a") as log:
        log.write("last words of the worker\n")
    os.killpg(int(job.external_id.split(":")[0]), signal.SIGKILL)
    ended = wait_for(session, job.id, timeout=60)
    assert ended.status == JobStatus.failed.value
    assert "The cluster job failed (EXITED: The process ended)" in ended.error
    assert "last words of the worker" in ended.error


def test_a_target_with_live_runs_cannot_be_removed(session, users, project):
    here = add_target(session, users["admin"], "this-box", "local", {})
    job = _submit(session, users["engineer"], project, here.id)
    with pytest.raises(InvalidInput, match=f"still has run\\(s\\) {job.id} queued or running"):
        remove_target(session, users["admin"], "this-box")
    queue.cancel(session, users["engineer"], job.id)
    wait_for(session, job.id, timeout=60)
    assert remove_target(session, users["admin"], "this-box") == "this-box"
    session.refresh(job)
    assert job.target_id is None and job.status == JobStatus.canceled.value


def test_admin_page_adds_shows_and_removes_a_target(session, users):
    at = page("admin.py", users["admin"]).run()
    assert not at.exception
    at.text_input(key="target_name").input("box")
    at.selectbox(key="target_kind").set_value("local")
    at.text_area(key="target_settings").input("{}")
    next(b for b in at.button if b.label == "Add target").click()
    at.run()
    assert not at.exception and not [e.value for e in at.error]
    assert "Added target box." in [m.value for m in at.success]
    shown = [m.value.replace("\\", "") for m in at.markdown]  # md_literal escapes the brackets
    assert f"**box** (local): 1 node(s), {os.cpu_count()} CPU(s), 0 GPU(s)" in shown
    at.text_area(key="target_edit_" + str(get_target(session, "box").id)).input('{"master_port": 1}')
    next(b for b in at.button if b.label == "Save settings").click()
    at.run()
    assert "master_port must be a whole number from 1024 to 65535; got 1" in "\n".join(e.value for e in at.error)
    next(b for b in at.button if b.label == "Remove box").click()
    at.run()
    assert "Removed box." in [m.value for m in at.success]
    session.expire_all()
    with pytest.raises(Exception, match="No compute target 'box'"):
        get_target(session, "box")


def test_a_job_held_by_its_cluster_says_so_in_the_clusters_words():
    from core.jobs.states import describe_state

    held = Job(status=JobStatus.queued.value, target_id=1, remote_state="pending", remote_reason="Resources")
    assert describe_state(held, queue_pos=None) == "queued on the cluster — Resources"
    waiting = Job(status=JobStatus.running.value, target_id=1, remote_state="running",
                  remote_reason="Waiting for 2 node(s)")
    assert describe_state(waiting).endswith("(cluster: Waiting for 2 node(s))")


@pytest.mark.slow
def test_cli_train_names_a_target_that_does_not_exist(workspace, session, users, project, tiny_model):
    from tests.fixtures_models import make_dataset_version

    make_dataset_version(session, project, users["engineer"], n_train=4, n_validation=1)
    done = cli(workspace, "train", "--version", "v1", "--base-model", str(tiny_model), "--target", "gpu-ray",
               "--set", "nodes=2")
    assert done.returncode == 1 and "No compute target 'gpu-ray'" in done.stderr, done.stderr
    assert session.exec(select(Job)).all() == []


def test_ray_settings_are_checked_and_its_failure_reason_is_the_drivers_line(session, users):
    from core.jobs.targets.ray import _reason

    with pytest.raises(InvalidInput, match="resources_per_node must map Ray resource names to positive amounts"):
        add_target(session, users["admin"], "gpus", "ray", {"address": CLOSED, "resources_per_node": {"A100": 0}})
    row = add_target(session, users["admin"], "gpus", "ray",
                     {"address": "head:8265", "resources_per_node": {"A100": 1}})
    assert row.settings["address"] == "http://head:8265" and row.settings["resources_per_node"] == {"A100": 1}
    message = ("Job entrypoint command failed with exit code 1, last available logs (truncated to 20,000 chars):\n"
               "Started 2 node(s) x 1 rank(s); the first node is 10.0.0.1.\n"
               "The run failed: node 1 was lost (ActorDiedError: the node died). See /runs/1/train.log.\n")
    assert _reason(message) == "The run failed: node 1 was lost (ActorDiedError: the node died). See /runs/1/train.log."
    assert _reason("Job was intentionally stopped.") == "Job was intentionally stopped."
