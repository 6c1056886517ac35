"""The AIAgent row's validation (what the admin and any ModelForm enforce)."""

import pytest
from django.core.exceptions import ValidationError

from tests.factories import AIAgentFactory


@pytest.mark.parametrize("name", ["", "LLM_API_KEY", "OPENAI_API_KEY", "AZURE_OPENAI_EU2_API_KEY"])
def test_key_variable_shaped_like_a_key_is_accepted(db, name):
    agent = AIAgentFactory.build(workspace=AIAgentFactory().workspace, api_key_env_var=name)

    agent.full_clean()


@pytest.mark.parametrize(
    "name",
    [
        "SECRET_KEY",
        "DATABASE_URL",
        "REDIS_URL",
        "openai_api_key",
        "API_KEY",
        "_API_KEY",
        "1_API_KEY",
        "OPENAI_API_KEY_FILE",
        "OPENAI-API-KEY",
        "OPENAI_API_KEY\n",
        "LLM API_KEY",
    ],
)
def test_key_variable_not_shaped_like_a_key_is_refused(db, name):
    agent = AIAgentFactory.build(workspace=AIAgentFactory().workspace, api_key_env_var=name)

    with pytest.raises(ValidationError) as raised:
        agent.full_clean()

    assert list(raised.value.message_dict) == ["api_key_env_var"]
    assert "_API_KEY" in raised.value.message_dict["api_key_env_var"][0]
