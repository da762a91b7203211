"""Generation: batched = one-at-a-time (greedy), resume skips written outputs, adapters switched on one base.

Uses a tiny random Llama model with the embedded model's tokenizer (its chat template), built once per session.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlmodel import select

from core.errors import InvalidInput, PermissionDenied
from storage.models import Job, JobStatus, Output
from tests.fixtures_models import random_adapter as _adapter
from tests.helpers import wait_for

PROMPTS = [
    "My bill doubled this month, why?",
    "How do I submit a meter reading?",
    "I smell gas in my kitchen.",
    "Can I pay by direct debit?",
    "My smart meter screen is blank and I am not sure what to do about it at all.",
    "Hi",
]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A 2-layer random Llama with the embedded SmolLM2 tokenizer (shared builder: tests/fixtures_models.py)."""
    from tests.fixtures_models import tiny_model_dir

    return str(tiny_model_dir(tmp_path_factory))


def _finished_run(session, project, user, base_path: str, folder: Path, seed: int) -> Job:
    _adapter(base_path, folder, seed)
    job = Job(project_id=project.id, kind="train", name=f"lora seed {seed}", status=JobStatus.succeeded.value,
              run_dir=str(folder), created_by=user.id, config={"base_model": base_path})
    session.add(job)
    session.commit()
    session.refresh(job)
    return job


def _eval_set(session, project, user, n=len(PROMPTS)):  # noqa: B008 - an int, computed once
    from core.evaluate.evalsets import create_eval_set_from_file

    lines = "\n".join(json.dumps({"prompt": p, "reference": "Please call us on 0800 000."}) for p in PROMPTS[:n])
    return create_eval_set_from_file(session, user, project.id, "gen set", lines, "prompts.jsonl")


def _gen_job(session, project, user, eval_set, systems, base_path, run_bases, resumed_from=None, max_new=12,
             run_dir=None) -> Job:
    """A queued generation job row with its run folder, as core.jobs.queue.submit makes (without starting it)."""
    from dataclasses import asdict

    from core.evaluate.generate_config import Decoding, GenerateConfig

    cfg = GenerateConfig(eval_set_id=eval_set.id, systems=systems, run_bases=run_bases, base_model=base_path,
                         decoding=Decoding(max_new_tokens=max_new), batch_size=4)
    job = Job(project_id=project.id, kind="generate", action="evaluate", name="gen",
              module="core.evaluate.generate_job", config=asdict(cfg),
              created_by=user.id, eval_set_id=eval_set.id, resumed_from=resumed_from)
    session.add(job)
    session.commit()
    job.run_dir = str(run_dir)
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    session.add(job)
    session.commit()
    session.refresh(job)
    return job


def test_batched_greedy_equals_one_at_a_time(tiny_model):
    import torch

    from core.basemodel import load_model, load_tokenizer
    from core.evaluate.generate_config import Decoding
    from core.evaluate.generate import generate_outputs, prompt_texts

    model, tokenizer = load_model(tiny_model), load_tokenizer(tiny_model)
    convs = [[{"role": "user", "content": p}] for p in PROMPTS]
    batched = generate_outputs(model, tokenizer, convs, Decoding(max_new_tokens=10), batch_size=4)
    eos = tokenizer.eos_token_id
    for _conv, got, text in zip(convs, batched, prompt_texts(tokenizer, convs)):
        ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)
        with torch.inference_mode():
            out = model.generate(**ids, max_new_tokens=10, do_sample=False, pad_token_id=eos, eos_token_id=eos)
        new = out[0, ids["input_ids"].shape[1]:].tolist()
        new = new[:new.index(eos)] if eos in new else new
        assert got["n_new_tokens"] == len(new)
        assert got["text"] == tokenizer.decode(new, skip_special_tokens=True).strip()


