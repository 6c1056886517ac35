"""A model instance as the values of a hand-written INSERT (api/flow/hot_path.py, api/flow/idempotency.py).

Statements that write several tables at once (PostgreSQL's data-modifying CTEs) are written by hand, but the
rows they insert are still the models': `insert_select` takes an unsaved instance (its defaults, ids and
`auto_now_add` times set as the ORM's insert sets them) and adapts each value by its field, so a column added
to a model is written by these statements too, with its default.
"""

from functools import cache
from typing import Any

from django.db import connection
from django.db.models import Model


def quote(name: str) -> str:
    return connection.ops.quote_name(name)


@cache
def table_columns(model: type[Model]) -> tuple[str, str, tuple[str, ...]]:
    """A model's table and its concrete columns (quoted), and each column's type for a cast."""
    fields = model._meta.concrete_fields
    return (
        quote(model._meta.db_table),
        ", ".join(quote(field.column) for field in fields),
        tuple(field.db_type(connection) or "text" for field in fields),
    )


def insert_select(instance: Model, *, expressions: dict[str, str] | None = None) -> tuple[str, str, list[Any]]:
    """(table, `(columns) SELECT values`, params) for `INSERT INTO table (columns) SELECT values ...`.

    Each value as the ORM's insert makes it (`pre_save(add=True)`, which also sets `auto_now_add` times on the
    instance, then `get_db_prep_save`) and cast to its column's type: in a SELECT list an untyped NULL or string
    would be text, which no timestamp or JSON column takes. `expressions` replaces the named columns' values
    by SQL, such as a value an earlier step of the statement returns."""
    model = type(instance)
    table, columns, types = table_columns(model)
    expressions = expressions or {}
    values, params = [], []
    for field, db_type in zip(model._meta.concrete_fields, types, strict=True):
        if field.column in expressions:
            values.append(expressions[field.column])
            continue
        values.append(f"CAST(%s AS {db_type})")
        params.append(field.get_db_prep_save(field.pre_save(instance, add=True), connection))
    return table, f"({columns}) SELECT {', '.join(values)}", params


class Columns:
    """Some of a model's columns in a hand-written SELECT, and the values of a fetched row as the ORM would
    give them (each field's converters applied: JSON decoded, SQLite's times made aware, ...). For reads on
    the hot path, where the ORM's compiler costs more CPU than the query: build one per process (`columns`)."""

    def __init__(self, model: type[Model], alias: str, names: tuple[str, ...] | None) -> None:
        fields: list[Any] = [model._meta.get_field(name) for name in names] if names else [*model._meta.concrete_fields]
        self.model, self.alias = model, alias
        self.attnames = tuple(field.attname for field in fields)
        self.sql = ", ".join(f"{alias}.{quote(field.column)}" for field in fields)
        self._converters = [
            (
                index,
                [*connection.ops.get_db_converters(col), *field.get_db_converters(connection)],
                col,
            )
            for index, field in enumerate(fields)
            for col in [field.get_col(alias)]
        ]
        self._converters = [item for item in self._converters if item[1]]

    def __len__(self) -> int:
        return len(self.attnames)

    def values(self, row: tuple[Any, ...] | list[Any]) -> list[Any]:
        values = list(row)
        for index, converters, col in self._converters:
            for converter in converters:
                values[index] = converter(values[index], col, connection)
        return values

    def instance(self, row: tuple[Any, ...] | list[Any]) -> Model:
        """The model instance of `row` (this object's columns, all of the model's), as a query would load it."""
        return self.model.from_db(connection.alias, list(self.attnames), self.values(row))


@cache
def columns(model: type[Model], alias: str, names: tuple[str, ...] | None = None) -> Columns:
    """`Columns` of `model` under the table alias `alias`: the fields `names`, or all of its concrete fields."""
    return Columns(model, alias, names)
