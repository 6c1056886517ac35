"""The asynchronous mode (README "Replies later"): `Prefer: respond-async` answers 202 after the accept phase;
think and record run later. Here without a broker (Celery eager, as `make run`): in a background thread of
this process. tests/api/test_replies_later_worker.py runs real Celery workers on Redis.

The background thread writes beside the test's thread, so those tests need committed rows and PostgreSQL
(the in-memory SQLite test database fails such a write at once instead of waiting). The run's own rules
(`message_answer_run`: once per message, takeover of a dead run's lease) are tested in the test's thread,
on both databases.
"""

import threading
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from api.flow.later import message_answer_run
from api.flow.messaging import InboundRequest, _accept
from api.models import IdempotencyRecord
from billing.models import UsageLedgerEntry
from channels_app.models import Workspace
from conversations.agents.errors import AgentTimeout
from conversations.models import Message
from tests.conftest import SEED_TEXT, error_of

ASYNC = {"HTTP_PREFER": "respond-async"}
WAIT_SECONDS = 30  # generous: the machine is shared


def wait_for(predicate, *, seconds: float = WAIT_SECONDS):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"not within {seconds} s")


def status_of(message_id: str) -> str:
    return Message.objects.get(pk=message_id).status


def say(body: str) -> dict:
    return {**SEED_TEXT, "content": {"text": {"body": body}}}


def test_prefer_without_respond_async_is_the_synchronous_mode(api):
    response = api.post(HTTP_PREFER="return=minimal, wait=10")

    assert response.status_code == 200, response.content
    assert "Preference-Applied" not in response


@pytest.mark.django_db(transaction=True)
def test_respond_async_answers_202_before_the_agent_runs_then_answers_in_the_background(
    api, channel, workspace, scripted_agent
):
    # given: an agent that answers only once the test says so, after it got the 202
    scripted_agent.take_over(channel.agent)
    go = threading.Event()
    scripted_agent.script(lambda **_: "Your order ships today." if go.wait(WAIT_SECONDS) else None)

    # when
    response = api.post(SEED_TEXT, **ASYNC)

    # then: 202 with the ids, where the result will be, and the preference applied
    assert response.status_code == 202, response.content
    body = response.json()
    message_id = body["messageId"]
    assert body == {
        "success": True,
        "status": "PROCESSING",
        "contactId": body["contactId"],
        "conversationId": body["conversationId"],
        "messageId": message_id,
    }
    assert response["Location"] == f"/api/v1/messages/{message_id}"
    assert response["Preference-Applied"] == "respond-async"
    message = Message.objects.get(pk=message_id)
    assert (message.status, message.conversation_id, message.conversation.contact_id) == (
        Message.Status.PENDING,
        body["conversationId"],
        body["contactId"],
    )

    # when: the agent answers
    go.set()

    # then: answered once, charged once, as the synchronous mode would
    wait_for(lambda: status_of(message_id) == Message.Status.ANSWERED)
    replies = list(Message.objects.filter(reply_to_id=message_id).values_list("content", flat=True))
    assert replies == [{"text": {"body": "Your order ships today."}}]
    assert scripted_agent.count == 1
    wait_for(lambda: UsageLedgerEntry.objects.filter(message_id=message_id).count() == 1)
    assert Workspace.objects.get(pk=workspace.pk).credit_balance == 99
    assert Message.objects.get(pk=message_id).credits_reserved == 0
    assert Workspace.objects.get(pk=workspace.pk).credit_reserved == 0


