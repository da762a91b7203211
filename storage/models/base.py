"""What every table module shares: the clock and JSON for rows."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def json_default(value: Any) -> Any:
    """``json.dumps(default=...)`` for rows that hold datetimes."""
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(type(value).__name__)
