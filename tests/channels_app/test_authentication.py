"""The API key lookup of every request (channels_app/authentication.py) builds its query once, outside the
ORM: it must hand back what the ORM's `select_related("workspace")...first()` would, on either database."""

from datetime import timedelta

from django.utils import timezone

from channels_app.authentication import _key_with_workspace
from channels_app.models import WorkspaceApiKey
from tests.factories import WorkspaceFactory, api_key_for


def fields(instance) -> dict:
    return {field.attname: getattr(instance, field.attname) for field in type(instance)._meta.concrete_fields}


def test_the_key_lookup_returns_the_orms_key_and_workspace(db):
    # given: a key with every field set, booleans and times included, in a workspace with its own limit
    workspace = WorkspaceFactory(rate_limit_per_minute=7)
    api_key, _ = api_key_for(workspace, name="lookup")
    WorkspaceApiKey.objects.filter(pk=api_key.pk).update(
        revoked=True, expiry_date=timezone.now() + timedelta(days=1), last_used_at=timezone.now()
    )
    expected = WorkspaceApiKey.objects.select_related("workspace").get(pk=api_key.pk)

    # when
    found = _key_with_workspace(api_key.prefix)

    # then: the same values, of the same types, and the workspace without another query
    assert found is not None
    assert fields(found) == fields(expected)
    assert {k: type(v) for k, v in fields(found).items()} == {k: type(v) for k, v in fields(expected).items()}
    assert found.revoked is True and found.has_expired is False
    assert fields(found.workspace) == fields(expected.workspace)
    assert found._state.adding is False and found.workspace._state.adding is False


def test_the_key_lookup_finds_nothing_for_an_unknown_prefix(db):
    assert _key_with_workspace("nosuchpx") is None
