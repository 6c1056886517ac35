"""The one-way rule between the apps (README "Layout"): the layers below, lowest first. Each one imports, points
its foreign keys and has its migrations depend only on itself and the layers before it, never on a later one.
tests/ and bench/ stand outside the layers: they may use everything, and no layer may use them.

Inside `api` the same rule holds between its parts (API_PARTS, docs/architecture.md "Layers"), and no two of its
modules import each other, not even through others or inside a function."""

import ast
import subprocess
import sys
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest
from django.apps import apps
from django.conf import settings
from django.db.migrations.loader import MigrationLoader
from django.test import Client

ROOT = Path(__file__).resolve().parent.parent
LAYERS = [
    "config",
    "channels_app",
    "contacts",
    "conversations",
    "billing",
    "webhooks",
    "analytics",
    "backoffice",
    "api",
]
OUTSIDE = {"tests", "bench"}  # importable by no layer
# api's parts, lowest first: the models and the bodies' serializers; what acts on stored data outside a message;
# a message's flow; the HTTP edge; the other ways in (Celery's tasks, the admin, manage.py's commands).
API_PARTS = [
    ("api.models", "api.serializers", "api.apps", "api.migrations"),
    ("api.maintenance",),
    ("api.flow",),
    ("api.edge",),
    ("api.tasks", "api.admin", "api.management"),
]


def layer(package: str) -> int | None:
    return LAYERS.index(package) if package in LAYERS else None