@pytest.mark.django_db(transaction=True)
def test_an_async_retry_with_the_same_key_answers_202_while_processing_then_the_stored_200(
    api, channel, scripted_agent
):
    # given
    scripted_agent.take_over(channel.agent)
    go = threading.Event()
    scripted_agent.script(lambda **_: "Done." if go.wait(WAIT_SECONDS) else None)
    first = api.post(SEED_TEXT, idempotency_key="k-async-1", **ASYNC)
    assert first.status_code == 202, first.content

    # when: retried while the agent still works
    again = api.post(SEED_TEXT, idempotency_key="k-async-1", **ASYNC)

    # then: the same 202, the same ids; no second message
    assert again.status_code == 202, again.content
    assert again.json() == first.json()
    assert again["Location"] == first["Location"]
    assert Message.objects.filter(direction=Message.Direction.INBOUND).count() == 1

    # when: answered, then retried (async or not)
    go.set()
    message_id = first.json()["messageId"]
    wait_for(lambda: status_of(message_id) == Message.Status.ANSWERED)
    wait_for(lambda: IdempotencyRecord.objects.filter(state=IdempotencyRecord.State.COMPLETED).exists())
    replayed = api.post(SEED_TEXT, idempotency_key="k-async-1", **ASYNC)
    plain = api.post(SEED_TEXT, idempotency_key="k-async-1")

    # then: the stored 200 body, replayed
    record = IdempotencyRecord.objects.get()
    for response in (replayed, plain):
        assert response.status_code == 200, response.content
        assert response.content == bytes(record.response_body)
        assert response["Idempotent-Replayed"] == "true"
    assert replayed.json()["messageId"] == message_id
    assert scripted_agent.count == 1


@pytest.mark.django_db(transaction=True)
def test_an_async_failure_is_recorded_and_a_retry_with_the_key_answers_the_same_message(
    api, channel, workspace, scripted_agent
):
    # given: the agent times out once
    scripted_agent.take_over(channel.agent)
    scripted_agent.script(AgentTimeout(), "Second time lucky.")
    first = api.post(SEED_TEXT, idempotency_key="k-async-2", **ASYNC)
    assert first.status_code == 202, first.content
    message_id = first.json()["messageId"]

    # then: failed as in the synchronous mode: credits back, key released
    wait_for(lambda: status_of(message_id) == Message.Status.FAILED)
    assert Message.objects.get(pk=message_id).error_code == "agent_timeout"
    wait_for(lambda: IdempotencyRecord.objects.get().state == IdempotencyRecord.State.RELEASED)
    assert Workspace.objects.get(pk=workspace.pk).credit_balance == 100

    # when: retried with the key
    again = api.post(SEED_TEXT, idempotency_key="k-async-2", **ASYNC)

    # then: the same message, answered this time
    assert again.status_code == 202, again.content
    assert again.json()["messageId"] == message_id
    wait_for(lambda: status_of(message_id) == Message.Status.ANSWERED)
    assert list(Message.objects.filter(reply_to_id=message_id).values_list("content", flat=True)) == [
        {"text": {"body": "Second time lucky."}}
    ]


@pytest.mark.django_db(transaction=True)
def test_async_messages_of_one_conversation_are_answered_in_order_each_seeing_the_earlier(api, channel, scripted_agent):
    # given: the first answer is slow, so the second message's run waits for its turn
    scripted_agent.take_over(channel.agent)
    scripted_agent.script(lambda **_: time.sleep(1.0) or "One.", "Two.")

    # when
    ids = [api.post(say(text), **ASYNC).json()["messageId"] for text in ("first", "second")]

    # then
    wait_for(lambda: all(status_of(pk) == Message.Status.ANSWERED for pk in ids))
    assert [call.content["text"]["body"] for call in scripted_agent.calls] == ["first", "second"]
    second_history = [item.content for item in scripted_agent.calls[1].history]
    assert second_history == [
        {"text": {"body": "first"}},
        {"text": {"body": "One."}},
        {"text": {"body": "second"}},
    ]


def test_errors_found_before_the_agent_are_the_usual_json_responses(api):
    response = api.post({**SEED_TEXT, "type": "STICKER"}, **ASYNC)

    error_of(response, status=400)
    assert "Location" not in response


# --- a run's rules, in the test's thread -------------------------------------------------------------------------


def _accepted(workspace, channel, *, key: str | None = None):
    accepted = _accept(
        InboundRequest(
            workspace=workspace,
            channel_id=channel.pk,
            contact_identifier="user@example.com",
            contact_name="",
            type="TEXT",
            content={"text": {"body": "Hi"}},
            metadata={},
            idempotency_key=key,
            fingerprint="f" * 64,
        )
    )
    assert not isinstance(accepted, type(None))
    return accepted


