"""The DatabaseReporter's INSERT and UPDATEs, built once per connection.

A report is written in one statement per transition, straight to the
connection's cursor with the values Django would send for each column: no
model instance is built and no query is compiled per write, which through the
ORM were most of a write's cost (docs/performance.rst).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from typing import Any

from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import (
    CharField,
    DateTimeField,
    Field,
    FloatField,
    IntegerField,
    JSONField,
    Model,
    TextField,
)

#: Distinct UPDATE statements kept built (one per set of columns a transition changes).
MAX_UPDATES = 64


class CompactEncoder(json.JSONEncoder):
    """Django's JSON encoding without the spaces and the circular-reference check.

    Encoding the stack, the profile and the SQL is most of the Python a write
    costs. A report is a tree of plain values built by slowwatch, never a
    cycle; the spaces only made the stored text bigger.
    """

    def __init__(self, **options: Any) -> None:
        options.update(separators=(",", ":"), check_circular=False)
        super().__init__(**options)


def _verbatim(value: Any) -> Any:
    return value


class RowWriter:
    """The reporter's INSERT and UPDATEs for one database connection, built once.

    They go straight to the connection's cursor with the values each column
    takes (as ``Model.save()`` and ``QuerySet.update()`` would send them).
    """

    def __init__(self, model: type[Model], connection: BaseDatabaseWrapper) -> None:
        quote = connection.ops.quote_name
        meta = model._meta
        self.connection = connection
        self.table = quote(meta.db_table)
        fields = [f for f in meta.concrete_fields if not f.primary_key]
        self.columns = {f.name: quote(f.column or f.name) for f in fields}
        self.prep = {f.name: self._prep(f, connection) for f in fields}
        # Every column is inserted, as Model.save() does: a transition that
        # does not set one gets the field's default (encoded once, here).
        self.defaults = {f.name: self.prep[f.name](f.get_default()) for f in fields}
        self.insert_sql = (
            f"INSERT INTO {self.table} ({', '.join(self.columns.values())}) "
            f"VALUES ({', '.join(['%s'] * len(self.columns))})"
        )
        #: Column names -> UPDATE: a transition sets one of a few sets of columns.
        self._updates: dict[tuple[str, ...], str] = {}

    @staticmethod
    def _prep(field: Field[Any, Any], connection: BaseDatabaseWrapper) -> Callable[[Any], Any]:
        """What turns a value of ``fields_of()`` into the parameter Django would send."""
        ops = connection.ops
        if isinstance(field, JSONField):

            def encode(value: Any) -> Any:
                # None is SQL NULL, as JSONField.get_db_prep_save() has it.
                return None if value is None else ops.adapt_json_value(value, CompactEncoder)

            return encode
        if isinstance(field, DateTimeField):
            # fields_of() gives aware UTC datetimes: nothing for get_prep_value() to do.
            return lambda value: None if value is None else ops.adapt_datetimefield_value(value)
        if isinstance(field, (CharField, TextField, FloatField, IntegerField)):
            return _verbatim  # fields_of() gives str, float and int (or None) already
        return partial(field.get_db_prep_save, connection=connection)

    def insert(self, values: dict[str, Any]) -> None:
        """INSERT a row; the columns not in ``values`` take their default."""
        prep, defaults = self.prep, self.defaults
        params = [
            prep[name](values[name]) if name in values else defaults[name] for name in self.columns
        ]
        with self.connection.cursor() as cursor:
            cursor.execute(self.insert_sql, params)

    def update(self, request_id: str, values: dict[str, Any]) -> int:
        """UPDATE the request's row with ``values``; how many rows it changed (0 or 1).

        By ``request_id`` (unique) rather than pk: the INSERT need not read back its pk.
        """
        names = tuple(values)
        sql = self._updates.get(names)
        if sql is None:
            if len(self._updates) >= MAX_UPDATES:
                self._updates.clear()
            assignments = ", ".join(f"{self.columns[name]} = %s" for name in names)
            sql = f"UPDATE {self.table} SET {assignments} WHERE {self.columns['request_id']} = %s"
            self._updates[names] = sql
        prep = self.prep
        params = [prep[name](value) for name, value in values.items()]
        with self.connection.cursor() as cursor:
            cursor.execute(sql, [*params, request_id])
            return int(cursor.rowcount)
