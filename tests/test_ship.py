"""Ship stage without loading a model: Modelfile and vLLM goldens, configs, Save as example, project settings, the
model card's lineage, the migration."""
from __future__ import annotations

import json
from dataclasses import asdict

import pytest
from huggingface_hub import ModelCard
from sqlmodel import select

from core.errors import InvalidInput, PermissionDenied
from core.evaluate.generate_config import Decoding
from core.ship import ollama, vllm
from core.ship.deploy import ExportConfig
from core.ship.serving import ServeConfig
from storage.models import Job
from tests.fixtures_models import make_dataset_version
from tests.helpers import make_outputs, score_all

CHATML_MODELFILE = '''\
# Written by finetune-studio from the model's own chat template.
FROM /exports/run-3/merged
TEMPLATE """{{ range .Messages }}{{ if eq .Role "system" }}<|im_start|>system
{{ .Content }}<|im_end|>
{{ else if eq .Role "user" }}<|im_start|>user
{{ .Content }}<|im_end|>
{{ else if eq .Role "assistant" }}<|im_start|>assistant
{{ .Content }}<|im_end|>
{{ end }}{{ end }}<|im_start|>assistant
"""
SYSTEM """You are a helpful AI assistant named SmolLM, trained by Hugging Face"""
PARAMETER stop "<|im_end|>"
PARAMETER stop "<|im_start|>"
'''

LLAMA3_TEMPLATE = ("{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
                   "{{ m['content'] | trim }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}"
                   "<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")
LLAMA3_MODELFILE = '''\
# Written by finetune-studio from the model's own chat template.
FROM /models/base
ADAPTER /exports/run-3/adapter
TEMPLATE """<|endoftext|>{{ range .Messages }}{{ if eq .Role "system" }}<|start_header_id|>system<|end_header_id|>

{{ .Content }}<|eot_id|>{{ else if eq .Role "user" }}<|start_header_id|>user<|end_header_id|>

{{ .Content }}<|eot_id|>{{ else if eq .Role "assistant" }}<|start_header_id|>assistant<|end_header_id|>

{{ .Content }}<|eot_id|>{{ end }}{{ end }}<|start_header_id|>assistant<|end_header_id|>

"""
PARAMETER stop "<|eot_id|>"
PARAMETER stop "<|im_end|>"
'''


@pytest.fixture
def tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)  # the embedded model's tokenizer and ChatML template


def test_modelfile_golden_for_the_embedded_chat_template(tokenizer):
    fmt = ollama.read_format(tokenizer)
    assert fmt.mismatches == []
    assert ollama.modelfile(fmt, model_from="/exports/run-3/merged") == CHATML_MODELFILE
    assert (ollama.create_command("Utility support assistant-run-3", "/exports/run-3/ollama/Modelfile")
            == "ollama create utility-support-assistant-run-3 -f /exports/run-3/ollama/Modelfile")


def test_modelfile_golden_for_a_llama3_style_template_with_an_adapter(tokenizer):
    tokenizer.chat_template = LLAMA3_TEMPLATE
    tokenizer.bos_token = "<|endoftext|>"
    fmt = ollama.read_format(tokenizer)
    assert fmt.default_system is None and fmt.mismatches == []
    text = ollama.modelfile(fmt, model_from="/models/base", adapter="/exports/run-3/adapter")
    assert text == LLAMA3_MODELFILE


def test_a_template_that_merges_roles_is_reported_not_guessed(tokenizer):
    tokenizer.chat_template = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}[INST] "
                               "{{ m['content'] }} [/INST]{% elif m['role'] == 'assistant' %}{{ m['content'] }}"
                               "{{ eos_token }}{% endif %}{% endfor %}")
    with pytest.raises(ValueError, match="merges or drops roles"):
        ollama.read_format(tokenizer)


