"""`mlflow-gcp up` through the CLI against the fake: creates everything with the specified fields, a rerun
sends no mutating request, a dry run sends none either, a setting change updates only its resource, injected
transient faults are absorbed, permanent ones explained."""

from __future__ import annotations

import pytest

from mlflow_gcp.config import SECRET_FLASK_KEY, SECRET_MLFLOW, SECRET_MYSQL
from mlflow_gcp.gcp.clients import Clients
from tests.fake_gcp.server import PROJECT
from tests.helpers import cli

REGION = "europe-west1"
SA = f"run-mlflow@{PROJECT}.iam.gserviceaccount.com"
SETTINGS = "mlflow-gcp-settings"


@pytest.fixture
def deployed(fake, container_dir):
    result = cli("up")
    assert result.exit_code == 0, result.output
    return result


def test_up_creates_every_resource_as_specified(fake, deployed):
    clients = Clients(PROJECT)
    assert "MLflow is ready at https://" in deployed.output

    instance = clients.sqladmin().instances().get(project=PROJECT, instance="mlflow-tracking-database").execute()
    ip = instance["settings"]["ipConfiguration"]
    assert ip["ipv4Enabled"] is False
    assert ip["privateNetwork"].endswith(f"projects/{PROJECT}/global/networks/default")
    assert instance["databaseVersion"] == "MYSQL_8_4"
    assert instance["settings"]["tier"] == "db-f1-micro"
    assert instance["settings"]["edition"] == "ENTERPRISE"
    assert instance["settings"]["deletionProtectionEnabled"] is True
    assert instance["settings"]["backupConfiguration"]["enabled"] is True
    assert instance["settings"]["backupConfiguration"]["binaryLogEnabled"] is True
    assert [a["type"] for a in instance["ipAddresses"]] == ["PRIVATE"]
    databases = clients.sqladmin().databases().list(project=PROJECT, instance="mlflow-tracking-database").execute()
    assert {"mlflow_tracking_database", "mlflow_auth_database"} <= {d["name"] for d in databases["items"]}

    connector = clients.vpc_access().get_connector(
        name=f"projects/{PROJECT}/locations/{REGION}/connectors/vpc-connector-mlflow"
    )
    assert connector.ip_cidr_range == "10.8.0.0/28"
    assert (connector.min_instances, connector.max_instances) == (2, 3)

    bucket = clients.storage().get_bucket(f"{PROJECT}-mlflow-artifacts")
    assert bucket.iam_configuration.uniform_bucket_level_access_enabled
    assert bucket.iam_configuration.public_access_prevention == "enforced"
    policy = bucket.get_iam_policy(requested_policy_version=3)
    assert set(policy["roles/storage.objectAdmin"]) == {f"serviceAccount:{SA}"}

    # Grants are on the resources only; on the project, only the build account may write logs.
    project_bindings = fake.policies[f"projects/{PROJECT}"]["bindings"]
    assert {b["role"] for b in project_bindings} == {"roles/owner", "roles/logging.logWriter"}
    assert fake.members(f"projects/{PROJECT}", "roles/logging.logWriter") == [
        f"serviceAccount:mlflow-build@{PROJECT}.iam.gserviceaccount.com"
    ]
    assert not any(f"serviceAccount:{SA}" in b["members"] for b in project_bindings)
    for secret in ("mlflow-env", SECRET_MYSQL, SECRET_MLFLOW, SECRET_FLASK_KEY):
        members = fake.members(f"projects/{PROJECT}/secrets/{secret}", "roles/secretmanager.secretAccessor")
        assert members == [f"serviceAccount:{SA}"], secret

    login, password = fake.secret_value(SECRET_MLFLOW).split(":")
    assert login == "admin" and len(password) >= 24
    assert fake.secret_value(SECRET_MYSQL).startswith("root:")

    service = clients.run_services().get_service(name=f"projects/{PROJECT}/locations/{REGION}/services/mlflow")
    template = service.template
    assert template.service_account == SA
    assert template.vpc_access.connector.endswith("/connectors/vpc-connector-mlflow")
    assert template.vpc_access.egress.name == "PRIVATE_RANGES_ONLY"
    container = template.containers[0]
    assert container.startup_probe.http_get.path == "/health"
    secret_refs = {
        e.name: e.value_source.secret_key_ref.secret for e in container.env if e.value_source.secret_key_ref.secret
    }
    assert set(secret_refs) == {
        "MLFLOW_ENV",
        "MYSQL_CREDENTIALS",
        "MLFLOW_CREDENTIALS",
        "MLFLOW_FLASK_SERVER_SECRET_KEY",
    }
    assert all(not e.value or e.name == "MLFLOW_GCP_SERVICE_URLS" for e in container.env)


def test_no_secret_value_is_ever_sent_outside_secret_manager_or_printed(fake, deployed):
    secrets = [fake.secret_value(s).split(":")[-1] for s in (SECRET_MLFLOW, SECRET_MYSQL, SECRET_FLASK_KEY)]
    for request in fake.requests():
        if request.api == "secretmanager":
            continue
        body = request.body.decode("utf-8", "replace")
        if request.api == "sqladmin" and "rootPassword" in body:
            continue  # the database's own password is given to Cloud SQL when the instance is created
        for secret in secrets:
            assert secret not in body, (request.api, request.path)
    for secret in secrets:
        assert secret not in deployed.output


