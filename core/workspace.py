"""Where a workspace lives: the one folder that holds the database, run folders, models and uploads.

Resolution order, the same for the app and every CLI command:
``--workspace DIR`` (sets FINETUNE_STUDIO_HOME) > ``FINETUNE_STUDIO_HOME`` > ``./workspace``.
``DATABASE_URL`` selects another SQLAlchemy database (e.g. PostgreSQL); otherwise SQLite in the workspace.
"""
from __future__ import annotations

import os
from pathlib import Path

from core.errors import DatabaseBusy, DatabaseWriteFailed, InvalidInput, PermissionDenied, WorkspaceError
from storage import db as _db

ENV_HOME = "FINETUNE_STUDIO_HOME"
ENV_DB = "DATABASE_URL"
# Folders on the server that "import a path on the server" may read, separated by os.pathsep (":"); an admin's
# choice, like the workspace itself. Default: <workspace>/imports (created on start).
ENV_IMPORT_ROOTS = "FINETUNE_STUDIO_IMPORT_ROOTS"
# The same for the folders the web may export into (default <workspace>/exports) and read a local base model from
# (default <workspace>/models).
ENV_EXPORT_ROOTS = "FINETUNE_STUDIO_EXPORT_ROOTS"
ENV_MODEL_ROOTS = "FINETUNE_STUDIO_MODEL_ROOTS"


def workspace_dir() -> Path:
    """The workspace folder (not created here)."""
    return Path(os.environ.get(ENV_HOME) or "workspace").expanduser().resolve()


def set_workspace(path: str | os.PathLike) -> Path:
    """Point this process (and the subprocesses it starts) at ``path``."""
    resolved = Path(path).expanduser().resolve()
    os.environ[ENV_HOME] = str(resolved)
    return resolved


def database_url() -> str:
    """SQLAlchemy URL of the workspace database."""
    return os.environ.get(ENV_DB) or f"sqlite:///{workspace_dir() / 'studio.db'}"


def runs_dir() -> Path:
    return workspace_dir() / "runs"


def models_dir() -> Path:
    return workspace_dir() / "models"


def uploads_dir() -> Path:
    return workspace_dir() / "uploads"


def exports_dir() -> Path:
    return workspace_dir() / "exports"


def imports_dir() -> Path:
    """The default (and, unless FINETUNE_STUDIO_IMPORT_ROOTS says otherwise, only) folder of server files that
    users may import by path."""
    return workspace_dir() / "imports"


def _roots(env: str, default: Path) -> list[Path]:
    raw = os.environ.get(env, "")
    folders = [p for p in raw.split(os.pathsep) if p.strip()] or [str(default)]
    return [Path(p).expanduser().resolve() for p in folders]


def import_roots() -> list[Path]:
    """The folders server-path imports may read, symlinks resolved: FINETUNE_STUDIO_IMPORT_ROOTS, else
    <workspace>/imports."""
    return _roots(ENV_IMPORT_ROOTS, imports_dir())


def export_roots() -> list[Path]:
    """The folders the web's exports (Runs page) may write into: FINETUNE_STUDIO_EXPORT_ROOTS, else
    <workspace>/exports."""
    return _roots(ENV_EXPORT_ROOTS, exports_dir())


def model_roots() -> list[Path]:
    """The folders the web may read a local base model from (Train page): FINETUNE_STUDIO_MODEL_ROOTS, else
    <workspace>/models (where the embedded model is converted)."""
    return _roots(ENV_MODEL_ROOTS, models_dir())


# ---------------------------------------------------------------- the two rules for file paths
# The command line runs as an operating-system user, who may read and write whatever the OS lets them: every CLI
# path argument (import files, --out, --base-model) follows ``local_path`` or the OS itself. The web app reads and
# writes the server's files for its web users, who are not OS users: a path typed on a page follows ``inside_roots``
# (the import folders or uploads for imports, the export folders for exports, the model folders for base models).


