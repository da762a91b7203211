"""Runs on a compute target driven from the Train page, whatever the target (Ray, Slurm): launch a run through the
page's form (AppTest) on a chosen target, nodes and processes per node; wait for its first complete checkpoint;
press Cancel and Resume on the page; check that a resumed run continues instead of starting over. Plain functions,
shared by tests/test_ray_target.py and tests/test_slurm_page.py."""
from __future__ import annotations

from core.jobs import rundir
from core.jobs.queue import get_job, read_metrics, reconcile
from storage.models import JobStatus
from tests.helpers import page, status_line, wait_for, wait_until


def launch_from_page(session, users, tiny_model, target: str, nodes: int, steps: int, save_steps: int = 0,
                     procs: int = 1):
    """Fill the Train page (the tiny model, ``target``, ``nodes`` x ``procs``) and press Train; (page, job)."""
    at = page("train.py", users["engineer"]).run()
    at.radio(key="source").set_value("Local model folder").run()
    at.text_input(key="model_path").input(str(tiny_model)).run()
    at.checkbox(key="quick-autolen").uncheck().run()
    at.number_input(key="quick-len").set_value(128).run()
    at.number_input(key="quick-steps").set_value(steps).run()
    at.number_input(key="quick-savesteps").set_value(save_steps).run()
    at.selectbox(key="target").set_value(target).run()
    at.number_input(key="nodes").set_value(nodes).run()
    at.number_input(key="quick-procs").set_value(procs).run()
    next(b for b in at.button if b.label == "Train").click().run()
    assert not at.exception and not [e.value for e in at.error], [e.value for e in at.error]
    job_id = at.selectbox(key="watch_select").value
    return at, get_job(session, job_id)


def panel_after_reconcile(at, session) -> str:
    """The live panel's status line once the queue has polled the cluster (as the server's upkeep does)."""
    reconcile(session)
    at.run()
    return status_line(at)


def checkpointed(session, job) -> bool:
    """True once ``job`` runs and has a complete checkpoint (reconciled first, as the Runs page does)."""
    reconcile(session)
    session.refresh(job)
    return job.status == JobStatus.running.value and rundir.last_complete_checkpoint(job.run_dir) is not None


def cancel_on_page(at, session, job, timeout: float = 120):
    """Press the live panel's Cancel for ``job`` (the watched run); the row once it ended."""
    at.run()
    next(b for b in at.button if b.label == "Cancel").click().run()
    return wait_for(session, job.id, timeout=timeout)


def resume_on_page(at, session, job):
    """Press Resume on the page for the ended ``job``; (the resumed row, the step of the checkpoint it resumes)."""
    kept = rundir.checkpoint_step(rundir.last_complete_checkpoint(job.run_dir))
    at.run()
    next(b for b in at.button if b.label == "Resume").click().run()
    resumed = get_job(session, at.selectbox(key="watch_select").value)
    assert resumed.resumed_from == job.id and resumed.target_id == job.target_id and resumed.external_id
    assert resumed.config["resume_from"].endswith(f"checkpoint-{kept}")
    return resumed, kept


def assert_continues(resumed, kept: int) -> None:
    """The resumed run trains past step ``kept`` without starting over (its metrics carry the first run's steps up
    to the checkpoint, then go on)."""
    def trained() -> list[int]:
        return [r["step"] for r in read_metrics(resumed) if r.get("loss") is not None]
    wait_until(lambda: any(step > kept for step in trained()), 300, f"run {resumed.id} to pass step {kept}")
    steps = trained()
    assert steps == sorted(set(steps)), steps  # no second step 1: it continued


def cancel_and_wait(session, user, job) -> None:
    """Cancel ``job`` (a long run whose point was made) and wait until it is canceled."""
    from core.jobs.queue import cancel

    cancel(session, user, job.id)
    assert wait_for(session, job.id, timeout=120).status == JobStatus.canceled.value
