"""The suite runs on the test settings however it is started, `make test` (under config/localdb.py) included."""

import os
import subprocess
import sys

import pytest
from django.conf import settings

from config.localdb import BASE_DIR


def test_the_suite_runs_on_the_test_settings():
    assert settings.SETTINGS_MODULE == "config.settings.test"
    assert not settings.WEBHOOK_LOCAL_SENDER  # no background sender of an earlier test touches a later one's rows


@pytest.mark.parametrize("given", [None, "config.settings.test"])
def test_the_local_database_hands_its_command_the_settings_it_was_given(given):
    # given: a supervisor started without DJANGO_SETTINGS_MODULE (as by `make test`), or with one
    env = {key: value for key, value in os.environ.items() if key != "DJANGO_SETTINGS_MODULE"}
    if given:
        env["DJANGO_SETTINGS_MODULE"] = given
    script = "import config.localdb as localdb; print(localdb._command_environment({}).get('DJANGO_SETTINGS_MODULE'))"

    # when: `python -m config.localdb` imports the config package (its Celery app defaults the variable)
    run = subprocess.run([sys.executable, "-c", script], cwd=BASE_DIR, env=env, capture_output=True, text=True)

    # then: the command sees what the supervisor was given, not the Celery app's default
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == str(given)