def local_path(path: str | os.PathLike, *, folder: bool = False) -> Path:
    """A file (or, with ``folder``, a folder) named on the command line: any path the OS lets this process read.
    InvalidInput with a clear message for a missing, unreadable or wrong kind of path."""
    p = Path(path).expanduser()
    if not p.exists():
        raise InvalidInput(f"No file or folder {p}." if folder else f"No file {p}.")
    if p.is_dir() and not folder:
        raise InvalidInput(f"{p} is a folder; give a file.")
    try:
        if p.is_dir():
            with os.scandir(p) as entries:
                next(entries, None)
        else:
            open(p, "rb").close()
    except OSError as err:
        raise InvalidInput(f"Cannot read {p}: {err.strerror or err}.") from None
    return p.resolve()


def inside_roots(path: str | os.PathLike, roots: list[Path], *, new: bool = False, refusal: str = "") -> Path:
    """A path a web user typed, if it names an existing file or folder (with ``new``: or one still to be made)
    inside one of ``roots`` with no symbolic link below the root and no "..": else PermissionDenied, with one
    message whatever the reason (outside, link, "..", missing), so a refusal tells nothing about the server's files.
    ``refusal`` is that message ("{roots}" is replaced by the roots); by default the import pages' one."""
    raw = Path(os.path.abspath(Path(path).expanduser())) if ".." not in Path(path).parts else None
    for root in roots if raw is not None else []:
        for form in {Path(os.path.abspath(root)), Path(root).resolve()}:
            if not raw.is_relative_to(form):
                continue
            inside = Path(root).resolve()
            for part in raw.relative_to(form).parts:
                inside = inside / part
                if inside.is_symlink():
                    break
            else:
                if new or inside.exists():
                    return inside
    raise PermissionDenied((refusal or IMPORT_REFUSAL).replace("{roots}", ", ".join(str(r) for r in roots)))


IMPORT_REFUSAL = ("Import by path reads only files inside the import folders an admin set up ({roots}), named "
                  "without symbolic links or '..'; copy the file there, or upload it.")
EXPORT_REFUSAL = ("The web app exports only into the export folders an admin set up ({roots}; "
                  f"{ENV_EXPORT_ROOTS}), named without symbolic links or '..'; choose a new folder inside one of "
                  "them, or export from the command line (--out).")


def default_export_folder(name: str) -> Path:
    """Where the Runs page proposes to export: <workspace>/exports/NAME, or inside the first export folder when
    the admin's export folders do not hold the workspace's."""
    roots = export_roots()
    home = exports_dir().resolve()
    return (home if any(home.is_relative_to(r) for r in roots) else roots[0]) / name


def export_folder(path: str | os.PathLike) -> Path:
    """The web's rule for an export destination: a folder (new or not) inside the export folders, else
    PermissionDenied with one message whether it exists or not."""
    return inside_roots(path, export_roots(), new=True, refusal=EXPORT_REFUSAL)


def offline_vars() -> dict[str, str]:
    """The environment that keeps Hugging Face libraries off the network (unless the user opted in with
    FINETUNE_STUDIO_ONLINE=1) and quiet; for this process and every job process it starts."""
    out = {"HF_HUB_DISABLE_TELEMETRY": "1", "TOKENIZERS_PARALLELISM": "false"}
    if os.environ.get("FINETUNE_STUDIO_ONLINE") != "1":
        out.update({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    return out


def offline_env() -> None:
    """No code path may need the network: apply ``offline_vars`` to this process (values already set win)."""
    for key, value in offline_vars().items():
        os.environ.setdefault(key, value)


# The app's database is the workspace's (or DATABASE_URL); storage raises our WorkspaceError when it cannot be used,
# DatabaseBusy when another writer holds it too long, DatabaseWriteFailed when the disk refuses a write.
_db.configure(url=database_url, error=WorkspaceError, busy=DatabaseBusy, write_failed=DatabaseWriteFailed)
