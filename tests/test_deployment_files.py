"""The deployment files agree with the project they deploy.

Docker does not run where the tests run, so these tests read Dockerfile,
docker-compose.yml, .env.example, requirements.lock and the Makefile as text and check
every name they use against the project: modules, commands, URLs, files, ports,
environment variables, and the Celery queues the workers consume.
"""

import fnmatch
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from functools import cache
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from celery import Celery
from celery.app.utils import find_app
from celery.bin.celery import celery as celery_cli
from django.conf import settings as django_settings
from django.core.management import call_command, get_commands
from django.http.request import validate_host
from django.urls import resolve
from django.utils.module_loading import import_string

from spendtracker import views as site_views

ROOT = Path(__file__).resolve().parent.parent
SETTINGS_SOURCE = (ROOT / "spendtracker" / "settings.py").read_text()
EXPECTED_SERVICES = {"db", "redis", "web", "worker", "import-worker", "beat", "mailpit"}
APP_SERVICES = ("web", "worker", "import-worker", "beat")
WORKER_SERVICES = ("worker", "import-worker")
WEB_PORT = 8000
# An environment variable read in settings: `_read("NAME", ...)`, `env.<cast>("NAME")`,
# or the standard library's `os.environ[...]`, `os.environ.get(...)`, `os.getenv(...)`.
SETTINGS_READ = re.compile(
    r"(?:_read\(|env\.\w+\(|os\.environ\[|os\.environ\.get\(|os\.getenv\()"
    r'\s*"([A-Z][A-Z0-9_]*)"'
)
PINNED = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9._,-]+\])?==[\w.!+-]+")
URL = re.compile(r"https?://[^\s'\"]+")


# Reading the files


@cache
def dockerfile() -> tuple[tuple[str, str], ...]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    instructions, pending = [], ""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, arguments = (pending + stripped).partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    return tuple(instructions)


def dockerfile_arguments(keyword: str) -> list[str]:
    return [arguments for name, arguments in dockerfile() if name == keyword]


def argv(arguments: str) -> list[str]:
    """A Dockerfile command in exec form (a JSON array) or shell form."""
    if arguments.startswith("["):
        return json.loads(arguments)
    return ["sh", "-c", arguments]


def dockerfile_cmd() -> list[str]:
    (cmd,) = dockerfile_arguments("CMD")
    return argv(cmd)


def copied_sources() -> list[str]:
    """The build-context paths every COPY reads (its last argument is the target)."""
    sources = []
    for arguments in dockerfile_arguments("COPY"):
        *from_context, _target = [a for a in shlex.split(arguments) if a[:2] != "--"]
        sources += from_context
    return sources


def dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and line[0] != "#"]


def dockerfile_healthcheck() -> list[str]:
    (healthcheck,) = dockerfile_arguments("HEALTHCHECK")
    _options, _, command = healthcheck.partition("CMD ")
    return argv(command.strip())


@cache
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def service(name: str) -> dict:
    return compose()["services"][name]


def environment_of(name: str) -> dict[str, str]:
    """A service's `environment`, written as a mapping or as a list of NAME=value."""
    environment = service(name).get("environment", {})
    if isinstance(environment, list):
        environment = dict(entry.partition("=")[::2] for entry in environment)
    return {key: str(value) for key, value in environment.items()}


def healthcheck_test(name: str) -> list[str]:
    """A compose healthcheck, as an argv (CMD) or a shell script (CMD-SHELL)."""
    test = service(name)["healthcheck"]["test"]
    if isinstance(test, str) or test[0] == "CMD-SHELL":
        return ["sh", "-c", test if isinstance(test, str) else test[1]]
    return test[1:]


@cache
def env_example() -> dict[str, str]:
    variables = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, value = line.partition("=")
            variables[name.strip()] = value
    return variables


def read_by_settings() -> set[str]:
    return set(SETTINGS_READ.findall(SETTINGS_SOURCE))


def lock_lines() -> list[str]:
    lines = (ROOT / "requirements.lock").read_text().splitlines()
    return [line.strip() for line in lines if line.strip()]


