"""Training runs, launcher side (pages and the CLI; cheap imports only): estimate, launch, resume, history and
comparison. The training process itself is core.train.train_job; the adapter and merged folders are written by
core.train.export, inside the export job of core.ship.deploy."""
from __future__ import annotations

import json
from pathlib import Path

from core.accounts import require
from core.basemodel import check_model_name, is_embedded, load_tokenizer, web_model_name
from core.curate.leakage import describe_leaks, launch_leaks, leak_ids
from core.curate.preference_versions import get_preference_version, preference_leaks
from core.errors import InvalidInput, NotFound
from core.jobs import rundir
from core.jobs.queue import get_job, list_jobs, queue_position, read_metrics, reconcile, resubmit, submit
from core.jobs.states import job_state
from core.jobs.targets.registry import LOCAL, target_id_of
from core.names import check_name
from core.train import dpo
from core.train.config import TrainConfig
from core.train.hardware import detect, estimate_peak_memory, estimate_sum_text, resolve_precision
from storage.models import DatasetVersion, Job

KIND = "train"
WORKER = "core.train.train_job"  # python -m core.train.train_job --run-dir DIR


def estimate(cfg: TrainConfig, hw=None, max_length: int | None = None) -> dict:
    """Peak-memory estimate for ``cfg`` on this machine's hardware, with whether it fits."""
    hw = hw or detect()
    precision = resolve_precision(cfg.precision, hw)
    length = cfg.max_length or max_length or 512
    method, batch = dpo.memory_method(cfg) if cfg.method == "dpo" else (cfg.method, cfg.per_device_batch_size)
    est = estimate_peak_memory(cfg.base_model, method, batch, length,
                               cfg.gradient_checkpointing, precision, lora_r=cfg.lora_r, device=hw.kind,
                               target_modules=cfg.target_modules_value())
    est.update({"available_mb": round(hw.free_mb, 1), "device": hw.describe(), "precision": precision,
                "max_length": length, "fits": est["peak_mb"] <= hw.free_mb})
    return est


def check_launch(cfg: TrainConfig, hw=None, *, trusted_paths: bool = False) -> dict:
    """Refuse settings that cannot run here (half precision on a CPU, a clearly too-big run); returns the
    memory estimate. QLoRA runs on a CPU too (bitsandbytes' NF4 layers, fp32 compute), slower than LoRA.
    A local base model must be inside the model folders (core.basemodel.web_model_name: the web's rule, checked
    before the folder is read) unless ``trusted_paths``: the command line's --base-model, or a run's own base."""
    if not trusted_paths:
        web_model_name(cfg.base_model)
    hw = hw or detect()
    if cfg.target not in ("", LOCAL):  # a cluster's devices run it: this machine's memory and GPUs do not decide
        check_model_name(cfg.base_model)
        return estimate(cfg, hw)
    if cfg.nodes > 1:
        raise InvalidInput(f"This machine is one node; a run on {cfg.nodes} nodes needs a cluster target.")
    if hw.kind != "cuda" and cfg.precision in ("bf16", "fp16"):
        raise InvalidInput(f"{cfg.precision} needs a GPU; on a CPU training runs in fp32 (precision=auto).")
    check_processes(cfg, hw)
    check_model_name(cfg.base_model)
    if not is_embedded(cfg.base_model):
        load_tokenizer(cfg.base_model)  # refuses a base without a chat template now, not in the worker 30 s later
    est = estimate(cfg, hw)  # per device: each GPU holds one process; CPU processes share the machine's memory
    shared = cfg.procs_per_node if hw.kind != "cuda" else 1
    if est["peak_mb"] * shared > est["available_mb"]:
        raise InvalidInput(
            f"This run needs about {est['peak_mb'] * shared / 1024:.1f} GiB ({estimate_sum_text(est)}"
            + (f" per process, x {shared} processes" if shared > 1 else "") + ", at batch "
            f"{cfg.per_device_batch_size} x {est['max_length']} tokens) but only {est['available_mb'] / 1024:.1f} "
            f"GiB is free ({est['device']}). Lower the batch size or max length, turn on gradient checkpointing, "
            "or use QLoRA (4-bit base weights)."
        )
    return est


def check_processes(cfg: TrainConfig, hw) -> None:
    """Refuse more processes per node than this machine has GPUs (on a GPU machine) or CPU cores."""
    if hw.kind == "cuda" and cfg.procs_per_node > hw.gpu_count:
        raise InvalidInput(f"{cfg.procs_per_node} processes per node need {cfg.procs_per_node} GPUs, one each, but "
                           f"only {hw.gpu_count} GPU(s) are visible.")
    if hw.kind != "cuda" and cfg.procs_per_node > max(1, hw.cpu_cores):
        raise InvalidInput(f"{cfg.procs_per_node} processes per node need a CPU core each, but this machine has "
                           f"{hw.cpu_cores}.")


