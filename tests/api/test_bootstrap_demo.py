import json

from django.core.management import call_command

from billing.models import UsageLedgerEntry
from channels_app.models import AIAgent, Channel, Workspace, WorkspaceApiKey
from tests.conftest import SEED_TEXT, Api


def run(capsys, *args) -> str:
    call_command("bootstrap_demo", *args)
    return capsys.readouterr().out


def test_bootstrap_demo_is_idempotent_and_its_key_works(db, capsys, client, settings, tmp_path):
    settings.BASE_DIR = tmp_path
    first = json.loads(run(capsys, "--json"))
    second = json.loads(run(capsys, "--json"))

    assert first == second
    assert set(first) == {"workspaceId", "channelId", "apiKey"}
    assert Workspace.objects.count() == Channel.objects.count() == AIAgent.objects.count() == 1
    assert WorkspaceApiKey.objects.count() == 1
    assert UsageLedgerEntry.objects.get().delta == 1000
    assert AIAgent.objects.get().provider == "builtin"
    response = Api(client, Channel.objects.get(), first["apiKey"]).post(
        {**SEED_TEXT, "content": {"text": {"body": "How long does shipping take?"}}}
    )
    assert response.status_code == 200
    assert "ship" in response.json()["aiMessages"][0]["content"]["text"]["body"]


def test_bootstrap_demo_prints_a_curl_line(db, capsys, settings, tmp_path):
    settings.BASE_DIR = tmp_path
    out = run(capsys)
    channel = Channel.objects.get()
    assert f"/api/v1/channels/{channel.pk}/messages" in out and "curl" in out and "X-API-Key" in out


def test_bootstrap_demo_uses_llm_settings(db, capsys, settings, tmp_path):
    settings.BASE_DIR = tmp_path
    settings.LLM_BASE_URL, settings.LLM_MODEL = "http://127.0.0.1:9/v1", "tiny"
    run(capsys, "--json")
    agent = AIAgent.objects.get()
    assert (agent.provider, agent.base_url, agent.model, agent.api_key_env_var) == (
        "openai",
        "http://127.0.0.1:9/v1",
        "tiny",
        "LLM_API_KEY",
    )


def test_bootstrap_demo_replaces_a_key_that_no_longer_works(db, capsys, settings, tmp_path):
    settings.BASE_DIR = tmp_path
    first = json.loads(run(capsys, "--json"))
    WorkspaceApiKey.objects.update(revoked=True)
    second = json.loads(run(capsys, "--json"))
    assert second["apiKey"] != first["apiKey"]
