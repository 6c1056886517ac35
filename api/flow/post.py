"""The messages endpoint's one entry: accept, then think and record in the request, later or as a stream.
It stands above the three modes' modules (api/flow/messaging.py, api/flow/later.py, api/flow/streaming.py),
so that none of them imports another that imports it back."""

from api.flow.idempotency import IdempotencyInProgress, Replay, idempotency_message_id
from api.flow.later import message_answer_later
from api.flow.messaging import InboundRequest, PostResult, _accept, message_answer, processing_result
from api.flow.streaming import message_answer_streamed
from config.db import connection_release


def message_post(*, inbound: InboundRequest, respond_async: bool = False, stream: bool = False) -> PostResult:
    """Accept, think, record (api/flow/messaging.py).

    With `respond_async` (README "Replies later") only the accept phase runs here: the answer is 202 with the
    message's ids, and think and record run later (api/flow/later.py), in a Celery worker or, without a broker, in
    a background thread of this process. A retry with the same key while that runs answers the same 202; once
    answered, the stored 200 body. With `stream` the answer's `events` stream it as the agent writes
    (api/flow/streaming.py)."""
    try:
        accepted = _accept(inbound)
    except IdempotencyInProgress:
        message_id = (
            idempotency_message_id(
                workspace_id=inbound.workspace.pk, key=inbound.idempotency_key, fingerprint=inbound.fingerprint
            )
            if respond_async and inbound.idempotency_key is not None
            else None
        )
        if message_id is None:
            raise
        return processing_result(message_id=message_id)
    if isinstance(accepted, Replay):
        return PostResult(status=accepted.status, body=accepted.body, replayed=True)
    connection_release()
    if respond_async:
        message_answer_later(accepted)
        return processing_result(
            message_id=accepted.message.pk, contact_id=accepted.contact_id, conversation_id=accepted.conversation_id
        )
    if stream:
        return message_answer_streamed(accepted)
    return message_answer(accepted)
