"""Deploy exports of a training run, as a background job: ``python -m core.ship.deploy --run-dir DIR``.

One job writes every way out the user asked for into a new folder: the PEFT adapter folder (and a zip of it to
download), the merged model folder, Ollama Modelfiles with the exact ``ollama create`` commands, the exact
``vllm serve`` commands, and GGUF when llama.cpp's converter is installed (otherwise it says what to install).
Then it runs the parity check (core.ship.parity) on each artifact and writes a model card (core.ship.modelcard)
into each model folder. Everything is written under a temporary name and renamed into place at the end, so a
failed or canceled export leaves nothing half-written. ``deploy.json`` in the folder and the job's result hold
the same report: artifacts, commands, parity verdicts and lineage.
"""
from __future__ import annotations

import json
import shutil
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

from core.accounts import require
from core.basemodel import resolve_model_path
from core.configs import strict_from_dict
from core.errors import InvalidInput, StudioError
from core.evaluate.generate_config import Decoding
from core.jobs import rundir, scratch
from core.jobs.queue import get_job, list_jobs, read_progress, submit
from core.names import check_name, safe_file_name
from core.jobs.worker import KeepAlive, StopFlag, worker_finish, worker_main, worker_start
from core.ship import gguf, ollama, parity, vllm
from core.ship.modelcard import lineage, write_card
from core.ship.systems import EXPORT_KIND
from core.train.export import check_target, has_adapter, merge_to_folder, run_config, save_adapter_folder
from core.train.runs import KIND as TRAIN_KIND
from core.workspace import export_folder
from storage.db import session_scope
from storage.models import Job, JobStatus, Project

KIND = EXPORT_KIND
WORKER = "core.ship.deploy"  # python -m core.ship.deploy --run-dir DIR
FORMATS = ("adapter", "merged", "ollama", "vllm", "gguf")
REPORT = "deploy.json"
STOP = StopFlag()


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


# ---------------------------------------------------------------- the job


def _name(cfg: ExportConfig, project: str) -> str:
    return ollama.model_name(cfg.name or f"{project}-run-{cfg.run_id}")


def _recipes(cfg: ExportConfig, tmp: Path, out: Path, run: Job, name: str, artifacts: dict, system: str = "") -> None:
    """Ollama Modelfiles and vLLM commands; paths are the final ones (``out``), files go into ``tmp``. ``system``:
    the system prompt the model was trained with."""
    train_cfg = run_config(run.run_dir)
    base = resolve_model_path(train_cfg.base_model)
    merged, adapter = artifacts.get("merged"), artifacts.get("adapter")
    if "ollama" in cfg.formats:
        from transformers import AutoTokenizer

        try:
            fmt, why = ollama.derived_format(AutoTokenizer.from_pretrained(tmp / ("merged" if merged else "adapter")))
            (tmp / "ollama").mkdir()
            made = []
            if merged:
                (tmp / "ollama" / "Modelfile").write_text(
                    ollama.modelfile(fmt, model_from=out / "merged", system=system))
                made.append({"modelfile": str(out / "ollama" / "Modelfile"),
                             "command": ollama.create_command(name, out / "ollama" / "Modelfile")})
            if adapter:
                (tmp / "ollama" / "Modelfile.adapter").write_text(
                    ollama.modelfile(fmt, model_from=base, adapter=out / "adapter", system=system))
                made.append({"modelfile": str(out / "ollama" / "Modelfile.adapter"),
                             "command": ollama.create_command(f"{name}-adapter", out / "ollama" / "Modelfile.adapter")})
            notes = ["Ollama samples by default; `PARAMETER temperature 0` gives the greedy answers the parity "
                     "check compares."]
            if fmt is None:
                notes.insert(0, f"No TEMPLATE in the Modelfile: {why}. Ollama detects the template from the "
                                "model's own chat template when it creates the model; check it with "
                                f"`ollama show --template {ollama.model_name(name)}`.")
            artifacts["ollama"] = {"files": made, "template_mismatches": fmt.mismatches if fmt else [],
                                   "template": "derived" if fmt else "ollama", "note": " ".join(notes)}
        except (ValueError, OSError) as err:
            artifacts["ollama"] = {"error": f"No Modelfile: {err}."}
    if "vllm" in cfg.formats:
        commands = []
        if adapter:
            own = (Path(run.run_dir) / "chat_template.jinja")
            base_template = Path(base) / "chat_template.jinja" if Path(str(base)).is_dir() else None
            differs = own.is_file() and (base_template is None or not base_template.is_file()
                                         or base_template.read_text() != own.read_text())
            commands.append(vllm.adapter_command(base, name, out / "adapter", train_cfg.lora_r,
                                                 out / "adapter" / "chat_template.jinja" if differs else None))
        if merged:
            commands.append(vllm.merged_command(out / "merged", name))
        artifacts["vllm"] = {"commands": commands}


def _parity(cfg: ExportConfig, tmp: Path, run: Job, artifacts: dict, step) -> dict:
    with session_scope() as s:
        source, conversations = parity.parity_prompts(s, s.get(Job, run.id), cfg.eval_set_id)
    available = len(conversations)
    conversations = conversations[:cfg.parity_max_prompts] if cfg.parity_max_prompts else conversations
    base = run_config(run.run_dir).base_model
    targets = [(k, tmp / k) for k in ("merged", "adapter") if k in artifacts]
    targets.append(("endpoint", targets[0][1]))  # what serve-model and the Playground answer with
    decoding = cfg.parity_decoding()
    report = {"prompts_from": source, "prompts_available": available, "prompts": conversations,
              "decoding": decoding.stored(), "run_answers": [], "checks": {}}
    for kind, folder in targets:
        step(f"parity ({kind})")
        if not report["run_answers"]:
            report["run_answers"] = parity.run_answers(run.run_dir, conversations, decoding)
        try:
            report["checks"][kind] = parity.check(kind, folder, conversations, report["run_answers"],
                                                  base_model=base, decoding=decoding)
        except StudioError as err:
            report["checks"][kind] = {"error": str(err)}
    return report


