"""The embedded base model and model names: local folders, offline hub ids, the converted cache."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from core.basemodel import EMBEDDED, check_model_name, resolve_model_path
from core.errors import InvalidInput, NotFound

# The de-quantized embedded model, kept across test sessions so the suite pays the conversion once.
TEST_CACHE = Path(os.environ.get("FINETUNE_STUDIO_TEST_CACHE", Path.home() / ".cache" / "finetune-studio-tests"))


def test_local_folder_resolves_to_itself(tiny_model):
    assert resolve_model_path(str(tiny_model)) == tiny_model.resolve()


def test_missing_folder_and_offline_hub_id_are_refused(tmp_path, monkeypatch):
    monkeypatch.delenv("FINETUNE_STUDIO_ONLINE", raising=False)
    with pytest.raises(NotFound, match="No model folder"):
        resolve_model_path(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInput, match="no config.json"):
        resolve_model_path(str(tmp_path / "empty"))
    with pytest.raises(InvalidInput, match="FINETUNE_STUDIO_ONLINE=1"):
        check_model_name("HuggingFaceTB/SmolLM2-360M-Instruct")
    monkeypatch.setenv("FINETUNE_STUDIO_ONLINE", "1")
    assert resolve_model_path("HuggingFaceTB/SmolLM2-360M-Instruct") == "HuggingFaceTB/SmolLM2-360M-Instruct"


def test_embedded_tokenizer_carries_the_chat_template(tiny_model):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)  # saved from core.basemodel.load_tokenizer()
    text = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False,
                                         add_generation_prompt=True)
    assert "<|im_start|>user\nHi<|im_end|>" in text and text.endswith("<|im_start|>assistant\n")
    assert tokenizer.pad_token is not None


@pytest.mark.slow
def test_embedded_model_is_converted_once_and_loads_offline(monkeypatch):
    import torch

    from core import basemodel

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(basemodel, "models_dir", lambda: TEST_CACHE)
    folder = basemodel.ensure_embedded()  # converts the GGUF on the first session only
    assert folder == TEST_CACHE / "SmolLM2-135M-Instruct"
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config
    assert list(folder.glob("*.safetensors")) and (folder / basemodel.COMPLETE_MARKER).exists()
    assert not list(TEST_CACHE.glob(".SmolLM2-135M-Instruct-*"))  # no temporary folder left behind

    t0 = time.perf_counter()
    model = basemodel.load_model(EMBEDDED)
    tokenizer = basemodel.load_tokenizer(EMBEDDED)
    print(f"cached load: {time.perf_counter() - t0:.1f} s")
    assert sum(p.numel() for p in model.parameters()) > 130_000_000
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                        add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=8, do_sample=False)
    answer = tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer  # real weights, not random ones
