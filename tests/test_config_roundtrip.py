"""Configs that round-trip: a run's config.json re-runs it exactly (`train --config`), `--set` is parsed from
TrainConfig's own fields (transformers' HfArgumentParser) and refuses what it cannot take in one line, a base
model without a chat template is refused before anything is queued, and the memory estimate counts the
parameters of the model itself (built on the meta device), whatever its shape."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fixtures_models import make_dataset_version, tiny_model_fixture  # noqa: F401 (the tiny_model fixture)
from tests.helpers import cli, wait_for

pytestmark = pytest.mark.timeout(900)


def _one_line_error(out) -> str:
    assert out.returncode == 1, (out.stdout, out.stderr)
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    return lines[0]


def _runs(ws) -> list:
    return json.loads(cli(ws, "runs", "--json").stdout)


@pytest.mark.slow
def test_set_refuses_what_it_cannot_take_in_one_line(session, users, project, workspace):
    version = make_dataset_version(session, project, users["engineer"], n_train=2, n_validation=1, name="v1")
    # A run's own key that --version also gives: before, a TypeError traceback ("multiple values").
    both = _one_line_error(cli(workspace, "train", "--version", "v1", "--set", f"dataset_version_id={version.id + 7}"))
    assert "--version" in both and "dataset_version_id" in both
    unknown = _one_line_error(cli(workspace, "train", "--version", "v1", "--set", "lora_rank=8"))
    assert "lora_rank" in unknown and "lora_r" in unknown  # names the setting and the one it resembles
    bad = _one_line_error(cli(workspace, "train", "--version", "v1", "--set", "lora_r=big"))
    assert "lora_r" in bad and "big" in bad
    resumed = _one_line_error(cli(workspace, "train", "--version", "v1", "--set", "resume_from=/tmp/x"))
    assert "runs resume" in resumed
    (workspace / "edited.json").write_text(json.dumps({"dataset_version_id": version.id, "lora_r": "sixteen"}))
    edited = _one_line_error(cli(workspace, "train", "--config", str(workspace / "edited.json")))
    assert "lora_r" in edited and "sixteen" in edited
    missing = _one_line_error(cli(workspace, "train", "--config", str(workspace / "nope.json")))
    assert "nope.json" in missing
    assert _runs(workspace) == []  # nothing was queued


@pytest.mark.slow
def test_a_base_model_without_chat_template_is_refused_at_launch(session, users, project, workspace, tiny_model,
                                                                tmp_path):
    import shutil

    from transformers import AutoTokenizer

    plain = tmp_path / "no-template"
    shutil.copytree(tiny_model, plain)
    (plain / "chat_template.jinja").unlink(missing_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(plain)
    tokenizer.chat_template = None
    tokenizer.save_pretrained(plain)
    assert not AutoTokenizer.from_pretrained(plain).chat_template
    version = make_dataset_version(session, project, users["engineer"], n_train=2, n_validation=1, name="v1")

    refused = _one_line_error(cli(workspace, "train", "--version", "v1", "--base-model", str(plain),
                                  "--set", "max_steps=1"))
    assert "no chat template" in refused and "instruct" in refused and "chat_template.jinja" in refused
    assert _runs(workspace) == []  # refused before queueing, not failed 30 s later

    from core.errors import InvalidInput
    from core.train.config import preset_config
    from core.train.runs import launch
    from tests.helpers import page

    with pytest.raises(InvalidInput, match="no chat template"):  # the Train form launches through the same call
        launch(session, users["engineer"], project.id, preset_config("quick", dataset_version_id=version.id,
                                                                     base_model=str(plain), max_steps=1))
    at = page("train.py", users["engineer"]).run()  # and the form says so as soon as the folder is given
    at.radio(key="source").set_value("Local model folder").run()
    at.text_input(key="model_path").input(str(plain)).run()
    assert any("no chat template" in w.value for w in at.warning)
    assert next(b for b in at.button if b.label == "Train").disabled


def _real_count(config) -> int:
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


@pytest.mark.slow  # loads the embedded model: 25 s on 2 busy cores
def test_memory_estimate_counts_the_parameters_of_the_model_itself(tiny_model):
    from transformers import AutoModelForCausalLM, Gemma3TextConfig, GPT2Config

    from core.basemodel import load_config, load_model
    from core.train.hardware import estimate_peak_memory, param_counts

    embedded = load_model()
    assert param_counts(load_config())["total"] == sum(p.numel() for p in embedded.parameters())
    del embedded
    gemma = Gemma3TextConfig(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                             num_key_value_heads=1, head_dim=32, vocab_size=1000)
    gpt2 = GPT2Config(n_embd=64, n_layer=2, n_head=4, vocab_size=1000, n_positions=128)
    for config in (gemma, gpt2):
        assert param_counts(config)["total"] == _real_count(config), type(config).__name__

    # The LoRA parameters are what PEFT itself adds on every linear layer (GPT-2's are Conv1D).
    from peft import LoraConfig, get_peft_model

    for config in (gemma, gpt2, AutoModelForCausalLM.from_pretrained(tiny_model).config):
        model = get_peft_model(AutoModelForCausalLM.from_config(config),
                               LoraConfig(r=8, target_modules="all-linear", task_type="CAUSAL_LM"))
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        assert estimate_peak_memory(config, "lora", 1, 64, lora_r=8)["trainable_params"] == trainable


@pytest.mark.slow
def test_a_run_re_runs_from_its_config_json_to_the_same_adapter(session, users, project, workspace):
    from safetensors.torch import load_file

    make_dataset_version(session, project, users["engineer"], n_train=4, n_validation=1, name="v1")
    first = cli(workspace, "train", "--version", "v1", "--set", "max_steps=2", "--set", "max_length=96",
                "--set", "per_device_batch_size=2", "--set", "lora_r=4", "--json")
    assert first.returncode == 0, first.stderr
    run = wait_for(session, json.loads(first.stdout)["id"], timeout=800)
    assert run.status == "succeeded", run.error
    run_dir = Path(run.run_dir)
    again = cli(workspace, "train", "--config", str(run_dir / "config.json"), "--json")
    assert again.returncode == 0, again.stderr
    rerun = wait_for(session, json.loads(again.stdout)["id"], timeout=800)
    assert rerun.status == "succeeded", rerun.error
    rerun_dir = Path(rerun.run_dir)
    assert rerun_dir != run_dir
    assert json.loads((rerun_dir / "config.json").read_text()) == json.loads((run_dir / "config.json").read_text())
    before, after = (load_file(d / "adapter_model.safetensors") for d in (run_dir, rerun_dir))
    assert before.keys() == after.keys() and before
    for name, tensor in before.items():
        assert tensor.equal(after[name]), name
