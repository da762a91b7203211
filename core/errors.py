"""Errors a user can act on. Pages show ``str(err)``; the CLI prints it on one line and exits non-zero."""


class StudioError(Exception):
    """Base class: a clear, one-line message for a person; never a traceback."""


class PermissionDenied(StudioError):
    """The acting user's role does not allow this action."""


class NotFound(StudioError):
    """A named thing (user, project, example, version, run) does not exist."""


class InvalidInput(StudioError):
    """Input that cannot be accepted as given; nothing was written."""


class Conflict(StudioError):
    """Somebody else changed the thing since it was read (stale save)."""

    def __init__(self, message: str, current=None, attempted=None):
        super().__init__(message)
        self.current = current
        self.attempted = attempted


class WorkspaceError(StudioError):
    """The workspace or its database cannot be used (not SQLite, read-only, ...)."""


class DatabaseBusy(StudioError):
    """Another writer held the database past the busy timeout (10 s); nothing was written. Raised by storage
    through core.workspace's configuration, shown like any other StudioError."""


class DatabaseWriteFailed(StudioError):
    """The disk refused a database write (full, I/O error, read-only file); nothing was written."""
