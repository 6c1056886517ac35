"""The agent acts and remembers (README "Actions", "HTTP tools", "Contact attributes and labels").

Through the whole pipeline: the LLM stand-in (tests/llm_stand_in.py) scripts the model's tool calls, a real
tool server on loopback answers the HTTP tools (or misbehaves), and the assertions read the 200 body, the
read API, the database and what the model was sent back.
"""

import json
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.core.management import call_command
from django.utils import timezone
from standardwebhooks import Webhook

from channels_app.models import AgentTool, AIAgent
from contacts.models import Contact
from conversations.agents import openai_agent
from conversations.models import Conversation, Message, ToolCall
from tests.conftest import SEED_TEXT, Api, error_of
from tests.factories import AIAgentFactory, ChannelFactory, WorkspaceFactory, document_for
from tests.llm_stand_in import StandIn, Step, start
from webhooks.tools import agent_tool_put

STREAM = {"HTTP_ACCEPT": "text/event-stream"}


def say(text: str, identifier: str = "user@example.com") -> dict:
    return {**SEED_TEXT, "contactIdentifier": identifier, "content": {"text": {"body": text}}}


def calls(*pairs: tuple[str, dict | str]) -> Step:
    """A model's turn that calls these tools (arguments as a dict, or raw text)."""
    return Step("", tool_calls=[(name, a if isinstance(a, str) else json.dumps(a)) for name, a in pairs])


def tool_results(request: dict) -> list[dict]:
    """The tool results the model was sent back in `request`, parsed."""
    return [json.loads(message["content"]) for message in request["messages"] if message["role"] == "tool"]


@pytest.fixture
def stand_in() -> Iterator[StandIn]:
    stand_in = StandIn()
    server = start(stand_in)
    yield stand_in
    server.shutdown()


@pytest.fixture
def agent(workspace, stand_in) -> AIAgent:
    return AIAgentFactory.create(
        workspace=workspace,
        name="Sales",
        provider="openai",
        base_url=stand_in.url,
        model="sales-model",
        actions=["close_conversation", "set_contact_attributes", "add_conversation_labels", "transfer_to_agent"],
    )


@pytest.fixture(autouse=True)
def no_retries(monkeypatch) -> None:
    """A provider's 500 fails the turn at once (no retry takes the next scripted answer)."""
    monkeypatch.setattr(openai_agent, "MAX_RETRIES", 0)


@pytest.fixture
def api(client, workspace, agent, api_key) -> Api:
    return Api(client, ChannelFactory(workspace=workspace, agent=agent), api_key)


# --- a loopback tool server ----------------------------------------------------------------------------------