def _run(accepted):
    return message_answer_run(
        message_id=accepted.message.pk,
        lease_until=accepted.lease_until,
        claim_record_id=accepted.claim.record_id if accepted.claim else "",
        claim_owner=accepted.claim.owner if accepted.claim else "",
    )


def test_a_run_delivered_twice_answers_once(workspace, channel, scripted_agent):
    scripted_agent.take_over(channel.agent)
    accepted = _accepted(workspace, channel, key="k-twice")

    assert _run(accepted) is None
    assert _run(accepted) is None  # the message no longer waits: nothing to do

    assert Message.objects.filter(reply_to_id=accepted.message.pk).count() == 1
    assert scripted_agent.count == 1
    assert UsageLedgerEntry.objects.filter(message_id=accepted.message.pk).count() == 1
    assert IdempotencyRecord.objects.get().state == IdempotencyRecord.State.COMPLETED


def test_a_run_waits_for_another_runs_live_lease_and_takes_it_over_once_it_ran_out(workspace, channel, scripted_agent):
    # given: a run took the lease and died (its lease is set, nothing else happened)
    scripted_agent.take_over(channel.agent)
    accepted = _accepted(workspace, channel)
    held_until = timezone.now() + timedelta(seconds=60)
    Message.objects.filter(pk=accepted.message.pk).update(lease_until=held_until)

    # when: the redelivered task runs while that lease holds
    retry_in = _run(accepted)

    # then: it tries again once that lease has ended, without calling the agent
    assert retry_in is not None and 55 < retry_in < 70
    assert scripted_agent.count == 0
    assert status_of(accepted.message.pk) == Message.Status.PENDING

    # when: the lease ran out
    Message.objects.filter(pk=accepted.message.pk).update(lease_until=timezone.now() - timedelta(seconds=1))

    # then: the run takes over and answers, once
    assert _run(accepted) is None
    assert status_of(accepted.message.pk) == Message.Status.ANSWERED
    assert Message.objects.filter(reply_to_id=accepted.message.pk).count() == 1


def test_a_run_that_finishes_after_another_took_over_stores_nothing(workspace, channel, scripted_agent):
    # given: while the first run's agent works, its lease runs out and a second run answers the message
    scripted_agent.take_over(channel.agent)
    accepted = _accepted(workspace, channel, key="k-late")

    def stall(**_):
        Message.objects.filter(pk=accepted.message.pk).update(lease_until=timezone.now() - timedelta(seconds=1))
        assert _run(accepted) is None  # the second run: takes over, answers "Taken over."
        return "Late."

    scripted_agent.script(stall, "Taken over.")

    # when
    assert _run(accepted) is None  # the first run comes back from its agent

    # then: one answer, the second run's (the first's record phase found the message answered:
    # AnsweredElsewhere); one charge; the key keeps that answer
    replies = list(Message.objects.filter(reply_to_id=accepted.message.pk).values_list("content", flat=True))
    assert replies == [{"text": {"body": "Taken over."}}]
    assert UsageLedgerEntry.objects.filter(message_id=accepted.message.pk).count() == 1
    record = IdempotencyRecord.objects.get()
    assert record.state == IdempotencyRecord.State.COMPLETED
    assert b"Taken over." in bytes(record.response_body)


def test_the_openapi_document_has_the_202_and_the_event_stream(client):
    document = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    operation = document["paths"]["/api/v1/channels/{channelId}/messages"]["post"]

    assert list(operation["responses"]["200"]["content"]) == ["application/json", "text/event-stream"]
    accepted = operation["responses"]["202"]
    assert {"Location", "Preference-Applied"} <= set(accepted["headers"])
    schema = accepted["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert set(document["components"]["schemas"][schema]["properties"]) == {
        "success",
        "status",
        "contactId",
        "conversationId",
        "messageId",
    }
    assert {"Prefer", "Accept"} <= {parameter["name"] for parameter in operation["parameters"]}
