"""Ship stage with real models and processes: serve-model over HTTP answers like the generation job, and exports
answer like their run (and a broken chat template is caught)."""
from __future__ import annotations

import json
import shutil
import signal
import time
from pathlib import Path

import pytest
from sqlmodel import select

from core.evaluate.evalsets import create_eval_set_from_file, eval_prompts
from core.evaluate.generate import launch_generation
from core.jobs.queue import get_job, list_jobs
from core.train.config import TrainConfig
from core.train.runs import launch
from storage.models import Output
from tests.fixtures_models import make_dataset_version
from tests.fixtures_serve import serve_model as _serve_model
from tests.helpers import wait_for

@pytest.mark.slow
def test_serve_model_answers_a_runs_adapter_like_its_generation_job(session, users, project, tiny_model, workspace):
    from openai import OpenAI

    engineer = users["engineer"]
    version = make_dataset_version(session, project, engineer, n_train=4, n_validation=1)
    # A high learning rate so the adapter changes the answers: an endpoint without it would not pass.
    cfg = TrainConfig(base_model=str(tiny_model), dataset_version_id=version.id, max_steps=4, max_length=96,
                      per_device_batch_size=2, learning_rate=5e-2)
    run = wait_for(session, launch(session, engineer, project.id, cfg).id)
    assert run.status == "succeeded", run.error
    es = create_eval_set_from_file(session, engineer, project.id, "serve", json.dumps(
        {"prompt": "My bill doubled this month, why?"}) + "\n", "p.jsonl")
    gen = wait_for(session, launch_generation(session, engineer, es.id, ["base", f"run:{run.id}"],
                                              decoding={"max_new_tokens": 24}).id)
    assert gen.status == "succeeded", gen.error
    prompt = eval_prompts(session, es.id)[0]
    outputs = {o.system: o.text for o in session.exec(select(Output).where(Output.prompt_id == prompt.id))}
    expected = outputs[f"run:{run.id}"]
    assert expected and expected != outputs["base"]

    proc, url, lines = _serve_model(workspace, f"run:{run.id}", "--port", "0", "--idle-timeout", "300")
    try:
        api = OpenAI(base_url=url, api_key="not-needed")
        answer = api.chat.completions.create(model=f"run:{run.id}", messages=prompt.messages, temperature=0,
                                             max_tokens=24)
        assert answer.choices[0].message.content.strip() == expected
        assert answer.usage.completion_tokens > 0
        chunks = [c.choices[0].delta.content or "" for c in api.chat.completions.create(
            model=f"run:{run.id}", messages=prompt.messages, temperature=0, max_tokens=24, stream=True) if c.choices]
        assert len([c for c in chunks if c]) > 1 and "".join(chunks).strip() == expected
        serving = next(iter(list_jobs(session, kind="serve")))
        assert serving.status == "running" and serving.config["host"] == "127.0.0.1"
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C stops the endpoint and frees the device
        assert proc.wait(timeout=120) == 0, "".join(lines)
    session.expire_all()
    serving = get_job(session, serving.id)
    assert serving.status == "canceled" and serving.result["requests"] >= 2


