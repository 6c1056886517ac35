"""A contact's message through the API: accept, think, record (docs/architecture.md), run in the request,
later (a Celery task or a thread) or as a stream, with the idempotency store and the record phase's
statements. It never imports the edge (api/edge/)."""
