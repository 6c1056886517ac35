"""Calls of an agent's HTTP tools (README "HTTP tools"): the webhooks' transport, address rules and signer.

A call goes through the media download's session (conversations/media/transport.py): every address it
connects to is checked against the webhook address rules (WEBHOOK_ALLOW_PRIVATE_HOSTS is their only
exception), and the whole call is cut at its deadline by `_DeadlineGuard` (a server that drips cannot hold
it). A GET tool follows at most TOOL_REDIRECTS_MAX redirects, each URL checked again; a POST tool follows
none (its body is not sent twice). It is signed per Standard Webhooks with the tool's own secret: the
`webhook-id` is the call's Idempotency-Key, the signed body the POST's JSON or the GET's query string as a
JSON string.
Every failure is an answer (`ToolAnswer.error`), for the model: nothing here raises for the network.
"""

import http.client
import json
import os
import re
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit

import requests
import urllib3
from django.db import transaction
from django.utils import timezone

from channels_app.models import AgentTool
from channels_app.tool_schema import schema_errors
from channels_app.validators import BUILTIN_ACTIONS, TOOL_NAME_PATTERN, TOOL_TIMEOUT_MAX_SECONDS
from conversations.agents.base import ToolSpec
from conversations.media.transport import _DeadlineGuard, _session
from webhooks.address import ALLOW_SETTING, url_syntax_reason, webhook_url_check
from webhooks.delivery import _failure_outcome, attempt_headers
from webhooks.errors import WebhookUrlNotAllowed
from webhooks.secret import SecretUnreadable, secret_decrypt, secret_encrypt, secret_generate

USER_AGENT = "ChannelsAPI-Tools/1.0"
TOOL_CONNECT_SECONDS = 3.0
TOOL_ANSWER_MAX_BYTES = 64 * 1024
TOOL_REDIRECTS_MAX = 3
_READ_CHUNK = 16 * 1024


@dataclass(frozen=True)
class ToolAnswer:
    """What a call came to: `error` None and the answer's `status` and `body` (its JSON, or its text when it
    is not JSON), or an `error` word (timeout, http_status, too_large, address_refused, ...)."""

    error: str | None
    status: int | None = None
    body: Any = None

    def for_model(self) -> str:
        if self.error is None:
            return json.dumps({"ok": True, "status": self.status, "body": self.body}, ensure_ascii=False)
        failed: dict[str, Any] = {"ok": False, "error": self.error}
        if self.status is not None:
            failed.update(status=self.status, body=self.body)
        return json.dumps(failed, ensure_ascii=False)


def tool_call_send(
    *, tool: ToolSpec, arguments: dict[str, Any], ids: dict[str, str], idempotency_key: str, deadline: float
) -> ToolAnswer:
    """Call `tool` once with `arguments` (and, in a POST's body, the conversation's, contact's and message's
    `ids`) before the monotonic `deadline` (the tool's own timeout, cut to what the agent has left)."""
    if tool.header_env_var and not os.environ.get(tool.header_env_var):
        return ToolAnswer(error="header_variable_unset")
    try:
        secret = secret_decrypt(encrypted=tool.secret_encrypted)
    except SecretUnreadable:
        return ToolAnswer(error="secret_unreadable")
    deadline = min(deadline, time.monotonic() + tool.timeout_seconds)
    total = deadline - time.monotonic()
    if total <= 0:
        return ToolAnswer(error="timeout")
    if tool.method == "POST":
        payload = json.dumps({"arguments": arguments, **ids}, ensure_ascii=False, separators=(",", ":"))
        url = tool.url
    else:
        # strings as they are, anything else as its JSON (true, 12.5, ["a"])
        payload = urlencode({k: v if isinstance(v, str) else json.dumps(v) for k, v in arguments.items()})
        url = f"{tool.url}{'&' if urlsplit(tool.url).query else '?'}{payload}" if payload else tool.url
    # A GET's query string is signed as a JSON string (`"orderId=A-1"`): standardwebhooks' verify reads JSON.
    signed = payload if tool.method == "POST" else json.dumps(payload)
    headers = attempt_headers(event_id=idempotency_key, payload=signed, secret=secret, at=timezone.now())
    headers["Idempotency-Key"] = idempotency_key
    if tool.header_name and tool.header_env_var:
        headers[tool.header_name] = os.environ[tool.header_env_var]
    with (
        _session(timeout=total, allow_setting=ALLOW_SETTING, user_agent=USER_AGENT) as session,
        _DeadlineGuard(deadline=deadline) as guard,
    ):
        try:
            return _send(session, tool=tool, url=url, payload=payload, headers=headers, deadline=deadline)
        except (
            requests.RequestException,
            urllib3.exceptions.HTTPError,
            http.client.HTTPException,
            OSError,
            ValueError,
        ) as exc:
            return ToolAnswer(error=str(_failure_outcome(exc, expired=guard.expired or time.monotonic() >= deadline)))