@pytest.mark.slow
def test_job_writes_outputs_resumes_and_adapters_differ(session, project, users, tiny_model, tmp_path):
    from core.evaluate.evalsets import latest_outputs
    from core.evaluate.generate_job import run_job

    eng = users["engineer"]
    run_a = _finished_run(session, project, eng, tiny_model, tmp_path / "run-a", seed=1)
    run_b = _finished_run(session, project, eng, tiny_model, tmp_path / "run-b", seed=2)
    es = _eval_set(session, project, eng)
    systems = ["base", f"run:{run_a.id}", f"run:{run_b.id}"]
    bases = {f"run:{run_a.id}": tiny_model, f"run:{run_b.id}": tiny_model}
    job = _gen_job(session, project, eng, es, systems, tiny_model, bases, run_dir=tmp_path / "gen1")

    # A crashed first attempt had already written two outputs of the base system.
    from core.evaluate.evalsets import eval_prompts

    prompts = eval_prompts(session, es.id)
    for p in prompts[:2]:
        session.add(Output(prompt_id=p.id, system="base", job_id=job.id, text=f"kept {p.id}",
                           decoding={"mode": "greedy"}))
    session.commit()

    result = run_job(job.id)
    session.expire_all()
    job = session.get(Job, job.id)
    assert job.status == JobStatus.succeeded.value, job.error
    assert result["skipped_existing"] == 2
    rows = session.exec(select(Output).where(Output.job_id == job.id)).all()
    assert len(rows) == len(PROMPTS) * 3  # no duplicates of the two kept outputs
    kept = [r for r in rows if r.text.startswith("kept")]
    assert len(kept) == 2
    assert all(r.decoding == {"mode": "greedy", "max_new_tokens": 12, "seed": 0} for r in rows if r not in kept)
    assert all(r.seconds > 0 for r in rows if r not in kept)
    assert set(job.result["perplexity"]) == set(systems)
    assert (Path(job.run_dir) / "progress.jsonl").exists()

    # The two adapters produce different answers from the base model and from each other.
    outs = latest_outputs(session, es.id)
    texts = {s: [outs[(p.id, s)].text for p in prompts[2:]] for s in systems}
    assert texts["base"] != texts[f"run:{run_a.id}"]
    assert texts["base"] != texts[f"run:{run_b.id}"]
    assert texts[f"run:{run_a.id}"] != texts[f"run:{run_b.id}"]
    ppl = job.result["perplexity"]
    assert ppl["base"] != ppl[f"run:{run_a.id}"]

    # Resuming the finished job as a new one finds nothing left to do.
    again = _gen_job(session, project, eng, es, systems, tiny_model, bases, resumed_from=job.id,
                     run_dir=tmp_path / "gen2")
    result2 = run_job(again.id)
    assert result2["skipped_existing"] == len(PROMPTS) * 3
    assert not session.exec(select(Output).where(Output.job_id == again.id)).all()


def test_generation_config_refuses_unknown_settings():
    """A typo in a generation job's config.json (or the CLI/page) must not silently become a default."""
    from core.evaluate.generate_config import GenerateConfig

    assert GenerateConfig.from_dict({"eval_set_id": 1, "systems": ["base"], "batch_size": 4}).batch_size == 4
    with pytest.raises(InvalidInput, match="Unknown generation setting.*batchsize"):
        GenerateConfig.from_dict({"eval_set_id": 1, "systems": ["base"], "batchsize": 4})


def test_launch_generation_checks_roles_and_runs(session, project, users, tiny_model, tmp_path):
    from core.evaluate.generate import launch_generation

    es = _eval_set(session, project, users["engineer"], n=2)
    with pytest.raises(PermissionDenied):
        launch_generation(session, users["reviewer"], es.id, ["base"])
    with pytest.raises(PermissionDenied):
        launch_generation(session, users["annotator"], es.id, ["base"])
    with pytest.raises(InvalidInput):
        launch_generation(session, users["engineer"], es.id, ["nonsense"])
    with pytest.raises(InvalidInput):
        launch_generation(session, users["engineer"], es.id, ["base"], decoding={"max_new_tokens": 0})
    failed = Job(project_id=project.id, kind="train", name="broken", status=JobStatus.failed.value,
                 run_dir=str(tmp_path))
    session.add(failed)
    session.commit()
    with pytest.raises(InvalidInput, match="not finished"):
        launch_generation(session, users["engineer"], es.id, ["base", f"run:{failed.id}"])


