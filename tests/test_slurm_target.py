"""The Slurm target against a real Slurm on localhost (tests/fixtures_slurm.py: munge, slurmctld, nodes n1 and n2):
what it offers, jobs through sbatch to their end, a pending job's reason, scancel from outside, a node that dies.
The settings' checks and the batch script's quoting are tested without a cluster."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.errors import InvalidInput
from core.jobs.targets import TARGET_KINDS, Launch, RemoteState, SlurmTarget
from tests.fixtures_slurm import free_ports
from tests.helpers import wait_until

ENDED = ("succeeded", "failed", "canceled")


def target(cluster, **settings) -> SlurmTarget:
    return SlurmTarget({"slurm_conf": str(cluster.conf), "nodes": 2, "same_host": True, "time_limit": "00:10:00",
                        **settings})


def job_launch(tmp_path: Path, name: str, *, nodes: int = 1, sleep: float = 0, exit_code: int = 0,
               env: dict | None = None) -> Launch:
    run_dir = tmp_path / name
    run_dir.mkdir()
    (run_dir / "job.json").write_text(json.dumps({"sleep": sleep, "exit": exit_code}))
    return Launch(job_id=7, run_dir=run_dir, module="tests.slurm_job", nodes=nodes, env=env or {})


def wait_state(t: SlurmTarget, job_id: str, states, timeout: float):
    """The job's RemoteState once it is one of ``states``; the log in the failure message."""
    return wait_until(lambda: (s := t.state(job_id)).state in states and s, timeout,
                      lambda: f"Slurm job {job_id} to be {states}; last {t.state(job_id)}\n{t.logs(job_id)}",
                      interval=0.5)


def started(t: SlurmTarget, launch: Launch) -> tuple[str, str]:
    """Submit ``launch`` and wait until its work runs; its Slurm job id and the node it runs on."""
    job_id = t.submit(launch)
    mark = launch.run_dir / "ranks" / "0.json"
    wait_until(mark.is_file, 60, lambda: f"job {job_id} to start its work ({t.state(job_id)})\n{t.logs(job_id)}")
    return job_id, json.loads(mark.read_text())["node"]


# ---------------------------------------------------------------- without a cluster


def test_settings_are_checked_and_normalised():
    assert "slurm" in TARGET_KINDS and SlurmTarget.multi_host
    ok = SlurmTarget.check_settings({"partition": " gpu ", "nodes": "4", "gpus_per_node": 8,
                                     "extra_sbatch": "#SBATCH --qos=high\n\n--constraint=a100|h100\n--exclusive"})
    assert ok["partition"] == "gpu" and ok["nodes"] == 4 and ok["time_limit"] == "01:00:00"
    assert ok["extra_sbatch"] == ["--qos=high", "--constraint=a100|h100", "--exclusive"]
    refused = {
        "extra_sbatch": ["--comment=$(reboot)"], "time_limit": "an hour", "partition": "gpu; rm -rf /",
        "nodes": 0, "python": "venv/bin/python", "colour": "blue",
    }
    for key, value in refused.items():
        with pytest.raises(InvalidInput):
            SlurmTarget.check_settings({key: value})
    with pytest.raises(InvalidInput, match="set by the target itself"):
        SlurmTarget.check_settings({"extra_sbatch": ["--output=/etc/passwd"]})
    with pytest.raises(InvalidInput, match="one option"):
        SlurmTarget.check_settings({"extra_sbatch": ["--qos=high --wrap=reboot"]})


def test_batch_script_quotes_every_value(tmp_path):
    t = SlurmTarget({"partition": "debug", "account": "ml", "gpus_per_node": 2, "nodes": 2})
    launch = Launch(job_id=3, run_dir=tmp_path, module="core.train.train_job", nodes=2, procs_per_node=2,
                    env={"DATABASE_URL": "postgresql://u:p'w$(x)@db/s"})
    script = t.batch_script(launch)
    assert "#SBATCH --partition=debug" in script and "#SBATCH --gpus-per-node=2" in script
    assert "export DATABASE_URL='postgresql://u:p'\"'\"'w$(x)@db/s'" in script
    assert "--nproc_per_node 2 --rdzv_backend c10d" in script and "-m core.train.train_job" in script
    with pytest.raises(InvalidInput, match="at most 2 node"):
        t.batch_script(Launch(job_id=3, run_dir=tmp_path, module="m", nodes=3))
    with pytest.raises(InvalidInput, match="2 GPU"):
        t.batch_script(Launch(job_id=3, run_dir=tmp_path, module="m", procs_per_node=3))
    with pytest.raises(InvalidInput, match="environment variable"):
        t.batch_script(Launch(job_id=3, run_dir=tmp_path, module="m", env={"A;B": "1"}))