class ToolServer:
    """Records every request (method, path, headers, body) and answers with `behaviour`'s answer."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.behaviour = "json"
        self.release = threading.Event()

    def start(self) -> ThreadingHTTPServer:
        tool = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _answer(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                tool.requests.append(
                    {"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body.decode()}
                )
                try:
                    getattr(self, f"_{tool.behaviour}")()
                except OSError:
                    pass  # we went away (a timeout)

            do_GET = do_POST = _answer

            def _send(self, status: int, data: bytes, **headers: str) -> None:
                self.send_response(status)
                for name, value in {"Content-Length": str(len(data)), **headers}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def _json(self) -> None:
                self._send(200, b'{"order": "A-1001", "status": "shipped"}', **{"Content-Type": "application/json"})

            def _invalid_json(self) -> None:
                self._send(200, b'{"order": "A-10', **{"Content-Type": "application/json"})

            def _huge(self) -> None:
                self._send(200, b"x" * (10 * 1024 * 1024))

            def _hang(self) -> None:
                tool.release.wait(30)

            def _held(self) -> None:
                tool.release.wait(30)
                self._json()

            def _drip(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", "1000")
                self.end_headers()
                for _ in range(1000):
                    if tool.release.is_set():
                        return
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.2)

            def _metadata_redirect(self) -> None:
                self._send(302, b"", Location="http://169.254.169.254/latest/meta-data/")

            def _error(self) -> None:
                self._send(500, b"boom")

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{server.server_address[1]}/orders"
        return server


@pytest.fixture
def tool_server(settings) -> Iterator[ToolServer]:
    settings.WEBHOOK_ALLOW_PRIVATE_HOSTS = ["127.0.0.1"]  # the loopback tool server, as for webhooks in tests
    server = ToolServer()
    running = server.start()
    yield server
    server.release.set()
    running.shutdown()


ORDER_PARAMETERS = {
    "type": "object",
    "properties": {"orderId": {"type": "string"}, "verbose": {"type": "boolean"}},
    "required": ["orderId"],
}


@pytest.fixture
def order_tool(agent, tool_server) -> str:
    """A POST tool `lookup_order` of the agent; returns its signing secret."""
    return agent_tool_put(
        agent_id=agent.pk,
        name="lookup_order",
        description="Look up an order by its id.",
        method="POST",
        url=tool_server.url,
        parameters=ORDER_PARAMETERS,
        timeout_seconds=2,
    )


# --- contact attributes and labels through the API ----------------------------------------------------------


def patch(client, api_key, contact_id: str, body) -> Any:
    return client.patch(
        f"/api/v1/contacts/{contact_id}", data=json.dumps(body), content_type="application/json", HTTP_X_API_KEY=api_key
    )


def test_patch_merges_attributes_null_removes_and_get_shows_them(client, api, api_key):
    contact_id = api.post(say("Hi")).json()["contactId"]

    first = patch(client, api_key, contact_id, {"attributes": {"language": "pt", "plan": "gold"}})
    second = patch(client, api_key, contact_id, {"attributes": {"plan": None, "lastOrder": "A-1001"}})

    assert first.status_code == second.status_code == 200
    assert second.json()["contact"]["attributes"] == {"language": "pt", "lastOrder": "A-1001"}
    shown = client.get(f"/api/v1/contacts/{contact_id}", HTTP_X_API_KEY=api_key).json()["contact"]
    assert shown["attributes"] == {"language": "pt", "lastOrder": "A-1001"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"attributes": {"k": 1}}, "k"),
        ({"attributes": {"k": "x" * 513}}, "k"),
        ({"attributes": {"k" * 65: "v"}}, "k" * 65),
        ({"attributes": {"": "v"}}, "(empty)"),
        ({"attributes": {}}, "attributes"),
        ({"attributes": ["a"]}, "attributes"),
        ({"attributes": {"k": "v"}, "name": "x"}, "name"),
        ({}, "attributes"),
    ],
)
def test_patch_refuses_what_breaks_the_limits_naming_the_field(client, api, api_key, body, field):
    contact_id = api.post(say("Hi")).json()["contactId"]

    error = error_of(patch(client, api_key, contact_id, body), status=400)

    assert error["code"] == "invalid_request" and field in error["details"]
    assert Contact.objects.get(pk=contact_id).attributes == {}


def test_patch_refuses_a_51st_key_and_keeps_the_50(client, api, api_key):
    contact_id = api.post(say("Hi")).json()["contactId"]
    fifty = {f"k{index}": "v" for index in range(50)}
    assert patch(client, api_key, contact_id, {"attributes": fifty}).status_code == 200

    error = error_of(patch(client, api_key, contact_id, {"attributes": {"one-more": "v"}}), status=400)

    assert "attributes" in error["details"]
    assert Contact.objects.get(pk=contact_id).attributes == fifty
    # replacing one of the fifty, or removing one and adding another, fits
    assert patch(client, api_key, contact_id, {"attributes": {"k0": None, "new": "v"}}).status_code == 200


def test_patch_of_another_workspaces_contact_is_404_and_changes_nothing(client, api, api_key):
    other = Contact.objects.create(
        workspace=WorkspaceFactory(), identifier="x@example.com", identifier_key="x@example.com"
    )

    assert error_of(patch(client, api_key, other.pk, {"attributes": {"k": "v"}}), status=404)["code"] == (
        "contact_not_found"
    )
    other.refresh_from_db()
    assert other.attributes == {}


@pytest.mark.django_db(transaction=True)
def test_concurrent_patches_lose_no_key(api, api_key):
    from django.db import connections
    from django.test import Client

    contact_id = api.post(say("Hi")).json()["contactId"]
    start_together = threading.Barrier(8)
    statuses: list[int] = []

    def write(index: int) -> None:
        try:
            start_together.wait(10)
            statuses.append(patch(Client(), api_key, contact_id, {"attributes": {f"k{index}": str(index)}}).status_code)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=write, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert statuses == [200] * 8
    assert Contact.objects.get(pk=contact_id).attributes == {f"k{index}": str(index) for index in range(8)}


def test_erasure_erases_the_attributes_actions_and_tool_calls(client, api, api_key, stand_in, tool_server, order_tool):
    stand_in.script(calls(("lookup_order", {"orderId": "jane-A-1", "verbose": None})), "Shipped.")
    contact_id = api.post(say("Hi")).json()["contactId"]
    patch(client, api_key, contact_id, {"attributes": {"language": "pt"}})
    assert Message.objects.get(direction="INBOUND").actions and ToolCall.objects.exists()

    assert client.delete(f"/api/v1/contacts/{contact_id}", HTTP_X_API_KEY=api_key).status_code == 200

    assert Contact.objects.get(pk=contact_id).attributes == {}
    assert Message.objects.get(direction="INBOUND").actions == [] and not ToolCall.objects.exists()
    assert error_of(patch(client, api_key, contact_id, {"attributes": {"k": "v"}}), status=404)


def test_the_agent_is_given_the_contacts_name_and_attributes_in_every_channel(
    client, api, api_key, workspace, agent, stand_in
):
    contact_id = api.post(say("Hi")).json()["contactId"]
    patch(client, api_key, contact_id, {"attributes": {"language": "pt"}})
    other_channel = Api(client, ChannelFactory(workspace=workspace, agent=agent), api_key)

    assert other_channel.post(say("Olá")).status_code == 200

    contact = [
        m["content"] for m in stand_in.requests[-1]["messages"] if "The contact you are talking to" in m["content"]
    ]
    assert len(contact) == 1
    assert json.loads(contact[0].split(": ", 1)[1]) == {"attributes": {"language": "pt"}, "name": "User Name"}


def test_an_agent_with_documents_and_actions_gets_both_contexts_and_answers_sources_and_actions(
    client, api, api_key, agent, stand_in
):
    # given: the agent has a document (README "The agent's knowledge") and actions, the contact an attribute
    document_for(agent, title="Refunds", text="Refunds are paid within 30 days of the purchase.", key="refunds")
    contact_id = api.post(say("Hi")).json()["contactId"]
    patch(client, api_key, contact_id, {"attributes": {"language": "pt"}})
    stand_in.script(calls(("add_conversation_labels", {"labels": ["billing"]})), "Within 30 days.")

    # when: the tool loop runs two rounds of the model
    response = api.post(say("How many days for a refund?"))

    # then: both in the body, and each round of the model was given both system messages
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["sources"] == [{"documentId": "refunds", "title": "Refunds", "url": None}]
    assert [action["name"] for action in body["actions"]] == ["add_conversation_labels"]
    assert list(body)[-2:] == ["actions", "sources"]
    rounds = stand_in.requests[-2:]
    for request in rounds:
        system = [m["content"] for m in request["messages"] if m["role"] == "system"]
        assert sum("Refunds are paid within 30 days" in text for text in system) == 1
        assert sum(text.startswith("The contact you are talking to") for text in system) == 1
    assert "tools" in rounds[0]


# --- the tool loop and the built-in actions ----------------------------------------------------------------


def test_built_in_actions_are_written_with_the_reply_and_shown_everywhere(client, api, api_key, stand_in):
    stand_in.script(
        calls(
            ("set_contact_attributes", {"attributes": [{"key": "language", "value": "pt"}]}),
            ("add_conversation_labels", {"labels": ["vip", "billing"]}),
        ),
        "Anotado!",
    )

    response = api.post(say("Prefiro português"))

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["actions"] == [
        {
            "type": "set_contact_attributes",
            "name": "set_contact_attributes",
            "status": "succeeded",
            "arguments": {"attributes": [{"key": "language", "value": "pt"}]},
        },
        {
            "type": "add_conversation_labels",
            "name": "add_conversation_labels",
            "status": "succeeded",
            "arguments": {"labels": ["vip", "billing"]},
        },
    ]
    assert body["conversation"]["labels"] == ["vip", "billing"]
    assert body["aiMessages"][0]["content"]["text"]["body"] == "Anotado!"
    # tokens summed over both calls of the model (the stand-in counts 10 in, 5 out per call)
    assert (body["usage"]["inputTokens"], body["usage"]["outputTokens"]) == (20, 10)
    assert Contact.objects.get(pk=body["contactId"]).attributes == {"language": "pt"}
    # the tools were offered as strict function tools, and their results went back to the model
    offered = {tool["function"]["name"]: tool["function"] for tool in stand_in.requests[0]["tools"]}
    assert set(offered) == {
        "close_conversation",
        "set_contact_attributes",
        "add_conversation_labels",
        "transfer_to_agent",
    }
    assert all(function["strict"] for function in offered.values())
    assert [result["ok"] for result in tool_results(stand_in.requests[1])] == [True, True]
    # the read API: the inbound message carries its turn's actions; the list filters by label
    message = client.get(f"/api/v1/messages/{body['messageId']}", HTTP_X_API_KEY=api_key).json()["message"]
    assert message["actions"] == body["actions"]
    listed = client.get("/api/v1/conversations", {"label": "vip"}, HTTP_X_API_KEY=api_key).json()["data"]
    assert [c["id"] for c in listed] == [body["conversationId"]]
    assert client.get("/api/v1/conversations", {"label": "nope"}, HTTP_X_API_KEY=api_key).json()["data"] == []
    # the transcript's record: each action with its result and duration
    stored = Message.objects.get(pk=body["messageId"]).actions
    assert [action["result"] for action in stored] == [
        json.dumps({"ok": True, "message": m}) for m in ("Saved.", "Labelled.")
    ]
    assert all(isinstance(action["durationMs"], int) for action in stored)


def test_labels_are_added_once_each_and_never_past_twenty(api, stand_in):
    stand_in.script(calls(("add_conversation_labels", {"labels": [f"l{i}" for i in range(15)]})), "One.")
    stand_in.script(calls(("add_conversation_labels", {"labels": ["l0", "l1", "new"]})), "Two.")
    stand_in.script(calls(("add_conversation_labels", {"labels": [f"m{i}" for i in range(10)]})), "Three.")

    first, second, third = (api.post(say(text)).json() for text in ("a", "b", "c"))

    assert first["conversation"]["labels"] == [f"l{i}" for i in range(15)]
    assert second["conversation"]["labels"] == [*(f"l{i}" for i in range(15)), "new"]
    assert third["conversation"]["labels"] == second["conversation"]["labels"]  # 26 would not fit: unchanged


def test_close_conversation_closes_after_this_reply(api, stand_in):
    stand_in.script(calls(("close_conversation", {})), "Bye!")

    body = api.post(say("Thanks, that's all")).json()

    assert (body["conversation"]["status"], body["conversation"]["closeReason"]) == ("CLOSED", "agent")
    assert body["aiMessages"][0]["content"]["text"]["body"] == "Bye!"
    assert Conversation.objects.get(pk=body["conversationId"]).close_reason == "agent"
    assert api.post(say("Hello again")).json()["conversationId"] != body["conversationId"]


def test_transfer_to_agent_hands_the_next_messages_to_the_other_agent(api, workspace, stand_in):
    support = AIAgentFactory.create(
        workspace=workspace, name="Support", provider="openai", base_url=stand_in.url, model="support-model"
    )
    stand_in.script(calls(("transfer_to_agent", {"agentId": support.pk})), "Passing you to Support.", "Support here.")

    first = api.post(say("I have a problem"))
    second = api.post(say("My order is late"))

    assert first.json()["conversation"]["aiAgentId"] == support.pk
    assert first.json()["conversation"]["aiAgentName"] == "Support"
    assert second.json()["conversation"]["aiAgentId"] == support.pk
    assert second.json()["conversationId"] == first.json()["conversationId"]
    assert stand_in.requests[-1]["model"] == "support-model"  # the next message went to Support
    assert "tools" not in stand_in.requests[-1]  # Support has no actions


def test_transfer_to_another_workspaces_agent_is_an_error_result_and_changes_nothing(api, agent, stand_in):
    stranger = AIAgentFactory.create(workspace=WorkspaceFactory(), provider="openai", base_url=stand_in.url)
    stand_in.script(calls(("transfer_to_agent", {"agentId": stranger.pk})), "I cannot transfer you.")

    body = api.post(say("Transfer me")).json()

    assert body["actions"][0]["status"] == "failed"
    assert body["conversation"]["aiAgentId"] == agent.pk
    assert tool_results(stand_in.requests[1])[0]["ok"] is False
    assert stranger.pk not in json.dumps(stand_in.requests[0]["tools"])  # never offered


def test_unknown_tools_and_arguments_outside_the_schema_are_error_results_never_a_5xx(api, stand_in):
    stand_in.script(
        calls(
            ("drop_database", {}),
            ("set_contact_attributes", "{not json"),
            ("set_contact_attributes", {"attributes": [{"key": "k", "value": 42}]}),
            ("add_conversation_labels", {"labels": ["x" * 65]}),
            ("close_conversation", {"now": True}),
        ),
        "Sorry, I could not do that.",
    )

    response = api.post(say("Do things"))

    assert response.status_code == 200
    assert [result["ok"] for result in tool_results(stand_in.requests[1])] == [False] * 5
    body = response.json()
    assert [a["status"] for a in body["actions"]] == ["failed"] * 4  # the unknown tool is no action
    assert body["conversation"]["status"] == "ACTIVE" and body["conversation"]["labels"] == []
    assert Contact.objects.get(pk=body["contactId"]).attributes == {}


def test_a_model_that_loops_gets_five_rounds_then_one_call_without_tools(api, stand_in):
    stand_in.script(*[calls(("add_conversation_labels", {"labels": [f"r{i}"]})) for i in range(5)], "Done looping.")

    body = api.post(say("Loop")).json()

    assert len(stand_in.requests) == 6
    assert all("tools" in request for request in stand_in.requests[:5]) and "tools" not in stand_in.requests[5]
    assert body["aiMessages"][0]["content"]["text"]["body"] == "Done looping."
    assert body["conversation"]["labels"] == [f"r{i}" for i in range(5)]


def test_a_model_that_still_calls_tools_when_none_are_offered_answers_the_fallback_text(api, agent, stand_in):
    stand_in.script(*[calls(("add_conversation_labels", {"labels": ["loop"]})) for _ in range(6)])

    response = api.post(say("Loop forever"))

    assert response.status_code == 200, response.content
    assert response.json()["aiMessages"][0]["content"]["text"]["body"] == agent.fallback_text
    assert len(stand_in.requests) == 6 and len(response.json()["actions"]) == 5


def test_a_failed_turn_changes_nothing(api, stand_in):
    # the model acts, then its next call fails: the turn is 502 and its actions are not written
    stand_in.script(
        calls(
            ("set_contact_attributes", {"attributes": [{"key": "k", "value": "v"}]}),
            ("add_conversation_labels", {"labels": ["x"]}),
            ("close_conversation", {}),
        ),
        Step("", status=500),
    )

    response = api.post(say("Hi"))

    assert response.status_code == 502
    message = Message.objects.get(direction=Message.Direction.INBOUND)
    assert (message.conversation.status, message.conversation.labels, message.actions) == ("ACTIVE", [], [])
    assert Contact.objects.get().attributes == {}


def test_an_agent_without_actions_is_offered_no_tools(client, workspace, api_key, stand_in):
    plain = AIAgentFactory.create(workspace=workspace, provider="openai", base_url=stand_in.url)
    body = Api(client, ChannelFactory(workspace=workspace, agent=plain), api_key).post(say("Hi")).json()

    assert "tools" not in stand_in.requests[0] and body["actions"] == []


@pytest.mark.django_db(transaction=True)  # the stream's phases run in a thread, on a connection of their own
def test_streaming_sends_an_action_event_as_each_completes(api, stand_in):
    stand_in.script(calls(("add_conversation_labels", {"labels": ["vip"]})), "Labelled you.")

    response = api.post(say("Hi"), **STREAM)
    events = [chunk for chunk in b"".join(response.streaming_content).split(b"\n\n") if b"\nevent: " in chunk]

    names = [event.split(b"\n")[1].removeprefix(b"event: ").decode() for event in events]
    assert names[0] == "action" and names[-1] == "done" and "delta" in names
    message_id = json.loads(events[-1].split(b"data: ", 1)[1])["messageId"]
    assert events[0].split(b"\n")[0] == f"id: {message_id}:action:1".encode()
    action = json.loads(events[0].split(b"data: ", 1)[1])
    assert action == {
        "type": "add_conversation_labels",
        "name": "add_conversation_labels",
        "status": "succeeded",
        "arguments": {"labels": ["vip"]},
    }
    assert json.loads(events[-1].split(b"data: ", 1)[1])["actions"] == [action]


# --- HTTP tools ------------------------------------------------------------------------------------------------


def test_an_http_tool_is_called_signed_and_keyed_and_its_answer_goes_to_the_model(
    api, stand_in, tool_server, order_tool
):
    stand_in.script(calls(("lookup_order", {"orderId": "A-1001", "verbose": None})), "Your order shipped.")

    response = api.post(say("Where is A-1001?"), idempotency_key="order-1")

    body = response.json()
    assert response.status_code == 200 and body["actions"][0]["status"] == "succeeded"
    (request,) = tool_server.requests
    sent = json.loads(request["body"])
    assert sent == {
        "arguments": {"orderId": "A-1001"},  # the optional property the model sent as null is left out
        "conversationId": body["conversationId"],
        "contactId": body["contactId"],
        "messageId": body["messageId"],
    }
    headers = {name.lower(): value for name, value in request["headers"].items()}
    assert headers["idempotency-key"] == f"{body['messageId']}.1" == headers["webhook-id"]
    Webhook(order_tool).verify(request["body"], headers)  # raises unless signed with the tool's own secret
    assert tool_results(stand_in.requests[1]) == [
        {"ok": True, "status": 200, "body": {"order": "A-1001", "status": "shipped"}}
    ]
    # the tool was offered with a strict schema: every property required, the optional one nullable
    (offered,) = [t["function"] for t in stand_in.requests[0]["tools"] if t["function"]["name"] == "lookup_order"]
    assert offered["parameters"]["required"] == ["orderId", "verbose"]
    assert offered["parameters"]["properties"]["verbose"]["type"] == ["boolean", "null"]
    # a replay calls nothing
    replay = api.post(say("Where is A-1001?"), idempotency_key="order-1")
    assert replay.content == response.content and len(tool_server.requests) == 1 and len(stand_in.requests) == 2


def test_a_retry_after_a_502_reuses_the_stored_call_and_never_calls_again(api, stand_in, tool_server, order_tool):
    # the tool is called, then the model's next call fails: 502, the call's result stays stored
    stand_in.script(calls(("lookup_order", {"orderId": "A-1", "verbose": None})), Step("", status=500))
    assert api.post(say("Order A-1?"), idempotency_key="retry-1").status_code == 502
    assert len(tool_server.requests) == 1
    (stored,) = ToolCall.objects.all()
    assert stored.status == ToolCall.Status.SUCCEEDED

    # the retry: the model asks for the same call again
    stand_in.script(calls(("lookup_order", {"orderId": "A-1", "verbose": None})), "It shipped.")
    retried = api.post(say("Order A-1?"), idempotency_key="retry-1")

    assert retried.status_code == 200, retried.content
    assert len(tool_server.requests) == 1  # not called again: its stored result went to the model
    assert tool_results(stand_in.requests[-1])[0]["body"] == {"order": "A-1001", "status": "shipped"}
    assert retried.json()["actions"][0]["status"] == "succeeded"


@pytest.mark.parametrize(
    ("behaviour", "error"),
    [
        ("hang", "timeout"),
        ("drip", "timeout"),
        ("huge", "too_large"),
        ("metadata_redirect", "address_refused"),
        ("error", "http_status"),
    ],
)
def test_a_misbehaving_tool_is_an_error_result_and_the_turn_answers(
    api, stand_in, tool_server, agent, behaviour, error
):
    tool_server.behaviour = behaviour
    secret = agent_tool_put(
        agent_id=agent.pk,
        name="lookup_order",
        description="Look up an order.",
        method="GET",
        url=tool_server.url,
        parameters=ORDER_PARAMETERS,
        timeout_seconds=1,
    )
    stand_in.script(calls(("lookup_order", {"orderId": "A-1", "verbose": True})), "Sorry, the order system is down.")

    started = time.monotonic()
    response = api.post(say("Order?"))

    assert response.status_code == 200, response.content
    assert time.monotonic() - started < 10
    (result,) = tool_results(stand_in.requests[1])
    assert (result["ok"], result["error"]) == (False, error)
    assert response.json()["actions"][0]["status"] == "failed"
    if behaviour == "metadata_redirect":
        assert len(tool_server.requests) == 1  # the redirect was never followed to the metadata address
    if behaviour != "metadata_redirect":
        request = tool_server.requests[0]
        assert request["path"] == "/orders?orderId=A-1&verbose=true"
        headers = {name.lower(): value for name, value in request["headers"].items()}
        assert Webhook(secret).verify(json.dumps(request["path"].split("?", 1)[1]), headers) == (
            "orderId=A-1&verbose=true"
        )


def test_a_tool_answering_invalid_json_gives_the_model_its_text(api, stand_in, tool_server, order_tool):
    tool_server.behaviour = "invalid_json"
    stand_in.script(calls(("lookup_order", {"orderId": "A-1", "verbose": None})), "Hmm.")

    assert api.post(say("Order?")).status_code == 200

    assert tool_results(stand_in.requests[1]) == [{"ok": True, "status": 200, "body": '{"order": "A-10'}]


def test_a_call_started_by_a_dead_attempt_is_not_repeated_for_a_post_tool(api, stand_in, tool_server, order_tool):
    # an attempt stored the call and died before storing its result (a killed worker): the call may have
    # happened, so the retry does not make it again
    stand_in.script(calls(("lookup_order", {"orderId": "A-1", "verbose": None})), Step("", status=500))
    assert api.post(say("Order?"), idempotency_key="dead-1").status_code == 502
    ToolCall.objects.update(status=ToolCall.Status.STARTED, result="", finished_at=None)
    stand_in.script(calls(("lookup_order", {"orderId": "A-1", "verbose": None})), "I could not check.")

    assert api.post(say("Order?"), idempotency_key="dead-1").status_code == 200

    assert len(tool_server.requests) == 1
    assert "outcome is unknown" in tool_results(stand_in.requests[-1])[0]["error"]


# --- the commands ----------------------------------------------------------------------------------------------


def test_agent_actions_command_enables_and_disables(agent, capsys):
    call_command("agent", "actions", agent.pk, "--disable", "transfer_to_agent,close_conversation")
    call_command("agent", "actions", agent.pk, "--enable", "close_conversation")

    agent.refresh_from_db()
    assert agent.actions == ["set_contact_attributes", "add_conversation_labels", "close_conversation"]
    assert (
        capsys.readouterr().out.strip().splitlines()[-1]
        == "set_contact_attributes,add_conversation_labels,close_conversation"
    )


def test_agent_tool_command_adds_prints_the_secret_once_and_refuses_a_private_address(agent, tool_server, capsys):
    from django.core.management.base import CommandError

    call_command(
        "agent", "tool", "add", agent.pk, "--name", "lookup_order", "--description", "Orders.", "--method", "GET",
        "--url", tool_server.url, "--parameters", json.dumps(ORDER_PARAMETERS), "--header", "X-Shop-Key",
        "--header-env", "SHOP_KEY",
    )  # fmt: skip
    secret = capsys.readouterr().out.strip()
    assert secret.startswith("whsec_")
    tool = AgentTool.objects.get(agent=agent)
    assert secret.encode() not in bytes(tool.secret_encrypted) and tool.header_env_var == "SHOP_KEY"

    with pytest.raises(CommandError, match="url"):
        call_command(
            "agent", "tool", "add", agent.pk, "--name", "meta", "--description", "x", "--method", "GET",
            "--url", "http://169.254.169.254/latest", "--parameters", json.dumps(ORDER_PARAMETERS),
        )  # fmt: skip
    with pytest.raises(CommandError, match="parameters"):
        call_command(
            "agent", "tool", "add", agent.pk, "--name", "ref", "--description", "x", "--method", "GET",
            "--url", tool_server.url, "--parameters", json.dumps({"type": "object", "$ref": "#/x"}),
        )  # fmt: skip
    call_command("agent", "tool", "remove", agent.pk, "lookup_order")
    assert not AgentTool.objects.filter(agent=agent).exists()


# --- the admin -------------------------------------------------------------------------------------------------


def test_the_transcript_shows_each_action_with_arguments_result_and_duration(admin_client, api, stand_in):
    stand_in.script(calls(("add_conversation_labels", {"labels": ["vip"]})), "Done.")
    body = api.post(say("Hi")).json()

    page = admin_client.get(f"/admin/conversations/conversation/{body['conversationId']}/change/").content.decode()

    actions = page.split('class="message-actions"', 1)[1].split("</ol>", 1)[0]
    assert "add_conversation_labels" in actions and "succeeded" in actions and " ms" in actions
    assert "{&quot;labels&quot;: [&quot;vip&quot;]}" in actions  # the arguments
    assert "Labelled." in actions  # the result


def test_the_admin_saves_a_tool_with_a_new_secret_shown_once_and_refuses_a_private_url(
    admin_client, agent, tool_server
):
    form = {
        "agent": agent.pk,
        "name": "lookup_order",
        "description": "Orders.",
        "method": "GET",
        "url": tool_server.url,
        "parameters": json.dumps(ORDER_PARAMETERS),
        "header_name": "",
        "header_env_var": "",
        "timeout_seconds": "5",
    }
    saved = admin_client.post("/admin/channels_app/agenttool/add/", form, follow=True)

    tool = AgentTool.objects.get(agent=agent)
    (notice,) = [str(message) for message in saved.context["messages"] if "whsec_" in str(message)]
    secret = notice.rsplit(" ", 1)[1]
    assert Webhook(secret)  # a Standard Webhooks secret
    assert secret.encode() not in bytes(tool.secret_encrypted)

    refused = admin_client.post(
        "/admin/channels_app/agenttool/add/", {**form, "name": "meta", "url": "http://169.254.169.254/x"}
    )
    assert refused.status_code == 200 and "url" in refused.context["adminform"].form.errors
    assert AgentTool.objects.filter(agent=agent).count() == 1


# --- races and deaths ------------------------------------------------------------------------------------------


class _Killed(BaseException):
    """Stands for the worker's death: no `except Exception` of ours sees it, so no failure is recorded."""


