"""The HTTP edge of the API: views, URLs, request parsing, throttling and the OpenAPI document. It checks and
translates requests and renders answers; what a message does is the flow's (api/flow/), what acts on stored
data outside a message is the maintenance's (api/maintenance/). Layers: docs/architecture.md."""