@pytest.mark.slow
def test_exports_answer_like_the_run_and_a_broken_template_is_caught(session, users, demo, workspace, tmp_path):
    from core.curate.datasets import get_version
    from core.evaluate.generate_config import Decoding
    from core.ship import parity
    from core.ship.deploy import launch_export
    from core.train.config import preset_config

    engineer = users["engineer"]
    version = get_version(session, "demo-v1", demo)
    cfg = preset_config("quick", dataset_version_id=version.id, max_steps=3, per_device_batch_size=2,
                        max_length=256)
    run = wait_for(session, launch(session, engineer, demo.id, cfg).id, timeout=1800)
    assert run.status == "succeeded", run.error
    out = workspace / "exports" / "run"
    job = wait_for(session, launch_export(session, engineer, run.id, out, parity_max_new_tokens=128).id,
                   timeout=2400)
    assert job.status == "succeeded", job.error
    report = job.result
    checks = report["parity"]["checks"]
    assert {k: v.get("summary") for k, v in checks.items()} == {
        "merged": "identical 6/6", "adapter": "identical 6/6", "endpoint": "identical 6/6"}
    assert report["parity"]["prompts_from"] == "test split" and len(report["parity"]["run_answers"]) == 6
    assert report["parity"]["prompts_available"] == version.n_test  # the first 6 of the split (default)

    assert {p.name for p in (out / "adapter").iterdir()} >= {
        "adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "chat_template.jinja",
        "generation_config.json", "README.md"}
    assert (out / "adapter.zip").is_file() and (out / "merged" / "config.json").is_file()
    assert (out / "merged" / "README.md").read_text().startswith("---\nbase_model: HuggingFaceTB/SmolLM2-135M")
    modelfile = (out / "ollama" / "Modelfile").read_text()
    assert f"FROM {out / 'merged'}\n" in modelfile and 'PARAMETER stop "<|im_end|>"' in modelfile
    assert f"ADAPTER {out / 'adapter'}\n" in (out / "ollama" / "Modelfile.adapter").read_text()
    vllm_commands = report["artifacts"]["vllm"]["commands"]
    assert f"--lora-modules utility-support-assistant-run-{run.id}={out / 'adapter'} --max-lora-rank 16" \
        in vllm_commands[0]
    # The PyPI converter (dev extra) made the GGUF after the card: it names the model and its base.
    assert report["artifacts"]["gguf"]["metadata"]["general.name"] == f"utility-support-assistant-run-{run.id}"
    assert report["artifacts"]["gguf"]["metadata"]["general.base_model.0.repo_url"].endswith("SmolLM2-135M-Instruct")
    assert json.loads((out / "deploy.json").read_text())["parity"]["checks"]["merged"]["identical"] == 6

    # A merged folder whose chat template was changed: the same weights, answering other prompts.
    broken = tmp_path / "broken"
    shutil.copytree(out / "merged", broken)
    (broken / "chat_template.jinja").write_text(
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant: {% endif %}")
    verdict = parity.check("merged", broken, report["parity"]["prompts"], report["parity"]["run_answers"],
                           decoding=Decoding(max_new_tokens=128))
    assert verdict["identical"] < verdict["total"] == 6
    diff = verdict["first_difference"]
    assert diff["run"] == report["parity"]["run_answers"][diff["index"]] and diff["export"] != diff["run"]


@pytest.mark.slow
def test_serving_holds_the_device_and_ends_when_idle(session, users, project, tiny_model):
    from core.evaluate.generate_config import Decoding
    from core.jobs.queue import queue_position
    from core.ship import client
    from core.ship.serving import ServeConfig, launch_server, server_status

    engineer = users["engineer"]
    version = make_dataset_version(session, project, engineer, n_train=4, n_validation=1)
    key = f"base:{tiny_model}"
    serving = launch_server(session, engineer, project.id, ServeConfig(system=key, idle_timeout_s=20))
    deadline = time.time() + 300
    while not (status := server_status(session, serving.id))["endpoint"]:
        assert status["job"].status in ("queued", "running") and time.time() < deadline, status["job"].error
        time.sleep(0.3)
    url = status["endpoint"]["url"]
    answer = client.complete(url, key, [{"role": "user", "content": "Hi"}], Decoding(max_new_tokens=5))
    assert answer.completion_tokens == 5 and answer.finish_reason == "length"

    # On this one-slot machine a training run waits while the endpoint holds the device...
    run = launch(session, engineer, project.id, TrainConfig(base_model=str(tiny_model), dataset_version_id=version.id,
                                                            max_steps=1, max_length=96, per_device_batch_size=2))
    assert run.status == "queued" and queue_position(session, run) == 1
    # ...until the endpoint has been idle for its timeout and ends by itself; then the run starts.
    serving = wait_for(session, serving.id, timeout=120)
    assert serving.status == "succeeded" and serving.result["stopped"] == "idle"
    assert not (Path(serving.run_dir) / "endpoint.json").exists()
    run = wait_for(session, run.id)
    assert run.status == "succeeded", run.error


@pytest.mark.slow
def test_cli_export_prints_the_commands_and_writes_the_adapter(session, users, project, tiny_model, workspace):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from storage.models import Job
    from tests.helpers import cli

    run_dir = workspace / "runs" / "00001-lora"
    run_dir.mkdir(parents=True)
    torch.manual_seed(0)
    get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model), LoraConfig(
        r=12, target_modules=["q_proj", "v_proj"], init_lora_weights=False)).save_pretrained(run_dir)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(run_dir)
    (run_dir / "config.json").write_text(TrainConfig(base_model=str(tiny_model), dataset_version_id=1,
                                                     lora_r=12).to_json())
    session.add(Job(project_id=project.id, kind="train", name="lora", status="succeeded", run_dir=str(run_dir)))
    session.commit()
    out = workspace / "exports" / "cli"
    done = cli(workspace, "runs", "export", "lora", "--out", str(out), "--formats", "adapter,ollama,vllm,gguf",
               "--no-parity", "--name", "Support Bot")
    assert done.returncode == 0, done.stderr
    assert (f"vllm command 1: vllm serve {tiny_model} --enable-lora --lora-modules support-bot={out / 'adapter'} "
            "--max-lora-rank 16") in done.stdout
    assert f"ollama command 2: ollama create support-bot-adapter -f {out / 'ollama' / 'Modelfile.adapter'}" \
        in done.stdout  # GGUF brought the merged folder along, so Modelfile (merged) is command 1
    assert f"gguf path: {out / 'gguf' / 'support-bot-f16.gguf'}" in done.stdout  # the PyPI converter (dev extra)
    assert (out / "adapter" / "README.md").read_text().startswith("---\n")
    refused = cli(workspace, "runs", "export", "1", "--out", str(out))
    assert refused.returncode == 1 and "is not empty" in refused.stderr
