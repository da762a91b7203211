"""The run folder's layout, shared by every job kind, and the readers of what a worker writes there.

``<workspace>/runs/<id>-<slug>/`` holds config.json (written at submit), result.json (written by the worker
when it ends), the process's log, JSONL files the worker appends (metrics.jsonl for training, progress.jsonl
for generation) and the kind's own artifacts (checkpoints/, tb/, the adapter or model/)."""
from __future__ import annotations

import json
import os
from pathlib import Path

CONFIG = "config.json"
RESULT = "result.json"
METRICS = "metrics.jsonl"
PROGRESS = "progress.jsonl"
CHECKPOINTS = "checkpoints"
TB_DIR = "tb"
FULL_MODEL_DIR = "model"  # full fine-tuning saves the whole model here
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
COMPLETE_MARKER = ".complete"  # written into a checkpoint folder after the Trainer finished saving it
DEFAULT_LOG = "job.log"
LOG_NAMES = {"train": "train.log"}  # a kind's log file, when not DEFAULT_LOG
LOG_TAIL_LINES = 30


def log_name(kind: str) -> str:
    """The log file name of a job of ``kind``."""
    return LOG_NAMES.get(kind, DEFAULT_LOG)


def read_jsonl(path: str | Path) -> list[dict]:
    """Every complete line of a JSONL file the worker appends ([] when missing); a line being written right
    now (incomplete JSON) is skipped."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    with open(path, "rb") as fh:
        for line in fh:
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
    return rows


def last_jsonl(path: str | Path) -> dict:
    """The last complete line of a JSONL file, or {}."""
    rows = read_jsonl(path)
    return rows[-1] if rows else {}


def log_tail(path: str | Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a log file ("" when there is none); progress bars that redraw with carriage
    returns keep only their final state."""
    path = Path(path)
    if not path.is_file():
        return ""
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - 64 * 1024))
        text = fh.read().decode("utf-8", "replace")
    cleaned = [line.split("\r")[-1] for line in text.splitlines()]
    return "\n".join(cleaned[-lines:])


def has_model(run_dir: str | Path) -> bool:
    """Whether a training run folder holds a saved adapter or a full fine-tuned model."""
    run_dir = Path(run_dir)
    return (run_dir / ADAPTER_FILES[0]).exists() or (run_dir / FULL_MODEL_DIR / "config.json").exists()


def checkpoint_step(ckpt: Path) -> int:
    return int(ckpt.name.split("-")[-1])


def last_complete_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest checkpoint that finished saving (trainer_state.json and our marker present); a checkpoint
    cut off mid-save is skipped, never loaded."""
    folder = Path(run_dir) / CHECKPOINTS
    if not folder.is_dir():
        return None
    found = []
    for ckpt in folder.glob("checkpoint-*"):
        try:
            step = checkpoint_step(ckpt)
        except ValueError:
            continue
        if (ckpt / "trainer_state.json").exists() and (ckpt / COMPLETE_MARKER).exists():
            found.append((step, ckpt))
    return max(found)[1] if found else None
