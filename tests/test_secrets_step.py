"""Step `secrets` against the fake Secret Manager, through the real GAPIC REST client.

The database step is stood in for by its two traces the secrets step reads: the `database.private_ip`
output and the `mysql-credentials` secret (made here through the API, as the database step makes it)."""

from __future__ import annotations

import re

import pytest

from mlflow_gcp import service_spec
from mlflow_gcp.config import SECRET_ENV, SECRET_FLASK_KEY, SECRET_MLFLOW, SECRET_MYSQL
from mlflow_gcp.engine.base import PENDING, Mode, Status, StepContext, StepResult
from mlflow_gcp.engine.loop import run_step
from mlflow_gcp.errors import MlflowGcpError, PrerequisiteMissingError
from mlflow_gcp.gcp.clients import Clients
from mlflow_gcp.resources.secret import Secret
from mlflow_gcp.steps import BY_NAME
from mlflow_gcp.steps.secrets import ACCESSOR
from tests.helpers import ALL_APIS_ENABLED, settings

DB_IP = "10.20.0.3"
MEMBER = "serviceAccount:run-mlflow@demo-project.iam.gserviceaccount.com"
ALL_SECRETS = (SECRET_ENV, SECRET_MYSQL, SECRET_MLFLOW, SECRET_FLASK_KEY)


def path(secret_id: str) -> str:
    return f"projects/demo-project/secrets/{secret_id}"


def run(mode: Mode = Mode.APPLY, db_ip: str | None = DB_IP, **overrides):
    """The service-account, bucket and secret-access steps, then the secrets step, with the database's output
    given."""
    config = settings(**overrides)
    ctx = StepContext(settings=config, clients=Clients(config.project), mode=mode)
    if db_ip:
        ctx.outputs.set("database.private_ip", db_ip)
    run_step(BY_NAME["service-account"], ctx)
    run_step(BY_NAME["bucket"], ctx)
    early = run_step(BY_NAME["secret-access"], ctx)  # the secrets and their grants, made early
    late = run_step(BY_NAME["secrets"], ctx)
    # One result for both, a resource listed once (as a user of `step secrets` sees them).
    changes = list({(c.resource, c.action): c for c in reversed(early.changes + late.changes)}.values())[::-1]
    return StepResult("secrets", changes=changes, resources=early.resources + late.resources, planned=late.planned), ctx


def add_version(secret_id: str, value: str, *, create: bool = False) -> None:
    client = Clients("demo-project").secrets()
    if create:
        client.create_secret(
            parent="projects/demo-project", secret_id=secret_id, secret={"replication": {"automatic": {}}}
        )
    client.add_secret_version(parent=path(secret_id), payload={"data": value.encode()})


@pytest.fixture
def sm(fake):
    """Every API enabled, the account and bucket made, and the database step's root password secret."""
    fake.enabled |= ALL_APIS_ENABLED
    fake.iam_invisible_for = 0
    add_version(SECRET_MYSQL, "root:db-password", create=True)
    fake.clear_log()
    return fake


def secret_writes(fake):
    return [(r.method, r.path.rsplit("/", 1)[-1]) for r in fake.mutating_requests() if r.api == "secretmanager"]


def expected_env(**overrides) -> str:
    return service_spec.render_env_file(service_spec.server_settings(settings(**overrides), DB_IP))


def test_creates_the_secrets_and_one_accessor_grant_per_secret(sm):
    result, ctx = run()
    assert result.status is Status.CREATED
    assert sm.secret_value(SECRET_ENV) == expected_env()
    assert f"DB_HOST={DB_IP}\n" in sm.secret_value(SECRET_ENV)
    login, _, password = sm.secret_value(SECRET_MLFLOW).partition(":")
    assert login == "admin" and len(password) >= 24
    assert re.fullmatch(r"[0-9a-f]{64}", sm.secret_value(SECRET_FLASK_KEY))
    assert sm.secret_value(SECRET_MYSQL) == "root:db-password"  # checked, never written
    for secret_id in ALL_SECRETS:
        assert sm.policies[path(secret_id)]["bindings"] == [{"role": ACCESSOR, "members": [MEMBER]}]
    secret_policies = {k for k in sm.policies if "/secrets/" in k}
    assert secret_policies == {path(s) for s in ALL_SECRETS}
    assert ctx.secret_values[SECRET_MLFLOW] == sm.secret_value(SECRET_MLFLOW)
    assert not any("mysql-credentials" in r.path and r.method == "POST" and "addVersion" in r.path for r in sm.log)

    sm.clear_log()
    again, _ = run()
    assert again.status is Status.UNCHANGED
    assert sm.mutating_requests() == []


def test_dry_run_lists_the_changes_and_sends_nothing(sm):
    result, _ = run(mode=Mode.PLAN)
    creates = [c.resource for c in result.changes if c.action == "create"]
    assert len(creates) == 3 + 4  # three secrets (mysql-credentials exists), four grants
    assert sm.mutating_requests() == []
    assert sm.secret_value(SECRET_ENV) is None


