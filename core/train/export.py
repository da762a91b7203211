"""Exports of a training run, as a background job: ``python -m core.train.export --run-dir DIR``.

A merged export is a standalone model folder (the adapter merged into the base weights, with the tokenizer and
chat template) that ``AutoModelForCausalLM.from_pretrained`` loads without peft; a full fine-tuned run exports
its own saved model. Loading and merging take seconds for the embedded model and minutes for large ones, so it
runs as a job (progress in progress.jsonl, cancel, a truthful status), never inside a button handler. The
folder is written under a temporary name and renamed into place, so a failed export leaves nothing half-written.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

from core.accounts import require
from core.basemodel import load_model
from core.configs import strict_from_dict
from core.errors import InvalidInput, NotFound, StudioError
from core.jobs import rundir
from core.jobs.queue import get_job, list_jobs, read_progress, submit
from core.jobs.worker import KeepAlive, StopFlag, worker_finish, worker_main, worker_start
from core.train.config import TrainConfig
from core.train.runs import KIND as TRAIN_KIND
from storage.db import session_scope
from storage.models import Job, JobStatus

KIND = "export"
WORKER = "core.train.export"  # python -m core.train.export --run-dir DIR
STEPS = ("load", "merge", "save")
STOP = StopFlag()


@dataclass
class ExportConfig:
    """One export job's config.json."""

    run_id: int
    """The training run to export (it must have saved an adapter or a full model)."""
    out_dir: str
    """A new (or empty) folder to write the merged model into."""

    def __post_init__(self):
        try:
            self.run_id = int(self.run_id)
        except (TypeError, ValueError):
            raise InvalidInput("The run to export must be a run id.") from None
        if not str(self.out_dir or "").strip():
            raise InvalidInput("Choose a folder to export into.")
        self.out_dir = str(Path(self.out_dir).expanduser().resolve())

    @classmethod
    def from_dict(cls, data: dict) -> "ExportConfig":
        """From a config.json dict; an unknown key is refused."""
        return strict_from_dict(cls, data, "export")


def run_config(run_dir: str | Path) -> TrainConfig:
    """The TrainConfig in a run folder's config.json, or InvalidInput naming what is wrong with the file."""
    path = Path(run_dir) / rundir.CONFIG
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidInput(f"{path} is missing: the run folder is incomplete, so its base model is unknown.") from None
    except (OSError, UnicodeDecodeError) as err:
        raise InvalidInput(f"Cannot read {path}: {getattr(err, 'strerror', None) or err}.") from None
    try:
        data = json.loads(text)
    except ValueError as err:
        where = f" at line {err.lineno}, column {err.colno}" if isinstance(err, json.JSONDecodeError) else ""
        raise InvalidInput(f"{path} is not valid JSON ({getattr(err, 'msg', err)}{where}): the run folder is "
                           "damaged. Restore the file; `finetune-studio runs show` prints the run's settings.") from None
    if not isinstance(data, dict):
        raise InvalidInput(f"{path} does not hold a run's settings (a JSON object).")
    return TrainConfig.from_dict(data)


