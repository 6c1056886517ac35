"""A model instance as the values of a hand-written INSERT (api/flow/writes.py, api/flow/idempotency.py).

Statements that write several tables at once (PostgreSQL's data-modifying CTEs) are written by hand, but the
rows they insert are still the models': `insert_select` takes an unsaved instance (its defaults, ids and
`auto_now_add` times set as the ORM's insert sets them) and adapts each value by its field, so a column added
to a model is written by these statements too, with its default.
"""

from functools import cache
from typing import Any

from django.db import connection
from django.db.models import Model
from django.db.models.expressions import DatabaseDefault


def quote(name: str) -> str:
    return connection.ops.quote_name(name)


@cache
def _insert_fields(model: type[Model]) -> tuple[tuple[Any, str, str], ...]:
    """Each field an INSERT of `model` may write, with its quoted column and its type for a cast: not a
    `GeneratedField`, which the database computes (Django's insert leaves it out too)."""
    return tuple(
        (field, quote(field.column), field.db_type(connection) or "text")
        for field in model._meta.concrete_fields
        if not field.generated
    )


@cache
def table(model: type[Model]) -> str:
    """A model's table, quoted."""
    return quote(model._meta.db_table)


def insert_select(instance: Model, *, expressions: dict[str, str] | None = None) -> tuple[str, str, list[Any]]:
    """(table, `(columns) SELECT values`, params) for `INSERT INTO table (columns) SELECT values ...`.

    Each value as the ORM's insert makes it (`pre_save(add=True)`, which also sets `auto_now_add` times on the
    instance, then `get_db_prep_save`) and cast to its column's type: in a SELECT list an untyped NULL or string
    would be text, which no timestamp or JSON column takes. The columns are those the ORM's insert writes: not
    a `GeneratedField`, nor a field with a `db_default` the instance left unset (the database fills it in; a
    SELECT list has no DEFAULT), nor an unset auto-incremented primary key. `expressions` replaces the named
    columns' values by SQL, such as a value an earlier step of the statement returns."""
    model = type(instance)
    expressions = expressions or {}
    columns, values, params = [], [], []
    for field, column, db_type in _insert_fields(model):
        if field.column in expressions:
            columns.append(column)
            values.append(expressions[field.column])
            continue
        value = field.pre_save(instance, add=True)
        if isinstance(value, DatabaseDefault) or (value is None and field is model._meta.auto_field):
            continue
        columns.append(column)
        values.append(f"CAST(%s AS {db_type})")
        params.append(field.get_db_prep_save(value, connection))
    return table(model), f"({', '.join(columns)}) SELECT {', '.join(values)}", params


class Columns:
    """Some of a model's columns in a hand-written SELECT, and the values of a fetched row as the ORM would
    give them (each field's converters applied: JSON decoded, ...). For reads on
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
