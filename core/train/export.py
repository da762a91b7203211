"""A training run's model as files other tools load: the adapter folder and the merged model folder.

These are the training stage's pieces of an export; the export job that runs them (with the Ollama and vLLM
recipes, GGUF, the parity check and the model card) is core.ship.deploy. Both folders are written under a
temporary name and renamed into place, so a failed export leaves nothing half-written.

- The adapter folder holds what ``PeftModel.from_pretrained(base, folder)`` (or transformers'
  ``model.load_adapter``) needs: the adapter, the tokenizer with its chat template and the base model's
  generation config, so decoding defaults travel with it.
- The merged folder is a standalone model (the adapter merged into the base weights, with the tokenizer and chat
  template) that ``AutoModelForCausalLM.from_pretrained`` loads without peft; a full fine-tuned run exports its
  own saved model.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from core.basemodel import EMBEDDED, is_embedded, load_model, resolve_model_path
from core.errors import InvalidInput, NotFound
from core.jobs import rundir
from core.train.config import TrainConfig

EMBEDDED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # what the embedded GGUF was made from
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json",
                   "tokenizer.model", "vocab.json", "merges.txt", "added_tokens.json")


def hub_id(base_model: str | None) -> str | None:
    """The base model's Hugging Face Hub id, which another machine resolves: the embedded model's origin, a hub id
    as given, a folder of the Hugging Face cache by its repository (``models--org--name/snapshots/...``); None
    for any other local folder (it has no name outside this machine)."""
    name = (base_model or EMBEDDED).strip()
    if is_embedded(name):
        return EMBEDDED_HUB_ID
    path = Path(name).expanduser()
    if not path.is_dir():
        parts = name.split("/")
        return name if len(parts) == 2 and all(parts) and not name.startswith((".", "~")) else None
    for part in reversed(path.resolve().parts):
        if part.startswith("models--"):
            return part[len("models--"):].replace("--", "/")
    return None


def base_label(base_model: str | None) -> str:
    """How a card names the base model: its hub id, else the local folder's name (never a workspace path)."""
    return hub_id(base_model) or Path(str(base_model).rstrip("/")).name


def portable_base(base_model: str | None) -> tuple[str, str]:
    """(``base_model_name_or_path`` for adapter_config.json, a note): the hub id where one exists, else this
    machine's folder, with a note saying the adapter needs that folder (or the same model under its own name)."""
    found = hub_id(base_model)
    if found:
        note = (" (the embedded model is that model's Q4_1 GGUF, converted: the adapter was trained on those "
                "weights)") if is_embedded(base_model) else ""
        return found, f"adapter_config.json names the base model {found}{note}."
    path = Path(str(base_model)).expanduser()
    local = str(path.resolve()) if path.is_dir() else str(base_model)
    return local, (f"The base model is a local folder with no Hub name, so adapter_config.json names its path on "
                   f"this machine ({local}); on another machine, copy that folder or set base_model_name_or_path.")


def check_target(out: Path) -> None:
    """Refuse a folder that exists and is not empty: an export never overwrites."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InvalidInput(f"{out} is not empty; choose a new folder.")


def run_config(run_dir: str | Path) -> TrainConfig:
    """The TrainConfig in a run folder's config.json, or InvalidInput naming what is wrong with the file."""
    path = Path(run_dir) / rundir.CONFIG
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidInput(f"{path} is missing: the run folder is incomplete, so its base model is unknown.") from None
    except (OSError, UnicodeDecodeError) as err:
        raise InvalidInput(f"Cannot read {path}: {getattr(err, 'strerror', None) or err}.") from None
    try:
        data = json.loads(text)
    except ValueError as err:
        where = f" at line {err.lineno}, column {err.colno}" if isinstance(err, json.JSONDecodeError) else ""
        raise InvalidInput(f"{path} is not valid JSON ({getattr(err, 'msg', err)}{where}): the run folder is "
                           "damaged. Restore the file; `finetune-studio runs show` prints the run's "
                           "settings.") from None
    if not isinstance(data, dict):
        raise InvalidInput(f"{path} does not hold a run's settings (a JSON object).")
    return TrainConfig.from_dict(data)


def has_adapter(run_dir: str | Path) -> bool:
    """Whether a run folder holds a LoRA adapter (a full fine-tuned run holds its own model instead)."""
    return (Path(run_dir) / rundir.ADAPTER_FILES[0]).exists()


def load_finetuned(run_dir: str | Path, dtype=None, merge: bool = False):
    """(model, tokenizer) of a finished run: the base model with the run's adapter (merged when ``merge``),
    or the full fine-tuned model."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run_dir = Path(run_dir)
    full = run_dir / rundir.FULL_MODEL_DIR
    if (full / "config.json").exists():
        return (AutoModelForCausalLM.from_pretrained(full, dtype=dtype or torch.float32),
                AutoTokenizer.from_pretrained(full))
    if not has_adapter(run_dir):
        raise NotFound(f"{run_dir} holds no adapter yet (the run did not save one).")
    from peft import PeftModel

    cfg = run_config(run_dir)
    model = PeftModel.from_pretrained(load_model(cfg.base_model, dtype=dtype or torch.float32), run_dir)
    if merge:
        model = model.merge_and_unload()
    return model, AutoTokenizer.from_pretrained(run_dir)


def _into_place(tmp: Path, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        out.rmdir()
    os.replace(tmp, out)
    return out


def _temporary(out: Path) -> Path:
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def merge_to_folder(run_dir: str | Path, out: str | Path, on_step=lambda step: None) -> Path:
    """Merge a run's adapter into its base (or take the full model) and save it with its tokenizer to ``out``.
    ``on_step(name)`` is called before each step ("load", "merge", "save")."""
    out = Path(out)
    check_target(out)
    on_step("load")
    model, tokenizer = load_finetuned(run_dir, merge=False)
    on_step("merge")
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    on_step("save")
    tmp = _temporary(out)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    return _into_place(tmp, out)


def save_adapter_folder(run_dir: str | Path, out: str | Path) -> Path:
    """Copy a LoRA run's adapter with its tokenizer and chat template, and write the base model's generation
    config beside them, into ``out``."""
    from transformers import GenerationConfig

    run_dir, out = Path(run_dir), Path(out)
    if not has_adapter(run_dir):
        raise InvalidInput(f"Run folder {run_dir} holds no adapter (a full fine-tuned run exports as a merged "
                           "model folder).")
    check_target(out)
    tmp = _temporary(out)
    for name in rundir.ADAPTER_FILES + TOKENIZER_FILES:
        if (run_dir / name).is_file():
            shutil.copy2(run_dir / name, tmp / name)
    base_model = run_config(run_dir).base_model
    _name_base(tmp / rundir.ADAPTER_FILES[0], base_model)
    base = resolve_model_path(base_model)
    try:
        generation = GenerationConfig.from_pretrained(base)
    except OSError:  # a base without generation_config.json: its model config's defaults
        generation = GenerationConfig.from_model_config(load_model_config(base))
    generation.save_pretrained(tmp)
    return _into_place(tmp, out)


def _name_base(adapter_config: Path, base_model: str | None) -> None:
    """Write into adapter_config.json a base model another machine resolves (peft wrote the folder it loaded)."""
    data = json.loads(adapter_config.read_text(encoding="utf-8"))
    data["base_model_name_or_path"] = portable_base(base_model)[0]
    adapter_config.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def load_model_config(path):
    """A model folder's config (transformers' AutoConfig), for a base that ships no generation config."""
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(path)