def distribution_name(requirement: str) -> str:
    """`psycopg[binary]>=3.2` -> `psycopg`, normalised as in PEP 503."""
    name = re.match(r"[A-Za-z0-9._-]+", requirement).group()
    return re.sub(r"[-_.]+", "-", name).lower()


# The programs the deployment runs


def simple_commands(command: list[str]) -> list[list[str]]:
    """The programs one command line runs, without `exec` and `NAME=value` prefixes."""
    tokens = shlex.split(command[2]) if command[:2] == ["sh", "-c"] else command
    commands, current = [], []
    for token in [*tokens, "&&"]:
        if token in {"&&", "||", ";"}:
            if current:
                commands.append(current)
            current = []
        elif not current and (token == "exec" or re.fullmatch(r"\w+=\S*", token)):
            continue
        else:
            current.append(token)
    return commands


def every_command_line() -> list[tuple[str, list[str]]]:
    """(where, argv) for every command the image or compose runs."""
    lines = [("Dockerfile RUN", argv(run)) for run in dockerfile_arguments("RUN")]
    lines += [("Dockerfile CMD", dockerfile_cmd())]
    lines += [("Dockerfile HEALTHCHECK", dockerfile_healthcheck())]
    for name, definition in compose()["services"].items():
        if "command" in definition:
            lines.append((f"{name} command", definition["command"]))
        if "test" in definition.get("healthcheck", {}):
            lines.append((f"{name} healthcheck", healthcheck_test(name)))
    return lines


def every_command() -> list[tuple[str, list[str]]]:
    return [
        (where, command)
        for where, line in every_command_line()
        for command in simple_commands(line)
    ]


def commands_of(program: str) -> list[tuple[str, list[str]]]:
    return [(where, c) for where, c in every_command() if Path(c[0]).name == program]


def option(command: list[str], *names: str) -> str | None:
    """The value of `--name value`, `--name=value` or `-n value` in an argv."""
    for index, token in enumerate(command):
        for name in names:
            if token == name and index + 1 < len(command):
                return command[index + 1]
            if token.startswith(f"{name}="):
                return token.partition("=")[2]
    return None


def healthcheck_urls() -> list[tuple[str, str]]:
    return [
        (where, url)
        for where, line in every_command_line()
        if where.endswith("HEALTHCHECK") or where.endswith("healthcheck")
        for url in URL.findall(" ".join(line))
    ]


# Services


def test_compose_defines_every_service_of_the_deployment():
    assert set(compose()["services"]) >= EXPECTED_SERVICES


@pytest.mark.parametrize(
    "name", ["db", "redis", "web", "worker", "import-worker", "mailpit"]
)
def test_every_long_running_service_has_a_healthcheck(name):
    healthcheck = service(name).get("healthcheck", {})

    assert healthcheck.get("test"), f"{name} has no healthcheck"
    assert not healthcheck.get("disable")


def test_only_web_keeps_the_image_healthcheck_on_healthz():
    # worker and beat run the same image, whose HEALTHCHECK probes gunicorn: they must
    # replace it with their own check or disable it, or they would never be healthy.
    assert "/healthz" in " ".join(healthcheck_test("web"))
    for name in (*WORKER_SERVICES, "beat"):
        healthcheck = service(name).get("healthcheck", {})
        if healthcheck.get("disable") is not True:
            assert "test" in healthcheck, f"{name} inherits the image's check"
            assert "/healthz" not in " ".join(healthcheck_test(name)), name


def test_web_worker_and_beat_share_one_app_definition():
    assert "x-app" in compose()
    for name in APP_SERVICES:
        assert service(name)["build"] == compose()["x-app"]["build"] == "."
        assert service(name)["env_file"] == ".env"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_services_wait_for_a_healthy_database_and_broker(name):
    depends_on = service(name)["depends_on"]

    assert depends_on["db"]["condition"] == "service_healthy"
    assert depends_on["redis"]["condition"] == "service_healthy"