def test_vllm_commands_golden():
    assert (vllm.adapter_command("/models/SmolLM2-135M-Instruct", "utility-run-3", "/exports/run-3/adapter", 16)
            == "vllm serve /models/SmolLM2-135M-Instruct --enable-lora --lora-modules "
               "utility-run-3=/exports/run-3/adapter --max-lora-rank 16")
    # vLLM takes only some ranks: an adapter of rank 12 needs --max-lora-rank 16; paths with spaces are quoted
    assert (vllm.adapter_command("/my models/base", "m", "/ex/a b", 12, chat_template="/ex/a b/chat_template.jinja")
            == "vllm serve '/my models/base' --enable-lora --lora-modules 'm=/ex/a b' --max-lora-rank 16 "
               "--chat-template '/ex/a b/chat_template.jinja'")
    assert [vllm.max_lora_rank(r) for r in (1, 2, 8, 33, 300, 512)] == [1, 8, 8, 64, 320, 512]
    assert (vllm.merged_command("/exports/run-3/merged", "utility-run-3")
            == "vllm serve /exports/run-3/merged --served-model-name utility-run-3")


def test_export_and_serve_configs_refuse_what_cannot_work(tmp_path):
    cfg = ExportConfig(run_id=1, out_dir=str(tmp_path / "x"), formats=["gguf", "adapter"])
    assert cfg.formats == ["adapter", "merged", "gguf"]  # GGUF is converted from the merged folder
    with pytest.raises(InvalidInput, match="formats among"):
        ExportConfig(run_id=1, out_dir=str(tmp_path), formats=["onnx"])
    with pytest.raises(InvalidInput, match="adapter or the merged"):
        ExportConfig(run_id=1, out_dir=str(tmp_path), formats=["ollama"])
    with pytest.raises(InvalidInput, match="Unknown export setting"):
        ExportConfig.from_dict({"run_id": 1, "out_dir": str(tmp_path), "fromats": ["merged"]})
    assert cfg.parity_max_prompts == 6  # a few prompts show a template mismatch without minutes per artifact
    with pytest.raises(InvalidInput, match="parity prompts"):
        ExportConfig(run_id=1, out_dir=str(tmp_path), parity_max_prompts=-1)
    assert ServeConfig().host == "127.0.0.1"  # the endpoint stays on this machine unless asked
    with pytest.raises(InvalidInput, match="port"):
        ServeConfig(port=70000)
    with pytest.raises(InvalidInput, match="host"):
        ServeConfig(host="127.0.0.1; rm -rf /")
    assert ServeConfig().max_requests == 4  # USER_GUIDE and SECURITY promise this many requests at a time
    with pytest.raises(InvalidInput, match="between 1 and 1000 requests"):
        ServeConfig(max_requests=0)


def test_save_as_example_makes_a_draft_with_its_origin(session, users, project):
    from core.ship.playground import save_exchange

    turns = [{"role": "user", "content": "My bill doubled, why?"}]
    ex = save_exchange(session, users["engineer"], project, system_label="Run 3: lora-demo-v1",
                       system_prompt="You are Brightwater's support assistant.", turns=turns,
                       answer="Sorry about the surprise. 1. Check the meter reading.", generated="It doubled.",
                       decoding=Decoding())
    assert ex.status == "draft" and ex.source == "playground"
    assert ex.system == "You are Brightwater's support assistant."
    answer = {"role": "assistant", "content": "Sorry about the surprise. 1. Check the meter reading."}
    assert ex.turns == turns + [answer]
    assert "Playground: Run 3: lora-demo-v1, greedy" in ex.note and "answer edited" in ex.note
    with pytest.raises(InvalidInput, match="empty"):
        save_exchange(session, users["engineer"], project, system_label="x", system_prompt="", turns=turns,
                      answer="  ", generated="a", decoding=Decoding())
    with pytest.raises(InvalidInput, match="ends with the user"):
        save_exchange(session, users["engineer"], project, system_label="x", system_prompt="", turns=[],
                      answer="a", generated="a", decoding=Decoding())