def imported_packages(path: Path) -> list[tuple[int, str]]:
    """(line, top-level package) of every absolute import in the file, at module level or inside a function."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
    return found


def import_violations(root: Path) -> list[str]:
    violations = []
    for own, package in enumerate(LAYERS):
        for path in sorted((root / package).rglob("*.py")):
            for line, imported in imported_packages(path):
                target = layer(imported)
                if imported in OUTSIDE or (target is not None and target > own):
                    violations.append(f"{path.relative_to(root)}:{line} imports {imported}")
    return violations


def module_name(root: Path, path: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(root: Path, path: Path) -> list[tuple[int, str]]:
    """(line, module) of every absolute import of the tree's own modules in the file: `from api.flow import
    later` names api.flow.later, `from api.flow.later import x` api.flow.later."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                package = root.joinpath(*submodule.split("."))
                is_module = package.with_suffix(".py").exists() or (package / "__init__.py").exists()
                found.append((node.lineno, submodule if is_module else node.module))
    return found


def api_part(module: str) -> int | None:
    return next(
        (
            index
            for index, names in enumerate(API_PARTS)
            for name in names
            if module == name or module.startswith(name + ".")
        ),
        None,
    )


def api_violations(root: Path) -> list[str]:
    """An import of a later part of api, and every cycle among api's modules."""
    violations, graph = [], {}
    for path in sorted((root / "api").rglob("*.py")):
        own = module_name(root, path)
        imported = [(line, module) for line, module in imported_modules(root, path) if module.split(".")[0] == "api"]
        graph[own] = {module for _, module in imported} - {own}
        for line, module in imported:
            if (api_part(module) or 0) > (api_part(own) or 0):
                violations.append(f"{path.relative_to(root)}:{line} imports {module}")
    try:
        TopologicalSorter(graph).prepare()
    except CycleError as cycle:
        violations.append("cycle: " + " -> ".join(cycle.args[1]))
    return violations


def test_the_apps_are_installed_lowest_layer_first():
    ours = [app for app in settings.INSTALLED_APPS if app in LAYERS]
    assert ours == LAYERS[1:]


def test_no_module_imports_a_later_layer_or_tests_or_bench():
    assert import_violations(ROOT) == []


def test_the_import_check_finds_an_upward_import(tmp_path):
    # the check itself can fail: a lower app that imports a higher one is reported
    for package in LAYERS:
        (tmp_path / package).mkdir()
    (tmp_path / "channels_app" / "models.py").write_text("from django.db import models\nimport api.models\n")
    (tmp_path / "conversations" / "media.py").write_text("def f():\n    from billing.credits import credits_grant\n")
    (tmp_path / "config" / "urls.py").write_text("from bench.bare_view import BenchBareApi\n")
    assert import_violations(tmp_path) == [
        "config/urls.py:1 imports bench",
        "channels_app/models.py:2 imports api",
        "conversations/media.py:2 imports billing",
    ]


def test_api_s_parts_import_only_lower_parts_and_form_no_cycle():
    assert api_violations(ROOT) == []


def test_the_api_check_finds_an_upward_import_and_a_cycle(tmp_path):
    # the check itself can fail: the flow importing the edge, and two modules importing each other
    for package in ("api", "api/flow", "api/edge", "api/maintenance"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "api" / "edge" / "views.py").write_text("from api.flow import later\n")
    (tmp_path / "api" / "flow" / "later.py").write_text("def f():\n    from api.flow.messaging import x\n")
    (tmp_path / "api" / "flow" / "messaging.py").write_text("import api.edge.views\n")
    (tmp_path / "api" / "maintenance" / "cleanup.py").write_text("from api.flow.messaging import x\n")
    violations = api_violations(tmp_path)
    assert violations[:2] == [
        "api/flow/messaging.py:1 imports api.edge.views",
        "api/maintenance/cleanup.py:1 imports api.flow.messaging",
    ]
    assert len(violations) == 3 and violations[2].startswith("cycle: ")
    assert set(violations[2].removeprefix("cycle: ").split(" -> ")) == {
        "api.flow.later",
        "api.flow.messaging",
        "api.edge.views",
    }


def test_no_foreign_key_points_to_a_later_layer():
    violations = []
    for model in apps.get_models():
        own = layer(model._meta.app_label)
        if own is None:
            continue
        for field in model._meta.get_fields():
            if not field.is_relation or field.auto_created or field.related_model is None:
                continue  # reverse relations are the other model's foreign keys
            target = layer(field.related_model._meta.app_label)
            if target is not None and target > own:
                violations.append(f"{model._meta.label}.{field.name} -> {field.related_model._meta.label}")
    assert violations == []


def test_no_migration_depends_on_a_later_layer():
    migrations = MigrationLoader(None, ignore_no_migrations=True).disk_migrations
    violations = [
        f"{app}/{name} depends on {dependency[0]}/{dependency[1]}"
        for (app, name), migration in migrations.items()
        if layer(app) is not None
        for dependency in migration.dependencies
        if layer(dependency[0]) is not None and layer(dependency[0]) > layer(app)
    ]
    assert violations == []


def test_the_apps_migrations_form_no_cycle() -> None:
    # issue #12's measure: no app's migration depends on another app's migration that depends back on it
    graph: dict[str, set[str]] = {app: set() for app in LAYERS[1:]}
    for (app, _), migration in MigrationLoader(None, ignore_no_migrations=True).disk_migrations.items():
        if app in graph:
            graph[app] |= {dependency[0] for dependency in migration.dependencies if dependency[0] in graph} - {app}
    order = list(TopologicalSorter(graph).static_order())  # raises CycleError on a cycle
    assert order.index("channels_app") < order.index("conversations") < order.index("billing")


def test_the_production_urlconf_has_no_bench_view(db):
    assert Client().get("/api/bench/bare").status_code == 404


@pytest.mark.urls("bench.urls")
def test_the_bench_urlconf_is_production_s_plus_the_bare_view(db):
    client = Client()
    assert client.get("/api/bench/bare").json() == {"success": True, "bench": "bare"}
    assert client.get("/healthz").status_code == 200
    assert client.get("/nowhere").json()["error"]["code"] == "not_found"  # the same JSON error views


@pytest.mark.parametrize(
    ("code", "preloaded"),
    [
        ("import django; django.setup()", False),  # manage.py commands, Celery: no SDK to import
        ("import config.wsgi", True),  # a web process: the conversations app's preload() ran
    ],
)
def test_only_the_web_process_preloads_the_openai_sdk(code, preloaded):
    probe = f"{code}; import sys; print('conversations.agents.openai_agent' in sys.modules)"
    env = {"PATH": "/usr/bin:/bin", "DJANGO_SETTINGS_MODULE": "config.settings.test", "HOME": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(preloaded)