def test_a_worker_killed_between_a_tool_call_and_the_record_phase_is_retried_without_calling_again(
    api, stand_in, tool_server, order_tool, monkeypatch
):
    from api.flow import writes
    from api.models import IdempotencyRecord

    stand_in.script(calls(("lookup_order", {"orderId": "A-1", "verbose": None})), "It shipped.")

    def killed(**kwargs):
        raise _Killed

    with monkeypatch.context() as patched:
        patched.setattr(writes, "replies_store", killed)
        with pytest.raises(_Killed):
            api.post(say("Order A-1?"), idempotency_key="killed-1")
    assert len(tool_server.requests) == 1 and ToolCall.objects.get().status == ToolCall.Status.SUCCEEDED
    # the dead request's lease and the key's lock run out
    past = timezone.now() - timedelta(seconds=1)
    Message.objects.filter(direction=Message.Direction.INBOUND).update(lease_until=past)
    IdempotencyRecord.objects.update(locked_until=past)
    stand_in.script(calls(("lookup_order", {"orderId": "A-1", "verbose": None})), "It shipped.")

    retried = api.post(say("Order A-1?"), idempotency_key="killed-1")

    assert retried.status_code == 200, retried.content
    assert len(tool_server.requests) == 1
    assert retried.json()["actions"][0]["status"] == "succeeded"
    assert Message.objects.filter(direction=Message.Direction.INBOUND).count() == 1


