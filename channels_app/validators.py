"""Rules on the tenant's configuration that are checked twice: by the model when an operator saves it
(channels_app.models), and again by the code that acts on it (conversations/agents/base.py)."""

# The names an agent may give for the environment variable that holds its provider key. The key is sent as
# a bearer token to the agent's base_url, which an operator chooses: any name would let the agent send
# SECRET_KEY or DATABASE_URL there. LLM_API_KEY (the platform's own) matches too.
API_KEY_ENV_VAR_PATTERN = r"^[A-Z][A-Z0-9_]*_API_KEY\Z"  # \Z, not $: "$" also matches before a final newline

# An agent's built-in actions (README "Actions") and its HTTP tools' names and time limit.
BUILTIN_ACTIONS = ("close_conversation", "set_contact_attributes", "add_conversation_labels", "transfer_to_agent")
HTTP_TOOL_ACTION = "http_tool"  # an action's `type` for a call of an HTTP tool
TOOL_NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}\Z"
TOOL_TIMEOUT_MAX_SECONDS = 30.0