def queue_args(cfg: TrainConfig) -> dict:
    """How the queue runs ``cfg``: one slot (a GPU) per process, through torchrun when there are several."""
    return {"slots": cfg.procs_per_node, "launcher": "torchrun" if cfg.procs_per_node > 1 else "python"}


def launch(session, user, project_id: int, cfg: TrainConfig, name: str = "", *, trusted_paths: bool = False):
    """Check ``cfg`` against the user's role, the data and the hardware, then queue the run (core.jobs.queue.submit).
    ``trusted_paths``: the base model may be any folder the OS user can read (the CLI); else the web's rule."""
    require(user, "train")
    name = check_name(name, "run") if (name or "").strip() else ""  # a name given is checked; none makes one
    if cfg.method == "dpo":
        return launch_dpo(session, user, project_id, cfg, name, trusted_paths=trusted_paths)
    version = session.get(DatasetVersion, cfg.dataset_version_id) if cfg.dataset_version_id else None
    if version is None or version.project_id != project_id:
        raise NotFound(f"Dataset version {cfg.dataset_version_id or '(none)'} does not exist in this project; "
                       "freeze one on the Datasets page first.")
    if version.n_train < 1:
        raise InvalidInput(f"Dataset version {version.name} has no training examples.")
    check_leaks(session, cfg)
    cfg = _web_base(cfg, trusted_paths)
    est = check_launch(cfg, trusted_paths=True)
    name = name or f"{cfg.method}-{version.name}"
    return submit(session, user, project_id=project_id, kind=KIND, action="train", name=name, config=cfg.to_dict(),
                  module=WORKER, **queue_args(cfg), dataset_version_id=version.id,
                  estimated_peak_mb=est["peak_mb"], target_id=target_id_of(session, cfg.target))


def training_leaks(session, cfg: TrainConfig) -> dict:
    """The leakage check of a launch for ``cfg``: for SFT, the version's train/validation examples against every
    eval set (core.curate.leakage.launch_leaks, with the run's exclusions and its choice about eval-derived
    examples); for DPO, the preference pairs against every eval set but the ones they were voted on
    (core.curate.preference_versions.preference_leaks; keys are pair ids). ``unit`` names what the keys count.
    What the Train page shows before launch and the CLI's --exclude-leaked excludes."""
    if cfg.method == "dpo":
        report = preference_leaks(session, cfg.preference_version_id, cfg.exclude_pair_ids)
        return {**report, "unit": "pair", "field": "exclude_pair_ids", "eval_derived_excluded": []}
    report = launch_leaks(session, cfg.dataset_version_id, cfg.exclude_example_ids, cfg.include_eval_derived)
    return {**report, "unit": "example", "field": "exclude_example_ids"}


def check_leaks(session, cfg: TrainConfig) -> dict:
    """Refuse a run whose training data repeats an eval prompt (exactly or nearly) and is not excluded: trained on,
    it would make every comparison on that eval set unfair."""
    report = training_leaks(session, cfg)
    leaks = report["leaks"]
    if leaks:
        ids, unit = leak_ids(leaks), report["unit"]
        raise InvalidInput(
            f"{len(ids)} training {unit}(s) repeat an eval prompt, so a comparison on that eval set would be "
            f"unfair: {describe_leaks(leaks, unit)}. Exclude them (\"Exclude these {len(ids)} {unit}s\" on the "
            f"Train page, --exclude-leaked on the command line, or {report['field']}) or remove them from the data.")
    return report


def _web_base(cfg: TrainConfig, trusted_paths: bool) -> TrainConfig:
    """``cfg`` with its base model as the web's rule resolves it (the real folder the job will read)."""
    return cfg if trusted_paths else cfg.with_overrides(base_model=web_model_name(cfg.base_model))


def launch_dpo(session, user, project_id: int, cfg: TrainConfig, name: str = "", *, trusted_paths: bool = False):
    """Queue a DPO run (core.train.dpo): its preference version must be in the project and the run it continues
    (if any) a succeeded LoRA/QLoRA run of the same base with its adapter (whose base is then trusted: it was
    checked when that run was launched, and the page offers no other)."""
    require(user, "train")
    prefs = get_preference_version(session, cfg.preference_version_id, project_id)
    init = dpo.init_run(session, project_id, cfg)
    check_leaks(session, cfg)
    cfg = _web_base(cfg, trusted_paths or init is not None)
    est = check_launch(cfg, trusted_paths=True)
    name = name or f"dpo-{prefs.name}" + (f"-from-{cfg.init_from_run}" if cfg.init_from_run else "")
    return submit(session, user, project_id=project_id, kind=KIND, action="train", name=name, config=cfg.to_dict(),
                  module=WORKER, **queue_args(cfg), estimated_peak_mb=est["peak_mb"],
                  target_id=target_id_of(session, cfg.target))


