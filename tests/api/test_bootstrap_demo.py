import json
from pathlib import Path

import pytest
from django.core.management import call_command

from api.maintenance.demo import demo_key_file
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


@pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")
def test_each_database_keeps_its_own_demo_key(db, capsys, settings, tmp_path):
    """Pointing DATABASE_URL at another database and back finds the first database's key again."""
    settings.BASE_DIR = tmp_path
    default = settings.DATABASES["default"]
    settings.DATABASES = {"default": {**default, "NAME": "first.sqlite3"}}
    first = json.loads(run(capsys, "--json"))["apiKey"]
    settings.DATABASES = {"default": {**default, "NAME": "second.sqlite3"}}
    second = json.loads(run(capsys, "--json"))["apiKey"]
    settings.DATABASES = {"default": {**default, "NAME": "first.sqlite3"}}
    again = json.loads(run(capsys, "--json"))["apiKey"]

    assert second != first
    assert again == first  # not a new key: the first database's file was kept
    assert len(list((tmp_path / "var").glob("demo-key-*.json"))) == 2


def test_the_key_file_name_comes_from_the_database_not_its_password():
    base = {"ENGINE": "django.db.backends.postgresql", "HOST": "db", "PORT": "5432", "NAME": "app"}

    def name(**change):
        return demo_key_file(base_dir=Path("/x"), database={**base, **change}).name

    assert name() == name(PASSWORD="other") and name().startswith("demo-key-")
    assert len({name(), name(NAME="app2"), name(HOST="db2"), name(PORT="5433")}) == 4


@pytest.mark.parametrize(
    ("bind", "url"),
    [
        ("127.0.0.1:8000", "http://127.0.0.1:8000"),
        ("0.0.0.0:9000", "http://127.0.0.1:9000"),
        ("[::]:8080", "http://[::1]:8080"),
        ("[::1]:8080", "http://[::1]:8080"),
        ("localhost:81", "http://localhost:81"),
        ("8001", "http://127.0.0.1:8001"),
    ],
)
def test_the_curl_line_uses_the_address_served(db, capsys, settings, tmp_path, bind, url):
    settings.BASE_DIR = tmp_path
    out = run(capsys, "--bind", bind)
    assert f"curl -s -X POST {url}/api/v1/channels/" in out


def test_the_curl_line_follows_the_bind_variable(db, capsys, settings, tmp_path, monkeypatch):
    settings.BASE_DIR = tmp_path
    monkeypatch.setenv("BIND", "127.0.0.1:8123")
    assert "curl -s -X POST http://127.0.0.1:8123/api/" in run(capsys)
