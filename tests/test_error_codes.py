"""Each error code has one home, its ApplicationError subclass (beside the code that raises it, config/errors.py
for the root): the README's error table lists every code, and only those; the framework errors the exception
handler translates are subclasses too, not instances with a code of their own."""

import importlib
import pkgutil
import re
from pathlib import Path

import pytest
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404
from rest_framework import exceptions

from config.errors import ApplicationError, MethodNotAllowed, NotFound, PermissionDenied
from config.exception_handler import to_application_error
from tests.test_architecture import LAYERS

ROOT = Path(__file__).resolve().parent.parent
# Not imported: a child process's script and the server's configuration (they run outside Django).
NOT_IMPORTED = {"conversations.media.pdf_text_child", "config.gunicorn", "config.gunicorn_json"}


def application_errors() -> set[type[ApplicationError]]:
    for package in LAYERS:
        for module in pkgutil.walk_packages([str(ROOT / package)], prefix=f"{package}."):
            if ".migrations" not in module.name and module.name not in NOT_IMPORTED:
                importlib.import_module(module.name)
    found: set[type[ApplicationError]] = set()
    pending = [ApplicationError]
    while pending:
        error = pending.pop()
        found.add(error)
        pending.extend(error.__subclasses__())
    return found


def readme_error_codes() -> set[str]:
    """The codes in the second column of README's table `| status | code | when |`."""
    text = (ROOT / "README.md").read_text()
    table = text[text.index("| status | code | when |") :].split("\n\n", 1)[0]
    rows = table.splitlines()[2:]
    return {code for row in rows for code in re.findall(r"`([a-z_]+)`", row.split("|")[2])}


def test_every_error_code_is_in_the_readme_table_and_every_code_there_is_an_error_class():
    codes = {error.code for error in application_errors()}
    readme = readme_error_codes()
    assert sorted(codes - readme) == [], "codes missing from README's error table"
    assert sorted(readme - codes) == [], "codes in README's error table that no error class has"


@pytest.mark.parametrize(
    ("exc", "error_class", "status"),
    [
        (Http404(), NotFound, 404),
        (exceptions.NotFound(), NotFound, 404),
        (exceptions.MethodNotAllowed("GET"), MethodNotAllowed, 405),
        (DjangoPermissionDenied(), PermissionDenied, 403),
        (exceptions.PermissionDenied(), PermissionDenied, 403),
    ],
)
def test_framework_errors_become_error_classes_of_their_own(exc, error_class, status):
    error = to_application_error(exc)
    assert type(error) is error_class
    assert (error.code, error.status_code) == (error_class.code, status)
    assert error.message.endswith(".")