def resume_run(session, user, job_id: int):
    """Queue a new run that continues a failed or canceled run from its last complete checkpoint (or starts
    over from step 0 when it saved none: ``resume_note`` says which); refused while another continuation of it is
    queued or running (core.jobs.queue.resubmit), when its run folder is gone (there is nothing to resume from),
    and when that checkpoint already reached the end of the schedule (training on would step past it at a
    learning rate of zero)."""
    require(user, "train")
    job = get_job(session, job_id)
    if job.kind != KIND:
        raise InvalidInput(f"Job {job_id} is not a training run.")
    if not job.run_dir or not Path(job.run_dir).is_dir():
        raise InvalidInput(f"Run {job.id}'s folder {job.run_dir or '(none)'} no longer exists, so there is no "
                           "checkpoint to resume from. Nothing was started; train a new run with the same settings "
                           "to start over from step 0.")
    ckpt = rundir.last_complete_checkpoint(job.run_dir)
    if ckpt is not None:
        done, total = checkpoint_progress(ckpt)
        if total and done >= total:
            raise InvalidInput(
                f"Run {job.id} has nothing left to train: its last checkpoint is at step {done} of {total}, the end "
                "of its schedule (the learning rate is already at its final value). Use its saved adapter as it is, "
                "or start a new run with more epochs or steps.")
    cfg = TrainConfig.from_dict({**job.config, "resume_from": str(ckpt) if ckpt else ""})
    est = check_launch(cfg, trusted_paths=True)  # its base model was checked when the run was launched
    return resubmit(session, user, job, config=cfg.to_dict(), estimated_peak_mb=est["peak_mb"])


