"""vLLM: the exact ``vllm serve`` commands for an export, the adapter on its base and the merged folder.

vLLM loads LoRA adapters on a base model at serve time (``--enable-lora``) and must be told the largest rank it
will see (``--max-lora-rank``, one of a fixed set of sizes). It applies the base model's chat template unless told
otherwise, so when the run's template differs from its base's the command passes the run's own.
"""
from __future__ import annotations

import shlex
from pathlib import Path

# vLLM's accepted --max-lora-rank values (vllm/config/lora.py MaxLoRARanks).
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def max_lora_rank(r: int) -> int:
    """The smallest rank vLLM accepts that holds an adapter of rank ``r``."""
    return next((k for k in LORA_RANKS if k >= int(r)), int(r))


def _q(value: str | Path) -> str:
    return shlex.quote(str(value))


def adapter_command(base: str | Path, name: str, adapter: str | Path, lora_r: int,
                    chat_template: str | Path | None = None) -> str:
    """``vllm serve BASE --enable-lora --lora-modules NAME=PATH --max-lora-rank R`` (+ ``--chat-template`` when the
    adapter's template is not its base's)."""
    cmd = (f"vllm serve {_q(base)} --enable-lora --lora-modules {_q(f'{name}={adapter}')} "
           f"--max-lora-rank {max_lora_rank(lora_r)}")
    return cmd + (f" --chat-template {_q(chat_template)}" if chat_template else "")


def merged_command(folder: str | Path, name: str) -> str:
    """``vllm serve MERGED --served-model-name NAME``: the merged folder is a plain model to vLLM."""
    return f"vllm serve {_q(folder)} --served-model-name {_q(name)}"
