"""History rows made directly (no agent run) for the admin tests: a conversation with a text exchange, a media
(IMAGE) exchange and a document the agent failed to answer."""

import hashlib
from dataclasses import dataclass
from datetime import timedelta

from django.utils import timezone

from api.models import IdempotencyRecord
from billing.models import UsageLedgerEntry
from channels_app.models import Channel
from contacts.models import Contact
from contacts.services import contact_create
from conversations.models import Conversation, MediaAsset, Message

IMAGE_URL = "https://cdn.example.com/uploads/receipt-42.png"
DOCUMENT_URL = "https://cdn.example.com/uploads/invoice-42.pdf"
IMAGE_SIZE, DOCUMENT_SIZE = 48_213, 1_572_864


@dataclass
class History:
    contact: Contact
    conversation: Conversation
    messages: list[Message]


def conversation_with_exchanges(*, channel: Channel, identifier: str = "ada@example.com") -> History:
    workspace = channel.workspace
    contact = contact_create(workspace_id=workspace.pk, identifier=identifier, name="Ada Lovelace")
    conversation = Conversation.objects.create(
        workspace=workspace,
        channel=channel,
        contact=contact,
        agent=channel.agent,
        last_seq=3,
        last_message_at=timezone.now(),
    )

    def message(seq, part, direction, type, content, **fields):
        return Message.objects.create(
            conversation=conversation, seq=seq, part=part, direction=direction, type=type, content=content, **fields
        )

    inbound, outbound = Message.Direction.INBOUND, Message.Direction.OUTBOUND
    question = message(1, 0, inbound, "TEXT", {"text": {"body": "Can I get a refund?"}}, status="ANSWERED")
    answer = message(
        1,
        1,
        outbound,
        "TEXT",
        {"text": {"body": "Yes, within 30 days of purchase."}},
        status="SENT",
        reply_to=question,
        credits=1,
        input_tokens=28,
        output_tokens=40,
    )
    answer_more = message(
        1, 2, outbound, "TEXT", {"text": {"body": "Reply with your order number."}}, status="SENT", reply_to=question
    )
    asset = MediaAsset.objects.create(
        workspace=workspace,
        url=IMAGE_URL,
        url_sha256=hashlib.sha256(IMAGE_URL.encode()).hexdigest(),
        sha256="ab" * 32,
        file=f"media/ab/{'ab' * 32}.png",
        mime_type="image/png",
        size=IMAGE_SIZE,
        expires_at=timezone.now() + timedelta(days=1),
    )
    image = message(
        2,
        0,
        inbound,
        "IMAGE",
        {"image": {"url": IMAGE_URL, "caption": "My receipt"}},
        status="ANSWERED",
        media_asset=asset,
        media_mime_type="image/png",
        media_size=IMAGE_SIZE,
    )
    image_answer = message(
        2,
        1,
        outbound,
        "TEXT",
        {"text": {"body": "Thanks, I can see your receipt."}},
        status="SENT",
        reply_to=image,
        credits=2,
        input_tokens=300,
        output_tokens=20,
    )
    document = message(
        3,
        0,
        inbound,
        "DOCUMENT",
        {"document": {"url": DOCUMENT_URL, "filename": "invoice-42.pdf", "caption": "The invoice"}},
        status="FAILED",
        error_code="agent_timeout",
        media_mime_type="application/pdf",
        media_size=DOCUMENT_SIZE,
    )  # its cached copy has expired: the message keeps the facts
    for charged in (question, image):
        UsageLedgerEntry.objects.create(
            workspace=workspace,
            kind=UsageLedgerEntry.Kind.CHARGE,
            delta=-1,
            balance_after=0,
            message=charged,
            input_tokens=28,
            output_tokens=40,
        )
    IdempotencyRecord.objects.create(
        workspace=workspace,
        key=f"idem-{identifier}",
        fingerprint="0" * 64,
        state="COMPLETED",
        expires_at=conversation.created_at,
        message=question,
        response_status=200,
        response_body=b'{"success":true}',
    )
    return History(
        contact=contact,
        conversation=conversation,
        messages=[question, answer, answer_more, image, image_answer, document],
    )