@pytest.mark.slow
def test_generation_job_runs_as_a_background_process(session, project, users, tiny_model, tmp_path):
    """End to end through the job queue: launch, the worker process generates, the row says succeeded."""

    from core.evaluate.evalsets import latest_outputs
    from core.evaluate.generate import launch_generation

    eng = users["engineer"]
    run = _finished_run(session, project, eng, tiny_model, tmp_path / "run", seed=3)
    es = _eval_set(session, project, eng, n=3)
    job = launch_generation(session, eng, es.id, f"base,run:{run.id}", base_model=tiny_model,
                            decoding={"do_sample": True, "temperature": 0.8, "top_p": 0.9, "max_new_tokens": 8,
                                      "seed": 7})
    job = wait_for(session, job.id, timeout=240)
    log = (Path(job.run_dir) / "job.log").read_text() if job.run_dir else ""
    assert job.status == JobStatus.succeeded.value, job.error + log
    outs = latest_outputs(session, es.id)
    assert len(outs) == 6
    assert all(o.decoding["mode"] == "sample" and o.decoding["seed"] == 7 for o in outs.values())


def test_validation_perplexity_for_an_eval_set_frozen_from_a_version(session, project, users, tiny_model, tmp_path):
    from core.evaluate.evalsets import create_eval_set_from_version
    from core.evaluate.generate_job import run_job
    from tests.fixtures_models import make_dataset_version

    eng = users["engineer"]
    version = make_dataset_version(session, project, eng, n_train=2, n_validation=3)
    es = create_eval_set_from_version(session, eng, project.id, version.id, "val", split="validation")
    job = _gen_job(session, project, eng, es, ["base"], tiny_model, {}, max_new=3, run_dir=tmp_path / "gen")
    result = run_job(job.id)
    # Independently: transformers' own loss with the prompt tokens masked, per example, token-weighted.
    import math

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from core.curate.datasets import version_records

    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    tok = AutoTokenizer.from_pretrained(tiny_model)
    total = count = 0.0
    for rec in version_records(session, version.id, "validation"):
        prompt = tok.apply_chat_template(rec["prompt"], add_generation_prompt=True, tokenize=False)
        full = tok.apply_chat_template(rec["prompt"] + rec["completion"], tokenize=False)
        p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        ids = p_ids + tok(full[len(prompt):], add_special_tokens=False)["input_ids"]
        labels = [-100] * len(p_ids) + ids[len(p_ids):]
        with torch.no_grad():
            loss = model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels])).loss.item()
        n = len(ids) - len(p_ids)
        total, count = total + loss * n, count + n
    assert result["validation_perplexity"]["base"] == pytest.approx(math.exp(total / count), rel=1e-3)
    assert result["perplexity"]["base"] == pytest.approx(math.exp(total / count), rel=1e-3)  # same prompts here


def test_full_fine_tuned_run_generates_from_its_own_model(session, project, users, tiny_model, tmp_path):
    """A full fine-tuning run has no adapter: its outputs come from the model saved in its run folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from core.evaluate.evalsets import latest_outputs

    from core.evaluate.systems import run_base_model
    from core.evaluate.generate_job import run_job

    eng = users["engineer"]
    folder = tmp_path / "full-run"
    torch.manual_seed(3)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    model.save_pretrained(folder / "model")
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(folder / "model")
    (folder / "config.json").write_text(json.dumps({"base_model": tiny_model, "method": "full"}))
    run = Job(project_id=project.id, kind="train", name="full", status=JobStatus.succeeded.value,
              run_dir=str(folder), created_by=eng.id, config={"base_model": tiny_model, "method": "full"})
    session.add(run)
    session.commit()
    session.refresh(run)
    assert run_base_model(run) == str(folder / "model")

    es = _eval_set(session, project, eng, n=3)
    system = f"run:{run.id}"
    job = _gen_job(session, project, eng, es, ["base", system], tiny_model, {system: run_base_model(run)},
                   run_dir=tmp_path / "gen-full")
    run_job(job.id)
    session.expire_all()
    assert session.get(Job, job.id).status == JobStatus.succeeded.value, session.get(Job, job.id).error
    outs = latest_outputs(session, es.id)
    prompts = [p for p in {k[0] for k in outs}]
    assert [outs[(p, "base")].text for p in prompts] != [outs[(p, system)].text for p in prompts]
