"""Background runs: refusals before launch, a queue, cancel, a killed process, resume from a checkpoint."""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from core.errors import InvalidInput, NotFound, PermissionDenied
from core.train.config import TrainConfig
from tests.fixtures_models import make_dataset_version
from tests.helpers import wait_for, wait_until

pytestmark = pytest.mark.timeout(600)


def _cfg(tiny_model, version_id, **kw) -> TrainConfig:
    values = dict(base_model=str(tiny_model), dataset_version_id=version_id, max_length=96, per_device_batch_size=2)
    values.update(kw)
    return TrainConfig(**values)


def _metrics(job) -> list[dict]:
    path = Path(job.run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


def _job_count(session) -> int:
    from sqlmodel import select

    from storage.models import Job

    return len(session.exec(select(Job)).all())


def test_refusals_leave_nothing_behind(session, users, project, tiny_model, workspace):
    from core.train.runs import launch

    version = make_dataset_version(session, project, users["engineer"], n_train=4, n_validation=1)
    with pytest.raises(PermissionDenied, match="train models"):
        launch(session, users["reviewer"], project.id, _cfg(tiny_model, version.id))
    with pytest.raises(NotFound, match="freeze one"):
        launch(session, users["engineer"], project.id, _cfg(tiny_model, 999))
    with pytest.raises(InvalidInput, match=r"needs about .* GiB .* only .* GiB is free"):
        launch(session, users["engineer"], project.id,
               _cfg(tiny_model, version.id, per_device_batch_size=4096, max_length=131072))
    with pytest.raises(InvalidInput, match="fp32"):
        launch(session, users["engineer"], project.id, _cfg(tiny_model, version.id, precision="bf16"))
    assert _job_count(session) == 0
    assert not any((workspace / "runs").glob("0*"))


@pytest.mark.slow
def test_sigterm_cancels_with_adapter_and_resume_continues_from_checkpoint(session, users, project, tiny_model):
    from core.jobs.queue import cancel, get_job
    from core.train.runs import resume_run
    from core.jobs.rundir import COMPLETE_MARKER

    eng = users["engineer"]
    version = make_dataset_version(session, project, eng, n_train=8, n_validation=2)
    # Many steps so the run is surely still going when we cancel it.
    job = __import__("core.train.runs", fromlist=["launch"]).launch(
        session, eng, project.id, _cfg(tiny_model, version.id, max_steps=400, save_steps=2, eval_steps=1000))
    wait_until(lambda: any(r["loss"] is not None and r["step"] >= 3 for r in _metrics(job)), 240, "3 steps")
    cancel(session, eng, job.id)
    job = wait_for(session, job.id)
    assert job.status == "canceled", job.error
    run = Path(job.run_dir)
    assert (run / "adapter_model.safetensors").exists() and (run / "adapter_config.json").exists()
    result = json.loads((run / "result.json").read_text())
    assert result["status"] == "canceled"
    stopped_at = result["metrics"]["global_step"]
    assert 3 <= stopped_at < 400
    ckpt = run / "checkpoints" / f"checkpoint-{stopped_at}"
    assert (ckpt / COMPLETE_MARKER).exists()  # saved on the way out, so Resume loses nothing

    # A checkpoint cut off mid-save (no trainer state, no marker) must be skipped, never loaded.
    broken = run / "checkpoints" / f"checkpoint-{stopped_at + 50}"
    broken.mkdir()
    (broken / "adapter_model.safetensors").write_bytes(b"partial")

    new = resume_run(session, eng, job.id)
    assert new.resumed_from == job.id and new.id != job.id
    assert TrainConfig.from_json((Path(new.run_dir) / "config.json").read_text()).resume_from == str(ckpt)
    wait_until(lambda: any(r["loss"] is not None and r["step"] > stopped_at for r in _metrics(new)), 240,
               "resumed steps")
    cancel(session, eng, new.id)
    new = wait_for(session, new.id)
    assert new.status == "canceled", new.error
    rows = [r for r in _metrics(new) if r["loss"] is not None]
    assert all(r["mem_mb"] > 0 for r in rows)  # the live panel's Memory figure, written on a CPU too
    resumed = [r["step"] for r in rows if r["step"] > stopped_at]
    assert resumed[0] == stopped_at + 1  # continues from the checkpoint's step, not from step 0
    assert json.loads((Path(new.run_dir) / "result.json").read_text())["metrics"]["start_step"] == stopped_at
    assert get_job(session, job.id).status == "canceled"  # the original run keeps its truthful status


@pytest.mark.slow
def test_sigkill_is_failed_within_one_poll_and_queue_moves_on(session, users, project, tiny_model):
    from core.jobs.queue import cancel, get_job, queue_position, reconcile
    from core.train.runs import launch

    eng = users["engineer"]
    version = make_dataset_version(session, project, eng, n_train=8, n_validation=2)
    first = launch(session, eng, project.id, _cfg(tiny_model, version.id, max_steps=400, save_steps=1000))
    second = launch(session, eng, project.id, _cfg(tiny_model, version.id, max_steps=400))
    third = launch(session, eng, project.id, _cfg(tiny_model, version.id, max_steps=400))
    assert first.status == "running" and first.pid
    assert second.status == "queued" and queue_position(session, second) == 1  # one job at a time on a CPU
    assert queue_position(session, third) == 2
    cancel(session, eng, third.id)
    assert get_job(session, third.id).status == "canceled"  # a queued job is canceled at once

    wait_until(lambda: any(r["loss"] is not None for r in _metrics(first)), 240, "first step")
    os.killpg(first.pid, signal.SIGKILL)
    wait_until(lambda: _gone_or_zombie(first.pid), 240, "process death")
    failed = reconcile(session)
    assert [j.id for j in failed] == [first.id]
    first = get_job(session, first.id)
    assert first.status == "failed"
    assert "ended without reporting a result" in first.error and "step" in first.error  # the log's tail
    second = get_job(session, second.id)
    assert second.status == "running"  # the freed slot went to the next job in the queue
    cancel(session, eng, second.id)
    assert wait_for(session, second.id).status == "canceled"


def _gone_or_zombie(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_generic_jobs_check_roles_and_versions(session, users, project):
    from core.jobs.queue import submit

    with pytest.raises(PermissionDenied, match="run evaluations"):
        submit(session, users["reviewer"], project_id=project.id, kind="generate", action="evaluate", name="g",
               config={}, module="core.evaluate.generate_job")
    with pytest.raises(NotFound, match="Dataset version 42"):
        submit(session, users["engineer"], project_id=project.id, kind="train", action="train", name="t", config={},
               module="core.train.train_job", dataset_version_id=42)
    with pytest.raises(InvalidInput, match="module"):
        submit(session, users["engineer"], project_id=project.id, kind="generate", action="evaluate", name="g",
               config={}, module="core.evaluate.generate; rm -rf /")


@pytest.mark.slow
def test_cli_trains_waits_lists_and_merges(session, users, project, tiny_model, workspace, tmp_path):
    import subprocess
    import sys

    import torch
    from transformers import AutoModelForCausalLM

    from core.train.export import load_finetuned

    version = make_dataset_version(session, project, users["engineer"], n_train=4, n_validation=1)
    root = Path(__file__).resolve().parents[1]

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "core.cli", *args], capture_output=True, text=True, cwd=root,
                              env=dict(os.environ, FINETUNE_STUDIO_HOME=str(workspace)), timeout=400)

    done = cli("train", "--version", str(version.id), "--base-model", str(tiny_model), "--set", "max_steps=2",
               "--set", "max_length=96", "--wait", "--json")
    assert done.returncode == 0, done.stderr
    row = json.loads(done.stdout)
    assert row["status"] == "succeeded" and row["method"] == "lora"
    assert f"run {row['id']}: " in done.stderr and "step" in done.stderr  # progress lines while waiting

    listed = json.loads(cli("runs", "--json").stdout)
    assert [r["id"] for r in listed] == [row["id"]]
    refused = cli("runs", "cancel", str(row["id"]))
    assert refused.returncode == 1 and "already finished" in refused.stderr

    out = tmp_path / "merged"
    merged = cli("runs", "merge", str(row["id"]), "--out", str(out))
    assert merged.returncode == 0, merged.stderr
    standalone = AutoModelForCausalLM.from_pretrained(out / "merged").eval()  # no peft needed
    adapted, tokenizer = load_finetuned(row["run_dir"])
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "My bill doubled"}], return_tensors="pt",
                                        return_dict=True, add_generation_prompt=True)
    with torch.no_grad():
        torch.testing.assert_close(standalone(**ids).logits, adapted.eval()(**ids).logits, atol=1e-4, rtol=1e-4)
    assert (out / "merged" / "chat_template.jinja").exists()
    assert f"exported_to: {out / 'merged'}" in merged.stdout


