"""A job's state in words, for live panels, notices and the queue's own messages: which kind of job it is, and the
two states its row implies beyond its status (starting, stopping). Pure functions of a Job row."""
from __future__ import annotations

from storage.models import Job, JobStatus

KIND_WORDS = {"train": "run", "generate": "generation job", "export": "export job", "serve": "serving job",
              "draft": "draft-answers job", "judge": "judge job"}
KIND_TASKS = {"train": "training"}


def job_label(job: Job) -> str:
    """A job in words, without its name (user text): "run 3 (training)", "generation job 5"."""
    task = KIND_TASKS.get(job.kind)
    return f"{KIND_WORDS.get(job.kind, 'job')} {job.id}" + (f" ({task})" if task else "")


def job_state(job: Job, reported: bool = True) -> str:
    """The job's status, plus two states its row implies: "stopping" (running, cancel requested) and "starting"
    (running, but its worker has not ``reported`` a first progress line yet)."""
    if job.status == JobStatus.running.value:
        if job.cancel_requested:
            return "stopping"
        if not reported:
            return "starting"
    return job.status


STATE_TEXT = {"stopping": "Cancel requested — stopping at the next step",
              "starting": "running — starting: the worker is loading the model; its first step shows here"}


def describe_state(job: Job, queue_pos: int | None = None, reported: bool = True) -> str:
    """``job_state`` in a sentence for a live panel: "queued — position 2 in the queue", "Cancel requested —
    stopping at the next step"..."""
    state = job_state(job, reported)
    if state == JobStatus.queued.value and job.target_id is not None:  # the cluster's own words: PENDING, Resources
        return "queued on the cluster" + (f" — {job.remote_reason}" if job.remote_reason else "")
    if state == JobStatus.queued.value:
        return "queued" + (f" — position {queue_pos} in the queue" if queue_pos else "")
    text = STATE_TEXT.get(state, state)
    if job.target_id is not None and job.status == JobStatus.running.value and job.remote_reason:
        text += f" (cluster: {job.remote_reason})"
    return text
