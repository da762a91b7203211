"""Scratch folders a job writes outside its run folder (an export's hidden staging folder beside its target).

The worker names each one in its run folder (``scratch.txt``) before it writes there; when the job ends its own
way it removes them itself, and when its process dies (killed, out of memory, power cut) ``reconcile`` marks the
job failed and removes them with ``clean``: a dead export must not leave half a model (hundreds of MB) hidden on
disk until someone exports to the same place again.
"""
from __future__ import annotations

import shutil
from pathlib import Path

SCRATCH = "scratch.txt"


def register(run_dir: str | Path, folder: str | Path) -> None:
    """Record ``folder`` as scratch of the job whose run folder is ``run_dir`` (before writing into it)."""
    with open(Path(run_dir) / SCRATCH, "a", encoding="utf-8", errors="surrogateescape") as fh:
        fh.write(str(Path(folder).resolve()) + "\n")


def clean(run_dir: str | Path | None) -> list[str]:
    """Remove every scratch folder the job recorded; returns the ones removed. A folder that became a real
    export meanwhile (renamed into place) no longer exists under its scratch name, so nothing shipped is removed."""
    if not run_dir:
        return []
    listing = Path(run_dir) / SCRATCH
    if not listing.is_file():
        return []
    removed = []
    for line in listing.read_text(encoding="utf-8", errors="surrogateescape").splitlines():
        folder = Path(line.strip())
        if line.strip() and folder.is_dir() and not folder.is_symlink():
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(str(folder))
    listing.unlink(missing_ok=True)
    return removed
