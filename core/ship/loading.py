"""Load a system for generation, the way a user of the artifact loads it. Imports torch only inside functions.

- a base model: core.basemodel (the embedded model's converted folder, a local folder, or a hub id when online);
- a run's adapter: the base model, then ``model.load_adapter(folder)``: transformers' own PEFT integration, the
  path a user takes with an adapter folder and nothing but transformers and peft installed;
- a standalone folder (a full fine-tuned run, a merged export): ``AutoModelForCausalLM.from_pretrained`` without
  peft.
"""
from __future__ import annotations

from core.basemodel import load_model, load_tokenizer
from core.ship.systems import Servable


def pick_device(device: str | None = None) -> str:
    """"cuda" when a GPU is there (or asked for), else "cpu"."""
    import torch

    if device:
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def tokenizer_of(system: Servable):
    """The tokenizer (with its chat template and a pad token) that ships with ``system``."""
    from transformers import AutoTokenizer

    folder = system.model_dir or system.adapter_dir
    tokenizer = AutoTokenizer.from_pretrained(folder) if folder else load_tokenizer(system.base_model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def model_of(system: Servable, *, device: str | None = None, dtype=None):
    """The model of ``system`` in eval mode on ``device`` (default: a GPU when there is one) in ``dtype``
    (default bfloat16 on a GPU, float32 on a CPU, as the generation job)."""
    import torch
    from transformers import AutoModelForCausalLM

    device = pick_device(device)
    dtype = dtype or (torch.bfloat16 if device.startswith("cuda") else torch.float32)
    if system.model_dir:
        model = AutoModelForCausalLM.from_pretrained(system.model_dir, dtype=dtype)
    else:
        model = load_model(system.base_model, dtype=dtype)
        if system.adapter_dir:
            model.load_adapter(system.adapter_dir)
    model.to(device)  # type: ignore[arg-type]  # transformers types .to() for its own modules only
    model.eval()
    return model


def load_servable(system: Servable, *, device: str | None = None, dtype=None):
    """(model, tokenizer) of ``system``."""
    return model_of(system, device=device, dtype=dtype), tokenizer_of(system)
