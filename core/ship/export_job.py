"""The export job: ``python -m core.ship.export_job --run-dir DIR`` (queued by core.ship.deploy.launch_export).

One job writes every way out the user asked for into a new folder: the PEFT adapter folder (and a zip of it to
download), the merged model folder, Ollama Modelfiles with the exact ``ollama create`` commands, the exact
``vllm serve`` commands, and GGUF when llama.cpp's converter is installed (otherwise it says what to install).
Then it runs the parity check (core.ship.parity) on each artifact and writes a model card (core.ship.modelcard)
into each model folder. Everything is written under a temporary name and renamed into place at the end, so a
failed or canceled export leaves nothing half-written. ``deploy.json`` in the folder and the job's result hold
the same report: artifacts, commands, parity verdicts and lineage. Start, heartbeats, cancel and the recorded
end are the job lifecycle's (core.jobs.worker.run_worker).
"""
from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

from core.basemodel import resolve_model_path
from core.errors import StudioError
from core.jobs import rundir, scratch
from core.jobs.worker import JobContext, StopFlag, run_worker, worker_main
from core.names import safe_file_name
from core.ship import gguf, ollama, parity, vllm
from core.ship.deploy import REPORT, ExportConfig, plan
from core.ship.modelcard import lineage, write_card
from core.train.export import check_target, merge_to_folder, run_config, save_adapter_folder
from storage.db import session_scope
from storage.models import Job, Project

STOP = StopFlag()  # set by SIGTERM (core.jobs.queue.cancel): stop at the next step, export nothing


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


def run_job(job_id: int) -> dict | None:
    """Run export job ``job_id`` through the job lifecycle; returns the report it recorded."""
    return run_worker(job_id, export_run, stop=STOP)[1]


def export_run(ctx: JobContext) -> dict:
    """The export job: artifacts, recipes, parity, cards; progress in progress.jsonl, the report as its result.
    A cancel ends it at the next step with nothing exported (the staging folder is removed)."""
    t0 = time.time()
    ctx.canceled_message = "Canceled; nothing was exported."
    cfg = ExportConfig.from_dict(ctx.config)

    def step(name: str) -> None:
        ctx.check_stop()
        steps = plan(cfg)
        _progress(ctx.run_dir, {"step": name, "done": steps.index(name), "total": len(steps), "time": time.time()})
        ctx.beat(step=name)
        print(f"export: {name}", flush=True)

    scratch.register(ctx.run_dir, staging_dir(Path(cfg.out_dir)))  # so a killed export's leftovers go too
    try:
        report = export(cfg, step)
    finally:
        scratch.clean(ctx.run_dir)  # the staging folder, unless the export renamed it into place
    report["seconds"] = round(time.time() - t0, 1)
    _progress(ctx.run_dir, {"step": "done", "done": 1, "total": 1})
    return report


def _progress(run_dir: Path, row: dict) -> None:
    with open(run_dir / rundir.PROGRESS, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row) + "\n")


def main(argv: list[str] | None = None) -> int:
    return worker_main("python -m core.ship.export_job", "Export one training run.", export_run, argv, stop=STOP)


if __name__ == "__main__":
    sys.exit(main())
