"""A throwaway PostgreSQL cluster for the tests that need one (DATABASE_URL for teams, full-text search)."""
from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(found[-1]).parent if found else None


@pytest.fixture(scope="module")
def postgres_url():
    """A throwaway PostgreSQL cluster (or $FINETUNE_STUDIO_TEST_PG_URL); skipped when neither is available."""
    if os.environ.get("FINETUNE_STUDIO_TEST_PG_URL"):
        yield os.environ["FINETUNE_STUDIO_TEST_PG_URL"]
        return
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (make test installs it)")
    tmp = Path(tempfile.mkdtemp(prefix="fs-pg-"))
    tmp.chmod(0o777)
    data = tmp / "data"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    subprocess.run(as_pg + [str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "studio"],
                   check=True, capture_output=True)
    subprocess.run(as_pg + [str(bindir / "pg_ctl"), "-D", str(data), "-w", "-l", str(tmp / "log"), "-o",
                            f"-p {port} -k {tmp} -c listen_addresses=127.0.0.1", "start"],
                   check=True, capture_output=True)
    try:
        subprocess.run(as_pg + [str(bindir.parent / "bin" / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U",
                                "studio", "studio"], check=True, capture_output=True)
        yield f"postgresql+psycopg://studio@127.0.0.1:{port}/studio"
    finally:
        subprocess.run(as_pg + [str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