def _gguf_names(path: Path) -> dict:
    """The GGUF's name, base model, dataset and license as llama.cpp reads them (for the report)."""
    meta = gguf.metadata(path)
    return {k: v for k, v in meta.items() if k in ("general.name", "general.base_model.0.name",
                                                   "general.base_model.0.repo_url", "general.dataset.0.name",
                                                   "general.license")}


def staging_dir(out: Path) -> Path:
    """The hidden folder beside ``out`` the export is written into before it is renamed to ``out``: its name is
    safe and short whatever ``out`` is called (core.names), and a hash of the full name keeps two long names apart."""
    import hashlib

    digest = hashlib.sha256(out.name.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return out.with_name("." + safe_file_name(out.name, f"-{digest}.export-tmp", default="export"))


def export(cfg: ExportConfig, step=lambda name: None) -> dict:
    """Write every asked-for artifact, check parity, write the cards; returns the report."""
    out = Path(cfg.out_dir)
    check_target(out)
    tmp = staging_dir(out)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with session_scope() as s:
        run = s.get(Job, cfg.run_id)
        project = s.get(Project, run.project_id).name
        info = lineage(s, run)
    name = _name(cfg, project)
    artifacts: dict = {}
    if "adapter" in cfg.formats:
        step("adapter")
        save_adapter_folder(run.run_dir, tmp / "adapter")
        artifacts["adapter"] = {"path": str(out / "adapter"), "zip": str(out / "adapter.zip")}
    if "merged" in cfg.formats:
        step("merged")
        merge_to_folder(run.run_dir, tmp / "merged")
        artifacts["merged"] = {"path": str(out / "merged")}
    step("recipes")
    _recipes(cfg, tmp, out, run, name, artifacts, info.get("system_prompt") or "")
    report_parity = _parity(cfg, tmp, run, artifacts, step) if cfg.parity else None
    step("card")
    for kind, library, what in (("adapter", "peft", "A LoRA adapter"), ("merged", "transformers", "A merged model")):
        if kind in artifacts:
            write_card(tmp / kind, info, library_name=library, what=what, parity=report_parity, name=name,
                       final=out / kind)
    if "gguf" in cfg.formats:  # after the card: the converter takes name, base model, datasets, license from it
        step("gguf")
        gguf_name = safe_file_name(name, "-f16.gguf")
        gguf.convert(tmp / "merged", tmp / "gguf" / gguf_name, name=name)  # fails the job when it cannot convert
        artifacts["gguf"] = {"path": str(out / "gguf" / gguf_name), "metadata": _gguf_names(tmp / "gguf" / gguf_name)}
    unmade = {f: (artifacts.get(f) or {}).get("error", "not written") for f in cfg.formats
              if "error" in artifacts.get(f, {"error": ""})}
    if unmade:  # a job that "succeeded" without a format asked for would be believed
        raise StudioError("The export did not write every format asked for ("
                          + "; ".join(f"{f}: {why}" for f, why in unmade.items()) + "); export again without it.")
    if "adapter" in artifacts:
        shutil.make_archive(str(tmp / "adapter"), "zip", root_dir=tmp / "adapter")
    report = {"out_dir": str(out), "name": name, "artifacts": artifacts, "parity": report_parity,
              "lineage": info}
    (tmp / REPORT).write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    if out.exists():
        out.rmdir()
    tmp.rename(out)
    return report


def run_job(job_id: int) -> dict:
    """The export worker: artifacts, recipes, parity, cards; progress in progress.jsonl."""
    job = worker_start(job_id)
    run_dir = Path(job.run_dir)
    t0 = time.time()
    cfg = None
    keep_alive = KeepAlive(job_id)

    def step(name: str) -> None:
        if STOP.is_set():
            raise KeyboardInterrupt
        steps = plan(cfg)
        row = {"step": name, "done": steps.index(name), "total": len(steps), "time": time.time()}
        with open(run_dir / rundir.PROGRESS, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
        keep_alive.beat(step=name)
        print(f"export: {name}", flush=True)

    with keep_alive:
        try:
            cfg = ExportConfig.from_dict(job.config)
            scratch.register(run_dir, staging_dir(Path(cfg.out_dir)))  # so a killed export's leftovers go too
            report = export(cfg, step)
            report["seconds"] = round(time.time() - t0, 1)
            with open(run_dir / rundir.PROGRESS, "a", encoding="utf-8") as fh:
                fh.write(json.dumps({"step": "done", "done": 1, "total": 1}) + "\n")
            worker_finish(job_id, JobStatus.succeeded.value, result=report)
            return report
        except KeyboardInterrupt:
            worker_finish(job_id, JobStatus.canceled.value, error="Canceled; nothing was exported.")
            return {}
        except BaseException as err:  # noqa: BLE001 - every failure must end as a truthful status
            traceback.print_exc()
            message = str(err) if isinstance(err, StudioError) else f"{type(err).__name__}: {err}"
            worker_finish(job_id, JobStatus.failed.value, error=message)
            return {}
        finally:
            scratch.clean(run_dir)  # the staging folder, unless the export renamed it into place


def main(argv: list[str] | None = None) -> int:
    return worker_main("python -m core.ship.deploy", "Export one training run.", STOP, run_job, argv)


if __name__ == "__main__":
    sys.exit(main())
