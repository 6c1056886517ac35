"""Deployment checks of our own (`manage.py check --deploy`), and the one `make serve` cannot start without.

Django's own check (security.W009) only flags keys that are short or start with "django-insecure-", so it
does not see our development key; it is refused here by name.

config/gunicorn.py imports this module in gunicorn's master, before the workers' gevent patching: so nothing
here imports `django.db` at import time (not even through `django.core.checks`). A `django.db` loaded there
makes the workers' greenlets share one database connection, and every request fails.
"""

SECRET_KEY_HINT = (
    "Set SECRET_KEY to a long random value, for example the output of "
    "`python3 -c 'import secrets; print(secrets.token_urlsafe(50))'` (README \"Production\"), "
    "or set DEBUG=true for a development server."
)


def secret_key_problem(settings) -> str | None:
    """Why `settings` may not serve production traffic, or None. Reads settings only (no app registry)."""
    if settings.SECRET_KEY == settings.DEVELOPMENT_SECRET_KEY and not settings.DEBUG:
        return "SECRET_KEY is the public development key, and DEBUG is off."
    return None


def development_secret_key_check(app_configs, **kwargs):
    from django.conf import settings
    from django.core import checks

    problem = secret_key_problem(settings)
    return [checks.Error(problem, hint=SECRET_KEY_HINT, id="channels.E001")] if problem else []


COMMIT_IN_STATEMENT_HINT = (
    "Set DB_SERVER_SIDE_BINDING=false (the default), or WRITES_COMMIT_IN_STATEMENT=false to have the messages "
    "endpoint's transactions committed by a COMMIT of their own."
)


def commit_in_statement_problem(settings) -> str | None:
    """Why the messages endpoint's last statement may not carry its COMMIT (api/flow/writes.py), or None: a
    server-side bound statement is prepared, and a prepared statement holds one command, not two."""
    binding = any(database.get("OPTIONS", {}).get("server_side_binding") for database in settings.DATABASES.values())
    if settings.WRITES_COMMIT_IN_STATEMENT and binding:
        return "WRITES_COMMIT_IN_STATEMENT is on with server-side binding, which cannot send two commands at once."
    return None


def commit_in_statement_check(app_configs, **kwargs):
    from django.conf import settings
    from django.core import checks

    problem = commit_in_statement_problem(settings)
    return [checks.Error(problem, hint=COMMIT_IN_STATEMENT_HINT, id="channels.E002")] if problem else []


def broker_redelivery_check(app_configs, **kwargs):
    """The broker's visibility timeout against the tasks' lengths (README "Replies later"): it must be longer
    than a task that answers a message may run (its lease plus its turn's wait), or Redis hands a running
    task to a second worker. (The clean-up's side of the order, not abandoning a message before its task
    comes back, holds by construction: api.cleanup.abandoned_margin_seconds.)"""
    from django.conf import settings
    from django.core import checks

    if not settings.REDIS_URL:
        return []
    visibility = float(settings.CELERY_BROKER_TRANSPORT_OPTIONS.get("visibility_timeout", 3600))
    longest = float(settings.PROCESSING_LEASE_SECONDS) + float(settings.CONVERSATION_TURN_WAIT_SECONDS)
    if visibility > longest:
        return []
    return [
        checks.Warning(
            f"CELERY_VISIBILITY_TIMEOUT_SECONDS ({visibility:g}) is not longer than a task that answers a message "
            f"may run (PROCESSING_LEASE_SECONDS + CONVERSATION_TURN_WAIT_SECONDS = {longest:g}): Redis would hand "
            "a running task to a second worker.",
            hint=f'Set CELERY_VISIBILITY_TIMEOUT_SECONDS above {longest:g} (README "Configuration").',
            id="channels.W002",
        )
    ]


def checks_register() -> None:
    """Called from channels_app's AppConfig.ready()."""
    from django.core import checks

    checks.register(development_secret_key_check, checks.Tags.security, "production", deploy=True)
    checks.register(commit_in_statement_check)  # settings only: every command runs it
    checks.register(broker_redelivery_check)