def test_dry_run_before_the_database_exists_writes_no_placeholder(sm):
    run()
    sm.clear_log()
    result, ctx = run(mode=Mode.PLAN, db_ip=None)
    assert result.changes[0].fields == ("value",)  # the env file will change once the IP is known
    assert sm.mutating_requests() == []
    assert PENDING not in sm.secret_value(SECRET_ENV)
    assert PENDING not in ctx.secret_values[SECRET_ENV]


def test_plan_on_a_project_without_the_apis_reads_absent(fake):
    result, _ = run(mode=Mode.PLAN, db_ip=None)
    assert {c.action for c in result.changes} == {"create"}
    assert len([c for c in result.changes if c.resource.startswith("grant")]) == 4
    assert {f"secret {s}" for s in ALL_SECRETS} <= {c.resource for c in result.changes}
    assert fake.mutating_requests() == []


def test_apply_without_the_database_output_is_a_clear_error(sm):
    with pytest.raises(PrerequisiteMissingError, match="database"):
        run(db_ip=None)
    assert ("POST", f"{SECRET_ENV}:addVersion") not in secret_writes(sm)


def test_settings_change_adds_an_env_version_only(sm):
    run()
    credentials = sm.secret_value(SECRET_MLFLOW)
    key = sm.secret_value(SECRET_FLASK_KEY)
    sm.clear_log()
    result, _ = run(db_name="runs")
    assert result.status is Status.UPDATED
    assert [(c.resource, c.fields) for c in result.changes] == [(f"secret {SECRET_ENV}", ("value",))]
    assert secret_writes(sm) == [("POST", f"{SECRET_ENV}:addVersion")]
    assert sm.secret_value(SECRET_ENV) == expected_env(db_name="runs")
    # Passwords are made once: a settings change never replaces them.
    assert sm.secret_value(SECRET_MLFLOW) == credentials
    assert sm.secret_value(SECRET_FLASK_KEY) == key


def test_another_login_than_the_secret_holds_is_a_clear_error(sm):
    run()
    password = sm.secret_value(SECRET_MLFLOW).partition(":")[2]
    sm.clear_log()
    with pytest.raises(MlflowGcpError, match="--mlflow-username admin") as info:
        run(mlflow_username="someone")
    assert password not in str(info.value)
    assert secret_writes(sm) == []


def test_new_database_ip_updates_the_env_file(sm):
    run()
    sm.clear_log()
    run(db_ip="10.20.0.9")
    assert "DB_HOST=10.20.0.9\n" in sm.secret_value(SECRET_ENV)
    assert secret_writes(sm) == [("POST", f"{SECRET_ENV}:addVersion")]


def test_malformed_mlflow_credentials_is_a_clear_error_without_the_value(sm):
    add_version(SECRET_MLFLOW, "no-colon-secret-value", create=True)
    with pytest.raises(MlflowGcpError, match=SECRET_MLFLOW) as info:
        run()
    assert "no-colon-secret-value" not in str(info.value)
    assert "login:password" in str(info.value)


def test_missing_database_credentials(sm):
    Clients("demo-project").secrets().delete_secret(name=path(SECRET_MYSQL))
    with pytest.raises(PrerequisiteMissingError, match="database step"):
        run()
    result, _ = run(mode=Mode.PLAN)  # planning says it is to come, and does not fail
    assert any(SECRET_MYSQL in c.resource and c.action in ("create", "update") for c in result.changes)


def test_malformed_database_credentials(sm):
    add_version(SECRET_MYSQL, "only-a-password")
    with pytest.raises(MlflowGcpError, match=SECRET_MYSQL) as info:
        run()
    assert "only-a-password" not in str(info.value)


def test_transient_errors_are_retried(sm):
    sm.fail(503, api="secretmanager", method="POST")
    sm.fail(429, api="secretmanager", method="GET")
    sm.fail(503, api="secretmanager", method="POST", path_contains=":setIamPolicy")
    result, _ = run()
    assert result.status is Status.CREATED
    assert {r.status for r in sm.requests(api="secretmanager")} >= {503, 429}
    for secret_id in ALL_SECRETS:
        assert sm.members(path(secret_id), ACCESSOR) == [MEMBER]
    assert sm.secret_value(SECRET_FLASK_KEY) is not None


def test_secret_left_without_version_by_an_interrupted_run(sm):
    Clients("demo-project").secrets().create_secret(
        parent="projects/demo-project", secret_id=SECRET_MLFLOW, secret={"replication": {"automatic": {}}}
    )
    result, _ = run()
    change = next(c for c in result.changes if c.resource == f"secret {SECRET_MLFLOW}")
    assert change.action == "update" and change.fields == ("version", "labels")  # made without our label here
    assert sm.secret_value(SECRET_MLFLOW).startswith("admin:")


def test_delete_then_nothing_to_delete(sm):
    run()
    ctx = StepContext(settings=settings(), clients=Clients("demo-project"))
    secret = Secret(ctx, SECRET_FLASK_KEY, lambda: "x")
    assert secret.holds_data
    current = secret.read()
    secret.delete(current)
    assert secret.read() is None
    assert path(SECRET_FLASK_KEY) not in sm.policies
    secret.delete(current)  # already gone: fine