@pytest.mark.django_db(transaction=True)
def test_an_idempotent_replay_racing_the_first_request_calls_the_tool_once(api, stand_in, tool_server, order_tool):
    from django.db import connections
    from django.test import Client

    tool_server.behaviour = "held"
    stand_in.script(calls(("lookup_order", {"orderId": "A-1", "verbose": None})), "It shipped.")
    first: list = []

    def send() -> None:
        try:
            first.append(Api(Client(), api.channel, api.key).post(say("Order A-1?"), idempotency_key="race-1"))
        finally:
            connections.close_all()

    thread = threading.Thread(target=send)
    thread.start()
    deadline = time.monotonic() + 20
    while not tool_server.requests and time.monotonic() < deadline:
        time.sleep(0.02)
    assert tool_server.requests, "the first request did not reach the tool"

    racing = api.post(say("Order A-1?"), idempotency_key="race-1")  # while the first waits for the tool

    tool_server.release.set()
    thread.join(30)
    assert error_of(racing, status=409)["code"] == "idempotency_in_progress"
    assert first[0].status_code == 200, first[0].content
    replay = api.post(say("Order A-1?"), idempotency_key="race-1")
    assert replay.content == first[0].content
    assert len(tool_server.requests) == 1 and len(stand_in.requests) == 2


def test_a_tools_header_comes_from_its_environment_variable_at_each_call(
    api, agent, stand_in, tool_server, monkeypatch
):
    agent_tool_put(
        agent_id=agent.pk,
        name="lookup_order",
        description="Orders.",
        method="GET",
        url=tool_server.url,
        parameters=ORDER_PARAMETERS,
        header_name="X-Shop-Key",
        header_env_var="TEST_SHOP_KEY",
    )
    monkeypatch.setenv("TEST_SHOP_KEY", "shop-key-1")
    stand_in.script(calls(("lookup_order", {"orderId": "A-1", "verbose": None})), "One.")
    assert api.post(say("Order?")).status_code == 200
    monkeypatch.delenv("TEST_SHOP_KEY")
    stand_in.script(calls(("lookup_order", {"orderId": "A-2", "verbose": None})), "Two.")
    assert api.post(say("Order?")).status_code == 200

    assert [request["headers"].get("X-Shop-Key") for request in tool_server.requests] == ["shop-key-1"]
    assert tool_results(stand_in.requests[-1]) == [{"ok": False, "error": "header_variable_unset"}]
    assert "shop-key-1" not in json.dumps(list(AgentTool.objects.values()), default=str)  # never stored
