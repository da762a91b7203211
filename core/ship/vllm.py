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


def command_line(argv: list) -> str:
    """``argv`` as one shell command line that ``shlex.split`` (and every POSIX shell) turns back into exactly
    ``argv``: every value is quoted for the shell (shlex.join), whatever quotes, spaces or line breaks a path or a
    name holds. The one way a vLLM command is written."""
    return shlex.join(str(a) for a in argv)


def adapter_argv(base: str | Path, name: str, adapter: str | Path, lora_r: int,
                 chat_template: str | Path | None = None) -> list[str]:
    """``vllm serve BASE --enable-lora --lora-modules NAME=PATH --max-lora-rank R`` (+ ``--chat-template`` when the
    adapter's template is not its base's)."""
    argv = ["vllm", "serve", str(base), "--enable-lora", "--lora-modules", f"{name}={adapter}",
            "--max-lora-rank", str(max_lora_rank(lora_r))]
    return argv + (["--chat-template", str(chat_template)] if chat_template else [])


def adapter_command(base: str | Path, name: str, adapter: str | Path, lora_r: int,
                    chat_template: str | Path | None = None) -> str:
    return command_line(adapter_argv(base, name, adapter, lora_r, chat_template))


def merged_command(folder: str | Path, name: str) -> str:
    """``vllm serve MERGED --served-model-name NAME``: the merged folder is a plain model to vLLM."""
    return command_line(["vllm", "serve", str(folder), "--served-model-name", name])