def test_exactly_one_service_runs_celery_beat():
    runs_beat = {
        where.split()[0]
        for where, command in commands_of("celery")
        if where.endswith("command")
        and ("beat" in command or "-B" in command or "--beat" in command)
    }

    assert runs_beat == {"beat"}
    assert service("beat").get("deploy", {}).get("replicas", 1) == 1


def test_compose_points_the_app_at_its_own_database_broker_and_mail_catcher():
    environment = environment_of("web")
    database = urlsplit(environment["DATABASE_URL"])
    broker = urlsplit(environment["CELERY_BROKER_URL"])
    db = environment_of("db")

    assert (database.hostname, database.port) == ("db", 5432)
    assert database.username == db["POSTGRES_USER"]
    assert database.password == db["POSTGRES_PASSWORD"]
    assert database.path == f"/{db['POSTGRES_DB']}"
    assert (broker.scheme, broker.hostname, broker.port) == ("redis", "redis", 6379)
    assert environment["EMAIL_HOST"] == "mailpit"
    assert int(environment["EMAIL_PORT"]) == 1025


# Ports and commands


def test_web_port_matches_the_dockerfile_expose_and_the_gunicorn_bind():
    exposed = {
        int(port.split("/")[0])
        for port in " ".join(dockerfile_arguments("EXPOSE")).split()
    }
    binds = [option(command, "--bind", "-b") for _, command in commands_of("gunicorn")]
    published = [str(port).rpartition(":")[2] for port in service("web")["ports"]]

    assert exposed == {WEB_PORT}
    assert len(binds) == 2  # the image's CMD and the web service's command
    assert {bind.rpartition(":")[2] for bind in binds} == {str(WEB_PORT)}
    assert published == [str(WEB_PORT)]
    assert {urlsplit(url).port for _, url in healthcheck_urls()} == {WEB_PORT}


def published_addresses(environment: dict[str, str]) -> dict[str, set[str]]:
    """The host address each service publishes its ports on, as compose interpolates
    `${NAME:-default}` with these variables; an entry without one means 0.0.0.0."""

    def interpolate(text: str) -> str:
        return re.sub(
            r"\$\{(\w+):-([^}]*)\}", lambda m: environment.get(m[1], m[2]), text
        )

    return {
        name: {
            (parts[0] if len(parts) == 3 else "0.0.0.0")
            for parts in (interpolate(str(p)).split(":") for p in definition["ports"])
        }
        for name, definition in compose()["services"].items()
        if "ports" in definition
    }


def test_compose_publishes_plain_http_on_the_loopback_only_by_default():
    assert published_addresses({}) == {"web": {"127.0.0.1"}, "mailpit": {"127.0.0.1"}}


def test_the_portal_may_be_published_elsewhere_when_asked():
    addresses = published_addresses({"WEB_PUBLISH_ADDRESS": "0.0.0.0"})

    assert addresses["web"] == {"0.0.0.0"}
    assert addresses["mailpit"] == {"127.0.0.1"}  # it shows password reset links


def test_web_service_migrates_then_runs_the_gunicorn_command_of_the_image():
    commands = simple_commands(service("web")["command"])

    assert commands == [
        ["python", "manage.py", "migrate", "--noinput"],
        dockerfile_cmd(),
    ]


def test_gunicorn_application_in_every_command_is_a_wsgi_callable():
    applications = {command[1] for _, command in commands_of("gunicorn")}

    assert applications == {"spendtracker.wsgi:application"}
    module, _, attribute = applications.pop().partition(":")
    assert callable(import_string(f"{module}.{attribute}"))


def test_celery_app_in_every_command_is_a_celery_app_and_its_subcommand_exists():
    celery_commands = commands_of("celery")

    assert celery_commands
    for where, command in celery_commands:
        app_name = option(command, "-A", "--app")
        subcommand = command[command.index(app_name) + 1]
        assert isinstance(find_app(app_name), Celery), where
        assert subcommand in celery_cli.commands, f"{where}: celery {subcommand}"


