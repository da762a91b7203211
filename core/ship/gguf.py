"""GGUF, for llama.cpp and Ollama: converted from the merged folder by llama.cpp's own converter when this machine
has it. It is not on PyPI as a tool, so it is looked for where a llama.cpp checkout puts it; without it the export
says what to install instead of leaving the format out silently."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from core.errors import StudioError

SCRIPT = "convert_hf_to_gguf.py"
INSTALL = ("GGUF needs llama.cpp's converter, which is not installed on this machine. Install it with "
           "`git clone https://github.com/ggml-org/llama.cpp` and "
           "`pip install -r llama.cpp/requirements/requirements-convert_hf_to_gguf.txt`, set "
           "LLAMA_CPP_DIR to the llama.cpp folder (or put convert_hf_to_gguf.py on the PATH), then export again.")
TIMEOUT_S = 3600


def find_converter() -> Path | None:
    """llama.cpp's convert_hf_to_gguf.py: in $LLAMA_CPP_DIR, else on the PATH; None when absent."""
    folder = os.environ.get("LLAMA_CPP_DIR")
    if folder and (Path(folder).expanduser() / SCRIPT).is_file():
        return Path(folder).expanduser() / SCRIPT
    found = shutil.which(SCRIPT)
    return Path(found) if found else None


def convert(merged: str | Path, out_file: str | Path, outtype: str = "f16") -> Path:
    """Run the converter on a merged model folder (its own process; its output goes to this job's log)."""
    script = find_converter()
    if script is None:
        raise StudioError(INSTALL)
    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, str(script), str(merged), "--outfile", str(out_file), "--outtype", outtype]
    print("gguf: " + " ".join(argv), flush=True)
    done = subprocess.run(argv, stdin=subprocess.DEVNULL, timeout=TIMEOUT_S)
    if done.returncode != 0 or not out_file.is_file():
        raise StudioError(f"llama.cpp's converter failed (exit {done.returncode}); see the export's log.")
    return out_file
