"""Deploy exports of a training run: what an export is (ExportConfig), what it can give, queueing it as a
background job (the process is core.ship.export_job) and listing a run's exports.

An export writes the adapter folder (and its zip), the merged model, Ollama Modelfiles, vLLM commands and GGUF
into a new folder, with a parity check and a model card per artifact; ``deploy.json`` there and the job's result
hold the report. The export job's module docstring tells how.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from core.accounts import require
from core.configs import strict_from_dict
from core.errors import InvalidInput
from core.evaluate.generate_config import Decoding
from core.jobs import rundir
from core.jobs.queue import get_job, list_jobs, read_progress, submit
from core.names import check_name
from core.ship import gguf, parity
from core.ship.systems import EXPORT_KIND
from core.train.export import check_target, has_adapter, run_config
from core.train.runs import KIND as TRAIN_KIND
from core.workspace import export_folder
from storage.models import Job

KIND = EXPORT_KIND
WORKER = "core.ship.export_job"  # python -m core.ship.export_job --run-dir DIR
FORMATS = ("adapter", "merged", "ollama", "vllm", "gguf")
REPORT = "deploy.json"


@dataclass
class ExportConfig:
    """One export job's config.json."""

    run_id: int
    """The training run to export (it must have saved an adapter or a full model)."""
    out_dir: str
    """A new (or empty) folder; each artifact goes into its own subfolder."""
    formats: list[str] = field(default_factory=lambda: list(FORMATS))
    """adapter, merged, ollama, vllm, gguf. GGUF is converted from the merged folder, so it brings it along."""
    eval_set_id: int | None = None
    """Prompts for the parity check; None takes the test split of the run's dataset version."""
    parity: bool = True
    """Check that each artifact answers like the run (greedy, on the eval prompts)."""
    parity_max_new_tokens: int = 256
    """Longest answer the parity check compares, in tokens (as the generation job's default)."""
    parity_max_prompts: int = 6
    """How many prompts the parity check answers: the first N of the eval set or split, 0 for all. Each is answered
    by the run and by every artifact (by the endpoint one at a time), so demo-v1's 96 test prompts take minutes per
    artifact on a CPU, while a chat-template or generation-config mismatch already shows on the first few."""
    name: str = ""
    """The model's name in Ollama and vLLM; "" makes one from the project and the run."""

    def __post_init__(self):
        try:
            self.run_id = int(self.run_id)
            self.eval_set_id = int(self.eval_set_id) if self.eval_set_id not in (None, "", 0) else None
        except (TypeError, ValueError):
            raise InvalidInput("The run and the eval set are given by their ids.") from None
        if not str(self.out_dir or "").strip():
            raise InvalidInput("Choose a folder to export into.")
        if self.name:
            self.name = check_name(self.name, "model")
        self.parity_decoding()  # refuses a length Decoding refuses
        try:
            self.parity_max_prompts = int(self.parity_max_prompts)
        except (TypeError, ValueError):
            raise InvalidInput("The number of parity prompts is a whole number (0 for all).") from None
        if self.parity_max_prompts < 0:
            raise InvalidInput("The number of parity prompts is 0 (all) or more.")
        self.out_dir = str(Path(self.out_dir).expanduser().resolve())
        unknown = [f for f in self.formats if f not in FORMATS]
        if unknown or not self.formats:
            raise InvalidInput(f"Choose formats among: {', '.join(FORMATS)}" + (
                f" (not {', '.join(unknown)})." if unknown else "."))
        wanted = set(self.formats) | ({"merged"} if "gguf" in self.formats else set())
        self.formats = [f for f in FORMATS if f in wanted]
        if {"ollama", "vllm"} & wanted and not {"adapter", "merged"} & wanted:
            raise InvalidInput("Ollama and vLLM serve the adapter or the merged folder: export one of them too.")

    def parity_decoding(self):
        return Decoding(do_sample=False, max_new_tokens=self.parity_max_new_tokens)

    @classmethod
    def from_dict(cls, data: dict) -> "ExportConfig":
        return strict_from_dict(cls, data, "export")


def plan(cfg: ExportConfig) -> list[str]:
    """The job's steps in order, as progress.jsonl names them."""
    steps = [f for f in ("adapter", "merged") if f in cfg.formats] + ["recipes"]
    if cfg.parity:
        steps += [f"parity ({k})" for k in ("merged", "adapter") if k in cfg.formats] + ["parity (endpoint)"]
    return steps + ["card"] + (["gguf"] if "gguf" in cfg.formats else [])  # GGUF reads the merged card


def default_formats(run: Job) -> list[str]:
    """Every format the run can give: all of them, less the adapter for a full fine-tuned run and GGUF where this
    machine has no converter."""
    return [f for f in FORMATS if (f != "adapter" or has_adapter(run.run_dir or ""))
            and (f != "gguf" or gguf.find_converter() is not None)]


def launch_export(session, user, run_id: int, out_dir: str | Path, *, formats: list[str] | None = None,
                  eval_set_id: int | None = None, parity_check: bool = True, name: str = "",
                  parity_max_new_tokens: int = 256, parity_max_prompts: int = 6, trusted_paths: bool = False) -> Job:
    """Queue an export of a training run into ``out_dir`` (a new or empty folder). ``out_dir`` must be inside the
    export folders (core.workspace.export_folder: the web's rule, the same refusal whether it exists or not)
    unless ``trusted_paths``: the command line, whose user is the OS user and may write wherever the OS lets it."""
    require(user, "train")
    if not trusted_paths:
        out_dir = export_folder(out_dir)
    run = get_job(session, int(run_id))
    if run.kind != TRAIN_KIND:
        raise InvalidInput(f"Job {run.id} is not a training run.")
    if not rundir.has_model(run.run_dir or ""):
        raise InvalidInput(f"Run {run.id} has no saved model yet ({run.status}).")
    if not (Path(run.run_dir) / rundir.FULL_MODEL_DIR / "config.json").exists():
        run_config(run.run_dir)  # an adapter's base model is named there: refuse a damaged file before queueing
    cfg = ExportConfig(run_id=run.id, out_dir=str(out_dir), formats=list(formats or default_formats(run)),
                       eval_set_id=eval_set_id, parity=parity_check, name=name,
                       parity_max_new_tokens=parity_max_new_tokens, parity_max_prompts=parity_max_prompts)
    if "adapter" in cfg.formats and not has_adapter(run.run_dir):
        raise InvalidInput(f"Run {run.id} was fully fine-tuned: it has no adapter; export the merged model.")
    check_target(Path(cfg.out_dir))
    if "gguf" in cfg.formats and gguf.find_converter() is None:
        raise InvalidInput(gguf.INSTALL)  # not a job that "succeeds" without the format asked for
    if cfg.parity:
        parity.parity_prompts(session, run, cfg.eval_set_id)  # refuse now, not after minutes of work
    return submit(session, user, project_id=run.project_id, kind=KIND, action="train",
                  name=f"export run {run.id}", config=asdict(cfg), module=WORKER)


def exports_of(session, user, run_id: int) -> list[dict]:
    """The export jobs of a run, newest first, with their folder, last progress line and report; engineers and
    up (the report carries the run's lineage and answers)."""
    require(user, "train")
    out = []
    for job in list_jobs(session, kind=KIND):
        if int((job.config or {}).get("run_id") or 0) != run_id:
            continue
        out.append({"job": job, "out_dir": (job.config or {}).get("out_dir"), "progress": read_progress(job),
                    "report": job.result or {}})
    return out
