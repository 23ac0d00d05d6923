"""Encrypted database traffic (sslMode ENCRYPTED_ONLY): a new instance is made encrypted-only and its server
given the instance's CA; an existing deployment is switched server first, then the instance, so the running
server never loses its database; relaxing goes the other way round."""

from __future__ import annotations

import base64

from mlflow_gcp.config import SECRET_ENV
from mlflow_gcp.service_spec import DB_CA_SETTING
from tests.fake_gcp.apis.sqladmin import FAKE_CA_PEM
from tests.fake_gcp.server import PROJECT
from tests.helpers import cli

INSTANCE = "mlflow-tracking-database"
CA_LINE = f"{DB_CA_SETTING}={base64.b64encode(FAKE_CA_PEM.encode()).decode()}"


def ssl_mode(fake) -> str:
    return fake.sql_instances[INSTANCE]["settings"]["ipConfiguration"]["sslMode"]


def pinned_env(fake) -> str:
    service = fake.run_service("mlflow")
    ref = next(
        e["valueSource"]["secretKeyRef"]
        for e in service["template"]["containers"][0]["env"]
        if e["name"] == "MLFLOW_ENV"
    )
    versions = fake.state["secret_versions"][f"projects/{PROJECT}/secrets/{SECRET_ENV}"]
    return next(v["data"].decode() for v in versions if v["name"].rsplit("/", 1)[-1] == ref["version"])


def mutations(fake) -> list[str]:
    """Mutating requests as 'api METHOD path' in order."""
    return [f"{r.api} {r.method} {r.path}" for r in fake.mutating_requests()]


def test_a_new_instance_is_encrypted_only_and_its_server_has_the_ca(fake, container_dir):
    result = cli("up")
    assert result.exit_code == 0, result.output
    assert ssl_mode(fake) == "ENCRYPTED_ONLY"
    assert CA_LINE in pinned_env(fake).splitlines()
    fake.clear_log()
    assert cli("up").exit_code == 0
    assert fake.mutating_requests() == []


def test_an_existing_deployment_switches_the_server_first_then_the_instance(fake, container_dir):
    assert cli("up", "--db-ssl-mode", "ALLOW_UNENCRYPTED_AND_ENCRYPTED").exit_code == 0
    assert ssl_mode(fake) == "ALLOW_UNENCRYPTED_AND_ENCRYPTED"
    assert DB_CA_SETTING not in pinned_env(fake)
    fake.clear_log()

    dry = cli("up", "--dry-run", "--wide", "--db-ssl-mode", "ENCRYPTED_ONLY")
    assert dry.exit_code == 0, dry.output
    plan = next(line for line in dry.output.splitlines() if line.startswith("│ encryption"))
    assert "to update" in plan and "Cloud SQL encryption of" in plan
    assert fake.mutating_requests() == []

    result = cli("up", "--yes", "--db-ssl-mode", "ENCRYPTED_ONLY")
    assert result.exit_code == 0, result.output
    assert ssl_mode(fake) == "ENCRYPTED_ONLY"
    assert CA_LINE in pinned_env(fake).splitlines()
    sent = mutations(fake)
    new_env = next(i for i, m in enumerate(sent) if f"secrets/{SECRET_ENV}:addVersion" in m)
    rollout = next(i for i, m in enumerate(sent) if m.startswith("run PATCH"))
    instance_patch = next(i for i, m in enumerate(sent) if m.startswith("sqladmin PATCH"))
    assert new_env < rollout < instance_patch


def test_relaxing_changes_the_instance_before_the_server(fake, container_dir):
    assert cli("up").exit_code == 0
    fake.clear_log()
    result = cli("up", "--yes", "--db-ssl-mode", "ALLOW_UNENCRYPTED_AND_ENCRYPTED")
    assert result.exit_code == 0, result.output
    assert ssl_mode(fake) == "ALLOW_UNENCRYPTED_AND_ENCRYPTED"
    sent = mutations(fake)
    instance_patch = next(i for i, m in enumerate(sent) if m.startswith("sqladmin PATCH"))
    rollout = next(i for i, m in enumerate(sent) if m.startswith("run PATCH"))
    assert instance_patch < rollout
    assert DB_CA_SETTING not in pinned_env(fake)


def test_the_instance_is_not_switched_while_its_server_lacks_the_ca(fake, container_dir):
    """An instance without a server CA certificate: the server cannot check it, so the instance keeps accepting
    unencrypted connections and the tool says why."""
    assert cli("up", "--db-ssl-mode", "ALLOW_UNENCRYPTED_AND_ENCRYPTED").exit_code == 0
    fake.sql_instances[INSTANCE].pop("serverCaCert")
    result = cli("up", "--yes", "--db-ssl-mode", "ENCRYPTED_ONLY")
    assert result.exit_code == 1
    assert "does not connect to the database with TLS" in " ".join(result.output.split())
    assert ssl_mode(fake) == "ALLOW_UNENCRYPTED_AND_ENCRYPTED"
    assert "Traceback" not in result.output