def test_project_settings_for_playground_and_cards(session, users, project):
    from core.projects import update_project

    update_project(session, users["admin"], project, default_system_prompt=" Be brief. ", license="Apache-2.0",
                   intended_use="Answering utility customers.")
    session.refresh(project)
    assert (project.default_system_prompt, project.license, project.intended_use) == (
        "Be brief.", "apache-2.0", "Answering utility customers.")
    with pytest.raises(InvalidInput, match="identifier"):
        update_project(session, users["admin"], project, license="Apache License, Version 2.0")
    with pytest.raises(PermissionDenied):
        update_project(session, users["engineer"], project, default_system_prompt="x")


def test_model_card_carries_the_lineage(session, users, project, reviewers):
    from core.projects import update_project
    from core.ship.modelcard import card_text, lineage

    update_project(session, users["admin"], project, license="apache-2.0", intended_use="Drafting replies to "
                   "utility customers; not for emergencies.")
    version = make_dataset_version(session, project, users["engineer"], n_train=6, n_validation=2)
    es, systems = make_outputs(session, project, users["engineer"], n_prompts=4, runs=1, k=3)
    score_all(session, es, reviewers)
    run = session.get(Job, int(systems[1].split(":")[1]))
    run.dataset_version_id, run.created_by = version.id, users["engineer"].id
    run.config = {"base_model": "embedded:SmolLM2-135M-Instruct", "method": "lora", "lora_r": 16,
                  "learning_rate": 0.0002, "dataset_version_id": version.id}
    run.result = {"metrics": {"train_loss": 1.234, "eval_loss_first": 2.5, "eval_loss_last": 1.75, "global_step": 9}}
    session.add(run)
    session.commit()

    info = lineage(session, run)
    text = card_text(info, library_name="peft", what="A LoRA adapter",
                     parity={"checks": {"merged": {"summary": "identical 4/4"}}, "prompts_from": "test split",
                             "prompts_available": 96, "prompts": [[{"role": "user", "content": "Hi"}]] * 4})
    card = ModelCard(text)
    assert card.data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert card.data.library_name == "peft" and card.data.license == "apache-2.0"
    assert card.data.datasets == ["v1"]
    body = card.text
    assert "`v1`, content hash `test-v1`" in body and "train 6, validation 2, test 0" in body
    assert "1 annotator(s), approved by 0 reviewer(s)" in body
    assert '"learning_rate": 0.0002' in body and "Train loss, mean over all training steps: 1.2340" in body
    assert "2.5000 (base) -> 1.7500" in body
    bt = info["evaluation"]["bradley_terry"]
    assert bt["difference"] > 0 and bt["lo"] <= bt["difference"] <= bt["hi"] and bt["n_votes"] == 12
    assert f"Bradley-Terry rating difference (run - base): {bt['difference']:+.1f}" in body
    assert "Win rate against the base: 100% (12 wins, 0 ties, 0 losses)" in body
    assert "| accuracy | 4.00 | 2.00 |" in body
    assert "ROUGE-L against the references: run 1.000, base" in body
    assert "not for emergencies" in body and "- merged: identical 4/4" in body
    assert "same 4 prompts (the first 4 of 96 of the test split)" in body