def checkpoint_progress(ckpt) -> tuple[int, int]:
    """(step reached, steps in the schedule) of a checkpoint, from the Trainer's trainer_state.json; (step, 0)
    when the file does not say."""
    try:
        state = json.loads((Path(ckpt) / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return rundir.checkpoint_step(Path(ckpt)), 0
    return int(state.get("global_step") or 0), int(state.get("max_steps") or 0)
def resume_note(job: Job) -> str:
    """What a resumed run (made by ``resume_run``) will do, in words for the page and the CLI."""
    ckpt = (job.config or {}).get("resume_from")
    if ckpt:
        return (f"Run {job.id} continues run {job.resumed_from} from step {rundir.checkpoint_step(Path(ckpt))}, "
                "its last complete checkpoint.")
    return f"Run {job.resumed_from} saved no complete checkpoint, so run {job.id} starts again from step 0."


def get_run(session, run: int | str, project_id: int | None = None) -> Job:
    """A training run by id, or by name (within ``project_id`` when given) when exactly one run has it."""
    from sqlmodel import select

    if isinstance(run, int) or str(run).strip().isdigit():
        job = get_job(session, int(run))
        if job.kind == KIND and (project_id is None or job.project_id == project_id):
            return job
        if job.kind == "serve":  # a detached serve-model endpoint is a job too, stopped by its own command
            raise NotFound(f"Job {run} is a serve-model endpoint, not a training run: stop it with "
                           f"`finetune-studio serve-model --stop {run}`.")
        raise NotFound(f"No training run {run}.")
    query = select(Job.id).where(Job.kind == KIND, Job.name == str(run))
    if project_id is not None:
        query = query.where(Job.project_id == project_id)
    ids = list(session.exec(query.order_by(Job.id)))
    if len(ids) > 1:
        raise InvalidInput(f"Several runs are named {str(run)!r} (ids {', '.join(map(str, ids))}); give the id.")
    if not ids:
        raise NotFound(f"No training run named {str(run)!r}.")
    return get_job(session, ids[0])


DASH = "—"
LOSS_LABEL = "Train loss (last step)"  # the one train loss the Runs table and the live panel show
LOSS_HELP = ("The training loss logged at the run's last step so far (a running run's latest). The trainer's mean "
             "over the whole run is in Compare runs as train loss (mean over the run).")


def latest_losses(rows: list[dict]) -> dict:
    """The losses a run shows while it trains and after, from its metrics.jsonl lines: the train loss at the last
    logged step, the validation loss at the last evaluation, and the last step reached (None where none yet)."""
    train = [r for r in rows if r.get("loss") is not None]
    evals = [r for r in rows if r.get("eval_loss") is not None]
    steps = [r["step"] for r in rows if r.get("step") is not None]
    return {"train_loss_last": train[-1]["loss"] if train else None,
            "eval_loss_last": evals[-1]["eval_loss"] if evals else None, "steps": steps[-1] if steps else None}


def format_loss(value) -> str:
    """A loss as every page shows it: 3 decimals, or a dash when there is none yet."""
    return DASH if value is None or value != value else f"{value:.3f}"


def run_summary(session, job: Job) -> dict:
    """One training run as a row (Runs page, CLI): status, method, data, losses, steps, time and memory.
    ``state`` is the status with "starting" and "stopping" (core.jobs.states.job_state); ``train_loss_last`` (the
    last step's, as the live panel shows it) and ``eval_loss_last`` come from metrics.jsonl
    while the run trains; ``train_loss`` is the trainer's mean over the run, known once it ends."""
    metrics = (job.result or {}).get("metrics", {})
    latest = latest_losses(read_metrics(job))
    cfg = job.config or {}
    duration = (job.finished_at - job.started_at).total_seconds() if job.finished_at and job.started_at else None
    return {"id": job.id, "name": job.name, "status": job.status, "state": job_state(job, latest["steps"] is not None),
            "queue_position": queue_position(session, job),
            "method": cfg.get("method"), "base_model": cfg.get("base_model"),
            "preference_version": cfg.get("preference_version_id") or None,
            "reward_accuracy": metrics.get("reward_accuracy_last"), "reward_margin": metrics.get("reward_margin_last"),
            "dataset_version": job.dataset_version_id, "dataset_version_name": _version_name(session, job),
            "train_loss": metrics.get("train_loss"), "train_loss_last": latest["train_loss_last"],
            "eval_loss_first": metrics.get("eval_loss_first"),
            "eval_loss_last": _first(metrics.get("eval_loss_last"), latest["eval_loss_last"]),
            "steps": _first(metrics.get("global_step"), latest["steps"]),
            "duration_s": round(duration, 1) if duration is not None else None,
            "estimated_peak_mb": job.estimated_peak_mb, "measured_peak_mb": job.measured_peak_mb,
            "resumed_from": job.resumed_from, "started": job.started_at, "run_dir": job.run_dir}


def _first(*values):
    return next((v for v in values if v is not None), None)


def _version_name(session, job: Job) -> str | None:
    version = session.get(DatasetVersion, job.dataset_version_id) if job.dataset_version_id else None
    return version.name if version else None


def runs_table(session, user, project_id: int | None = None) -> list[dict]:
    """One row per training run (of the project, when given), newest first, reconciled first so statuses
    are true; engineers and up."""
    require(user, "train")
    reconcile(session)
    return [run_summary(session, job) for job in list_jobs(session, project_id=project_id, kind=KIND)]


def compare_runs(session, user, job_ids: list[int]) -> dict:
    """Config differences, final metrics and loss curves (long format) of several runs; engineers and up."""
    require(user, "train")
    jobs = [get_job(session, i) for i in job_ids]
    if any(j.kind != KIND for j in jobs):
        raise InvalidInput("Only training runs can be compared here.")
    keys = sorted({k for j in jobs for k in (j.config or {})})
    diff = []
    for key in keys:
        values = [(j.config or {}).get(key) for j in jobs]
        if len({json.dumps(v, sort_keys=True, default=str) for v in values}) > 1:
            diff.append({"setting": key, **{f"run {j.id}": v for j, v in zip(jobs, values)}})
    metrics = []
    curves = []
    for job in jobs:
        m = (job.result or {}).get("metrics", {})
        rows = read_metrics(job)
        metrics.append({"run": job.id, "status": job.status,
                        "train loss (last step)": latest_losses(rows)["train_loss_last"],
                        "train loss (mean over the run)": m.get("train_loss"),
                        "eval_loss_first": m.get("eval_loss_first"), "eval_loss_last": m.get("eval_loss_last"),
                        "steps": m.get("global_step"), "measured_peak_mb": job.measured_peak_mb})
        for row in rows:
            for series in ("loss", "eval_loss"):
                if row.get(series) is not None:
                    curves.append({"step": row["step"], "value": row[series],
                                   "series": f"run {job.id} {'train' if series == 'loss' else 'validation'}"})
    return {"config_diff": diff, "metrics": metrics, "curves": curves}