def _check_target(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InvalidInput(f"{out} is not empty; choose a new folder.")


def launch_export(session, user, run_id: int, out_dir: str | Path) -> Job:
    """Queue a merged export of a training run into ``out_dir`` (a new or empty folder)."""
    require(user, "train")
    cfg = ExportConfig(run_id=run_id, out_dir=str(out_dir))
    run = get_job(session, cfg.run_id)
    if run.kind != TRAIN_KIND:
        raise InvalidInput(f"Job {run.id} is not a training run.")
    if not rundir.has_model(run.run_dir):
        raise InvalidInput(f"Run {run.id} has no saved model yet ({run.status}).")
    if not (Path(run.run_dir) / rundir.FULL_MODEL_DIR / "config.json").exists():
        run_config(run.run_dir)  # an adapter's base model is named there: refuse a damaged file before queueing
    _check_target(Path(cfg.out_dir))
    return submit(session, user, project_id=run.project_id, kind=KIND, action="train",
                  name=f"export run {run.id}", config=asdict(cfg), module=WORKER)


def exports_of(session, user, run_id: int) -> list[dict]:
    """The export jobs of a run, newest first, with their folder and last progress line; engineers and up."""
    require(user, "train")
    out = []
    for job in list_jobs(session, kind=KIND):
        if int((job.config or {}).get("run_id") or 0) != run_id:
            continue
        out.append({"job": job, "out_dir": (job.config or {}).get("out_dir"), "progress": read_progress(job)})
    return out


def load_finetuned(run_dir: str | Path, dtype=None, merge: bool = False):
    """(model, tokenizer) of a finished run: the base model with the run's adapter (merged when ``merge``),
    or the full fine-tuned model."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run_dir = Path(run_dir)
    full = run_dir / rundir.FULL_MODEL_DIR
    if (full / "config.json").exists():
        return (AutoModelForCausalLM.from_pretrained(full, dtype=dtype or torch.float32),
                AutoTokenizer.from_pretrained(full))
    if not (run_dir / rundir.ADAPTER_FILES[0]).exists():
        raise NotFound(f"{run_dir} holds no adapter yet (the run did not save one).")
    from peft import PeftModel

    cfg = run_config(run_dir)
    model = PeftModel.from_pretrained(load_model(cfg.base_model, dtype=dtype or torch.float32), run_dir)
    if merge:
        model = model.merge_and_unload()
    return model, AutoTokenizer.from_pretrained(run_dir)


def merge_to_folder(run_dir: str | Path, out: str | Path, on_step=lambda step: None) -> Path:
    """Merge a run's adapter into its base (or take the full model) and save it with its tokenizer to ``out``,
    written under a temporary name and renamed into place. ``on_step(name)`` is called before each step."""
    out = Path(out)
    _check_target(out)
    on_step("load")
    model, tokenizer = load_finetuned(run_dir, merge=False)
    on_step("merge")
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    on_step("save")
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        out.rmdir()
    os.replace(tmp, out)
    return out


def run_job(job_id: int) -> dict:
    """The export worker: merge, save, report."""
    job = worker_start(job_id)
    run_dir = Path(job.run_dir)
    t0 = time.time()
    keep_alive = KeepAlive(job_id)

    def step(name: str) -> None:
        if STOP.is_set():
            raise KeyboardInterrupt
        row = {"step": name, "done": STEPS.index(name), "total": len(STEPS), "time": time.time()}
        with open(run_dir / rundir.PROGRESS, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
        keep_alive.beat(step=name)
        print(f"export: {name}", flush=True)

    with keep_alive:
        try:
            cfg = ExportConfig.from_dict(job.config)
            with session_scope() as s:
                source = get_job(s, cfg.run_id).run_dir
            out = merge_to_folder(source, cfg.out_dir, on_step=step)
            result = {"out_dir": str(out), "seconds": round(time.time() - t0, 1)}
            with open(run_dir / rundir.PROGRESS, "a", encoding="utf-8") as fh:
                fh.write(json.dumps({"step": "done", "done": len(STEPS), "total": len(STEPS)}) + "\n")
            worker_finish(job_id, JobStatus.succeeded.value, result=result)
            return result
        except KeyboardInterrupt:
            worker_finish(job_id, JobStatus.canceled.value, error="Canceled; nothing was exported.")
            return {}
        except BaseException as err:  # noqa: BLE001 - every failure must end as a truthful status
            traceback.print_exc()
            message = str(err) if isinstance(err, StudioError) else f"{type(err).__name__}: {err}"
            worker_finish(job_id, JobStatus.failed.value, error=message)
            return {}


def main(argv: list[str] | None = None) -> int:
    return worker_main("python -m core.train.export", "Export one training run.", STOP, run_job, argv)


if __name__ == "__main__":
    sys.exit(main())