def test_upgrade_adds_project_settings_and_moves_export_jobs(tmp_path, monkeypatch):
    from sqlalchemy import text

    from core.startup import init_workspace
    from storage.db import current_revision, get_engine, make_engine, reset_engines, upgrade

    ws = tmp_path / "old"
    ws.mkdir()
    url = f"sqlite:///{ws / 'studio.db'}"
    upgrade(url, "0003_jobs_by_stage")
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO user (username, password_hash, role, active, created_at) "
                          "VALUES ('olduser', 'x', 'admin', 1, '2026-01-01 00:00:00')"))
        conn.execute(text("INSERT INTO project (name, description, guidelines, rubric, max_length, "
                          "annotators_per_example, created_at) VALUES ('Old', '', '', '[]', 1024, 1, "
                          "'2026-01-01 00:00:00')"))
        conn.execute(text("INSERT INTO job (project_id, kind, module, action, slots, launcher, name, status, "
                          "run_dir, config, result, error, created_at, cancel_requested) VALUES (1, 'export', "
                          "'core.train.export', 'train', 1, 'python', 'export run 1', 'queued', '', :cfg, '{}', '', "
                          "'2026-01-01 00:00:00', 0)"), {"cfg": json.dumps({"run_id": 1, "out_dir": "/x"})})
    engine.dispose()
    monkeypatch.setenv("FINETUNE_STUDIO_HOME", str(ws))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    reset_engines()
    init_workspace()
    from alembic.script import ScriptDirectory

    from storage.db import _alembic_config

    # upgraded to the head, whatever later migrations follow 0008 (its settings are checked below)
    assert current_revision(url) == ScriptDirectory.from_config(_alembic_config("sqlite://")).get_current_head()
    with get_engine().connect() as conn:
        assert conn.execute(text("SELECT module FROM job")).scalar() == "core.ship.export_job"
        row = conn.execute(text("SELECT default_system_prompt, license, intended_use FROM project")).one()
    assert tuple(row) == ("", "", "")
    cfg = ExportConfig.from_dict({"run_id": 1, "out_dir": "/x"})  # an old export's config still reads
    assert cfg.formats == ["adapter", "merged", "ollama", "vllm", "gguf"]
    reset_engines()


def test_systems_by_key_base_runs_and_merged_exports(session, users, project, tmp_path):
    from core.ship.systems import project_systems, resolve

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "adapter_config.json").write_text("{}")
    (run_dir / "config.json").write_text(json.dumps({"base_model": "/models/base", "lora_r": 8}))
    merged = tmp_path / "exp" / "merged"
    merged.mkdir(parents=True)
    (merged / "config.json").write_text("{}")
    run = Job(project_id=project.id, kind="train", name="lora-v1", status="succeeded", run_dir=str(run_dir))
    failed = Job(project_id=project.id, kind="train", name="broken", status="failed", run_dir=str(run_dir))
    session.add_all([run, failed])
    session.commit()
    export = Job(project_id=project.id, kind="export", name="export", status="succeeded",
                 config={"run_id": run.id}, result={"artifacts": {"merged": {"path": str(merged)}}})
    session.add(export)
    session.commit()

    keys = [s.key for s in project_systems(session, project.id)]
    assert keys == ["base:embedded:SmolLM2-135M-Instruct", "base:/models/base", f"run:{run.id}",
                    f"export:{export.id}"]
    adapter = resolve(session, str(run.id))  # a bare id is a run
    assert (adapter.key, adapter.base_model, adapter.adapter_dir, adapter.lora_r) == (
        f"run:{run.id}", "/models/base", str(run_dir), 8)
    assert resolve(session, f"export:{export.id}").model_dir == str(merged)
    assert resolve(session, "base").key == "base:embedded:SmolLM2-135M-Instruct"
    with pytest.raises(InvalidInput, match="only succeeded runs"):
        resolve(session, f"run:{failed.id}")
    with pytest.raises(InvalidInput, match="Unknown system"):
        resolve(session, "gpt-4")


@pytest.mark.slow
def test_serve_model_names_a_run_by_name_or_id_like_every_command(session, users, project, workspace):
    from tests.helpers import cli

    failed = Job(project_id=project.id, kind="train", name="broken-run", status="failed")
    session.add(failed)
    session.commit()
    by_name = cli(workspace, "serve-model", "run:broken-run")
    assert by_name.returncode == 1 and f"Run {failed.id} has no finished model" in by_name.stderr  # found, refused
    assert "No training run named 'nope'" in cli(workspace, "serve-model", "run:nope").stderr
    assert not list(session.exec(select(Job).where(Job.kind == "serve")))  # nothing was started