def test_a_job_without_a_device_starts_even_behind_a_job_waiting_for_one(session, users, project):
    """A judge (slots=NO_DEVICE) calls an endpoint another job serves: it must not wait behind a queued job that
    waits for the device that endpoint holds (the queue once stopped at the first job that could not start)."""
    from core.jobs.queue import NO_DEVICE, cancel, get_job, submit

    eng = users["engineer"]

    def queue(name: str, **kw):
        return submit(session, eng, project_id=project.id, kind="generate", action="evaluate", name=name, config={},
                      module="tests.sleeping_worker", **kw)

    busy, waiting, judge = queue("serving"), queue("waiting"), queue("judge", slots=NO_DEVICE)
    try:
        def states():
            session.expire_all()
            return [get_job(session, j.id).status for j in (busy, waiting, judge)]
        wait_until(lambda: states() == ["running", "queued", "running"], 60, lambda: f"states {states()}")
    finally:
        for job in (judge, waiting, busy):
            cancel(session, eng, job.id)
        for job in (judge, waiting, busy):
            assert wait_for(session, job.id, timeout=120).status == "canceled"


def test_a_job_being_launched_by_another_process_is_not_called_dead(session, users, project):
    # The queue claims a job (running, no pid yet), starts its process, then writes the pid. The server's upkeep
    # reconciling in between failed the job 3 ms after its start ("ended without reporting a result") while its
    # process ran on: seen once in the full suite (tests/test_upkeep.py).
    from datetime import timedelta

    from core.jobs.queue import reconcile
    from storage.models import Job, utcnow
    from tests.fixtures_jobs import add_job

    launching = add_job(session, project, users["engineer"], name="launching")
    stuck = add_job(session, project, users["engineer"], name="stuck", started_at=utcnow() - timedelta(minutes=2))
    reconcile(session)
    session.expire_all()
    assert session.get(Job, launching.id).status == "running"
    gone = session.get(Job, stuck.id)  # a launcher that died before recording the pid: failed after a minute
    assert gone.status == "failed" and "ended without reporting a result" in gone.error
