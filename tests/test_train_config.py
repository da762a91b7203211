"""The one TrainConfig: every shipped preset validates, bad values are refused clearly, JSON round-trips."""
from __future__ import annotations

import json
from dataclasses import fields

import pytest

from core.errors import InvalidInput
from core.train.config import PRESETS, TrainConfig, auto_max_length, field_docs, preset_config
from core.train.settings import parse_set


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_validates(name):
    cfg = preset_config(name, dataset_version_id=1)
    assert cfg.preset == name
    assert TrainConfig.from_json(cfg.to_json()) == cfg


def test_quick_is_the_first_preset_and_fits_a_laptop():
    assert list(PRESETS)[0] == "quick"
    quick = preset_config("quick")
    assert quick.method == "lora" and quick.max_length == 256 and quick.num_epochs <= 3
    assert quick.precision == "auto"  # fp32 on a CPU, never TRL's bf16 default


def test_defaults_follow_the_usual_rules():
    lora, full = TrainConfig(), TrainConfig(method="full")
    assert (lora.lora_r, lora.effective_alpha, lora.lora_dropout, lora.target_modules) == (16, 32, 0.05, "all-linear")
    assert lora.effective_lr == 2e-4 and full.effective_lr == 2e-5 and lora.num_epochs == 3
    assert TrainConfig(lora_r=8).effective_alpha == 16
    assert TrainConfig(target_modules="q_proj, v_proj").target_modules_value() == ["q_proj", "v_proj"]


def test_every_field_is_documented():
    docs = field_docs()
    assert set(docs) == {f.name for f in fields(TrainConfig)}
    assert all(len(text) > 10 for text in docs.values())


@pytest.mark.parametrize("bad, words", [
    ({"method": "ppo"}, "method must be one of"),
    ({"method": "dpo"}, "method dpo needs a preference version"),
    ({"method": "dpo", "preference_version_id": 1, "dpo_beta": 0.0}, "dpo_beta must be above 0"),
    ({"method": "dpo", "preference_version_id": 1, "dpo_loss_type": "kto"}, "dpo_loss_type must be one of sigmoid"),
    ({"method": "dpo", "preference_version_id": 1, "init_from_run": -2}, "init_from_run must be 0 or an id"),
    ({"method": "lora", "preference_version_id": 3}, "for method dpo only"),
    ({"lora_r": 0}, "lora_r"),
    ({"learning_rate": 5.0}, "learning_rate"),
    ({"per_device_batch_size": 0}, "per_device_batch_size"),
    ({"max_length": 8}, "max_length"),
    ({"precision": "int8"}, "precision"),
    ({"max_steps": 0}, "max_steps"),
    ({"lora_dropout": 1.0}, "lora_dropout"),
    ({"max_train_examples": -1}, "max_train_examples"),
    ({"max_validation_examples": -5}, "max_validation_examples"),
])
def test_bad_values_are_refused_with_the_field_named(bad, words):
    with pytest.raises(InvalidInput, match=words):
        TrainConfig(**bad)


def test_unknown_settings_are_refused():
    with pytest.raises(InvalidInput, match="Unknown training setting"):
        TrainConfig.from_dict({"lora_rank": 8})
    with pytest.raises(InvalidInput, match="Unknown preset"):
        preset_config("fastest")


def test_cli_set_values_are_typed():
    assert parse_set(["lora_r=8", "learning_rate=1e-4", "gradient_checkpointing=on", "max_length=auto",
                      "packing=off"]) == {"lora_r": 8, "learning_rate": 1e-4, "gradient_checkpointing": True,
                                         "max_length": None, "packing": "off"}
    with pytest.raises(InvalidInput, match="lora_r: invalid int value: .big."):
        parse_set(["lora_r=big"])
    with pytest.raises(InvalidInput, match="key=value"):
        parse_set(["lora_r"])


def test_auto_max_length_uses_the_95th_percentile():
    lengths = list(range(100, 200)) + [5000]
    assert auto_max_length(lengths, cap=4096) == 256  # p95 = 195 -> next multiple of 64; the outlier is cut
    assert auto_max_length(lengths, cap=128) == 128
    assert auto_max_length([], cap=1024) == 512


def test_memory_estimate_orders_methods_and_counts_parameters_from_the_config():
    from transformers import LlamaConfig, LlamaForCausalLM

    from core.train.hardware import estimate_peak_memory, param_counts

    config = LlamaConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         intermediate_size=128, vocab_size=1000, tie_word_embeddings=True)
    assert param_counts(config)["total"] == sum(p.numel() for p in LlamaForCausalLM(config).parameters())
    big = LlamaConfig(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                      num_key_value_heads=8, vocab_size=128256)
    peak = {m: estimate_peak_memory(big, m, 1, 1024, True, "bf16")["peak_mb"] for m in ("qlora", "lora", "full")}
    assert peak["qlora"] < peak["lora"] < peak["full"]
    assert 4_000 < peak["qlora"] < 16_000 and peak["full"] > 100_000  # an 8B model: ~5 GB in 4 bit, >100 GB full
    no_ckpt = estimate_peak_memory(big, "lora", 1, 1024, False, "bf16")
    assert no_ckpt["activations_mb"] > estimate_peak_memory(big, "lora", 1, 1024, True, "bf16")["activations_mb"]


def test_a_config_file_takes_a_json_list_for_a_comma_list_field_and_refuses_other_wrong_types(tmp_path):
    from core.train.settings import config_file_settings

    def settings(**values):
        path = tmp_path / "config.json"
        path.write_text(json.dumps(values))
        return config_file_settings(path)

    typed = settings(target_modules=["q_proj", "v_proj"], exclude_example_ids=[3, 4], lora_r=8, lora_dropout=0)
    assert typed == {"target_modules": "q_proj,v_proj", "exclude_example_ids": [3, 4], "lora_r": 8, "lora_dropout": 0}
    assert TrainConfig(**typed).target_modules_value() == ["q_proj", "v_proj"]
    for key, value, words in (("method", ["lora"], "method must be a string, not a list"),
                              ("target_modules", [1, 2], "target_modules must be a string or a list of strings"),
                              ("packing", True, "packing must be a string, not true"),
                              ("lora_r", [8], "lora_r must be a whole number, not a list"),
                              ("lora_dropout", True, "lora_dropout must be a number, not true"),
                              ("gradient_checkpointing", "maybe", "gradient_checkpointing"),
                              ("exclude_example_ids", {"3": 1}, "exclude_example_ids must be a list")):
        with pytest.raises(InvalidInput, match=words) as refused:
            settings(**{key: value})
        assert "\n" not in str(refused.value), str(refused.value)


def test_target_modules_given_as_a_list_of_names_is_the_comma_list_it_means():
    cfg = TrainConfig(target_modules=["q_proj", " v_proj"])
    assert cfg.target_modules == "q_proj,v_proj" and cfg.target_modules_value() == ["q_proj", "v_proj"]
    assert TrainConfig.from_json(cfg.to_json()) == cfg
    for bad in (5, ["q_proj", 3], {"q_proj": 1}):
        with pytest.raises(InvalidInput, match="target_modules must be"):
            TrainConfig(target_modules=bad)
