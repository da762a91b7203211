"""Developer tool: regenerate a migration from the tables in storage/models/.

    python -m storage.autogen 0002_curation_training_evaluation "curation, training and evaluation tables"

Upgrades a scratch SQLite database to the revision before ``REV_ID`` (deleting an older file of that
id first), then lets Alembic autogenerate ``REV_ID`` from the difference with the models.
"""
import sys
import tempfile
from pathlib import Path

from alembic import command

from storage.db import MIGRATIONS_DIR, _alembic_config


def main(rev_id: str, message: str) -> None:
    versions = MIGRATIONS_DIR / "versions"
    for old in versions.glob(f"{rev_id}*.py"):
        old.unlink()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'scratch.db'}"
        cfg = _alembic_config(url)
        command.upgrade(cfg, "head")
        command.revision(cfg, message=message, autogenerate=True, rev_id=rev_id)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else sys.argv[1])