def test_second_up_sends_no_mutating_request(fake, deployed):
    fake.clear_log()
    result = cli("up")
    assert result.exit_code == 0, result.output
    assert [(r.method, r.api, r.path) for r in fake.mutating_requests()] == []
    assert "created" not in result.output.split("Summary")[-1]


def test_dry_run_sends_no_mutating_request(fake, container_dir):
    result = cli("up", "--dry-run")
    assert result.exit_code == 0, result.output
    assert fake.mutating_requests() == []
    assert "Dry run: nothing was changed." in result.output
    assert "to create" in result.output


def test_dry_run_after_a_change_shows_only_that_change(fake, deployed):
    fake.clear_log()
    result = cli("up", "--dry-run", "--max-instances", "5")
    assert result.exit_code == 0, result.output
    assert fake.mutating_requests() == []
    assert "to update" in result.output


@pytest.mark.parametrize(
    ("flags", "api"),
    [(["--max-instances", "4"], "run"), (["--db-tier", "db-g1-small", "--yes"], "sqladmin")],
)
def test_a_setting_change_updates_only_its_resource(fake, deployed, flags, api):
    fake.clear_log()
    result = cli("up", *flags)
    assert result.exit_code == 0, result.output
    changed = {r.api for r in fake.mutating_requests() if "operations" not in r.path and SETTINGS not in r.path}
    assert changed == {api}, [(r.method, r.path) for r in fake.mutating_requests()]
    # and the change is recorded with the deployment
    assert [r.path.rsplit("/", 1)[-1] for r in fake.mutating_requests() if SETTINGS in r.path] == [
        f"{SETTINGS}:addVersion"
    ]
    fake.clear_log()
    assert cli("up", *flags).exit_code == 0
    assert fake.mutating_requests() == []


APIS = [
    "serviceusage",
    "compute",
    "servicenetworking",
    "sqladmin",
    "vpcaccess",
    "iam",
    "storage",
    "secretmanager",
    "artifactregistry",
    "cloudbuild",
    "run",
]


@pytest.mark.parametrize("status", [503, 429])
def test_one_transient_error_on_each_api_still_succeeds(fake, container_dir, status):
    for api in APIS:
        fake.fail(status, times=1, api=api)
    result = cli("up")
    assert result.exit_code == 0, result.output
    assert all(f.times == 0 for f in fake.faults), [(f.api, f.times) for f in fake.faults if f.times]


def test_a_permanent_403_is_explained(fake, container_dir):
    fake.fail(
        403,
        times=1000,
        api="sqladmin",
        reason="IAM_PERMISSION_DENIED",
        metadata={"permission": "cloudsql.instances.create"},
        message="The caller does not have permission",
    )
    result = cli("up")
    assert result.exit_code == 1
    assert "cloudsql.instances.create" in result.output
    assert "Traceback" not in result.output


def test_a_disabled_api_says_to_enable_it(fake, container_dir):
    result = cli("step", "network")
    assert result.exit_code == 1
    assert "compute.googleapis.com" in result.output
    assert "mlflow-gcp step apis" in result.output


def test_a_missing_prerequisite_names_the_step_to_run(fake, container_dir):
    assert cli("step", "apis").exit_code == 0
    result = cli("step", "secrets")
    assert result.exit_code == 1
    assert "mlflow-gcp step" in result.output
    assert "Traceback" not in result.output


def test_service_pins_the_applied_versions_and_a_version_added_by_hand_is_reported_not_deployed(fake, deployed):
    """The version in use is the one the user (MySQL, MLflow admin) has, recorded on the secret: a newer version
    (added in the console, or by a rotation that did not finish) is reported with how to finish or undo it."""
    clients = Clients(PROJECT)
    name = f"projects/{PROJECT}/locations/{REGION}/services/mlflow"
    env = clients.run_services().get_service(name=name).template.containers[0].env
    versions = {e.name: e.value_source.secret_key_ref.version for e in env if e.value_source.secret_key_ref.secret}
    assert set(versions.values()) == {"1"}

    for secret in (SECRET_MLFLOW, SECRET_MYSQL):
        clients.secrets().add_secret_version(
            parent=f"projects/{PROJECT}/secrets/{secret}", payload={"data": b"root:a-new-password-by-hand"}
        )
    fake.clear_log()
    result = cli("up")
    assert result.exit_code == 0
    assert fake.mutating_requests() == []
    for secret in (SECRET_MLFLOW, SECRET_MYSQL):
        assert f"{secret}: version 2 was added by a rotation that did not finish" in " ".join(result.output.split())
    assert "mlflow-gcp credentials rotate" in result.output
    env = clients.run_services().get_service(name=name).template.containers[0].env
    pinned = {e.name: e.value_source.secret_key_ref.version for e in env if e.value_source.secret_key_ref.secret}
    assert pinned["MLFLOW_CREDENTIALS"] == "1"
    assert pinned["MYSQL_CREDENTIALS"] == "1"
