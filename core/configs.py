"""What every job config dataclass (training, generation, export) shares: built from a config.json dict that
may not carry a key the dataclass does not declare, so a typo never silently becomes a default."""
from __future__ import annotations

from dataclasses import fields
from typing import TYPE_CHECKING, Any, TypeVar

from core.errors import InvalidInput

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")


def strict_from_dict(cls: type[T], data: dict[str, Any], what: str) -> T:
    """``cls(**data)``, refusing keys ``cls`` does not declare with one message naming them (``what`` says
    which settings, e.g. "training")."""
    unknown = sorted(set(data) - {f.name for f in fields(cls)})
    if unknown:
        raise InvalidInput(f"Unknown {what} setting(s): {', '.join(unknown)}.")
    return cls(**data)
