"""Small real models and data for tests: a tiny random Llama with the embedded tokenizer, dataset versions.

Load as a pytest plugin (``pytest_plugins = ["tests.fixtures_models"]`` in tests/conftest.py) to get the
session-scoped fixture ``tiny_model`` (path of the model folder), or call ``tiny_model_dir(tmp_path_factory)``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

_CACHE: dict[str, Path] = {}


def build_tiny_model(out: Path, seed: int = 0) -> Path:
    """A randomly initialised 2-layer Llama (hidden 64) with the real embedded tokenizer and chat template."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from core.basemodel import load_tokenizer

    tokenizer = load_tokenizer()
    config = LlamaConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         intermediate_size=128, vocab_size=len(tokenizer), max_position_embeddings=1024,
                         tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


def tiny_model_dir(tmp_path_factory) -> Path:
    """The tiny model folder, built once per test session."""
    if "tiny" not in _CACHE:
        _CACHE["tiny"] = build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))
    return _CACHE["tiny"]


@pytest.fixture(scope="session", name="tiny_model")
def tiny_model_fixture(tmp_path_factory) -> Path:
    """Path of a tiny random Llama folder with the embedded tokenizer (built once per session)."""
    return tiny_model_dir(tmp_path_factory)


DEMO_FILE = Path(__file__).resolve().parents[1] / "core" / "curate" / "data" / "demo_utility.jsonl"


def make_dataset_version(session, project, user, n_train: int = 8, n_validation: int = 2, name: str = "v1"):
    """A frozen dataset version made directly in the database from the demo conversations (tests only)."""
    from storage.models import DatasetVersion, DatasetVersionItem, Example

    lines = [json.loads(ln) for ln in DEMO_FILE.read_text(encoding="utf-8").splitlines() if ln.strip()]
    # Single-turn conversations only: tests train at short max lengths, where a long multi-turn prompt would cut
    # the answer away (TRL then drops the example and a one-example validation split would be empty).
    lines = [r for r in lines if sum(m["role"] != "system" for m in r["messages"]) == 2]
    version = DatasetVersion(project_id=project.id, name=name, content_hash=f"test-{name}", n_train=n_train,
                             n_validation=n_validation, created_by=user.id)
    session.add(version)
    session.commit()
    session.refresh(version)
    for i in range(n_train + n_validation):
        msgs = lines[i % len(lines)]["messages"]
        system = msgs[0]["content"] if msgs[0]["role"] == "system" else ""
        turns = [m for m in msgs if m["role"] != "system"]
        example = Example(project_id=project.id, system=system, turns=turns, status="approved", created_by=user.id)
        session.add(example)
        session.commit()
        session.add(DatasetVersionItem(version_id=version.id, example_id=example.id,
                                       split="train" if i < n_train else "validation", system=system, turns=turns))
    session.commit()
    return version


def random_adapter(base_path: str, folder: Path, seed: int) -> Path:
    """A LoRA adapter with random (non-zero) weights, saved like a finished training run."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_path)
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=64, target_modules=["q_proj", "v_proj", "o_proj"],
                                            init_lora_weights=False))
    folder.mkdir(parents=True, exist_ok=True)
    peft.save_pretrained(folder)
    (folder / "config.json").write_text(json.dumps({"base_model": base_path}))
    return folder


EMBEDDED_CACHE = Path(os.environ.get("FINETUNE_STUDIO_TEST_CACHE", Path.home() / ".cache" / "finetune-studio-tests"))


@pytest.fixture(scope="session")
def embedded_model() -> Path:
    """The real embedded model (SmolLM2-135M-Instruct) as a folder, converted from its GGUF once per machine into
    the tests' cache (the same folder test_basemodel checks)."""
    from core.basemodel import ensure_embedded

    return ensure_embedded(EMBEDDED_CACHE)