def test_slurm_states_and_gpus_read_as_ours():
    from core.jobs.targets.slurm import gpus_of, map_state

    assert [gpus_of(g) for g in ("gpu:4", "gpu:a100:4(S:0-1)", "gpu:2,mps:100", "(null)", "gpu:a:2,gpu:b:1")] == \
        [4, 4, 2, 0, 3]
    assert map_state("PENDING", "Resources") == RemoteState("pending", "Resources", "PENDING")
    assert map_state("RUNNING", "None") == RemoteState("running", "", "RUNNING")
    assert map_state("COMPLETED", "None", "0:0").state == "succeeded"
    assert map_state("CANCELLED", "None", "0:15").state == "canceled"
    failed = {native: map_state(native, reason, code) for native, reason, code in (
        ("NODE_FAIL", "NodeDown", "0:0"), ("TIMEOUT", "TimeLimit", "0:15"), ("OUT_OF_MEMORY", "OutOfMemory", "0:125"),
        ("FAILED", "NonZeroExitCode", "2:0"))}
    assert all(s.state == "failed" for s in failed.values())
    assert "node" in failed["NODE_FAIL"].reason and "NodeDown" in failed["NODE_FAIL"].reason
    assert "time limit" in failed["TIMEOUT"].reason and "out of memory" in failed["OUT_OF_MEMORY"].reason
    assert failed["FAILED"].reason == "the job exited with an error (FAILED); exit code 2"
    assert map_state("SOMETHING_NEW").state == "unknown"


@pytest.mark.slow
def test_an_unreachable_cluster_says_why(tmp_path):
    conf = tmp_path / "slurm.conf"
    conf.write_text(f"ClusterName=gone\nSlurmctldHost=localhost(127.0.0.1)\nSlurmctldPort={free_ports(1)[0]}\n"
                    f"AuthType=auth/none\n", encoding="utf-8")
    offer = SlurmTarget({"slurm_conf": str(conf)}).offer()
    assert not offer.reachable and offer.reason.startswith(("slurmctld not reachable", "sinfo is not installed"))
    missing = SlurmTarget({"slurm_conf": str(tmp_path / "nope.conf")}).offer()
    assert not missing.reachable and "slurm.conf not found" in missing.reason


# ---------------------------------------------------------------- on the local cluster


@pytest.mark.slow
def test_offer_shows_both_nodes(slurm_cluster):
    offer = target(slurm_cluster).offer()
    assert (offer.reachable, offer.nodes, offer.cpus, offer.gpus) == (True, 2, 4, 0)
    assert not target(slurm_cluster, partition="nosuch").offer().reachable


@pytest.mark.slow
def test_a_job_runs_through_sbatch_and_values_stay_values(slurm_cluster, tmp_path):
    hostile = "it's $(touch " + str(tmp_path / "pwned") + ") `id` \"quoted\"; echo no"
    t = target(slurm_cluster)
    launch = job_launch(tmp_path, "plain", env={"FINETUNE_STUDIO_JOB_ID": "7", "HOSTILE": hostile})
    job_id = t.submit(launch)
    assert wait_state(t, job_id, ENDED, 120).state == "succeeded"
    record = json.loads((launch.run_dir / "ranks" / "0.json").read_text())
    assert record["world_size"] == 1 and record["node"] in ("n1", "n2") and record["job_id"] == "7"
    assert record["hostile"] == hostile  # exported as the exact value, nothing of it ran
    assert '"rank": 0' in t.logs(job_id) and (launch.run_dir / f"slurm-{job_id}.out").is_file()
    assert not (tmp_path / "pwned").exists()
    assert (launch.run_dir / "slurm.sbatch").stat().st_mode & 0o077 == 0  # it may hold the database password
    failing = target(slurm_cluster).submit(job_launch(tmp_path, "failing", exit_code=3))
    ended = wait_state(t, failing, ENDED, 120)
    assert ended.state == "failed" and "exit code 3" in ended.reason and ended.native == "FAILED"
    assert t.state("999999").state == "unknown"


@pytest.mark.slow
def test_two_nodes_rendezvous_through_torchrun(slurm_cluster, tmp_path):
    t = target(slurm_cluster)
    launch = job_launch(tmp_path, "ranks", nodes=2)
    job_id = t.submit(launch)
    assert wait_state(t, job_id, ENDED, 180).state == "succeeded", t.logs(job_id)
    records = [json.loads(p.read_text()) for p in sorted((launch.run_dir / "ranks").glob("*.json"))]
    assert [r["rank"] for r in records] == [0, 1]
    assert {r["node"] for r in records} == {"n1", "n2"} and all(r["world_size"] == 2 for r in records)
    assert all(r["rank_sum"] == 1 for r in records)  # both joined one process group (gloo all_reduce)


def training_job(session, users, project, tiny_model, **overrides):
    """A queued training job row with its run folder (as the queue makes it) and the Launch the queue would hand
    a target: the workspace, database and job id in the environment of every rank."""
    from core.train.config import TrainConfig
    from core.workspace import database_url, offline_vars, workspace_dir
    from tests.fixtures_jobs import add_job
    from tests.fixtures_models import make_dataset_version

    version = make_dataset_version(session, project, users["engineer"], n_train=4, n_validation=1)
    cfg = TrainConfig(base_model=str(tiny_model), dataset_version_id=version.id, max_length=96,
                      per_device_batch_size=2, **overrides)
    job = add_job(session, project, users["engineer"], status="queued", config=cfg.to_dict(),
                  dataset_version_id=version.id)
    env = {"FINETUNE_STUDIO_HOME": str(workspace_dir()), "DATABASE_URL": database_url(),
           "FINETUNE_STUDIO_JOB_ID": str(job.id), **offline_vars()}
    return job, Launch(job_id=job.id, run_dir=Path(job.run_dir), module="core.train.train_job", env=env)