def _send(
    session: requests.Session, *, tool: ToolSpec, url: str, payload: str, headers: dict[str, str], deadline: float
) -> ToolAnswer:
    for _hop in range(TOOL_REDIRECTS_MAX + 1):
        if url_syntax_reason(url=url) is not None:
            return ToolAnswer(error="address_refused")
        left = max(deadline - time.monotonic(), 0.001)
        response = session.request(
            tool.method,
            url,
            data=payload.encode() if tool.method == "POST" else None,
            headers=headers,
            allow_redirects=False,
            stream=True,
            timeout=(min(TOOL_CONNECT_SECONDS, left), left),
        )
        with response:
            if response.is_redirect and tool.method == "GET":
                url = urljoin(url, response.headers.get("location", ""))
                continue
            data, complete = _read(response, deadline=deadline)
        if not complete:
            return ToolAnswer(error="too_large", status=response.status_code)
        text = data.decode("utf-8", errors="replace").replace("\x00", "\ufffd")
        try:
            body: Any = json.loads(text)
        except ValueError:
            body = text
        if not 200 <= response.status_code < 300:
            return ToolAnswer(error="http_status", status=response.status_code, body=text[:1024])
        return ToolAnswer(error=None, status=response.status_code, body=body)
    return ToolAnswer(error="too_many_redirects")


def _read(response: requests.Response, *, deadline: float) -> tuple[bytes, bool]:
    """The answer's body, at most TOOL_ANSWER_MAX_BYTES (False: there was more), read until the deadline."""
    data = bytearray()
    while len(data) <= TOOL_ANSWER_MAX_BYTES:
        if deadline - time.monotonic() <= 0:
            raise TimeoutError("the tool's deadline passed while reading its answer")
        chunk = response.raw.read1(_READ_CHUNK)
        if not chunk:
            return bytes(data), True
        data += chunk
    return bytes(data[:TOOL_ANSWER_MAX_BYTES]), False


# --- setting up a tool (manage.py agent tool, the admin) ---------------------------------------------------


def agent_tool_problems(
    *, name: str, method: str, url: str, parameters: Any, header_name: str, header_env_var: str, timeout_seconds: float
) -> dict[str, str]:
    """What is wrong with a tool's definition, by field; {} when nothing is. The URL is checked under the
    webhook address rules (its host resolved), the parameters against the strict subset."""
    problems: dict[str, str] = {}
    if not re.fullmatch(TOOL_NAME_PATTERN, name):
        problems["name"] = "Use 1 to 64 of A-Z a-z 0-9 _ -."
    elif name in BUILTIN_ACTIONS:
        problems["name"] = "This is a built-in action's name. Choose another."
    if method not in ("GET", "POST"):
        problems["method"] = "GET or POST."
    try:
        webhook_url_check(url=url)
    except WebhookUrlNotAllowed as error:
        problems["url"] = error.message
    errors = schema_errors(parameters)
    if errors:
        problems["parameters"] = "; ".join(errors[:5])
    if bool(header_name) != bool(header_env_var):
        problems["header"] = "Give both the header's name and the environment variable of its value, or neither."
    elif header_env_var and not re.fullmatch(r"[A-Z][A-Z0-9_]*", header_env_var):
        problems["header"] = "Name the environment variable in capitals, digits and underscores."
    if not 0 < timeout_seconds <= TOOL_TIMEOUT_MAX_SECONDS:
        problems["timeout"] = f"More than 0 and at most {TOOL_TIMEOUT_MAX_SECONDS:g} seconds."
    return problems


def agent_tool_put(
    *,
    agent_id: str,
    name: str,
    description: str,
    method: str,
    url: str,
    parameters: dict[str, Any],
    header_name: str = "",
    header_env_var: str = "",
    timeout_seconds: float = 10.0,
) -> str:
    """Add the agent's HTTP tool `name`, or replace it, with a new signing secret; returns the secret (shown
    once: it is stored encrypted). Raises ValueError with the problems (`agent_tool_problems`)."""
    problems = agent_tool_problems(
        name=name,
        method=method,
        url=url,
        parameters=parameters,
        header_name=header_name,
        header_env_var=header_env_var,
        timeout_seconds=timeout_seconds,
    )
    if problems:
        raise ValueError("; ".join(f"{field}: {why}" for field, why in problems.items()))
    secret = secret_generate()
    with transaction.atomic():
        AgentTool.objects.filter(agent_id=agent_id, name=name).delete()
        AgentTool(
            agent_id=agent_id,
            name=name,
            description=description,
            method=method,
            url=url,
            parameters=parameters,
            header_name=header_name,
            header_env_var=header_env_var,
            secret_encrypted=secret_encrypt(secret=secret),
            timeout_seconds=timeout_seconds,
        ).save(force_insert=True)
    return secret
