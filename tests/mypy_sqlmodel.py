"""A mypy plugin for SQLModel's class-level columns (configured in pyproject.toml, run by tests/test_lint.py).

SQLModel declares a table's fields with their Python types (``id: int | None``), which is right on an instance;
on the class, ``Job.id`` is a SQLAlchemy column, so ``Job.id.desc()``, ``Job.status.in_(...)`` and
``where(Job.project_id == 3)`` are how every query here is written, and mypy flags each one. SQLModel's own advice
is to wrap each in ``col()``; typing the class-level field access as ``Any`` instead keeps the queries as they
read and every other use of the classes checked (instances, methods, constructors).
"""
from __future__ import annotations

from typing import Callable

from mypy.nodes import TypeInfo, Var
from mypy.plugin import AttributeContext, Plugin
from mypy.types import AnyType, Type, TypeOfAny

SQLMODEL = "sqlmodel.main.SQLModel"


class SQLModelColumns(Plugin):
    def get_class_attribute_hook(self, fullname: str) -> Callable[[AttributeContext], Type] | None:
        owner, _, name = fullname.rpartition(".")
        node = self.lookup_fully_qualified(owner)
        info = node.node if node else None
        if not isinstance(info, TypeInfo) or info.fullname == SQLMODEL:
            return None
        if not any(base.fullname == SQLMODEL for base in info.mro):
            return None
        symbol = info.get(name)
        if symbol is None or not isinstance(symbol.node, Var):
            return None  # methods and nested classes keep their types
        return lambda ctx: AnyType(TypeOfAny.special_form)


def plugin(version: str) -> type[Plugin]:
    return SQLModelColumns