def test_playground_page_shows_a_chat_as_plain_text_and_saves_an_edited_exchange(session, users, project):
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    from storage.models import Example

    answer = {"role": "assistant", "content": "**Call** us <b>now</b>", "system": "base:embedded:SmolLM2-135M-Instruct",
              "label": "Base model (SmolLM2-135M-Instruct)", "system_prompt": "Be kind.",
              "decoding": asdict(Decoding()),
              "tokens": 7, "tokens_per_s": 12.5, "first_token_s": 0.31, "finish": "stop"}
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "pages" / "playground.py"), default_timeout=60)
    at.session_state["user_id"] = users["engineer"].id
    state = dict(pg_project=project.id, pg_chat_no=0, pg_outbox=None, pg_streaming=None,
                 pg_chats={0: [{"role": "user", "content": "Can I pay monthly?"}, answer], 1: []})
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert "**Call** us <b>now</b>" in [t.value for t in at.text]  # model output is never rendered as Markdown
    assert "7 tokens · 12.5 tokens/s · first token after 0.31 s · end of turn" in [c.value for c in at.caption]
    at.text_area(key="pg_edit_0_0_1").set_value("Yes: monthly payments are free.")
    at.button(key="pg_save_0_0_1").click().run()
    assert not at.exception, [e.value for e in at.exception]
    ex = session.exec(select(Example).where(Example.source == "playground")).one()
    assert ex.status == "draft" and ex.system == "Be kind."
    assert ex.turns[-1]["content"] == "Yes: monthly payments are free."
    assert "From the Playground: Base model (SmolLM2-135M-Instruct), greedy" in ex.note


def test_the_pages_ship_modules_load_no_model_library():
    """Pages talk to the endpoint over HTTP: importing what they import loads neither torch nor transformers."""
    import subprocess
    import sys

    from tests.helpers import ROOT

    code = ("import sys, core.ship.client, core.ship.playground, core.ship.serving, core.ship.deploy; "
            "print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"



def test_ctrl_c_during_a_database_read_still_stops_serve_model(session, users, project, workspace):
    """Ctrl-C lands wherever the CLI happens to be, often inside a database read while it polls. Raised there, the
    interrupt left the session needing a rollback: the next read failed, the CLI crashed and the endpoint it
    started kept going (in CI it also hung). The interrupt here is sent from inside a read, every time."""
    import os
    import signal

    from sqlalchemy import event

    from core.cli.main import main
    from core.jobs.queue import cancel, submit
    from storage.db import get_engine
    from tests.helpers import wait_for

    eng = users["engineer"]
    busy = submit(session, eng, project_id=project.id, kind="sleep", action="train", name="holds the device",
                  config={}, module="tests.sleeping_worker")
    assert busy.status == "running"  # so serve-model waits for the device, polling the database
    seen = {"launched": False, "polls": 0}

    def ctrl_c_inside_a_read(conn, cursor, statement, *_):
        if statement.lstrip().upper().startswith("INSERT INTO JOB"):
            seen["launched"] = True
        elif seen["launched"] and statement.lstrip().upper().startswith("SELECT"):
            seen["polls"] += 1
            if seen["polls"] == 6:
                os.kill(os.getpid(), signal.SIGINT)  # handled at the next bytecode: still inside SQLAlchemy

    engine = get_engine()
    event.listen(engine, "before_cursor_execute", ctrl_c_inside_a_read)
    try:
        code = main(["serve-model", "base", "--port", "0"])
    finally:
        event.remove(engine, "before_cursor_execute", ctrl_c_inside_a_read)
        cancel(session, eng, busy.id)
        wait_for(session, busy.id)
    assert seen["polls"] >= 6 and code == 0
    serving = session.exec(select(Job).where(Job.kind == "serve")).one()
    session.refresh(serving)
    assert serving.status == "canceled"  # stopped, not left queued to start later with nobody to stop it