def test_every_task_beat_schedules_is_registered_with_the_worker_app():
    app = find_app(option(simple_commands(service("worker")["command"])[0], "-A"))
    app.loader.import_default_modules()

    for entry in django_settings.CELERY_BEAT_SCHEDULE.values():
        assert entry["task"] in app.tasks


def routed_queues() -> set[str]:
    """Every queue the app sends tasks to: the default one and those of the routes."""
    routes = django_settings.CELERY_TASK_ROUTES.values()
    return {django_settings.CELERY_TASK_DEFAULT_QUEUE} | {r["queue"] for r in routes}


def consumed_queues(command: list[str]) -> set[str]:
    """The queues a `celery worker` command line consumes: those of -Q, else the
    default queue alone."""
    queues = option(command, "-Q", "--queues")
    if queues is None:
        return {django_settings.CELERY_TASK_DEFAULT_QUEUE}
    return set(queues.split(","))


def compose_workers() -> dict[str, set[str]]:
    """Each compose service that runs a Celery worker, with the queues it consumes."""
    return {
        where.split()[0]: consumed_queues(command)
        for where, command in commands_of("celery")
        if where.endswith("command") and "worker" in command
    }


def make_run_worker() -> list[str]:
    """The Celery worker command of `make run`."""
    (line,) = [
        line
        for line in (ROOT / "Makefile").read_text().splitlines()
        if "celery" in line and " worker " in line
    ]
    return shlex.split(line.strip().removesuffix("\\").strip().removesuffix("&"))


def test_the_app_sends_tasks_to_the_default_and_the_imports_queue():
    assert routed_queues() == {"celery", "imports"}


def test_every_queue_the_app_sends_to_has_a_worker_in_compose_and_none_is_unknown():
    consumed = set().union(*compose_workers().values())

    assert consumed == routed_queues()


def test_imports_have_a_worker_of_their_own_beside_the_default_queues_worker():
    workers = compose_workers()

    assert workers == {"worker": {"celery"}, "import-worker": {"imports"}}


def test_the_one_worker_of_make_run_consumes_every_queue():
    command = make_run_worker()

    assert Path(command[0]).name == "celery"
    assert option(command, "--pool", "-P") == "solo"
    assert consumed_queues(command) == routed_queues()


def test_every_manage_py_subcommand_named_exists():
    subcommands = {
        command[command.index("manage.py") + 1]
        for _, command in every_command()
        if "manage.py" in command
    }

    assert {"migrate", "collectstatic"} <= subcommands
    assert subcommands <= set(get_commands())


def test_healthcheck_path_resolves_to_the_health_view():
    urls = healthcheck_urls()

    assert {where for where, _ in urls} == {"Dockerfile HEALTHCHECK", "web healthcheck"}
    for _, url in urls:
        assert resolve(urlsplit(url).path).func is site_views.health


@pytest.mark.django_db
def test_healthcheck_url_answers_ok_with_the_env_example_allowed_hosts(
    client, settings
):
    settings.ALLOWED_HOSTS = env_example()["DJANGO_ALLOWED_HOSTS"].split(",")

    for _, url in healthcheck_urls():
        parts = urlsplit(url)
        assert validate_host(parts.hostname, settings.ALLOWED_HOSTS), url
        response = client.get(parts.path, headers={"host": parts.netloc})
        assert response.status_code == 200
        assert response.json()["database"] == "ok"  # the rest: tests/test_health.py


@pytest.mark.django_db
def test_the_healthcheck_is_answered_over_plain_http_when_https_is_enforced(
    client, settings
):
    settings.SECURE_SSL_REDIRECT = True

    for _, url in healthcheck_urls():
        assert client.get(urlsplit(url).path).status_code == 200
    assert client.get("/accounts/login/").status_code == 301  # the rest is redirected


# The image


def test_dockerfile_builds_on_python_311_slim_and_runs_as_a_non_root_user():
    assert dockerfile_arguments("FROM") == ["python:3.11-slim"]
    assert dockerfile_arguments("USER")[-1] not in {"root", "0", "0:0"}


def test_every_file_the_dockerfile_copies_exists_in_the_repository():
    sources = copied_sources()

    assert "requirements.lock" in sources
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}"