@pytest.mark.slow
def test_a_training_run_succeeds_on_slurm(slurm_cluster, workspace, session, users, project, tiny_model):
    from core.jobs.queue import get_job

    job, launch = training_job(session, users, project, tiny_model, max_steps=2, save_steps=2)
    t = target(slurm_cluster)
    external = t.submit(launch)
    assert wait_state(t, external, ENDED, 300).state == "succeeded"
    session.expire_all()
    job = get_job(session, job.id)
    assert job.status == "succeeded", job.error
    run = Path(job.run_dir)
    assert (run / "adapter_model.safetensors").is_file() and (run / "checkpoints" / "checkpoint-2").is_dir()
    steps = [json.loads(ln)["step"] for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1] == 2 and "train" in t.logs(external, tail=50).lower()


@pytest.mark.slow
def test_scancel_reaches_the_training_worker_which_saves_and_stops(slurm_cluster, workspace, session, users,
                                                                    project, tiny_model):
    """Slurm's SIGTERM (scancel) reaches the worker through srun: it stops after the step, keeps its last complete
    checkpoint and records itself canceled within KillWait, before Slurm's SIGKILL."""
    from core.jobs.queue import get_job
    from core.jobs.rundir import last_complete_checkpoint

    job, launch = training_job(session, users, project, tiny_model, max_steps=400, save_steps=2)
    t = target(slurm_cluster)
    external = t.submit(launch)
    wait_until(lambda: last_complete_checkpoint(launch.run_dir), 240,
               lambda: f"a complete checkpoint ({t.state(external)})\n{t.logs(external)}", interval=0.5)
    t.stop(external)
    assert wait_state(t, external, ENDED, 60).state == "canceled"
    def row():
        session.expire_all()
        current = get_job(session, job.id)
        return current if current.status != "running" else None

    job = wait_until(row, 30, "the worker's own finish row")
    assert job.status == "canceled", (job.status, job.error, t.logs(external))
    assert last_complete_checkpoint(launch.run_dir) is not None


@pytest.mark.slow
def test_a_pending_job_shows_the_clusters_reason_and_stops(slurm_cluster, tmp_path):
    t = target(slurm_cluster, extra_sbatch=["--exclusive"])
    hog = t.submit(job_launch(tmp_path, "hog", nodes=2, sleep=120))
    wait_state(t, hog, ("running",), 60)
    waiting = t.submit(job_launch(tmp_path, "waiting", sleep=0))
    pending = wait_state(t, waiting, ("pending",), 30)
    wait_until(lambda: t.state(waiting).reason in ("Resources", "Priority"), 30,
               lambda: f"a reason from the scheduler, not {t.state(waiting)}")
    assert pending.native == "PENDING"
    too_big = target(slurm_cluster, nodes=3).submit(job_launch(tmp_path, "too-big", nodes=3))
    wait_until(lambda: t.state(too_big).reason == "PartitionNodeLimit", 30,
               lambda: f"Slurm to say the partition has too few nodes, not {t.state(too_big)}")
    t.stop(too_big)
    t.stop(waiting)
    assert wait_state(t, waiting, ENDED, 30).state == "canceled"
    t.stop(hog)
    assert wait_state(t, hog, ENDED, 60).state == "canceled"


@pytest.mark.slow
def test_scancel_from_outside_is_canceled(slurm_cluster, tmp_path):
    t = target(slurm_cluster)
    job_id, _ = started(t, job_launch(tmp_path, "outside", sleep=120))
    assert slurm_cluster.run("scancel", job_id).returncode == 0
    ended = wait_state(t, job_id, ENDED, 60)
    assert (ended.state, ended.native) == ("canceled", "CANCELLED")
    t.stop(job_id)  # stopping a job that already ended (a cancel racing its end) is no error
    t.stop("999999")


@pytest.mark.slow
def test_a_node_that_dies_fails_the_job_with_a_reason(slurm_cluster, tmp_path):
    t = target(slurm_cluster)
    job_id, node = started(t, job_launch(tmp_path, "doomed", sleep=300))
    try:
        assert slurm_cluster.kill_node(node)
        # SlurmdTimeout=10: the controller pings, finds the node silent, sets it down and fails its jobs
        ended = wait_state(t, job_id, ENDED, 120)
        assert ended.state == "failed" and ended.native == "NODE_FAIL"
        assert "node" in ended.reason.lower()
        assert target(slurm_cluster).offer().nodes == 1  # the dead node is not offered
    finally:
        slurm_cluster.start_node(node)
    assert target(slurm_cluster).offer().nodes == 2
