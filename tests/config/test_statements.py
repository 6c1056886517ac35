"""config/statements.py's INSERT of a model instance writes what the ORM's insert writes: a `GeneratedField` is
the database's to compute, a `db_default` the database's to fill in unless the instance sets it, and so is an
unset auto-incremented id."""

import pytest
from django.db import connection, models
from django.db.models.functions import Lower
from django.test.utils import isolate_apps

from config.statements import insert_select


@pytest.fixture
def gadget(db):
    """A model with a generated column and a database default, and its table (in the test's transaction)."""
    with isolate_apps("tests"):

        class Gadget(models.Model):
            name = models.CharField(max_length=40)
            lowered = models.GeneratedField(
                expression=Lower("name"), output_field=models.CharField(max_length=40), db_persist=True
            )
            colour = models.CharField(max_length=20, db_default="grey")
            size = models.IntegerField(default=3)

            class Meta:
                app_label = "tests"
                db_table = "tests_statements_gadget"

            def __str__(self) -> str:
                return self.name

    with connection.schema_editor() as editor:
        editor.create_model(Gadget)
    return Gadget


def insert(instance) -> dict:
    table, values, params = insert_select(instance)
    with connection.cursor() as cursor:
        cursor.execute(f"INSERT INTO {table} {values} RETURNING id", params)
        (pk,) = cursor.fetchone()
    return type(instance).objects.values("name", "lowered", "colour", "size").get(pk=pk)


def test_the_generated_column_is_computed_and_the_database_default_filled_in(gadget):
    assert insert(gadget(name="Widget")) == {"name": "Widget", "lowered": "widget", "colour": "grey", "size": 3}


def test_a_value_set_on_the_instance_takes_the_place_of_the_database_default(gadget):
    assert insert(gadget(name="Widget", colour="red"))["colour"] == "red"


def test_the_same_rows_as_the_orm_insert(gadget):
    ours = insert(gadget(name="Bolt"))
    theirs = gadget.objects.values("name", "lowered", "colour", "size").get(pk=gadget.objects.create(name="Bolt").pk)
    assert ours == theirs