def test_dockerignore_does_not_hide_a_file_the_dockerfile_copies():
    for source in copied_sources():
        hidden_by = [p for p in dockerignore_patterns() if fnmatch.fnmatch(source, p)]
        assert hidden_by == [], source


def test_dockerignore_keeps_local_state_and_secrets_out_of_the_image():
    patterns = set(dockerignore_patterns())

    assert {".venv", ".git", ".env", "db.sqlite3", ".run", "staticfiles"} <= patterns
    assert {"test-artifacts", ".pytest_cache", ".ruff_cache"} <= patterns


def test_dockerfile_installs_dependencies_from_requirements_lock():
    installs = [command for _, command in commands_of("pip") if "install" in command]

    assert [option(command, "-r", "--requirement") for command in installs] == [
        "requirements.lock"
    ]


def test_requirements_lock_has_only_name_equals_version_lines():
    lines = [line for line in lock_lines() if not line.startswith("#")]

    assert lines
    assert [line for line in lines if not PINNED.fullmatch(line)] == []


def test_requirements_lock_pins_every_production_dependency_and_no_dev_tool():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pinned = {distribution_name(line) for line in lock_lines() if "==" in line}
    production = {distribution_name(r) for r in project["dependencies"]}
    # PyYAML is a dev dependency that drf-spectacular also needs at run time.
    dev_only = {distribution_name(r) for r in project["optional-dependencies"]["dev"]}
    dev_only -= {"pyyaml"}

    assert production <= pinned
    assert dev_only & pinned == set()


def test_build_only_secret_is_set_for_collectstatic_and_not_kept_in_the_image():
    (collectstatic,) = [
        run for run in dockerfile_arguments("RUN") if "collectstatic" in run
    ]
    environment = " ".join(dockerfile_arguments("ENV") + dockerfile_arguments("ARG"))

    assert re.search(r"\bDJANGO_SECRET_KEY=\S+", collectstatic)
    assert re.search(r"\bDJANGO_DEBUG=false\b", collectstatic)
    assert "DJANGO_SECRET_KEY" not in environment


def test_collectstatic_succeeds_with_the_production_static_storage(settings, tmp_path):
    # The image build runs collectstatic with DJANGO_DEBUG=false, where the manifest
    # storage fails on any missing file that a stylesheet or a script refers to (an
    # image, a font, a source map).
    settings.STATIC_ROOT = tmp_path
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {
            "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        },
    }

    call_command("collectstatic", "--noinput", verbosity=0)

    assert (tmp_path / "staticfiles.json").exists()


# Environment variables


def test_every_variable_compose_passes_to_the_app_is_read_by_settings():
    for name in APP_SERVICES:
        assert set(environment_of(name)) <= read_by_settings(), name


def test_every_variable_in_env_example_is_read_by_settings():
    assert set(env_example()) - read_by_settings() == set()


def test_every_variable_settings_reads_is_in_env_example():
    read = read_by_settings()

    assert "DJANGO_SECRET_KEY" in read  # the pattern still finds what settings read
    assert read - set(env_example()) == set()


def test_every_variable_in_env_example_has_a_comment_naming_its_default():
    lines = (ROOT / ".env.example").read_text().splitlines()

    for previous, line in zip(lines, lines[1:], strict=False):
        if line and not line.startswith("#"):
            assert previous.startswith("# ") and "Default:" in previous, line


def test_env_example_describes_a_production_deployment_on_localhost():
    variables = env_example()

    assert variables["DJANGO_DEBUG"] == "false"
    assert "change" in variables["DJANGO_SECRET_KEY"].lower()
    assert variables["DJANGO_ALLOWED_HOSTS"] == "localhost,127.0.0.1"


def test_env_example_with_the_compose_overrides_passes_the_configuration_check():
    # A fresh process, because settings read the environment once, at import.
    environment = {k: v for k, v in os.environ.items() if k not in read_by_settings()}
    environment |= env_example() | environment_of("web")

    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "ERROR"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr
