"""The COMMIT the messages endpoint's last statement of a phase sends with it (api/flow/writes.py;
docs/architecture.md, "Statements per message"): its three preconditions, each enforced while the code runs,
and the switch that turns it off."""

from types import SimpleNamespace

import pytest
from django.core.checks import run_checks
from django.core.checks.registry import registry
from django.db import connection, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext

from api.flow import writes
from billing.credits import credits_grant
from channels_app.models import Workspace
from config.checks import commit_in_statement_check, commit_in_statement_problem
from conversations.models import Message
from tests.conftest import SEED_TEXT, Api, StatementAfterCommit
from tests.factories import ChannelFactory, WorkspaceFactory, api_key_for

pytestmark = pytest.mark.django_db(transaction=True)


def committing_statement() -> None:
    statement = writes._Statement()
    statement.step("x", "SELECT 1 AS one", [])
    statement.run("SELECT one FROM x", commit=True)


def test_a_statement_sent_after_the_commit_in_the_same_block_fails_the_test():
    with pytest.raises(StatementAfterCommit), transaction.atomic():
        committing_statement()
        Workspace.objects.count()
    # a statement in the next block, or outside any, is the next transaction's
    with transaction.atomic():
        assert Workspace.objects.count() == 0
        committing_statement()
    assert Workspace.objects.count() == 0


def test_the_commit_is_refused_outside_the_outermost_block():
    with pytest.raises(AssertionError, match="COMMIT outside its block"):
        committing_statement()  # autocommit: no block at all
    with transaction.atomic(), transaction.atomic():
        with pytest.raises(AssertionError, match="COMMIT outside its block"):
            committing_statement()  # a savepoint's block: the COMMIT would end the outer one's transaction


@pytest.fixture
def keyed_api(scripted_agent):
    workspace = WorkspaceFactory.create(credit_balance=0)
    credits_grant(workspace=workspace, amount=50)
    channel = ChannelFactory(workspace=workspace)
    scripted_agent.take_over(channel.agent)
    return Api(Client(), channel, api_key_for(workspace)[1])


@pytest.mark.parametrize("commit_in_statement", [True, False])
def test_the_switch_moves_the_commit_out_of_the_statements(settings, keyed_api, commit_in_statement):
    settings.WRITES_COMMIT_IN_STATEMENT = commit_in_statement
    with CaptureQueriesContext(connection) as queries:
        response = keyed_api.post(SEED_TEXT, idempotency_key="switch-1")

    assert response.status_code == 200, response.content
    committing = [q["sql"] for q in queries.captured_queries if q["sql"].endswith(f"; {writes.COMMIT_SQL}")]
    assert len(committing) == (2 if commit_in_statement else 0)  # the accept phase's and the record phase's
    # either way the message was answered, and its reply is stored once
    inbound = Message.objects.get(pk=response.json()["messageId"])
    assert inbound.status == Message.Status.ANSWERED
    assert Message.objects.filter(reply_to=inbound).count() == len(response.json()["aiMessages"])
    assert keyed_api.post(SEED_TEXT, idempotency_key="switch-1").content == response.content


@pytest.mark.parametrize(
    ("binding", "commit_in_statement", "refused"),
    [(True, True, True), (True, False, False), (False, True, False)],
)
def test_server_side_binding_is_refused_with_the_commit_in_the_statement(binding, commit_in_statement, refused):
    configured = SimpleNamespace(
        DATABASES={"default": {"OPTIONS": {"server_side_binding": binding}}},
        WRITES_COMMIT_IN_STATEMENT=commit_in_statement,
    )

    problem = commit_in_statement_problem(configured)

    assert (problem is not None) == refused
    # and every command runs the check (not only `check --deploy` or `check --database`)
    assert commit_in_statement_check in registry.get_checks(include_deployment_checks=False)
    assert run_checks() == []  # this configuration passes it
